//! The HNSW graph (Malkov & Yashunin) over a [`VectorStore`]: insert, delete
//! with slot reuse, filtered k-NN search.
//!
//! Layout follows hnswlib: each slot's layer-0 links sit next to its vector
//! in the [`VectorStore`]'s blocks, so scoring a node fetches the links to
//! expand it; upper-layer links (about one node in M has any) live in a map
//! from slot to a small block, so the other nodes pay nothing for them. Node levels
//! come from a seeded generator stored with the index, so a replica that
//! replays the same writes builds the same graph.
//!
//! Deletion marks the slot as a tombstone: it stays traversable (the graph
//! stays connected) but is never returned. The next insert reuses the slot: the
//! old node's neighbours are re-linked among themselves first, then the new
//! vector is inserted into the slot like any new node (hnswlib's
//! "replace deleted" strategy).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use super::distance::{kernels, Kernels};
use super::params::{IndexParams, Metric};
use super::store::{with_distance, Query, VectorStore};
use super::visited::Visited;
use crate::growth::push_by_eighths;
use crate::rng::SplitMix;

mod scan;
mod simd;

pub use scan::{scan_limit, ScanOrder, SCAN_FLOOR, SCAN_SLOTS_PER_EF};

/// No node (empty graph).
pub(crate) const NONE: u32 = u32::MAX;

/// A node with its distance to the current query, ordered by distance.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cand {
    pub d: f32,
    pub id: u32,
}
impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.d.total_cmp(&o.d) == Ordering::Equal && self.id == o.id
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.id.cmp(&o.id))
    }
}
impl Cand {
    /// A 64-bit key that sorts as `Cand` does (see [`scan::key`]).
    #[inline(always)]
    pub(crate) fn key(self) -> u64 {
        scan::key(self.d, self.id)
    }

    #[inline(always)]
    pub(crate) fn of_key(key: u64) -> Cand {
        Cand {
            d: scan::distance_of(key),
            id: key as u32,
        }
    }
}

/// A search hit: slot and user-facing score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub slot: u32,
    pub score: f32,
}

/// What a graph walk did: the nodes it scored (each a distance
/// computation) and whether it stopped at its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    pub visits: usize,
    pub cut: bool,
}

pub struct Hnsw {
    pub(crate) params: IndexParams,
    pub(crate) store: VectorStore,
    /// Layers 1..=level of the nodes above layer 0 (about one in M):
    /// `level` blocks of `[count, ids...]`, stride `1 + M`, by slot. A
    /// slot keeps its level when reused, so its block never changes size.
    pub(crate) upper: HashMap<u32, Box<[u32]>>,
    pub(crate) levels: Vec<u8>,
    pub(crate) deleted: Vec<bool>,
    /// Tombstoned slots waiting for reuse.
    pub(crate) free: Vec<u32>,
    pub(crate) entry: u32,
    pub(crate) max_level: usize,
    /// Draws node levels; saved with the graph (deterministic replicas).
    pub(crate) rng: SplitMix,
    pub(crate) live: usize,
}

impl Hnsw {
    /// An empty index. `params` must already be validated.
    pub fn new(params: IndexParams) -> Hnsw {
        Hnsw::with_kernels(params, kernels())
    }

    pub(crate) fn with_kernels(params: IndexParams, kernels: Kernels) -> Hnsw {
        Hnsw {
            store: VectorStore::new(
                params.dim,
                params.metric,
                params.quant,
                params.m * 2,
                kernels,
            ),
            params,
            upper: HashMap::new(),
            levels: Vec::new(),
            deleted: Vec::new(),
            free: Vec::new(),
            entry: NONE,
            max_level: 0,
            rng: SplitMix::new(0x9E37_79B9_7F4A_7C15),
            live: 0,
        }
    }

    pub fn params(&self) -> &IndexParams {
        &self.params
    }
    /// Items that can be returned.
    pub fn len(&self) -> usize {
        self.live
    }
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    /// Slots allocated (live + tombstoned).
    pub fn slots(&self) -> usize {
        self.levels.len()
    }
    /// Tombstoned slots whose memory waits for reuse by the next inserts.
    pub fn deleted_pending(&self) -> usize {
        self.slots() - self.live
    }
    pub fn is_live(&self, slot: u32) -> bool {
        (slot as usize) < self.deleted.len() && !self.deleted[slot as usize]
    }

    /// Bytes of heap held by the index.
    pub fn memory_bytes(&self) -> usize {
        self.store.heap_bytes()
            + self.upper.capacity() * (std::mem::size_of::<(u32, Box<[u32]>)>() + 1)
            + self
                .upper
                .values()
                .map(|u| (u.len() * 4 + 8).next_multiple_of(16))
                .sum::<usize>()
            + self.levels.capacity()
            + self.deleted.capacity()
            + self.free.capacity() * 4
    }

    fn m0(&self) -> usize {
        self.params.m * 2
    }

    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            self.m0()
        } else {
            self.params.m
        }
    }

    /// Normalizes for COSINE; other metrics use the vector as given.
    pub fn prepare(&self, v: &[f32]) -> Vec<f32> {
        let mut out = v.to_vec();
        if self.params.metric == Metric::Cosine {
            let n: f32 = out.iter().map(|x| x * x).sum::<f32>().sqrt();
            if n > 0.0 {
                out.iter_mut().for_each(|x| *x /= n);
            }
        }
        out
    }

    /// The stored vector of `slot` (normalized for COSINE, dequantized for Q8).
    pub fn vector(&self, slot: u32) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.params.dim);
        self.store.read_into(slot as usize, &mut out);
        out
    }

    /// The similarity of a prepared vector to `slot` as retrieval reports
    /// it, higher is better: the dot product for IP and COSINE, the negative
    /// Euclidean distance for L2.
    pub fn similarity(&self, v: &[f32], slot: u32) -> f32 {
        let d = self.store.distance(&Query::new(v), slot);
        match self.params.metric {
            Metric::L2 => -self.store.score(d),
            _ => self.store.score(d),
        }
    }

    #[inline(always)]
    pub(crate) fn links(&self, slot: u32, level: usize) -> &[u32] {
        if level == 0 {
            self.store.links0(slot)
        } else {
            let base = (level - 1) * (1 + self.params.m);
            let Some(u) = self.upper.get(&slot) else {
                return &[];
            };
            let n = u[base] as usize;
            &u[base + 1..base + 1 + n]
        }
    }

    /// Hints the CPU to load the link list of `slot` (the next candidate).
    #[inline(always)]
    fn prefetch_links(&self, slot: u32, level: usize) {
        if level == 0 {
            self.store.prefetch_links(slot);
        }
    }

    fn set_links(&mut self, slot: u32, level: usize, ids: &[u32]) {
        if level == 0 {
            self.store.set_links0(slot, ids);
            return;
        }
        let cap = self.max_links(level);
        let ids = &ids[..ids.len().min(cap)];
        let block = {
            let base = (level - 1) * (1 + self.params.m);
            match self.upper.get_mut(&slot) {
                Some(u) => &mut u[base..base + 1 + cap],
                None => return,
            }
        };
        block[0] = ids.len() as u32;
        block[1..1 + ids.len()].copy_from_slice(ids);
    }

    fn random_level(&mut self) -> usize {
        let u = self.rng.uniform_open();
        let mult = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * mult) as usize).min(32)
    }

    /// Greedy walk on one upper layer towards the query.
    #[inline(always)]
    fn greedy<D: Fn(u32) -> f32>(&self, dist: &D, mut cur: Cand, level: usize) -> Cand {
        loop {
            let mut changed = false;
            for &n in self.links(cur.id, level) {
                let d = dist(n);
                if d < cur.d {
                    cur = Cand { d, id: n };
                    changed = true;
                }
            }
            if !changed {
                return cur;
            }
        }
    }

    /// Best-first search of one layer. Returns up to `ef` accepted nodes, any
    /// order. Rejected nodes are walked through but never returned.
    #[inline(always)]
    fn search_layer<D: Fn(u32) -> f32, F: Fn(u32) -> bool>(
        &self,
        dist: &D,
        entry: Cand,
        ef: usize,
        level: usize,
        accept: F,
        budget: usize,
    ) -> (Vec<Cand>, WalkStats) {
        let mut visited = Visited::take(self.slots());
        let mut visits = 0usize;
        let mut cut = false;
        // Both queues hold 64-bit keys (distance bits in total order,
        // then slot: `Cand`'s order), so each heap step is one integer
        // compare instead of a float compare and a tie-break.
        let mut top: BinaryHeap<u64> = BinaryHeap::with_capacity(ef + 1);
        let mut cands: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(ef * 2);
        visited.insert(entry.id);
        let mut bound = f32::INFINITY;
        if accept(entry.id) {
            top.push(entry.key());
            bound = entry.d;
        }
        let mut top_full = top.len() >= ef;
        cands.push(Reverse(entry.key()));
        while let Some(Reverse(c)) = cands.pop() {
            let c = Cand::of_key(c);
            if c.d > bound && top_full {
                break;
            }
            if visits > budget {
                cut = true;
                break;
            }
            if let Some(&Reverse(next)) = cands.peek() {
                self.prefetch_links(next as u32, level);
            }
            // Gather the unvisited neighbours first and prefetch all of
            // their vectors, so the memory loads overlap instead of
            // arriving one distance at a time.
            let mut fresh = [0u32; 256];
            let mut nfresh = 0;
            for &n in self.links(c.id, level) {
                if visited.insert(n) && nfresh < fresh.len() {
                    self.store.prefetch(n);
                    fresh[nfresh] = n;
                    nfresh += 1;
                }
            }
            visits += nfresh;
            for &n in &fresh[..nfresh] {
                let d = dist(n);
                if !top_full || d < bound {
                    let key = Cand { d, id: n }.key();
                    cands.push(Reverse(key));
                    if accept(n) {
                        if !top_full {
                            top.push(key);
                        } else if let Some(mut worst) = top.peek_mut() {
                            // Full, and `d` beats the worst (the
                            // condition above): it takes the worst's
                            // place, one sift instead of a push and a pop.
                            *worst = key;
                        }
                        top_full = top.len() >= ef;
                        if let Some(&t) = top.peek() {
                            bound = scan::distance_of(t);
                        }
                    }
                }
            }
        }
        let best = top
            .into_sorted_vec()
            .into_iter()
            .map(Cand::of_key)
            .collect();
        (best, WalkStats { visits, cut })
    }

    /// hnswlib's neighbour-selection heuristic: keep a candidate only if it is
    /// closer to the base than to every neighbour already kept.
    fn select_neighbors(&self, mut cands: Vec<Cand>, m: usize, scratch: &mut Vec<f32>) -> Vec<u32> {
        cands.sort_unstable();
        if cands.len() <= m {
            return cands.into_iter().map(|c| c.id).collect();
        }
        let mut kept: Vec<Cand> = Vec::with_capacity(m);
        for c in cands {
            if kept.len() >= m {
                break;
            }
            self.store.read_into(c.id as usize, scratch);
            let cq = Query::new(scratch);
            // hnswlib's rule: drop `c` only when a kept neighbour is strictly
            // closer to it than the new node is. With `>=` a tie keeps it:
            // duplicates (an item re-added next to its own tombstone, two
            // items with one vector) would otherwise prune every other
            // candidate and leave the pair linked only to each other.
            if kept.iter().all(|k| self.store.distance(&cq, k.id) >= c.d) {
                kept.push(c);
            }
        }
        kept.into_iter().map(|c| c.id).collect()
    }

    /// Entry point and its distance, walked down to `level + 1`.
    #[inline(always)]
    fn descend<D: Fn(u32) -> f32>(&self, dist: &D, to_level: usize) -> Cand {
        let mut cur = Cand {
            d: dist(self.entry),
            id: self.entry,
        };
        let mut l = self.max_level;
        while l > to_level {
            cur = self.greedy(dist, cur, l);
            l -= 1;
        }
        cur
    }

    /// Adds `slot` to `n`'s links at `level`, pruning with the heuristic when full.
    fn link_back(&mut self, n: u32, slot: u32, level: usize, scratch: &mut Vec<f32>) {
        let cap = self.max_links(level);
        let current = self.links(n, level).to_vec();
        if current.contains(&slot) {
            return;
        }
        if current.len() < cap {
            let mut ids = current;
            ids.push(slot);
            self.set_links(n, level, &ids);
            return;
        }
        self.store.read_into(n as usize, scratch);
        let nq_vec = scratch.clone();
        let nq = Query::new(&nq_vec);
        let cands: Vec<Cand> = current
            .iter()
            .chain(std::iter::once(&slot))
            .map(|&id| Cand {
                d: self.store.distance(&nq, id),
                id,
            })
            .collect();
        let kept = self.select_neighbors(cands, cap, scratch);
        self.set_links(n, level, &kept);
    }

    /// Inserts a prepared vector (see [`Hnsw::prepare`]); returns its slot.
    pub fn insert(&mut self, v: &[f32]) -> u32 {
        debug_assert_eq!(v.len(), self.params.dim);
        let mut scratch = Vec::with_capacity(self.params.dim);
        let (slot, level) = match self.free.pop() {
            Some(slot) => {
                self.unlink(slot, &mut scratch);
                (slot, self.levels[slot as usize] as usize)
            }
            None => {
                let slot = self.levels.len() as u32;
                let level = self.random_level();
                self.store.push_empty();
                if level > 0 {
                    let words = level * (1 + self.params.m);
                    self.upper.insert(slot, vec![0; words].into_boxed_slice());
                }
                push_by_eighths(&mut self.levels, level as u8);
                push_by_eighths(&mut self.deleted, false);
                (slot, level)
            }
        };
        self.store.write(slot as usize, v);
        self.deleted[slot as usize] = false;
        self.live += 1;

        if self.entry == NONE {
            self.entry = slot;
            self.max_level = level;
            return slot;
        }
        let q = Query::new(v);
        let not_self = |n: u32| n != slot;
        // The entry is never in the free list (see `remove`), so it is not `slot`.
        let top = level.min(self.max_level);
        let per_level: Vec<Vec<Cand>> = with_distance!(self.store, &q, |dist| {
            let mut cur = self.descend(&dist, level);
            let mut out = Vec::with_capacity(top + 1);
            for l in (0..=top).rev() {
                let (found, _) = self.search_layer(
                    &dist,
                    cur,
                    self.params.ef_construction,
                    l,
                    not_self,
                    usize::MAX,
                );
                if let Some(best) = found.first() {
                    cur = *best;
                }
                out.push(found);
            }
            out
        });
        // Levels were searched top-down, but linking may need the graph as it
        // is after the higher levels: link level by level in the same order.
        for (i, cands) in per_level.into_iter().enumerate() {
            let l = top - i;
            let neighbors = self.select_neighbors(cands, self.params.m, &mut scratch);
            self.set_links(slot, l, &neighbors);
            for n in neighbors {
                self.link_back(n, slot, l, &mut scratch);
            }
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = slot;
        }
        slot
    }

    /// Marks `slot` deleted: never returned again, reused by a later insert.
    pub fn remove(&mut self, slot: u32) -> bool {
        if !self.is_live(slot) {
            return false;
        }
        self.deleted[slot as usize] = true;
        self.live -= 1;
        if slot == self.entry {
            // Searches start at the entry point. A deleted one would never be
            // re-linked (its slot is never reused), and its links would go
            // stale as their targets are reused, so the walk moves to the
            // highest live node (the lowest slot among equals, so replicas
            // agree). With no live node left, the tombstone stays the entry.
            match self.highest_live() {
                Some(next) => {
                    self.entry = next;
                    self.max_level = self.levels[next as usize] as usize;
                }
                None => return true,
            }
        }
        self.free.push(slot);
        true
    }

    /// The live slot with the highest level, lowest slot first among equals.
    fn highest_live(&self) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for (slot, (&level, &deleted)) in self.levels.iter().zip(&self.deleted).enumerate() {
            if !deleted && best.is_none_or(|(l, _)| level > l) {
                best = Some((level, slot as u32));
            }
        }
        best.map(|(_, slot)| slot)
    }

    /// Before a tombstoned slot takes a new vector: drop the old node's links
    /// and give each former neighbour that linked back a new neighbour list.
    ///
    /// Three things keep the graph as good as a fresh build under churn
    /// (`recsys bench churn`, 20,000 items, three rounds of re-adding 30%:
    /// recall@10 fell from 0.869 to 0.820 with one-hop re-linking alone):
    /// - candidates come from two hops around the neighbour (its other links,
    ///   the old node's links, and all of their links), as hnswlib's
    ///   `updatePoint` does; one hop is too few to choose well from;
    /// - the diversity heuristic keeps few of a large pool, so the list is
    ///   topped up with the nearest remaining candidates to the length it had;
    /// - every newly chosen neighbour links back (a fresh insert does the
    ///   same), so repaired nodes are reachable, not only reaching.
    ///
    /// Tombstones are left out: a repaired list never points at a slot that
    /// may be reused for another vector.
    fn unlink(&mut self, slot: u32, scratch: &mut Vec<f32>) {
        let level = self.levels[slot as usize] as usize;
        let mut pool: Vec<u32> = Vec::new();
        for l in 0..=level {
            let old: Vec<u32> = self.links(slot, l).to_vec();
            for &n in &old {
                if n == slot || !self.links(n, l).contains(&slot) {
                    continue;
                }
                let before: Vec<u32> = self.links(n, l).to_vec();
                pool.clear();
                pool.extend(before.iter().chain(&old).copied());
                for i in 0..pool.len() {
                    let hop = pool[i];
                    pool.extend_from_slice(self.links(hop, l));
                }
                pool.sort_unstable();
                pool.dedup();
                let deleted = &self.deleted;
                pool.retain(|&x| x != n && x != slot && !deleted[x as usize]);

                self.store.read_into(n as usize, scratch);
                let nv = scratch.clone();
                let nq = Query::new(&nv);
                let mut cands: Vec<Cand> = pool
                    .iter()
                    .map(|&id| Cand {
                        d: self.store.distance(&nq, id),
                        id,
                    })
                    .collect();
                cands.sort_unstable();
                let mut kept = self.select_neighbors(cands.clone(), self.max_links(l), scratch);
                for c in &cands {
                    if kept.len() >= before.len() {
                        break;
                    }
                    if !kept.contains(&c.id) {
                        kept.push(c.id);
                    }
                }
                self.set_links(n, l, &kept);
                for &k in kept.iter().filter(|k| !before.contains(k)) {
                    self.link_back(k, n, l, scratch);
                }
            }
            self.set_links(slot, l, &[]);
        }
    }

    /// The `k` nearest live slots to a prepared query accepted by `accept`,
    /// best first. `ef` is raised to `k` when smaller.
    pub fn search<F: Fn(u32) -> bool>(
        &self,
        v: &[f32],
        k: usize,
        ef: usize,
        accept: F,
    ) -> Vec<Hit> {
        self.search_within(v, k, ef, accept, usize::MAX).0
    }

    /// Like [`Hnsw::search`], but gives up after visiting about `budget`
    /// nodes; the stats say how many it visited and whether it gave up (a selective filter may then be
    /// better served by [`Hnsw::scan`]). Small indexes (see
    /// [`Hnsw::prefers_scan`]) are scanned, exactly, distance first
    /// ([`ScanOrder::DistanceFirst`]: callers pass broad admission).
    pub fn search_within<F: Fn(u32) -> bool>(
        &self,
        v: &[f32],
        k: usize,
        ef: usize,
        accept: F,
        budget: usize,
    ) -> (Vec<Hit>, WalkStats) {
        let ef = ef.max(k);
        if self.prefers_scan(ef) {
            let scanned = self.scan_in_order(v, k, accept, ScanOrder::DistanceFirst);
            return (scanned, WalkStats::default());
        }
        self.walk(v, k, ef, accept, budget)
    }

    /// The graph walk behind [`Hnsw::search_within`], whatever the size.
    pub fn walk<F: Fn(u32) -> bool>(
        &self,
        v: &[f32],
        k: usize,
        ef: usize,
        accept: F,
        budget: usize,
    ) -> (Vec<Hit>, WalkStats) {
        if self.live == 0 || k == 0 {
            return (Vec::new(), WalkStats::default());
        }
        let q = Query::new(v);
        let deleted = &self.deleted;
        let any_deleted = self.live < self.slots();
        let ef = ef.max(k);
        // Evaluates `$body` with `$acc` bound to the acceptance test: the
        // caller's, plus "not a tombstone" only when tombstones exist (the
        // common case skips the extra lookup per candidate).
        macro_rules! with_accept {
            (|$acc:ident| $body:expr) => {
                if any_deleted {
                    let $acc = |s: u32| !deleted[s as usize] && accept(s);
                    $body
                } else {
                    let $acc = &accept;
                    $body
                }
            };
        }
        let l2 = self.params.metric == Metric::L2;
        let kernels = self.store.kernels;
        let (found, stats) = match () {
            // SAFETY (both arms): the flag is only set after run-time detection.
            #[cfg(target_arch = "x86_64")]
            () if kernels.avx512 => {
                with_accept!(|acc| unsafe { self.search_avx512(&q, l2, ef, acc, budget) })
            }
            #[cfg(target_arch = "x86_64")]
            () if kernels.avx2 => {
                with_accept!(|acc| unsafe { self.search_avx2(&q, l2, ef, acc, budget) })
            }
            _ => with_distance!(self.store, &q, |dist| {
                let entry = self.descend(&dist, 0);
                with_accept!(|acc| self.search_layer(&dist, entry, ef, 0, acc, budget))
            }),
        };
        (self.to_hits(found, k), stats)
    }

    fn to_hits(&self, mut best: Vec<Cand>, k: usize) -> Vec<Hit> {
        best.truncate(k);
        best.into_iter()
            .map(|c| Hit {
                slot: c.id,
                score: self.store.score(c.d),
            })
            .collect()
    }
}
