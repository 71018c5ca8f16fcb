//! A catalog: items with string ids, vectors and JSON attributes, over one
//! [`Hnsw`] index. This is the value behind one Redis key of the module type.
//!
//! Every mutating call validates all of its input before changing anything,
//! so an error leaves the catalog exactly as it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::features::columns::Columns;
use crate::index::snapshot::{self, Reader, Writer};
use crate::index::{Hnsw, IndexParams, Metric};
use crate::rank::models::ModelSet;
use crate::vector::check_finite;

/// Longest item id accepted, in bytes.
pub const MAX_ID_LEN: usize = 1024;
/// Largest ATTRS document accepted, in bytes.
pub const MAX_ATTRS_LEN: usize = 64 * 1024;
/// Popularity halves every day without new events.
pub const POPULARITY_HALF_LIFE_MS: f64 = 86_400_000.0;
/// Section tag of the popularity block in [`Catalog::encode`].
const POPULARITY_TAG: u32 = 0x504F_5055; // "POPU"
/// Section tag of the models block.
const MODELS_TAG: u32 = 0x4D4F_444C; // "MODL"

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
}

pub struct Catalog {
    index: Hnsw,
    /// Item id per slot; `None` for tombstoned slots.
    ids: Vec<Option<Box<str>>>,
    /// Compact JSON attributes per slot.
    attrs: Vec<Option<Box<str>>>,
    /// The same attributes as columns for filters and diversity.
    columns: Columns,
    by_id: HashMap<Box<str>, u32>,
    /// Time-decayed popularity per slot (f64 bits), in units at
    /// `pop_epoch_ms`. Atomic so events update it under a read lock, without
    /// waiting for searches in flight.
    popularity: Vec<AtomicU64>,
    pop_epoch_ms: AtomicI64,
    /// Ranking and query models (RECSYS.MODEL.*).
    models: ModelSet,
    /// What decoding had to say (models that were dropped or cannot run).
    restore_notes: Vec<String>,
}

/// Checks an item id: non-empty, at most [`MAX_ID_LEN`] bytes.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("item id must not be empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("item id longer than {MAX_ID_LEN} bytes"));
    }
    Ok(())
}

/// Validates ATTRS (a JSON object) and returns its compact form.
pub fn normalize_attrs(json: &str) -> Result<Box<str>, String> {
    if json.len() > MAX_ATTRS_LEN {
        return Err(format!("ATTRS larger than {MAX_ATTRS_LEN} bytes"));
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("ATTRS is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("ATTRS must be a JSON object, e.g. {\"genre\":\"drama\"}".into());
    }
    Ok(value.to_string().into_boxed_str())
}

impl Catalog {
    /// An empty catalog; fails when `params` are out of range.
    pub fn new(params: IndexParams) -> Result<Catalog, String> {
        params.validate()?;
        Ok(Catalog {
            index: Hnsw::new(params),
            ids: Vec::new(),
            attrs: Vec::new(),
            columns: Columns::default(),
            by_id: HashMap::new(),
            popularity: Vec::new(),
            pop_epoch_ms: AtomicI64::new(0),
            models: ModelSet::default(),
            restore_notes: Vec::new(),
        })
    }

    pub fn models(&self) -> &ModelSet {
        &self.models
    }

    pub fn models_mut(&mut self) -> &mut ModelSet {
        &mut self.models
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
    pub fn check_vector(&self, v: &[f32]) -> Result<(), String> {
        let dim = self.params().dim;
        if v.len() != dim {
            return Err(format!(
                "vector has {} components, the catalog's DIM is {dim}",
                v.len()
            ));
        }
        check_finite(v)?;
        if self.params().metric == Metric::Cosine && v.iter().all(|&x| x == 0.0) {
            return Err("zero vector has no direction (COSINE metric)".into());
        }
        Ok(())
    }

    /// Inserts or replaces an item. Returns true when the id is new.
    /// `attrs` must come from [`normalize_attrs`] (or be `None`).
    pub fn set(&mut self, id: &str, v: &[f32], attrs: Option<Box<str>>) -> Result<bool, String> {
        check_id(id)?;
        self.check_vector(v)?;
        let created = match self.by_id.get(id).copied() {
            Some(old) => {
                self.forget_slot(old);
                false
            }
            None => true,
        };
        let prepared = self.index.prepare(v);
        let slot = self.index.insert(&prepared) as usize;
        if slot >= self.ids.len() {
            self.ids.resize(slot + 1, None);
            self.attrs.resize(slot + 1, None);
            self.popularity.resize_with(slot + 1, || AtomicU64::new(0));
        }
        let key: Box<str> = id.into();
        self.ids[slot] = Some(key.clone());
        let parsed: Option<serde_json::Value> =
            attrs.as_deref().and_then(|a| serde_json::from_str(a).ok());
        self.columns
            .set(slot as u32, parsed.as_ref().and_then(|v| v.as_object()));
        self.attrs[slot] = attrs;
        self.popularity[slot].store(0, Relaxed);
        self.by_id.insert(key, slot as u32);
        Ok(created)
    }

    fn forget_slot(&mut self, slot: u32) {
        self.index.remove(slot);
        if let Some(id) = self.ids[slot as usize].take() {
            self.by_id.remove(&id);
        }
        self.attrs[slot as usize] = None;
        self.columns.clear(slot);
        self.popularity[slot as usize].store(0, Relaxed);
    }

    /// Deletes an item; returns false when it did not exist.
    pub fn remove(&mut self, id: &str) -> bool {
        match self.by_id.get(id).copied() {
            Some(slot) => {
                self.forget_slot(slot);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// Stored vector (normalized for COSINE, dequantized for Q8) and attributes.
    pub fn get(&self, id: &str) -> Option<(Vec<f32>, Option<&str>)> {
        let slot = *self.by_id.get(id)?;
        Some((
            self.index.vector(slot),
            self.attrs[slot as usize].as_deref(),
        ))
    }

    pub fn slot_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub fn id_of(&self, slot: u32) -> Option<&str> {
        self.ids.get(slot as usize)?.as_deref()
    }

    pub fn attrs_of(&self, slot: u32) -> Option<&str> {
        self.attrs.get(slot as usize)?.as_deref()
    }

    /// Attribute columns (filters, diversity).
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    fn pop(&self, slot: u32) -> f64 {
        self.popularity
            .get(slot as usize)
            .map_or(0.0, |p| f64::from_bits(p.load(Relaxed)))
    }

    /// Adds `weight` to the item's popularity at time `ts_ms`; popularity
    /// halves every [`POPULARITY_HALF_LIFE_MS`]. Takes `&self`: updates are
    /// atomic (one writer, the Redis main thread, and many readers).
    pub fn record_popularity(&self, slot: u32, weight: f64, ts_ms: i64) {
        if !self.index.is_live(slot) || !weight.is_finite() {
            return;
        }
        let _ = self
            .pop_epoch_ms
            .compare_exchange(0, ts_ms, Relaxed, Relaxed);
        // Scores are kept in units at the epoch: a later event weighs more.
        // Move the epoch forward before the factor could overflow.
        let mut exponent =
            (ts_ms - self.pop_epoch_ms.load(Relaxed)) as f64 / POPULARITY_HALF_LIFE_MS;
        if exponent > 512.0 {
            let shift = 2f64.powf(-exponent);
            for p in &self.popularity {
                p.store((f64::from_bits(p.load(Relaxed)) * shift).to_bits(), Relaxed);
            }
            self.pop_epoch_ms.store(ts_ms, Relaxed);
            exponent = 0.0;
        }
        let updated = (self.pop(slot) + weight * 2f64.powf(exponent)).max(0.0);
        self.popularity[slot as usize].store(updated.to_bits(), Relaxed);
    }

    /// Popularity of `slot` as it stands at time `now_ms`.
    pub fn popularity_at(&self, slot: u32, now_ms: i64) -> f64 {
        let epoch = self.pop_epoch_ms.load(Relaxed);
        self.pop(slot) * 2f64.powf(-((now_ms - epoch) as f64) / POPULARITY_HALF_LIFE_MS)
    }

    /// Live slots by decreasing popularity (ties by slot), accepted by `accept`,
    /// at most `n`.
    pub fn most_popular(&self, n: usize, accept: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut slots: Vec<u32> = (0..self.index.slots() as u32)
            .filter(|&s| self.index.is_live(s) && accept(s))
            .collect();
        let by_pop = |a: &u32, b: &u32| self.pop(*b).total_cmp(&self.pop(*a)).then(a.cmp(b));
        if slots.len() > n && n > 0 {
            slots.select_nth_unstable_by(n - 1, by_pop);
            slots.truncate(n);
        }
        slots.sort_by(by_pop);
        slots
    }

    /// The `k` items nearest to `v` (already checked), best first.
    pub fn search(&self, v: &[f32], k: usize, ef: Option<usize>) -> Vec<Scored<'_>> {
        let prepared = self.index.prepare(v);
        let ef = ef.unwrap_or(self.params().ef_search);
        self.to_scored(self.index.search(&prepared, k, ef, |_| true))
    }

    /// The `k` items nearest to item `id`, never `id` itself.
    pub fn similar(
        &self,
        id: &str,
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Scored<'_>>, String> {
        let slot = self
            .slot_of(id)
            .ok_or_else(|| format!("item '{id}' does not exist in this catalog"))?;
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
        }
    }

    /// Heap bytes held by the catalog (index, ids, attributes, id map).
    pub fn memory_bytes(&self) -> usize {
        let strings: usize = self
            .ids
            .iter()
            .chain(self.attrs.iter())
            .map(|s| s.as_ref().map_or(0, |s| s.len()))
            .sum();
        self.index.memory_bytes()
            + (self.ids.capacity() + self.attrs.capacity()) * std::mem::size_of::<Option<Box<str>>>()
            + self.columns.heap_bytes()
            + self.popularity.capacity() * 8
            + strings * 2 // ids are held twice: per slot and as map keys
            + self.by_id.capacity() * (std::mem::size_of::<(Box<str>, u32)>() + 1)
            + self.models.memory_bytes()
    }

    /// Live items in slot order: (id, stored vector, attributes).
    pub fn items(&self) -> impl Iterator<Item = (&str, Vec<f32>, Option<&str>)> + '_ {
        (0..self.index.slots() as u32).filter_map(move |s| {
            let id = self.id_of(s)?;
            Some((id, self.index.vector(s), self.attrs_of(s)))
        })
    }

    /// A deep copy (COPY): items and graph through the encoding, the models
    /// shared (they are immutable; sharing skips recompiling them).
    pub fn duplicate(&self) -> Result<Catalog, String> {
        let mut copy = Catalog::decode(&self.encode_parts(false))?;
        copy.models = self.models.clone();
        Ok(copy)
    }

    /// Serializes the catalog (graph and models included).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_parts(true)
    }

    fn encode_parts(&self, with_models: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.memory_bytes() + 64);
        snapshot::encode(&self.index, &mut out);
        let mut w = Writer(&mut out);
        let live: Vec<u32> = (0..self.ids.len() as u32)
            .filter(|&s| self.ids[s as usize].is_some())
            .collect();
        w.u64(live.len() as u64);
        for s in live {
            w.u32(s);
            w.blob(self.ids[s as usize].as_deref().unwrap_or("").as_bytes());
            w.blob(self.attrs[s as usize].as_deref().unwrap_or("").as_bytes());
        }
        let popular: Vec<u32> = (0..self.popularity.len() as u32)
            .filter(|&s| self.pop(s) > 0.0 && self.index.is_live(s))
            .collect();
        w.u32(POPULARITY_TAG);
        w.u64(self.pop_epoch_ms.load(Relaxed) as u64);
        w.u64(popular.len() as u64);
        for s in popular {
            w.u32(s);
            w.bytes(&[self.pop(s)]);
        }
        if with_models && !self.models.is_empty() {
            w.u32(MODELS_TAG);
            self.models.encode(&mut w);
        }
        out
    }

    /// Rebuilds a catalog from [`Catalog::encode`]'s bytes; any inconsistency
    /// is an error.
    pub fn decode(bytes: &[u8]) -> Result<Catalog, String> {
        let mut r = Reader::new(bytes);
        let index = snapshot::decode(&mut r)?;
        let slots = index.slots();
        let count = r.u64()? as usize;
        if count != index.len() {
            return Err("item count does not match the index".into());
        }
        let mut ids = vec![None; slots];
        let mut attrs: Vec<Option<Box<str>>> = vec![None; slots];
        let mut by_id = HashMap::with_capacity(count);
        for _ in 0..count {
            let slot = r.u32()?;
            if !index.is_live(slot) || ids[slot as usize].is_some() {
                return Err("item record names a deleted or repeated slot".into());
            }
            let id = std::str::from_utf8(r.blob()?).map_err(|_| "item id is not UTF-8")?;
            let a = std::str::from_utf8(r.blob()?).map_err(|_| "ATTRS is not UTF-8")?;
            let id: Box<str> = id.into();
            if by_id.insert(id.clone(), slot).is_some() {
                return Err(format!("duplicate item id '{id}'"));
            }
            ids[slot as usize] = Some(id);
            attrs[slot as usize] = (!a.is_empty()).then(|| a.into());
        }
        let popularity: Vec<AtomicU64> = (0..slots).map(|_| AtomicU64::new(0)).collect();
        let mut pop_epoch_ms = 0;
        let mut models = ModelSet::default();
        let mut restore_notes = Vec::new();
        while r.remaining() > 0 {
            match r.u32()? {
                POPULARITY_TAG => {
                    pop_epoch_ms = r.u64()? as i64;
                    let n = r.u64()? as usize;
                    if n > slots {
                        return Err("popularity section larger than the catalog".into());
                    }
                    for _ in 0..n {
                        let s = r.u32()? as usize;
                        let p: Vec<f64> = r.array(1)?;
                        if s >= slots || !p[0].is_finite() || p[0] < 0.0 {
                            return Err("bad popularity record".into());
                        }
                        popularity[s].store(p[0].to_bits(), Relaxed);
                    }
                }
                MODELS_TAG => {
                    models = ModelSet::decode(&mut r, index.params().dim, &mut restore_notes)?;
                }
                _ => return Err("unknown section after the items".into()),
            }
        }
        if r.remaining() != 0 {
            return Err("trailing bytes after the catalog".into());
        }
        let mut columns = Columns::default();
        for (slot, a) in attrs.iter().enumerate() {
            if let Some(a) = a {
                let v: serde_json::Value =
                    serde_json::from_str(a).map_err(|_| "ATTRS is not valid JSON")?;
                columns.set(slot as u32, v.as_object());
            }
        }
        Ok(Catalog {
            index,
            ids,
            attrs,
            columns,
            by_id,
            popularity,
            pop_epoch_ms: AtomicI64::new(pop_epoch_ms),
            models,
            restore_notes,
        })
    }
}
