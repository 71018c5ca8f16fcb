//! The exact scan: every live slot in memory order, for small indexes
//! (where it is as fast as a walk, and exact), for filters too selective
//! for a walk, and as the recall oracle; and the rule that says when a
//! search scans ([`scan_limit`]).
//!
//! The scan goes by blocks of [`ROWS`] slots, in one of two orders
//! ([`ScanOrder`]). Admission first: it scores the admitted rows, all eight
//! with one call of the row kernel ([`crate::index::distance`]'s `rows`)
//! when at least half are admitted, one by one otherwise (a selective
//! filter reads only the rows it admits). Distance first: it scores all
//! eight, then asks admission only about the rows that beat the bound. A
//! scored row enters the running top only when it beats the current bound.
//! The top is kept in a buffer of 64-bit keys (distance, slot), cut back
//! to K when it fills.

use super::{Cand, Hit, Hnsw};
use crate::index::distance::rows::{each_row, ROWS};
use crate::index::params::Metric;
use crate::index::store::{with_distance, Query};

/// Below this many slots a search always scans (a walk's fixed costs,
/// the descent and the heaps, are worth a scan of this many rows).
pub const SCAN_FLOOR: usize = 1024;
/// Slots per unit of `ef` that a scan covers in the time of a walk, up to
/// 128 dimensions (`recsys bench scan`: the scan matches the walk at 20 x
/// EF slots for IP and L2 at 32 and 64 dimensions, at EF 100 and 200).
/// Wider rows make the scan memory-bound: above 128 dimensions the figure
/// shrinks in proportion (10 x EF at 256 dimensions, measured).
pub const SCAN_SLOTS_PER_EF: usize = 20;

/// Largest index (in slots) that a search with this `ef` over `dim`-wide
/// vectors scans instead of walking.
pub fn scan_limit(ef: usize, dim: usize) -> usize {
    let per_ef = if dim <= 128 {
        SCAN_SLOTS_PER_EF
    } else {
        (SCAN_SLOTS_PER_EF * 128 / dim).max(2)
    };
    SCAN_FLOOR.max(ef.saturating_mul(per_ef))
}

/// What a scan asks first about a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanOrder {
    /// Admission, then the distance of the admitted rows alone: for
    /// admission that few rows pass (a selective filter), so the other
    /// rows are never read.
    AdmitFirst,
    /// The distance, then admission only for the rows that would enter the
    /// top (after the first few hundred rows, a few dozen in all): for
    /// admission that most rows pass (EXCLUDE_SEEN, a broad filter).
    DistanceFirst,
}

/// Admitted rows of a block from which one row-kernel call scores all
/// of them (below it, each admitted row is scored alone).
const DENSE_BLOCK: u32 = ROWS as u32 / 2;

impl Hnsw {
    /// Whether a search with this `ef` is answered by an exact scan rather
    /// than a graph walk ([`scan_limit`]): the walk's distances come in
    /// random order through heaps, the scan's in memory order, so up to a
    /// size that grows with `ef` the scan is as fast, and exact.
    pub fn prefers_scan(&self, ef: usize) -> bool {
        self.slots() <= scan_limit(ef, self.params.dim)
    }

    /// Exact k-NN over the live slots accepted by `accept`, best first,
    /// admission asked first ([`ScanOrder::AdmitFirst`]).
    pub fn scan<F: Fn(u32) -> bool>(&self, v: &[f32], k: usize, accept: F) -> Vec<Hit> {
        self.scan_in_order(v, k, accept, ScanOrder::AdmitFirst)
    }

    /// Exact k-NN over the live slots accepted by `accept`, best first,
    /// asking admission and distance in `order`.
    pub fn scan_in_order<F: Fn(u32) -> bool>(
        &self,
        v: &[f32],
        k: usize,
        accept: F,
        order: ScanOrder,
    ) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let q = Query::new(v);
        let deleted = &self.deleted;
        let acc = |s: u32| !deleted[s as usize] && accept(s);
        let l2 = self.params.metric == Metric::L2;
        let kernels = self.store.kernels;
        let lazy = order == ScanOrder::DistanceFirst;
        let top = match () {
            // SAFETY (both arms): the flag is only set after run-time detection.
            #[cfg(target_arch = "x86_64")]
            () if kernels.avx512 => unsafe { self.scan_avx512(&q, l2, k, acc, lazy) },
            #[cfg(target_arch = "x86_64")]
            () if kernels.avx2 => unsafe { self.scan_avx2(&q, l2, k, acc, lazy) },
            _ => with_distance!(self.store, &q, |dist| {
                let rows = |first| each_row(first, dist);
                match lazy {
                    true => self.scan_with::<true, _, _, _>(&dist, &rows, k, acc),
                    false => self.scan_with::<false, _, _, _>(&dist, &rows, k, acc),
                }
            }),
        };
        self.to_hits(top, k)
    }

    /// The scan's loop with distance `dist` for one slot and `rows` for
    /// the [`ROWS`] slots from a multiple of [`ROWS`] on; `LAZY`: distance
    /// first ([`ScanOrder::DistanceFirst`]).
    #[inline(always)]
    pub(super) fn scan_with<const LAZY: bool, D, R, F>(
        &self,
        dist: &D,
        rows: &R,
        k: usize,
        accept: F,
    ) -> Vec<Cand>
    where
        D: Fn(u32) -> f32,
        R: Fn(u32) -> [f32; ROWS],
        F: Fn(u32) -> bool,
    {
        let slots = self.slots() as u32;
        let mut top = TopKeys::new(k, self.slots());
        let whole = slots - slots % ROWS as u32;
        let mut first = 0;
        while first < whole {
            if LAZY {
                let d = rows(first);
                let mut m = top.beating(&d);
                while m != 0 {
                    let i = m.trailing_zeros();
                    m &= m - 1;
                    if accept(first + i) {
                        top.offer(d[i as usize], first + i);
                    }
                }
                first += ROWS as u32;
                continue;
            }
            let mut admitted = 0u32;
            for i in 0..ROWS as u32 {
                admitted |= (accept(first + i) as u32) << i;
            }
            if admitted.count_ones() >= DENSE_BLOCK {
                top.offer_rows(first, &rows(first), admitted);
            } else {
                let mut m = admitted;
                while m != 0 {
                    let s = first + m.trailing_zeros();
                    m &= m - 1;
                    top.offer(dist(s), s);
                }
            }
            first += ROWS as u32;
        }
        for s in whole..slots {
            if LAZY {
                let d = dist(s);
                if d < top.bound && accept(s) {
                    top.offer(d, s);
                }
            } else if accept(s) {
                top.offer(dist(s), s);
            }
        }
        top.into_sorted()
    }

    /// Exact k-NN by scanning every live slot (the recall oracle).
    pub fn brute_force(&self, v: &[f32], k: usize) -> Vec<Hit> {
        self.scan_in_order(v, k, |_| true, ScanOrder::DistanceFirst)
    }
}

/// The best `k` of the rows offered in slot order, as keys whose integer
/// order is (distance, slot): [`f32::total_cmp`]'s order of the distance
/// in the high half, the slot in the low half. Rows are buffered up to
/// `cap`; then a linear selection keeps the best `k` and their worst
/// distance becomes the bound a row must beat (a row at the bound's
/// distance comes later, so its slot loses the tie).
struct TopKeys {
    k: usize,
    cap: usize,
    /// `len` keys, then room for one more block of [`ROWS`].
    keys: Vec<u64>,
    len: usize,
    bound: f32,
}

impl TopKeys {
    fn new(k: usize, slots: usize) -> TopKeys {
        // More than K, so a cut always frees room; a scan of fewer slots
        // than `cap` never cuts, and needs room for those slots only.
        let cap = (2 * k).max(k + 64);
        TopKeys {
            k,
            cap,
            keys: vec![0; cap.min(slots) + ROWS],
            len: 0,
            bound: f32::INFINITY,
        }
    }

    /// The rows of a block whose distance beats the bound, as bits.
    #[inline(always)]
    fn beating(&self, d: &[f32; ROWS]) -> u32 {
        let bound = self.bound;
        d.iter()
            .enumerate()
            .fold(0, |m, (i, &di)| m | ((di < bound) as u32) << i)
    }

    /// Offers one row.
    #[inline(always)]
    fn offer(&mut self, d: f32, slot: u32) {
        if d < self.bound {
            self.keys[self.len] = key(d, slot);
            self.len += 1;
            self.cut_when_full();
        }
    }

    /// Offers the rows of a block whose bit is set in `admitted`, without
    /// a branch per row: every key is written, and counted when it beats
    /// the bound.
    #[inline(always)]
    fn offer_rows(&mut self, first: u32, d: &[f32; ROWS], admitted: u32) {
        let bound = self.bound;
        for (i, &di) in d.iter().enumerate() {
            self.keys[self.len] = key(di, first + i as u32);
            self.len += ((admitted >> i) & 1 == 1 && di < bound) as usize;
        }
        self.cut_when_full();
    }

    #[inline(always)]
    fn cut_when_full(&mut self) {
        if self.len >= self.cap {
            self.keep_k();
            self.bound = distance_of(self.keys[self.k - 1]);
        }
    }

    fn keep_k(&mut self) {
        if self.len > self.k {
            self.keys[..self.len].select_nth_unstable(self.k - 1);
            self.len = self.k;
        }
    }

    fn into_sorted(mut self) -> Vec<Cand> {
        self.keep_k();
        let best = &mut self.keys[..self.len];
        best.sort_unstable();
        best.iter().map(|&k| Cand::of_key(k)).collect()
    }
}

/// `d`'s bits made to sort as unsigned integers in [`f32::total_cmp`]'s
/// order (negative values have their other bits flipped, then the sign bit
/// is flipped), the slot below.
#[inline(always)]
pub(super) fn key(d: f32, slot: u32) -> u64 {
    let bits = d.to_bits() as i32;
    let ordered = (bits ^ (((bits >> 31) as u32) >> 1) as i32) as u32 ^ 0x8000_0000;
    (ordered as u64) << 32 | slot as u64
}

/// The distance a [`key`] was made from.
#[inline(always)]
pub(super) fn distance_of(key: u64) -> f32 {
    let bits = ((key >> 32) as u32 ^ 0x8000_0000) as i32;
    f32::from_bits((bits ^ (((bits >> 31) as u32) >> 1) as i32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_as_total_cmp_then_slot() {
        let ds = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            0.25,
            2.0,
            f32::INFINITY,
        ];
        let mut pairs: Vec<(f32, u32)> = Vec::new();
        for (i, &d) in ds.iter().enumerate() {
            pairs.push((d, 7 - i as u32 % 3));
            pairs.push((d, 100 + i as u32));
        }
        let mut by_key = pairs.clone();
        by_key.sort_by_key(|&(d, s)| key(d, s));
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        assert_eq!(
            by_key
                .iter()
                .map(|p| (p.0.to_bits(), p.1))
                .collect::<Vec<_>>(),
            pairs
                .iter()
                .map(|p| (p.0.to_bits(), p.1))
                .collect::<Vec<_>>()
        );
        for &(d, s) in &pairs {
            assert_eq!(distance_of(key(d, s)).to_bits(), d.to_bits());
            assert_eq!(key(d, s) as u32, s);
        }
    }

    #[test]
    fn the_top_keeps_the_k_smallest_admitted_in_order() {
        let mut rng = crate::rng::SplitMix::new(11);
        for k in [1usize, 3, 10, 64, 200, 5000] {
            let n = 3003;
            // Many ties: distances from a small set.
            let ds: Vec<f32> = (0..n).map(|_| (rng.below(50) as f32) / 7.0).collect();
            let admitted: Vec<bool> = (0..n).map(|_| rng.below(4) != 0).collect();
            let mut top = TopKeys::new(k, n);
            let whole = n - n % ROWS;
            for first in (0..whole).step_by(ROWS) {
                let d: [f32; ROWS] = std::array::from_fn(|i| ds[first + i]);
                let mask = (0..ROWS).fold(0u32, |m, i| m | (admitted[first + i] as u32) << i);
                top.offer_rows(first as u32, &d, mask);
            }
            for s in (whole..n).filter(|&s| admitted[s]) {
                top.offer(ds[s], s as u32);
            }
            let got: Vec<(u32, u32)> = top
                .into_sorted()
                .iter()
                .map(|c| (c.d.to_bits(), c.id))
                .collect();
            let mut want: Vec<(f32, u32)> = (0..n)
                .filter(|&s| admitted[s])
                .map(|s| (ds[s], s as u32))
                .collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            want.truncate(k);
            let want: Vec<(u32, u32)> = want.iter().map(|p| (p.0.to_bits(), p.1)).collect();
            assert_eq!(got, want, "k {k}");
        }
    }
}
