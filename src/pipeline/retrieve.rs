//! Stage 2, retrieval with admission: the HNSW top-CANDIDATES for the user
//! vector (or the most popular items at cold start), with EXCLUDE_SEEN and
//! WHERE applied *inside* the graph walk, so a selective filter still fills
//! the list when enough matching items exist. A filtered walk may cost what
//! a scan of the admitted items would; past that it gives up and scans
//! (so it never costs much more than twice the scan), and a typed filter
//! whose sampled pass rate predicts that goes to the scan up front. Catalogs small enough for a scan to be as fast as a walk
//! ([`crate::index::Hnsw::prefers_scan`]) are always scanned, exactly.
//!
//! Scores leave this stage "higher is better": an L2 distance becomes its
//! negative, so ranking, sampling and plugins treat all metrics alike.
//! EXCLUDE's ids join the seen set's admission test; MIN_SCORE drops the
//! candidates scored below it (a similarity floor: fewer than K may come
//! back).

use std::cell::Cell;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::index::{Metric, ScanOrder};
use std::collections::HashMap;

use crate::pipeline::examples::{best_score, Plan};
use crate::pipeline::explain::Explain;
use crate::pipeline::filter::{Filter, FilterEval, EVAL_BUDGET};
use crate::pipeline::request::{Request, UserInput};
use crate::pipeline::sources::{merge, Fallback, Source, SIMILAR_SEEDS};
use crate::rng::SplitMix;
use crate::user::SeenSet;

/// Live slots a typed WHERE is tried on to estimate its pass rate (rates
/// near 1% decide between a walk and a scan).
const SELECTIVITY_SAMPLE: usize = 512;
/// The smaller sample that decides a small catalog's scan order (a rate
/// near [`DISTANCE_FIRST_PASS_RATE`], within about 3%).
const SCAN_ORDER_SAMPLE: usize = 128;
/// Seed of the sample's positions (fixed: the same WHERE on the same
/// catalog always takes the same path).
const SELECTIVITY_SEED: u64 = 0x5e1e_c7ed;
/// Pass rate from which a scan asks a typed WHERE only about the rows
/// that would enter the top ([`ScanOrder::DistanceFirst`]).
const DISTANCE_FIRST_PASS_RATE: f64 = 0.1;
/// Nodes a walk visits per unit of EF without a filter, about.
const WALK_VISITS_PER_EF: usize = 10;
/// What one visit of a walk (a distance at a random place in memory, heap
/// work: about 57 ns) costs next to a scan: as much as checking this many
/// slots' admission in memory order (about 2.8 ns each)...
const VISIT_IN_SCAN_SLOTS: usize = 20;
/// ... or as scoring this many admitted slots in memory order (about 30 ns
/// each). Measured by `recsys bench filters` (100,000 x 64-d, one thread:
/// an unfiltered walk 141 µs for 2,455 visits, a scan admitting nothing
/// 276 µs, one admitting 5% 408 µs).
const VISIT_IN_SCAN_SCORES: usize = 2;

/// What a scan of `slots` slots costs, in walk visits, when a share
/// `pass_rate` of them is admitted and scored.
fn scan_cost_in_visits(slots: usize, pass_rate: f64) -> usize {
    let scored = (pass_rate.clamp(0.0, 1.0) * slots as f64) as usize;
    slots / VISIT_IN_SCAN_SLOTS + scored / VISIT_IN_SCAN_SCORES
}

/// Visits a filtered walk may make before it gives up and scans the
/// admitted items: what that scan costs (so a walk that has to give up
/// costs at most about twice the scan, the ski-rental bound), and at least
/// what an unfiltered walk needs (10 x EF).
fn walk_budget(slots: usize, ef: usize, pass_rate: f64) -> usize {
    scan_cost_in_visits(slots, pass_rate).max(ef * WALK_VISITS_PER_EF)
}

/// A request's excluded items by seen hash. In front, a bitmap of 64 bits
/// per hash: nearly every candidate that is not excluded is answered by
/// one bit (about 1.5% of them get past it). Behind it, an open-addressing
/// table a quarter full (half past 16,384 hashes), whose buckets come from
/// multiplying the hash with a per-process random odd number (seen hashes
/// are FNV-1a of ids that clients choose, so fixed buckets could be
/// crowded on purpose); a probe gives up after [`MAX_PROBES`] buckets for
/// the binary search of the sorted hashes: a hard bound per candidate.
struct Exclusions {
    hashes: SeenSet,
    bits: Vec<u64>,
    bit_mask: u64,
    /// Hashes, 0 for an empty bucket (a hash of 0 is `zero`).
    table: Vec<u64>,
    /// [`BUCKET_MULTIPLIER`], read once.
    multiplier: u64,
    shift: u32,
    zero: bool,
}

/// Buckets one lookup probes before it searches the sorted hashes.
const MAX_PROBES: usize = 16;

/// The odd multiplier that spreads hashes over buckets, random per process.
static BUCKET_MULTIPLIER: once_cell::sync::Lazy<u64> = once_cell::sync::Lazy::new(|| {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1
});

impl Exclusions {
    fn new(hashes: SeenSet) -> Exclusions {
        // A quarter full; half for the rare huge sets (over 16,384
        // hashes), so the table stays under 4 MB.
        let per_hash = if hashes.len() <= 1 << 14 { 4 } else { 2 };
        let buckets = (hashes.len() * per_hash).next_power_of_two().max(16);
        let nbits = (hashes.len() * 64).next_power_of_two().clamp(64, 1 << 23);
        let mut set = Exclusions {
            bits: vec![0; nbits / 64],
            bit_mask: nbits as u64 - 1,
            table: vec![0; buckets],
            multiplier: *BUCKET_MULTIPLIER,
            shift: 64 - buckets.trailing_zeros(),
            zero: false,
            hashes: SeenSet::default(),
        };
        let mask = buckets - 1;
        for h in hashes.iter() {
            let b = h & set.bit_mask;
            set.bits[(b / 64) as usize] |= 1 << (b % 64);
            if h == 0 {
                set.zero = true;
                continue;
            }
            // Within the buckets a lookup probes, or not at all: the
            // lookup then falls back to the sorted hashes (a crowded run
            // costs no more to build than to read).
            let mut i = set.bucket(h);
            for _ in 0..MAX_PROBES {
                if set.table[i] == 0 {
                    set.table[i] = h;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        set.hashes = hashes;
        set
    }

    #[inline(always)]
    fn bucket(&self, hash: u64) -> usize {
        (hash.wrapping_mul(self.multiplier) >> self.shift) as usize
    }

    #[inline]
    fn contains(&self, hash: u64) -> bool {
        let b = hash & self.bit_mask;
        if self.bits[(b / 64) as usize] & (1 << (b % 64)) == 0 {
            return false;
        }
        self.in_table(hash)
    }

    fn in_table(&self, hash: u64) -> bool {
        if hash == 0 {
            return self.zero;
        }
        let mask = self.table.len() - 1;
        let mut i = self.bucket(hash);
        for _ in 0..MAX_PROBES {
            match self.table[i] {
                0 => return false,
                h if h == hash => return true,
                _ => i = (i + 1) & mask,
            }
        }
        self.hashes.contains_hash(hash)
    }
}

/// Decides which items may be candidates (the seen items and WHERE),
/// counting what it evaluated and rejected for EXPLAIN.
struct Admission<'a> {
    /// With EXCLUDE_SEEN: the user's `seen` set with their `recent` ids
    /// added, checked against each candidate's seen hash, which the
    /// catalog keeps per slot (no id is hashed per candidate).
    exclude: Option<Exclusions>,
    catalog: &'a Catalog,
    filter: Option<FilterEval<'a>>,
    evaluated: Cell<usize>,
    rejected: Cell<usize>,
}

impl<'a> Admission<'a> {
    fn new(
        catalog: &'a Catalog,
        user: &'a UserInput,
        req: &Request,
        filter: Option<&'a Filter>,
    ) -> Self {
        // EXCLUDE's ids and the examples are never candidates.
        let listed = req
            .exclude
            .iter()
            .map(String::as_str)
            .chain(req.examples.ids());
        let exclude = if req.exclude_seen {
            let recent = user.recent.iter().map(String::as_str);
            Some(user.seen.with_ids(recent.chain(listed)))
        } else {
            Some(SeenSet::default().with_ids(listed))
        };
        let exclude = exclude.filter(|set| !set.is_empty()).map(Exclusions::new);
        Admission {
            exclude,
            catalog,
            filter: filter.map(|f| FilterEval::new(f, catalog.columns())),
            evaluated: Cell::new(0),
            rejected: Cell::new(0),
        }
    }

    /// Whether anything is filtered at all.
    fn is_active(&self) -> bool {
        self.filter.is_some() || self.exclude.is_some()
    }

    /// Whether WHERE ran out of its evaluation budget.
    fn exhausted(&self) -> bool {
        self.filter.as_ref().is_some_and(FilterEval::exhausted)
    }

    #[inline]
    fn is_seen(&self, slot: u32) -> bool {
        self.exclude
            .as_ref()
            .is_some_and(|e| e.contains(self.catalog.seen_hash_of(slot)))
    }

    /// The share of items a typed WHERE admits, estimated on
    /// `sample` pseudo-random live slots (`None` without a
    /// WHERE or for an interpreted one: the walk finds out). One pass is
    /// counted when none was seen: the rate is below 1 / sample.
    fn pass_rate(&self, slots: usize, sample: usize) -> Option<f64> {
        let filter = self.filter.as_ref().filter(|f| f.is_typed())?;
        let index = self.catalog.index();
        // Pseudo-random positions, the same every time: evenly spaced ones
        // alias with periodic layouts (every 10th item of a tag, a step
        // of 195 sees only two of the ten tags).
        let mut rng = SplitMix::new(SELECTIVITY_SEED);
        let (mut live, mut passed) = (0usize, 0usize);
        for _ in 0..sample.min(slots) {
            let slot = rng.below(slots as u64) as u32;
            if index.is_live(slot) {
                live += 1;
                passed += filter.matches(slot) as usize;
            }
        }
        (live > 0).then(|| passed.max(1) as f64 / live as f64)
    }

    /// How a scan should ask: distance first when most items pass (no
    /// WHERE, or a typed one estimated to pass [`DISTANCE_FIRST_PASS_RATE`]
    /// or more), so admission is asked about the few rows that would enter
    /// the top; admission first otherwise.
    fn scan_order(&self, pass_rate: impl FnOnce() -> Option<f64>) -> ScanOrder {
        let broad = match &self.filter {
            None => true,
            Some(_) => pass_rate().is_some_and(|r| r >= DISTANCE_FIRST_PASS_RATE),
        };
        match broad {
            true => ScanOrder::DistanceFirst,
            false => ScanOrder::AdmitFirst,
        }
    }

    #[inline]
    fn accepts(&self, slot: u32) -> bool {
        let ok = !self.is_seen(slot)
            && match &self.filter {
                Some(f) => {
                    self.evaluated.set(self.evaluated.get() + 1);
                    f.matches(slot)
                }
                None => true,
            };
        if !ok {
            self.rejected.set(self.rejected.get() + 1);
        }
        ok
    }
}

/// The `n` admitted items nearest `v` (slot, similarity: higher is
/// better), by a scan or a walk as the catalog's size and the filter's
/// estimated pass rate say, and how (EXPLAIN's `filter_mode`).
fn search_admitted(
    catalog: &Catalog,
    v: &[f32],
    n: usize,
    ef: usize,
    admission: &Admission,
    ex: &mut Explain,
) -> (Vec<(u32, f32)>, &'static str) {
    let index = catalog.index();
    let accept = |slot: u32| admission.accepts(slot);
    let mut mode = "in-graph";
    let hits = if index.prefers_scan(ef) {
        mode = "scan (small catalog)";
        let order = admission.scan_order(|| admission.pass_rate(index.slots(), SCAN_ORDER_SAMPLE));
        index.scan_in_order(v, n, accept, order)
    } else {
        let pass_rate = admission.pass_rate(index.slots(), SELECTIVITY_SAMPLE);
        let scan_cost = scan_cost_in_visits(index.slots(), pass_rate.unwrap_or(1.0));
        // A walk needs about 10 x EF visits for EF admitted items when
        // they are spread evenly; predicted at over twice the scan (a
        // margin: a walk that might just make it is cheaper than a scan),
        // the scan runs up front.
        let predicted_walk = pass_rate.map(|r| (ef * WALK_VISITS_PER_EF) as f64 / r);
        if predicted_walk.is_some_and(|w| w > 2.0 * scan_cost as f64) {
            mode = "scan (selective filter, estimated)";
            index.scan(v, n, accept)
        } else {
            let budget = if admission.is_active() {
                walk_budget(index.slots(), ef, pass_rate.unwrap_or(1.0))
            } else {
                usize::MAX
            };
            let (hits, walked) = index.walk(v, n, ef, accept, budget);
            ex.walk_visits += walked.visits;
            // A walk stopped at its budget may have missed closer items:
            // the scan it paid for answers exactly.
            if walked.cut {
                mode = "in-graph, then scan (selective filter)";
                index.scan(v, n, accept)
            } else {
                hits
            }
        }
    };
    let l2 = catalog.params().metric == Metric::L2;
    let scored = hits
        .into_iter()
        .map(|h| (h.slot, if l2 { -h.score } else { h.score }))
        .collect();
    (scored, mode)
}

/// One request's retrieval: the admission every search shares, and how
/// the searches ran (EXPLAIN's `filter_mode`).
struct Retrieval<'a> {
    catalog: &'a Catalog,
    admission: Admission<'a>,
    /// EF as asked (or the catalog's EF_SEARCH), before raising it to the
    /// number of results a search wants.
    ef: usize,
    k: usize,
    mode: &'static str,
}

impl Retrieval<'_> {
    fn search(&mut self, v: &[f32], n: usize, ef: usize, ex: &mut Explain) -> Vec<(u32, f32)> {
        let (hits, how) = search_admitted(self.catalog, v, n, ef.max(n), &self.admission, ex);
        if self.admission.is_active() {
            self.mode = how;
        }
        hits
    }

    /// The `n` best candidates for the plan (the user vector and the
    /// examples); `None` when there is no vector (cold start).
    fn by_plan(&mut self, plan: &Plan, n: usize, ex: &mut Explain) -> Option<Vec<(u32, f32)>> {
        match plan {
            Plan::Single(Some(v)) => Some(self.search(v, n, self.ef, ex)),
            Plan::BestScore { queries, negatives } => {
                // Each query searches for its share of the candidates with
                // its share of EF: together about the work of one search.
                let share = n.div_ceil(queries.len()).max(self.k);
                let ef_each = self.ef.max(n).div_ceil(queries.len()).max(share);
                let mut slots: Vec<u32> = Vec::new();
                for (q, _) in queries {
                    slots.extend(self.search(q, share, ef_each, ex).iter().map(|&(s, _)| s));
                }
                slots.sort_unstable();
                slots.dedup();
                let catalog = self.catalog;
                let mut best: Vec<(u32, f32)> = slots
                    .iter()
                    .filter_map(|&s| best_score(catalog, s, queries, negatives).map(|x| (s, x)))
                    .collect();
                ex.nearer_negative += slots.len() - best.len();
                best.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                best.truncate(n);
                Some(best)
            }
            Plan::Single(None) => None,
        }
    }

    /// The `n` most popular admitted items, scored by popularity now.
    fn popular(&mut self, n: usize, now_ms: i64) -> Vec<(u32, f32)> {
        if self.admission.is_active() {
            self.mode = "scan";
        }
        let (catalog, admission) = (self.catalog, &self.admission);
        catalog
            .most_popular(n, |slot| admission.accepts(slot))
            .into_iter()
            .map(|s| (s, catalog.popularity_at(s, now_ms) as f32))
            .collect()
    }

    /// The `n` admitted items most similar to the user's newest
    /// [`SIMILAR_SEEDS`] recent items (never those items), each scored by
    /// its best similarity to one of them.
    fn similar(&mut self, user: &UserInput, n: usize, ex: &mut Explain) -> Vec<(u32, f32)> {
        let catalog = self.catalog;
        let seeds: Vec<u32> = user
            .recent
            .iter()
            .filter_map(|id| catalog.slot_of(id))
            .take(SIMILAR_SEEDS)
            .collect();
        if seeds.is_empty() {
            return Vec::new();
        }
        let each = n.div_ceil(seeds.len()).max(self.k);
        let ef_each = self.ef.max(n).div_ceil(seeds.len()).max(each);
        let mut best: HashMap<u32, f32> = HashMap::new();
        for &seed in &seeds {
            let q = catalog.index().vector(seed);
            // One more: the seed itself may come back.
            for (slot, score) in self.search(&q, each + 1, ef_each, ex) {
                if !seeds.contains(&slot) {
                    let b = best.entry(slot).or_insert(f32::NEG_INFINITY);
                    *b = b.max(score);
                }
            }
        }
        let mut out: Vec<(u32, f32)> = best.into_iter().collect();
        out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(n);
        out
    }
}

/// MIN_SCORE on a list scored by similarity, counting what it drops.
fn apply_floor(req: &Request, mut list: Vec<(u32, f32)>, ex: &mut Explain) -> Vec<(u32, f32)> {
    if let Some(floor) = req.min_score {
        let before = list.len();
        list.retain(|&(_, s)| s >= floor);
        ex.below_min_score += before - list.len();
    }
    list
}

/// The admitted candidates (slot, score), at most `req.candidates`, for
/// the retrieval plan (the user vector, steered by examples), or for the
/// request's SOURCES merged.
pub fn retrieve(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    plan: &Plan,
    ex: &mut Explain,
) -> Result<Vec<(u32, f32)>> {
    let filter = req.compiled_filter()?;
    let admission = Admission::new(catalog, user, req, filter.as_deref());
    let mode = if admission.is_active() {
        "in-graph"
    } else {
        "none"
    };
    let mut r = Retrieval {
        catalog,
        admission,
        ef: req.ef.unwrap_or(catalog.params().ef_search),
        k: req.k,
        mode,
    };
    let scored: Vec<(u32, f32)> = match &req.sources {
        // One search and nothing after it that uses more than K: K
        // results of the search CANDIDATES would have run.
        None if matches!(plan, Plan::Single(Some(_))) && !req.uses_all_candidates() => {
            r.ef = r.ef.max(req.candidates);
            let list = r.by_plan(plan, req.k, ex).unwrap_or_default();
            apply_floor(req, list, ex)
        }
        None => match r.by_plan(plan, req.candidates, ex) {
            // MIN_SCORE: a similarity floor (not for cold start's popularity).
            Some(list) => apply_floor(req, list, ex),
            None => r.popular(req.candidates, user.now_ms),
        },
        Some(sources) => {
            let mut lists = Vec::with_capacity(sources.list.len());
            for &(source, share) in &sources.list {
                let list = match source {
                    Source::User => r.by_plan(plan, share, ex).unwrap_or_default(),
                    Source::Similar => r.similar(user, share, ex),
                    Source::Popular | Source::Fallback => r.popular(share, user.now_ms),
                };
                let list = match source {
                    Source::User | Source::Similar => apply_floor(req, list, ex),
                    _ => list,
                };
                ex.source_counts.push((source, list.len()));
                lists.push((source, list));
            }
            let (merged, found_by) = merge(&lists, sources.merge, req.candidates);
            ex.found_by = found_by;
            merged
        }
    };
    let admission = &r.admission;
    ex.filter_evaluated = admission.evaluated.get();
    ex.filter_rejected = admission.rejected.get();
    ex.filter_mode = r.mode;
    ex.retrieved = scored.len();
    if admission.exhausted() {
        return Err(Error::invalid(format!(
            "WHERE expression used up its evaluation budget ({} ms per request): simplify it",
            EVAL_BUDGET.as_millis()
        )));
    }
    Ok(scored)
}

/// FALLBACK: up to `n` items, the most popular or the newest, admitted as
/// retrieval admits them (WHERE, EXCLUDE_SEEN, EXCLUDE, the examples),
/// leaving out `taken`, scored by popularity.
pub fn fallback(
    catalog: &Catalog,
    user: &UserInput,
    req: &Request,
    which: Fallback,
    taken: &[u32],
    n: usize,
) -> Result<Vec<(u32, f32)>> {
    let filter = req.compiled_filter()?;
    let admission = Admission::new(catalog, user, req, filter.as_deref());
    let accept = |slot: u32| !taken.contains(&slot) && admission.accepts(slot);
    let slots = match which {
        Fallback::Popular => catalog.most_popular(n, accept),
        Fallback::Latest => catalog.newest(n, accept),
    };
    Ok(slots
        .into_iter()
        .map(|s| (s, catalog.popularity_at(s, user.now_ms) as f32))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of an odd number modulo 2^64 (Newton's iteration).
    fn inverse(m: u64) -> u64 {
        let mut x = m;
        for _ in 0..6 {
            x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
        }
        x
    }

    /// Members are found and others are not, for a random set with 0 in
    /// it and a crowd of hashes made to share one bucket (past the probe
    /// limit, where the sorted hashes answer).
    #[test]
    fn exclusions_answer_exactly_even_when_buckets_are_crowded() {
        let mut rng = SplitMix::new(5);
        let mut members: Vec<u64> = (0..300).map(|_| rng.next_u64()).collect();
        members.push(0);
        let m = *BUCKET_MULTIPLIER;
        assert_eq!(m.wrapping_mul(inverse(m)), 1);
        // Buckets: 301 + 40 hashes x 4, 2048 of them (shift 53).
        let crowd: Vec<u64> = (0..40u64)
            .map(|j| inverse(m).wrapping_mul((7u64 << 53) | j))
            .collect();
        members.extend(&crowd);
        let set = Exclusions::new(SeenSet::from_hashes(members.iter().copied()));
        assert_eq!(set.table.len(), 2048);
        assert!(crowd.iter().all(|&h| set.bucket(h) == 7));
        for &h in &members {
            assert!(set.contains(h), "{h:#x}");
        }
        for _ in 0..10_000 {
            let h = rng.next_u64();
            assert_eq!(set.contains(h), members.contains(&h), "{h:#x}");
        }
        let near: Vec<u64> = (40..80u64)
            .map(|j| inverse(m).wrapping_mul((7u64 << 53) | j))
            .collect();
        assert!(near.iter().all(|&h| !set.contains(h)));
        let without_zero = Exclusions::new(SeenSet::from_hashes([1, 2, 3]));
        assert!(!without_zero.contains(0));
    }
}
