//! A catalog: items with string ids, vectors and JSON attributes over one
//! [`Hnsw`] index, their popularity and the catalog's models. This is the
//! value behind one Redis key of the module type.
//!
//! - this file: the item store (ids, vectors, attributes, searches);
//! - [`popularity`]: time-decayed popularity per item;
//! - [`recency`]: the order items were added in (FALLBACK latest);
//! - [`ids`]: item ids by slot and slots by id;
//! - [`encoding`]: the catalog's byte format (RDB, COPY);
//! - [`log`]: the catalog's position in its write history (cluster copies).
//!
//! Every mutating call validates all of its input before changing anything,
//! so an error leaves the catalog exactly as it was.

pub mod encoding;
pub mod ids;
pub mod log;
pub mod popularity;
pub mod recency;

use crate::error::{Error, Result};
use crate::experiment::Experiments;
use crate::features::attrs::Attrs;
use crate::features::columns::Columns;
use crate::index::{Hnsw, IndexParams, Metric};
use crate::rank::models::ModelSet;
use crate::user::Session;
use crate::vector::check_finite;
use ids::ItemIds;
use log::LogPos;
use popularity::Popularity;
use recency::Recency;

/// Longest item id accepted, in bytes.
pub const MAX_ID_LEN: usize = 1024;

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<'a> {
    pub id: &'a str,
    pub score: f32,
}

/// What `RECSYS.INFO` reports.
#[derive(Debug, Clone)]
pub struct CatalogInfo {
    pub params: IndexParams,
    pub items: usize,
    pub deleted_pending: usize,
    pub slots: usize,
    pub memory_bytes: usize,
    pub models: usize,
    pub session_default: Option<Session>,
    /// The SEQUENCE weight requests get unless they say otherwise (`None`: 1).
    pub sequence_default: Option<f32>,
    /// The most slots a search at EF_SEARCH answers by an exact scan.
    pub scan_up_to: usize,
    /// Whether a search at EF_SEARCH scans now.
    pub scans: bool,
}

pub struct Catalog {
    index: Hnsw,
    /// Item id per slot, slot per id.
    ids: ItemIds,
    /// Compact JSON attributes per slot.
    attrs: Vec<Option<Box<str>>>,
    /// The same attributes as columns for filters and diversity.
    columns: Columns,
    /// Time-decayed popularity per slot.
    popularity: Popularity,
    /// The order items were added in.
    recency: Recency,
    /// Ranking and query models (RECSYS.MODEL.*).
    models: ModelSet,
    /// A/B experiments (RECSYS.EXPERIMENT.*).
    experiments: Experiments,
    /// What decoding had to say (models that were dropped or cannot run).
    restore_notes: Vec<String>,
    /// The SESSION blend requests get unless they say otherwise.
    session_default: Option<Session>,
    /// The weight of the RECENT model requests get unless they say
    /// otherwise (`None`: 1).
    sequence_default: Option<f32>,
    /// Where the catalog is in its write history.
    log: LogPos,
}

/// Sets the compact JSON attributes of `slot` in the per-slot list, which
/// is only as long as the last slot with attributes: a catalog without
/// attributes holds none of it (the heap count assumes the allocator's
/// 8-byte header and 16-byte rounding per text).
fn put_attrs(attrs: &mut Vec<Option<Box<str>>>, slot: u32, json: Option<Box<str>>) {
    let slot = slot as usize;
    match json {
        Some(json) => {
            crate::growth::resize_by_eighths(attrs, slot + 1, None);
            attrs[slot] = Some(json);
        }
        None => {
            if let Some(a) = attrs.get_mut(slot) {
                *a = None;
            }
        }
    }
}

/// Checks an item id: non-empty, at most [`MAX_ID_LEN`] bytes.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid("item id must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "item id longer than {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

impl Catalog {
    /// An empty catalog; fails when `params` are out of range.
    pub fn new(params: IndexParams) -> Result<Catalog> {
        params.validate()?;
        Ok(Catalog {
            index: Hnsw::new(params),
            ids: ItemIds::default(),
            attrs: Vec::new(),
            columns: Columns::default(),
            popularity: Popularity::default(),
            recency: Recency::default(),
            models: ModelSet::default(),
            experiments: Experiments::default(),
            restore_notes: Vec::new(),
            session_default: None,
            sequence_default: None,
            log: LogPos::ZERO,
        })
    }

    /// The SESSION blend requests get unless they say otherwise.
    pub fn session_default(&self) -> Option<Session> {
        self.session_default
    }

    /// Sets (or with `None` or 0 items clears) the default SESSION blend.
    pub fn set_session_default(&mut self, session: Option<Session>) {
        self.session_default = session.filter(Session::is_on);
    }

    /// The SEQUENCE weight requests get unless they say otherwise (`None`: 1).
    pub fn sequence_default(&self) -> Option<f32> {
        self.sequence_default
    }

    /// Sets (or with `None` clears) the default SEQUENCE weight.
    pub fn set_sequence_default(&mut self, weight: Option<f32>) {
        self.sequence_default = weight;
    }

    pub fn models(&self) -> &ModelSet {
        &self.models
    }

    pub fn models_mut(&mut self) -> &mut ModelSet {
        &mut self.models
    }

    pub fn experiments(&self) -> &Experiments {
        &self.experiments
    }

    pub fn experiments_mut(&mut self) -> &mut Experiments {
        &mut self.experiments
    }

    /// Where the catalog is in its write history.
    pub fn log_pos(&self) -> LogPos {
        self.log
    }

    /// Records that `write` (a command and its arguments, as replicated)
    /// was applied; returns the new position.
    pub fn advance_log(&mut self, write: &[&[u8]]) -> LogPos {
        self.log = self.log.next(write);
        self.log
    }

    /// Sets the position (an AOF rewrite writes it back after the items,
    /// as XSETID does for streams).
    pub fn set_log_pos(&mut self, pos: LogPos) {
        self.log = pos;
    }

    /// Notes from [`Catalog::decode`] (for the caller to log), emptied.
    pub fn take_restore_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.restore_notes)
    }

    pub fn params(&self) -> &IndexParams {
        self.index.params()
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn index(&self) -> &Hnsw {
        &self.index
    }

    /// Checks a query or item vector against the catalog (length, finiteness,
    /// non-zero for COSINE).
    pub fn check_vector(&self, v: &[f32]) -> Result<()> {
        let dim = self.params().dim;
        if v.len() != dim {
            return Err(Error::invalid(format!(
                "vector has {} components, the catalog's DIM is {dim}",
                v.len()
            )));
        }
        check_finite(v)?;
        if self.params().metric == Metric::Cosine && v.iter().all(|&x| x == 0.0) {
            return Err(Error::invalid(
                "zero vector has no direction (COSINE metric)",
            ));
        }
        Ok(())
    }

    /// Inserts or replaces an item. Returns true when the id is new.
    pub fn set(&mut self, id: &str, v: &[f32], attrs: Option<Attrs>) -> Result<bool> {
        check_id(id)?;
        self.check_vector(v)?;
        let created = match self.ids.slot(id) {
            Some(old) => {
                self.forget_slot(old);
                false
            }
            None => true,
        };
        let prepared = self.index.prepare(v);
        let slot = self.index.insert(&prepared) as usize;
        self.popularity.grow(slot + 1);
        // The id was freed above when it existed: it cannot be elsewhere.
        self.ids.insert(slot as u32, id);
        self.columns
            .set(slot as u32, attrs.as_ref().map(Attrs::object));
        put_attrs(&mut self.attrs, slot as u32, attrs.map(Attrs::into_json));
        self.popularity.clear(slot as u32);
        self.recency.inserted(slot as u32);
        Ok(created)
    }

    /// Replaces an item's attributes (`None` clears them) without touching
    /// its vector, its place in the graph or its popularity.
    pub fn set_attrs(&mut self, id: &str, attrs: Option<Attrs>) -> Result<()> {
        let slot = self
            .slot_of(id)
            .ok_or_else(|| Error::invalid(format!("item '{id}' does not exist in this catalog")))?;
        self.columns.set(slot, attrs.as_ref().map(Attrs::object));
        put_attrs(&mut self.attrs, slot, attrs.map(Attrs::into_json));
        Ok(())
    }

    fn forget_slot(&mut self, slot: u32) {
        self.index.remove(slot);
        self.ids.remove_slot(slot);
        put_attrs(&mut self.attrs, slot, None);
        self.columns.clear(slot);
        self.popularity.clear(slot);
        self.recency.removed(slot);
    }

    /// Deletes an item; returns false when it did not exist.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.ids.slot(id) {
            Some(slot) => {
                self.forget_slot(slot);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.slot(id).is_some()
    }

    /// Stored vector (normalized for COSINE, dequantized for Q8) and attributes.
    pub fn get(&self, id: &str) -> Option<(Vec<f32>, Option<&str>)> {
        let slot = self.ids.slot(id)?;
        Some((self.index.vector(slot), self.attrs_of(slot)))
    }

    pub fn slot_of(&self, id: &str) -> Option<u32> {
        self.ids.slot(id)
    }

    pub fn id_of(&self, slot: u32) -> Option<&str> {
        self.ids.id(slot)
    }

    /// The `seen` hash of the item in `slot` ([`crate::user::seen_hash`]
    /// of its id), kept per slot so EXCLUDE_SEEN never hashes an id.
    #[inline]
    pub fn seen_hash_of(&self, slot: u32) -> u64 {
        self.ids.seen_hash(slot)
    }

    pub fn attrs_of(&self, slot: u32) -> Option<&str> {
        self.attrs.get(slot as usize)?.as_deref()
    }

    /// Attribute columns (filters, diversity).
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Adds `weight` to the item's popularity at time `ts_ms` (see
    /// [`popularity`]). Takes `&self`: updates are atomic (one writer, the
    /// Redis main thread, and many readers).
    pub fn record_popularity(&self, slot: u32, weight: f64, ts_ms: i64) {
        if self.index.is_live(slot) {
            self.popularity.record(slot, weight, ts_ms);
        }
    }

    /// Popularity of `slot` as it stands at time `now_ms`.
    pub fn popularity_at(&self, slot: u32, now_ms: i64) -> f64 {
        self.popularity.at(slot, now_ms)
    }

    /// Sets an item's popularity: `score` in units at `epoch_ms` (what
    /// [`Catalog::popularity_records`] gives). Fails for an unknown id.
    pub fn set_popularity(&self, id: &str, epoch_ms: i64, score: f64) -> Result<()> {
        let slot = self
            .slot_of(id)
            .ok_or_else(|| Error::invalid(format!("item '{id}' does not exist in this catalog")))?;
        self.popularity.set(slot, epoch_ms, score)
    }

    /// The popularity epoch and every live item's non-zero score in units at
    /// it (AOF rewrite writes these back with RECSYS.POPULARITY.SET).
    pub fn popularity_records(&self) -> (i64, Vec<(&str, f64)>) {
        let records = (0..self.index.slots() as u32)
            .filter_map(|s| {
                let p = self.popularity.raw(s);
                (p > 0.0).then_some((self.id_of(s)?, p))
            })
            .collect();
        (self.popularity.epoch_ms(), records)
    }

    /// Live slots accepted by `accept`, newest first (the most recently
    /// added or set), at most `n`.
    pub fn newest(&self, n: usize, accept: impl Fn(u32) -> bool) -> Vec<u32> {
        self.recency.newest(n, accept)
    }

    /// Live slots in the order their items were added (oldest first).
    pub fn slots_in_added_order(&self) -> Vec<u32> {
        self.recency
            .order(|s| self.index.is_live(s) && self.ids.id(s).is_some())
    }

    /// Live slots by decreasing popularity (ties by slot), accepted by `accept`,
    /// at most `n`: from the cached ranking of the most popular
    /// ([`popularity::RANKING_LEN`]), or, when `accept` leaves fewer than `n`
    /// of those, from every slot. Each score is read once: events may change
    /// them while this runs, and the sort must see one consistent value per
    /// slot.
    pub fn most_popular(&self, n: usize, accept: impl Fn(u32) -> bool) -> Vec<u32> {
        let index = &self.index;
        let top = self.popularity.ranking(index.slots(), |s| index.is_live(s));
        let mut out: Vec<u32> = Vec::with_capacity(n.min(top.len()));
        for &s in top.iter() {
            if out.len() >= n {
                return out;
            }
            if accept(s) {
                out.push(s);
            }
        }
        if top.len() < popularity::RANKING_LEN {
            // The ranking holds every live slot.
            return out;
        }
        let mut slots: Vec<(u32, f64)> = (0..index.slots() as u32)
            .filter(|&s| index.is_live(s) && accept(s))
            .map(|s| (s, self.popularity.raw(s)))
            .collect();
        let by_pop = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if slots.len() > n && n > 0 {
            slots.select_nth_unstable_by(n - 1, by_pop);
            slots.truncate(n);
        }
        slots.sort_by(by_pop);
        slots.into_iter().map(|(s, _)| s).collect()
    }

    /// The `k` items nearest to `v` (already checked), best first.
    pub fn search(&self, v: &[f32], k: usize, ef: Option<usize>) -> Vec<Scored<'_>> {
        let prepared = self.index.prepare(v);
        let ef = ef.unwrap_or(self.params().ef_search);
        self.to_scored(self.index.search(&prepared, k, ef, |_| true))
    }

    /// The `k` items nearest to item `id`, never `id` itself.
    pub fn similar(&self, id: &str, k: usize, ef: Option<usize>) -> Result<Vec<Scored<'_>>> {
        let slot = self
            .slot_of(id)
            .ok_or_else(|| Error::invalid(format!("item '{id}' does not exist in this catalog")))?;
        let v = self.index.vector(slot);
        let ef = ef.unwrap_or(self.params().ef_search);
        Ok(self.to_scored(self.index.search(&v, k, ef, |s| s != slot)))
    }

    fn to_scored(&self, hits: Vec<crate::index::Hit>) -> Vec<Scored<'_>> {
        hits.into_iter()
            .filter_map(|h| {
                Some(Scored {
                    id: self.id_of(h.slot)?,
                    score: h.score,
                })
            })
            .collect()
    }

    pub fn info(&self) -> CatalogInfo {
        CatalogInfo {
            params: *self.params(),
            items: self.len(),
            deleted_pending: self.index.deleted_pending(),
            slots: self.index.slots(),
            memory_bytes: self.memory_bytes(),
            models: self.models.len(),
            session_default: self.session_default,
            sequence_default: self.sequence_default,
            scan_up_to: crate::index::hnsw::scan_limit(self.params().ef_search, self.params().dim),
            scans: self.index.prefers_scan(self.params().ef_search),
        }
    }

    /// Heap bytes held by the catalog (index, ids, attributes, id map).
    pub fn memory_bytes(&self) -> usize {
        let attrs: usize = self
            .attrs
            .iter()
            .flatten()
            .map(|s| (s.len() + 8).next_multiple_of(16))
            .sum();
        self.index.memory_bytes()
            + self.ids.heap_bytes()
            + self.attrs.capacity() * std::mem::size_of::<Option<Box<str>>>()
            + attrs
            + self.columns.heap_bytes()
            + self.popularity.heap_bytes()
            + self.models.memory_bytes()
            + self.experiments.memory_bytes()
            + self.recency.memory_bytes()
    }

    /// The catalog's content as sequences of byte strings, in an order that
    /// depends on the content only (not on insertion order or slots):
    /// parameters and session default, then each item by id (id, stored
    /// vector as FP32, attributes), then each model by name (its
    /// MODEL.SET arguments). Popularity is left out: it decays with the
    /// clock. Feeds DEBUG DIGEST, which compares a master with its replicas.
    pub fn canonical_records(&self, mut visit: impl FnMut(&[&[u8]])) {
        let params = format!(
            "{:?} {:?} {:?}",
            self.params(),
            self.session_default,
            self.sequence_default
        );
        visit(&[params.as_bytes()]);
        let mut items: Vec<_> = self.items().collect();
        items.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (id, v, attrs) in items {
            let blob = crate::vector::to_fp32_blob(&v);
            visit(&[id.as_bytes(), &blob, attrs.unwrap_or("").as_bytes()]);
        }
        let mut models: Vec<_> = self.models.iter().collect();
        models.sort_unstable_by(|a, b| a.spec.name.cmp(&b.spec.name));
        for m in models {
            let args = m.spec.command_args(b"");
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            visit(&refs);
        }
    }

    /// Live items in the order they were added (AOF rewrite writes them
    /// so, and a replay numbers them alike): (id, stored vector, attributes).
    pub fn items(&self) -> impl Iterator<Item = (&str, Vec<f32>, Option<&str>)> + '_ {
        self.slots_in_added_order()
            .into_iter()
            .filter_map(move |s| {
                let id = self.id_of(s)?;
                Some((id, self.index.vector(s), self.attrs_of(s)))
            })
    }
}

#[cfg(test)]
mod ranking_tests {
    use super::*;
    use crate::rng::SplitMix;

    /// Every live slot by popularity, as the ranking must give it.
    fn brute(c: &Catalog, n: usize, accept: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut all: Vec<(u32, f64)> = (0..c.index.slots() as u32)
            .filter(|&s| c.index.is_live(s) && accept(s))
            .map(|s| (s, c.popularity.raw(s)))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter().take(n).map(|(s, _)| s).collect()
    }

    /// The cached ranking answers as a scan of every slot would, through
    /// events, deletions, new items and filters that outrun it.
    #[test]
    fn cached_ranking_matches_a_full_scan_through_changes() {
        let mut c = Catalog::new(IndexParams::new(4)).unwrap();
        let mut rng = SplitMix::new(9);
        let n = popularity::RANKING_LEN + 1500;
        for i in 0..n {
            let v = [
                rng.normal() as f32,
                rng.normal() as f32,
                rng.normal() as f32,
                1.0,
            ];
            c.set(&format!("i{i}"), &v, None).unwrap();
        }
        let check = |c: &Catalog| {
            for (k, accept) in [
                (50, &(|_: u32| true) as &dyn Fn(u32) -> bool),
                (200, &|s: u32| s.is_multiple_of(3)),
                (30, &|s: u32| s % 997 == 5),
                (n, &|_: u32| true),
            ] {
                assert_eq!(c.most_popular(k, accept), brute(c, k, accept));
            }
        };
        for round in 0..4 {
            for _ in 0..3000 {
                let slot = rng.below(n as u64) as u32;
                c.record_popularity(slot, rng.uniform() * 10.0 - 2.0, 1_000 + round);
            }
            check(&c);
            for i in 0..50 {
                c.remove(&format!("i{}", (round as usize * 50 + i) * 7 % n));
            }
            c.set(&format!("new{round}"), &[1.0, 0.0, 0.0, 1.0], None)
                .unwrap();
            check(&c);
        }
    }
}
