//! Contiguous vector storage, exact (`F32`) or int8-quantized (`Q8`), and the
//! distance from a prepared query to a stored slot.
//!
//! Distances are "smaller is closer" everywhere inside the index:
//! `1 - dot` for IP and COSINE (vectors normalized on the way in for COSINE),
//! squared Euclidean for L2.

use super::distance::Kernels;
use super::params::{Metric, Quant};

/// Evaluates `$body` with `$d` bound to a distance closure `Fn(u32) -> f32`
/// specialised for the store's layout and metric, so hot loops do not branch
/// on them per distance.
macro_rules! with_distance {
    ($store:expr, $q:expr, |$d:ident| $body:expr) => {{
        let store = &$store;
        let q = $q;
        let k = store.kernels;
        match (store.quant, store.metric) {
            (crate::index::params::Quant::F32, crate::index::params::Metric::L2) => {
                let $d = |s: u32| (k.l2sq)(q.v, store.row_f32(s));
                $body
            }
            (crate::index::params::Quant::F32, _) => {
                let $d = |s: u32| 1.0 - (k.dot)(q.v, store.row_f32(s));
                $body
            }
            (crate::index::params::Quant::Q8, _) => {
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

/// All nodes' layer-0 data in one flat array of `u32` words, one block per
/// slot: `[link count, 2M link slots, vector words]`. Keeping a node's links
/// next to its vector (hnswlib's layout) means the cache lines fetched to
/// score a node also hold the links needed to expand it.
///
/// Vector words: F32 stores `dim` floats; Q8 stores `ceil(dim/4)` words of
/// int8 codes, then the scale and the squared norm as `f32` bits.
#[derive(Clone)]
pub(crate) struct VectorStore {
    pub dim: usize,
    pub metric: Metric,
    pub quant: Quant,
    pub kernels: Kernels,
    /// Link slots per node on layer 0 (2M).
    pub m0: usize,
    /// Words per node block.
    pub stride: usize,
    pub nodes: Vec<u32>,
}

impl VectorStore {
    pub fn new(dim: usize, metric: Metric, quant: Quant, m0: usize, kernels: Kernels) -> Self {
        let vector_words = match quant {
            Quant::F32 => dim,
            Quant::Q8 => dim.div_ceil(4) + 2,
        };
        VectorStore {
            dim,
            metric,
            quant,
            kernels,
            m0,
            stride: 1 + m0 + vector_words,
            nodes: Vec::new(),
        }
    }

    /// Appends a zeroed block for a new slot. The array grows by an eighth
    /// at a time (at least 64 blocks), not by doubling: a large catalog
    /// wastes at most 12.5% instead of up to half of its biggest array.
    pub fn push_zeroed(&mut self) {
        let need = self.nodes.len() + self.stride;
        if need > self.nodes.capacity() {
            let grow = (self.nodes.len() / 8).max(self.stride * 64);
            self.nodes.reserve_exact(grow);
        }
        self.nodes.resize(need, 0);
    }

    #[inline(always)]
    fn vector_start(&self, slot: u32) -> usize {
        slot as usize * self.stride + 1 + self.m0
    }

    /// Layer-0 links of `slot`.
    #[inline(always)]
    pub fn links0(&self, slot: u32) -> &[u32] {
        let base = slot as usize * self.stride;
        let n = (self.nodes[base] as usize).min(self.m0);
        &self.nodes[base + 1..base + 1 + n]
    }

    pub fn set_links0(&mut self, slot: u32, ids: &[u32]) {
        let base = slot as usize * self.stride;
        let ids = &ids[..ids.len().min(self.m0)];
        self.nodes[base] = ids.len() as u32;
        self.nodes[base + 1..base + 1 + ids.len()].copy_from_slice(ids);
    }

    /// The F32 row of `slot` (F32 stores only).
    #[inline(always)]
    pub fn row_f32(&self, slot: u32) -> &[f32] {
        let b = self.vector_start(slot);
        bytemuck::cast_slice(&self.nodes[b..b + self.dim])
    }

    /// Q8 codes, scale and squared norm of `slot` (Q8 stores only).
    #[inline(always)]
    fn row_q8(&self, slot: u32) -> (&[i8], f32, f32) {
        let b = self.vector_start(slot);
        let cw = self.dim.div_ceil(4);
        let codes: &[i8] = bytemuck::cast_slice(&self.nodes[b..b + cw]);
        (
            &codes[..self.dim],
            f32::from_bits(self.nodes[b + cw]),
            f32::from_bits(self.nodes[b + cw + 1]),
        )
    }

    /// Stores an already prepared (normalized where needed) vector at `slot`.
    pub fn write(&mut self, slot: usize, v: &[f32]) {
        let b = self.vector_start(slot as u32);
        let dim = self.dim;
        match self.quant {
            Quant::F32 => {
                let row: &mut [f32] = bytemuck::cast_slice_mut(&mut self.nodes[b..b + dim]);
                row.copy_from_slice(v);
            }
            Quant::Q8 => {
                let cw = dim.div_ceil(4);
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                let mut sq = 0f32;
                {
                    let codes: &mut [i8] = bytemuck::cast_slice_mut(&mut self.nodes[b..b + cw]);
                    codes.iter_mut().for_each(|c| *c = 0);
                    for (c, x) in codes.iter_mut().zip(v) {
                        let q = (x / scale).round().clamp(-127.0, 127.0);
                        *c = q as i8;
                        sq += (q * scale) * (q * scale);
                    }
                }
                self.nodes[b + cw] = scale.to_bits();
                self.nodes[b + cw + 1] = sq.to_bits();
            }
        }
    }

    /// Copies the stored (dequantized) row of `slot` into `out`.
    pub fn read_into(&self, slot: usize, out: &mut Vec<f32>) {
        out.clear();
        match self.quant {
            Quant::F32 => out.extend_from_slice(self.row_f32(slot as u32)),
            Quant::Q8 => {
                let (codes, s, _) = self.row_q8(slot as u32);
                out.extend(codes.iter().map(|&c| c as f32 * s))
            }
        }
    }

    /// Distance (smaller is closer) from `q` to the row at `slot`.
    #[inline(always)]
    pub fn distance(&self, q: &Query, slot: u32) -> f32 {
        match self.quant {
            Quant::F32 => {
                let row = self.row_f32(slot);
                match self.metric {
                    Metric::L2 => (self.kernels.l2sq)(q.v, row),
                    _ => 1.0 - (self.kernels.dot)(q.v, row),
                }
            }
            Quant::Q8 => {
                let (codes, scale, sqnorm) = self.row_q8(slot);
                let dot = (self.kernels.dot_i8)(q.v, codes) * scale;
                match self.metric {
                    Metric::L2 => (q.sqnorm + sqnorm - 2.0 * dot).max(0.0),
                    _ => 1.0 - dot,
                }
            }
        }
    }

    /// Hints the CPU to start loading the vector of `slot`.
    #[inline(always)]
    pub fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let ptr = self.nodes.as_ptr().wrapping_add(self.vector_start(slot)) as *const i8;
            // SAFETY: prefetch never faults, even on an invalid address.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(ptr, _MM_HINT_T0);
                _mm_prefetch(ptr.wrapping_add(64), _MM_HINT_T0);
            }
        }
    }

    /// Hints the CPU to start loading the links of `slot`.
    #[inline(always)]
    pub fn prefetch_links(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let ptr = self
                .nodes
                .as_ptr()
                .wrapping_add(slot as usize * self.stride) as *const i8;
            // SAFETY: prefetch never faults.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(ptr, _MM_HINT_T0);
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
        self.nodes.capacity() * 4
    }
}
