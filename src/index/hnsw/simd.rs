//! The graph walk and the exact scan compiled for AVX2+FMA and for
//! AVX-512, with the distance of every storage and metric inlined (the
//! entry points [`Hnsw::walk`] and [`Hnsw::scan`] pick one after run-time
//! detection).

use super::{Cand, Hnsw, WalkStats};
use crate::index::params::Quant;
use crate::index::store::{q8_distance, Query};

/// Evaluates `$body` with `$d` bound to the distance closure for the
/// store's layout and metric, built from the kernels of module `$kernels`
/// so it is inlined where `$body` is compiled for their features.
macro_rules! with_simd_distance {
    ($kernels:ident, $store:expr, $q:expr, $l2:expr, |$d:ident, $rows:ident| $body:expr) => {{
        use crate::index::distance::rows::each_row;
        use crate::index::distance::$kernels::{dot_i8_impl, dot_impl, l2sq_impl};
        let (store, q) = ($store, $q);
        match (store.quant, $l2) {
            (Quant::F32, true) => {
                let $d = |s: u32| l2sq_impl(q.v, store.row_f32(s));
                let $rows = |first: u32| rows_f32!($kernels, true, store, q, first, $d);
                $body
            }
            (Quant::F32, false) => {
                let $d = |s: u32| 1.0 - dot_impl(q.v, store.row_f32(s));
                let $rows = |first: u32| {
                    rows_f32!($kernels, false, store, q, first, $d).map(|dot| 1.0 - dot)
                };
                $body
            }
            // Two arms with a constant `l2` each, so neither loop branches
            // on the metric per distance.
            (Quant::Q8, true) => {
                let $d = |s: u32| {
                    let (codes, scale, sqnorm) = store.row_q8(s);
                    q8_distance(true, q, scale * dot_i8_impl(q.v, codes), sqnorm)
                };
                let $rows = |first: u32| each_row(first, &$d);
                $body
            }
            (Quant::Q8, false) => {
                let $d = |s: u32| {
                    let (codes, scale, sqnorm) = store.row_q8(s);
                    q8_distance(false, q, scale * dot_i8_impl(q.v, codes), sqnorm)
                };
                let $rows = |first: u32| each_row(first, &$d);
                $body
            }
        }
    }};
}

/// The [`ROWS`](crate::index::distance::rows::ROWS) F32 dot products (`$l2` false) or squared distances from
/// slot `$first` on: the row kernel under AVX-512, the one-row kernel
/// (`$d`, already a distance) otherwise.
macro_rules! rows_f32 {
    (avx512, $l2:literal, $store:expr, $q:expr, $first:expr, $d:ident) => {
        crate::index::distance::rows::avx512::rows_impl::<$l2>(
            $q.v,
            $store.rows_f32($first, crate::index::distance::rows::ROWS),
            $store.stride,
        )
    };
    (avx2, true, $store:expr, $q:expr, $first:expr, $d:ident) => {
        each_row($first, &$d)
    };
    (avx2, false, $store:expr, $q:expr, $first:expr, $d:ident) => {
        each_row($first, |s| 1.0 - $d(s))
    };
}

/// Defines a search entry point and a scan compiled for `$features` with
/// the kernels of module `$kernels`, so the distance (F32 or Q8, any
/// metric) is inlined into the graph walk instead of called through a
/// pointer. (Q8 gained little from the inlining, within this machine's
/// noise; it is fast for reading a quarter of F32's vector bytes per node:
/// `recsys bench index --quant q8`, 64 dimensions, 1.2-1.3x F32's q/s at
/// the same ef, recall@10 0.99.)
macro_rules! simd_search {
    ($name:ident, $scan:ident, $features:literal, $kernels:ident) => {
        impl Hnsw {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<F: Fn(u32) -> bool>(
                &self,
                q: &Query,
                l2: bool,
                ef: usize,
                accept: F,
                budget: usize,
            ) -> (Vec<Cand>, WalkStats) {
                with_simd_distance!($kernels, &self.store, q, l2, |dist, _rows| {
                    let entry = self.descend(&dist, 0);
                    self.search_layer(&dist, entry, ef, 0, accept, budget)
                })
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $scan<F: Fn(u32) -> bool>(
                &self,
                q: &Query,
                l2: bool,
                k: usize,
                accept: F,
                lazy: bool,
            ) -> Vec<Cand> {
                with_simd_distance!($kernels, &self.store, q, l2, |dist, rows| {
                    match lazy {
                        true => self.scan_with::<true, _, _, _>(&dist, &rows, k, accept),
                        false => self.scan_with::<false, _, _, _>(&dist, &rows, k, accept),
                    }
                })
            }
        }
    };
}
simd_search!(search_avx2, scan_avx2, "avx2,fma", avx2);
simd_search!(search_avx512, scan_avx512, "avx512f,avx2,fma", avx512);
