//! Contiguous vector storage, exact (`F32`) or int8-quantized (`Q8`), and the
//! distance from a prepared query to a stored slot.
//!
//! Distances are "smaller is closer" everywhere inside the index:
//! `1 - dot` for IP and COSINE (vectors normalized on the way in for COSINE),
//! squared Euclidean for L2.

use super::distance::Kernels;
use super::params::{Metric, Quant};

/// Vectors of all slots, one row of `dim` components per slot.
#[derive(Clone)]
pub(crate) enum Rows {
    F32(Vec<f32>),
    Q8 {
        codes: Vec<i8>,
        /// Per-slot dequantization scale: value = code * scale.
        scales: Vec<f32>,
        /// Per-slot squared norm of the dequantized row (for L2).
        sqnorms: Vec<f32>,
    },
}

/// Evaluates `$body` with `$d` bound to a distance closure `Fn(u32) -> f32`
/// specialised for the store's layout and metric, so hot loops do not branch
/// on them per distance.
macro_rules! with_distance {
    ($store:expr, $q:expr, |$d:ident| $body:expr) => {{
        let store = &$store;
        let q = $q;
        let dim = store.dim;
        let k = store.kernels;
        match (&store.rows, store.metric) {
            (crate::index::store::Rows::F32(data), crate::index::params::Metric::L2) => {
                let $d = |s: u32| {
                    let b = s as usize * dim;
                    (k.l2sq)(q.v, &data[b..b + dim])
                };
                $body
            }
            (crate::index::store::Rows::F32(data), _) => {
                let $d = |s: u32| {
                    let b = s as usize * dim;
                    1.0 - (k.dot)(q.v, &data[b..b + dim])
                };
                $body
            }
            (crate::index::store::Rows::Q8 { .. }, _) => {
                let $d = |s: u32| store.distance(q, s);
                $body
            }
        }
    }};
}
pub(crate) use with_distance;

/// A query vector ready for distance computations.
pub(crate) struct Query<'a> {
    pub v: &'a [f32],
    pub sqnorm: f32,
}

impl<'a> Query<'a> {
    pub fn new(v: &'a [f32]) -> Self {
        Query {
            v,
            sqnorm: v.iter().map(|x| x * x).sum(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct VectorStore {
    pub dim: usize,
    pub metric: Metric,
    pub kernels: Kernels,
    pub rows: Rows,
}

impl VectorStore {
    pub fn new(dim: usize, metric: Metric, quant: Quant, kernels: Kernels) -> Self {
        let rows = match quant {
            Quant::F32 => Rows::F32(Vec::new()),
            Quant::Q8 => Rows::Q8 {
                codes: Vec::new(),
                scales: Vec::new(),
                sqnorms: Vec::new(),
            },
        };
        VectorStore {
            dim,
            metric,
            kernels,
            rows,
        }
    }

    /// Appends a zeroed row for a new slot.
    pub fn push_zeroed(&mut self) {
        match &mut self.rows {
            Rows::F32(data) => data.resize(data.len() + self.dim, 0.0),
            Rows::Q8 {
                codes,
                scales,
                sqnorms,
            } => {
                codes.resize(codes.len() + self.dim, 0);
                scales.push(0.0);
                sqnorms.push(0.0);
            }
        }
    }

    /// Stores an already prepared (normalized where needed) vector at `slot`.
    pub fn write(&mut self, slot: usize, v: &[f32]) {
        let dim = self.dim;
        match &mut self.rows {
            Rows::F32(data) => data[slot * dim..(slot + 1) * dim].copy_from_slice(v),
            Rows::Q8 {
                codes,
                scales,
                sqnorms,
            } => {
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                let row = &mut codes[slot * dim..(slot + 1) * dim];
                let mut sq = 0f32;
                for (c, x) in row.iter_mut().zip(v) {
                    let q = (x / scale).round().clamp(-127.0, 127.0);
                    *c = q as i8;
                    sq += (q * scale) * (q * scale);
                }
                scales[slot] = scale;
                sqnorms[slot] = sq;
            }
        }
    }

    /// Copies the stored (dequantized) row of `slot` into `out`.
    pub fn read_into(&self, slot: usize, out: &mut Vec<f32>) {
        out.clear();
        let dim = self.dim;
        match &self.rows {
            Rows::F32(data) => out.extend_from_slice(&data[slot * dim..(slot + 1) * dim]),
            Rows::Q8 { codes, scales, .. } => {
                let s = scales[slot];
                out.extend(
                    codes[slot * dim..(slot + 1) * dim]
                        .iter()
                        .map(|&c| c as f32 * s),
                )
            }
        }
    }

    /// Distance (smaller is closer) from `q` to the row at `slot`.
    #[inline(always)]
    pub fn distance(&self, q: &Query, slot: u32) -> f32 {
        let dim = self.dim;
        let base = slot as usize * dim;
        match &self.rows {
            Rows::F32(data) => {
                let row = &data[base..base + dim];
                match self.metric {
                    Metric::L2 => (self.kernels.l2sq)(q.v, row),
                    _ => 1.0 - (self.kernels.dot)(q.v, row),
                }
            }
            Rows::Q8 {
                codes,
                scales,
                sqnorms,
            } => {
                let dot =
                    (self.kernels.dot_i8)(q.v, &codes[base..base + dim]) * scales[slot as usize];
                match self.metric {
                    Metric::L2 => (q.sqnorm + sqnorms[slot as usize] - 2.0 * dot).max(0.0),
                    _ => 1.0 - dot,
                }
            }
        }
    }

    /// Hints the CPU to start loading the row at `slot`.
    #[inline(always)]
    pub fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let base = slot as usize * self.dim;
            let ptr = match &self.rows {
                Rows::F32(data) => data.as_ptr().wrapping_add(base) as *const i8,
                Rows::Q8 { codes, .. } => codes.as_ptr().wrapping_add(base),
            };
            // SAFETY: prefetch never faults, even on an invalid address.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(ptr, _MM_HINT_T0);
                _mm_prefetch(ptr.wrapping_add(64), _MM_HINT_T0);
            }
        }
    }

    /// Turns an internal distance into the score users see.
    pub fn score(&self, distance: f32) -> f32 {
        match self.metric {
            Metric::L2 => distance.max(0.0).sqrt(),
            _ => 1.0 - distance,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match &self.rows {
            Rows::F32(d) => d.capacity() * 4,
            Rows::Q8 {
                codes,
                scales,
                sqnorms,
            } => codes.capacity() + scales.capacity() * 4 + sqnorms.capacity() * 4,
        }
    }
}
