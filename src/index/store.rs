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

/// All nodes' layer-0 data as `u32` words, one block per slot: `[2M link
/// slots, vector words]`, the links packed first and the unused slots
/// [`NO_LINK`]. Keeping a node's links next to its vector (hnswlib's layout)
/// means the cache lines fetched to score a node also hold the links needed
/// to expand it. There is no count word: the links end at the first
/// `NO_LINK`, so a 64-d F32 block is 384 bytes (388 with a count).
///
/// Blocks live in pages of [`PAGE_BLOCKS`] slots: the first page grows by
/// doubling from 8 blocks (a tiny catalog stays tiny), later pages are
/// allocated whole. Spare capacity stays under one page, where one growing
/// array would hold up to an eighth of itself (and copy itself on every
/// growth).
///
/// Vector words: F32 stores `dim` floats; Q8 stores `ceil(dim/4)` words of
/// int8 codes, then the scale as `f32` bits and, for L2 only (the one
/// metric whose distance needs it), the squared norm.
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
    /// Slots with a block.
    slots: usize,
    /// Full pages of [`PAGE_BLOCKS`] blocks, the last one growing.
    pages: Vec<Vec<u32>>,
}

/// Words of a Q8 vector: the codes, the scale, and the squared norm for L2.
pub(crate) fn q8_words(dim: usize, metric: Metric) -> usize {
    dim.div_ceil(4) + 1 + (metric == Metric::L2) as usize
}

/// The distance to a Q8 row from `dot` (the query against the row's codes,
/// times its scale) and the row's squared norm (used by L2 only).
#[inline(always)]
pub(crate) fn q8_distance(l2: bool, q: &Query, dot: f32, sqnorm: f32) -> f32 {
    if l2 {
        (q.sqnorm + sqnorm - 2.0 * dot).max(0.0)
    } else {
        1.0 - dot
    }
}

/// An unused layer-0 link slot (no node has this slot number: slots stay
/// below `u32::MAX`).
pub(crate) const NO_LINK: u32 = u32::MAX;

/// Slots per page (a power of two: a slot's page is a shift away).
pub(crate) const PAGE_SHIFT: u32 = 8;
pub(crate) const PAGE_BLOCKS: usize = 1 << PAGE_SHIFT;
const PAGE_MASK: usize = PAGE_BLOCKS - 1;

impl VectorStore {
    pub fn new(dim: usize, metric: Metric, quant: Quant, m0: usize, kernels: Kernels) -> Self {
        let vector_words = match quant {
            Quant::F32 => dim,
            Quant::Q8 => q8_words(dim, metric),
        };
        VectorStore {
            dim,
            metric,
            quant,
            kernels,
            m0,
            stride: m0 + vector_words,
            slots: 0,
            pages: Vec::new(),
        }
    }

    /// The block of `slot`.
    #[inline(always)]
    fn block(&self, slot: u32) -> &[u32] {
        let page = &self.pages[slot as usize >> PAGE_SHIFT];
        let b = (slot as usize & PAGE_MASK) * self.stride;
        &page[b..b + self.stride]
    }

    #[inline(always)]
    fn block_mut(&mut self, slot: u32) -> &mut [u32] {
        let page = &mut self.pages[slot as usize >> PAGE_SHIFT];
        let b = (slot as usize & PAGE_MASK) * self.stride;
        &mut page[b..b + self.stride]
    }

    /// Every slot's block in slot order, as one run of words per page.
    pub fn words(&self) -> impl Iterator<Item = &[u32]> {
        let (stride, slots) = (self.stride, self.slots);
        self.pages.iter().enumerate().map(move |(i, p)| {
            let used = (slots - i * PAGE_BLOCKS).min(PAGE_BLOCKS);
            &p[..used * stride]
        })
    }

    /// Replaces the content with `slots` blocks taken from `words`
    /// (`slots * stride` of them, in slot order).
    pub fn set_words(&mut self, slots: usize, words: &[u32]) {
        let page_words = PAGE_BLOCKS * self.stride;
        self.pages = words
            .chunks(page_words)
            .map(|chunk| chunk.to_vec())
            .collect();
        self.slots = slots;
    }

    /// Appends a block for a new slot, without links and with a zeroed
    /// vector (a new page when the last one is full).
    pub fn push_empty(&mut self) {
        if self.slots == self.pages.len() * PAGE_BLOCKS {
            self.pages.push(Vec::new());
        }
        let page_words = PAGE_BLOCKS * self.stride;
        let (stride, first) = (self.stride, self.pages.len() == 1);
        if let Some(last) = self.pages.last_mut() {
            if last.len() == last.capacity() {
                // The first page doubles from 8 blocks; a catalog past one
                // page takes its next pages whole.
                let grow = if first {
                    last.len().max(8 * stride)
                } else {
                    page_words
                };
                last.reserve_exact(grow.min(page_words - last.len()));
            }
            last.resize(last.len() + stride, 0);
            let start = last.len() - stride;
            last[start..start + self.m0].fill(NO_LINK);
        }
        self.slots += 1;
    }

    /// Words of the vector inside a block.
    #[inline(always)]
    fn vector_words(&self) -> std::ops::Range<usize> {
        self.m0..self.stride
    }

    /// Layer-0 links of `slot`.
    #[inline(always)]
    pub fn links0(&self, slot: u32) -> &[u32] {
        let links = &self.block(slot)[..self.m0];
        // Links are packed, so counting them finds where they end; the
        // count is branch-free (it vectorizes), a search for the first
        // NO_LINK would mispredict once per node.
        let n = links.iter().filter(|&&l| l != NO_LINK).count();
        &links[..n]
    }

    pub fn set_links0(&mut self, slot: u32, ids: &[u32]) {
        let m0 = self.m0;
        let ids = &ids[..ids.len().min(m0)];
        debug_assert!(!ids.contains(&NO_LINK));
        let links = &mut self.block_mut(slot)[..m0];
        links[..ids.len()].copy_from_slice(ids);
        links[ids.len()..].fill(NO_LINK);
    }

    /// The F32 row of `slot` (F32 stores only).
    #[inline(always)]
    pub fn row_f32(&self, slot: u32) -> &[f32] {
        let b = self.m0;
        bytemuck::cast_slice(&self.block(slot)[b..b + self.dim])
    }

    /// The F32 rows of the `n` slots from `slot` on, which share a page
    /// (`slot` a multiple of `n`, `n` dividing [`PAGE_BLOCKS`]): row `r`
    /// starts at word `r * stride` (F32 stores only).
    #[inline(always)]
    pub fn rows_f32(&self, slot: u32, n: usize) -> &[f32] {
        let page = &self.pages[slot as usize >> PAGE_SHIFT];
        let b = (slot as usize & PAGE_MASK) * self.stride + self.m0;
        bytemuck::cast_slice(&page[b..b + (n - 1) * self.stride + self.dim])
    }

    /// Q8 codes, scale and squared norm (0 unless L2) of `slot` (Q8
    /// stores only).
    #[inline(always)]
    pub fn row_q8(&self, slot: u32) -> (&[i8], f32, f32) {
        let w = &self.block(slot)[self.vector_words()];
        let cw = self.dim.div_ceil(4);
        let codes: &[i8] = bytemuck::cast_slice(&w[..cw]);
        let sqnorm = w.get(cw + 1).map_or(0.0, |&b| f32::from_bits(b));
        (&codes[..self.dim], f32::from_bits(w[cw]), sqnorm)
    }

    /// Stores an already prepared (normalized where needed) vector at `slot`.
    pub fn write(&mut self, slot: usize, v: &[f32]) {
        let dim = self.dim;
        let (quant, words) = (self.quant, self.vector_words());
        let w = &mut self.block_mut(slot as u32)[words];
        match quant {
            Quant::F32 => {
                let row: &mut [f32] = bytemuck::cast_slice_mut(&mut w[..dim]);
                row.copy_from_slice(v);
            }
            Quant::Q8 => {
                let cw = dim.div_ceil(4);
                let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                let mut sq = 0f32;
                {
                    let codes: &mut [i8] = bytemuck::cast_slice_mut(&mut w[..cw]);
                    codes.iter_mut().for_each(|c| *c = 0);
                    for (c, x) in codes.iter_mut().zip(v) {
                        let q = (x / scale).round().clamp(-127.0, 127.0);
                        *c = q as i8;
                        sq += (q * scale) * (q * scale);
                    }
                }
                w[cw] = scale.to_bits();
                if let Some(norm) = w.get_mut(cw + 1) {
                    *norm = sq.to_bits();
                }
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
                q8_distance(self.metric == Metric::L2, q, dot, sqnorm)
            }
        }
    }

    /// Where the block of `slot` starts, for prefetching (a dangling
    /// pointer for a slot past the end, which prefetching tolerates).
    #[inline(always)]
    fn block_ptr(&self, slot: u32) -> *const u32 {
        match self.pages.get(slot as usize >> PAGE_SHIFT) {
            Some(page) => page
                .as_ptr()
                .wrapping_add((slot as usize & PAGE_MASK) * self.stride),
            None => std::ptr::null(),
        }
    }

    /// Hints the CPU to start loading the vector of `slot`.
    #[inline(always)]
    pub fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let ptr = self.block_ptr(slot).wrapping_add(self.m0) as *const i8;
            // SAFETY: prefetch never faults, even on an invalid address.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                // Every cache line the vector touches: its rows start
                // anywhere in a line (blocks are 4-byte aligned), so the
                // last byte's line is asked for too.
                let end = ptr.wrapping_add(self.vector_bytes());
                let mut line = ptr;
                while line < end {
                    _mm_prefetch(line, _MM_HINT_T0);
                    line = line.wrapping_add(64);
                }
                _mm_prefetch(end.wrapping_sub(1), _MM_HINT_T0);
            }
        }
    }

    /// Bytes of one stored vector (what a distance reads).
    #[inline(always)]
    fn vector_bytes(&self) -> usize {
        (self.stride - self.m0) * 4
    }

    /// Hints the CPU to start loading the links of `slot`.
    #[inline(always)]
    pub fn prefetch_links(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let ptr = self.block_ptr(slot) as *const i8;
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
        self.pages.iter().map(|p| p.capacity() * 4).sum::<usize>()
            + self.pages.capacity() * std::mem::size_of::<Vec<u32>>()
    }
}
