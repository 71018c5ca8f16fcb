//! Embedding tables kept outside the model, as HugeCTR's parameter server
//! keeps them (docs/ranking.md, "Embedding tables as Redis keys"): a SPARSE
//! feature declared `ROWS <prefix>` reads row `id` of its table from the
//! Redis key `<prefix><id>` (the id in decimal), a string of `d`
//! little-endian float32. In a cluster each row's key decides its master,
//! so the cluster's own slots, replication, persistence and resharding
//! apply to the tables, and a table can be larger than any one node.
//!
//! A request gathers the rows its batch needs through the process-wide
//! hot-row cache ([`cache`]); the misses of the whole batch go to the
//! [`RowFetcher`] the module installs (the local keyspace, other masters
//! over the cluster bus) in one call with a deadline. A row that is
//! missing, malformed (not `d` finite floats) or not answered in time is
//! read as zeros, and counted ([`RowStats`]); a row that does not exist is
//! cached as such, one that was not answered is not.
//!
//! The module tells the cache when a row key changes ([`invalidate`]);
//! [`is_row_key`] says which keys are rows of a loaded model's table.

pub mod cache;
pub mod export;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use once_cell::sync::{Lazy, OnceCell};
use parking_lot::RwLock;

use cache::{Row, RowCache};

/// Longest key prefix a table may declare.
pub const MAX_PREFIX: usize = 256;

/// The key of row `id` of the table at `prefix`.
pub fn row_key(prefix: &str, id: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 20);
    key.extend_from_slice(prefix.as_bytes());
    key.extend_from_slice(id.to_string().as_bytes());
    key
}

/// Refuses a prefix a schema cannot carry or a key cannot start with.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX {
        return Err(format!(
            "ROWS prefix must be 1 to {MAX_PREFIX} bytes, got {}",
            prefix.len()
        ));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "ROWS prefix '{}' holds a space or a control character",
            prefix.escape_debug()
        ));
    }
    Ok(())
}

/// A row's floats from its key's bytes; `None` unless they are whole
/// finite float32.
pub fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let row: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    row.iter().all(|x| x.is_finite()).then_some(row)
}

/// The bytes of a row (what a writer SETs).
pub fn encode(row: &[f32]) -> Vec<u8> {
    row.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What a fetch found for one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The key's bytes.
    Row(Vec<u8>),
    /// The key does not exist (or is not a string).
    Absent,
    /// No answer before the deadline (a node down, a slot moving): read as
    /// zeros this time, not cached.
    Unanswered,
}

/// Finds rows that are not in the cache. Called on worker threads, never
/// on Redis's main thread; returns one answer per key by `deadline`.
pub trait RowFetcher: Send + Sync {
    fn fetch(&self, keys: &[Vec<u8>], deadline: Instant) -> Vec<Fetched>;
}

static FETCHER: OnceCell<Box<dyn RowFetcher>> = OnceCell::new();

/// Installs the fetcher (the module, at load). Without one every miss is
/// unanswered (core tests, benchmarks).
pub fn install_fetcher(f: Box<dyn RowFetcher>) {
    let _ = FETCHER.set(f);
}

static CACHE: Lazy<RowCache> = Lazy::new(|| RowCache::new(super::settings().row_cache_bytes));

/// The process's hot-row cache.
pub fn cache() -> &'static RowCache {
    &CACHE
}

/// Applies a new cache budget (CONFIG SET).
pub fn configure(bytes: u64) {
    if Lazy::get(&CACHE).is_some() {
        CACHE.set_capacity(bytes);
    }
}

/// Row lookups and what became of them (INFO).
#[derive(Debug, Default)]
pub struct RowStats {
    /// Distinct rows requests needed (a row used by many candidates of one
    /// batch counts once).
    pub lookups: AtomicU64,
    pub hits: AtomicU64,
    /// Misses sent to the fetcher, and the fetch calls and their time.
    pub misses: AtomicU64,
    pub fetches: AtomicU64,
    pub fetch_us: AtomicU64,
    /// Rows fetched and their bytes.
    pub fetched: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Missing keys, malformed rows (or of another width than the model's),
    /// and misses no one answered in time: each served as zeros.
    pub absent: AtomicU64,
    pub malformed: AtomicU64,
    pub unanswered: AtomicU64,
}

pub static STATS: RowStats = RowStats {
    lookups: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    fetches: AtomicU64::new(0),
    fetch_us: AtomicU64::new(0),
    fetched: AtomicU64::new(0),
    fetched_bytes: AtomicU64::new(0),
    absent: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
    unanswered: AtomicU64::new(0),
};

fn count(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Relaxed);
    }
}

/// The prefixes of the loaded models' tables, each with the number of
/// models using it.
static PREFIXES: RwLock<Vec<(String, usize)>> = RwLock::new(Vec::new());
static ANY_PREFIX: AtomicBool = AtomicBool::new(false);

/// A model's hold on its tables' prefixes: while any is held, writes to
/// keys under it invalidate the cache.
#[derive(Debug)]
pub struct PrefixLease(Vec<String>);

impl PrefixLease {
    pub fn new(prefixes: Vec<String>) -> PrefixLease {
        let mut all = PREFIXES.write();
        for p in &prefixes {
            match all.iter_mut().find(|(q, _)| q == p) {
                Some((_, n)) => *n += 1,
                None => all.push((p.clone(), 1)),
            }
        }
        ANY_PREFIX.store(!all.is_empty(), Relaxed);
        PrefixLease(prefixes)
    }
}

impl Drop for PrefixLease {
    fn drop(&mut self) {
        let mut all = PREFIXES.write();
        for p in &self.0 {
            if let Some(i) = all.iter().position(|(q, _)| q == p) {
                all[i].1 -= 1;
                if all[i].1 == 0 {
                    all.swap_remove(i);
                }
            }
        }
        ANY_PREFIX.store(!all.is_empty(), Relaxed);
    }
}

/// Whether `key` is a row of a loaded model's table (one atomic load when
/// no model has tables outside its blob).
pub fn is_row_key(key: &[u8]) -> bool {
    ANY_PREFIX.load(Relaxed)
        && PREFIXES
            .read()
            .iter()
            .any(|(p, _)| key.starts_with(p.as_bytes()))
}

/// A row key changed or went away: the cache forgets it.
pub fn invalidate(key: &[u8]) {
    if Lazy::get(&CACHE).is_some() {
        CACHE.invalidate(key);
    }
}

/// Every row may have changed (FLUSHALL, a full sync, too many changes to
/// name): the cache forgets all.
pub fn invalidate_all() {
    if Lazy::get(&CACHE).is_some() {
        CACHE.clear();
    }
}

/// The rows of a batch's external tables: for each SPARSE feature `t`
/// whose table is at `prefixes[t]`, `rows` rows of `d` floats, row `r`
/// the row of id `sparse[r * prefixes.len() + t]`; empty for the tables
/// inside the model.
pub fn gather(prefixes: &[Option<&str>], sparse: &[i64], rows: usize, d: usize) -> Vec<Vec<f32>> {
    let sw = prefixes.len();
    let cache = cache();
    // Each distinct (table, id) once: its row, or where its miss is.
    let mut distinct: Vec<HashMap<i64, usize>> = vec![HashMap::new(); sw];
    let mut found: Vec<Option<Row>> = Vec::new();
    let mut miss_keys: Vec<Vec<u8>> = Vec::new();
    let mut miss_at: Vec<(usize, u64)> = Vec::new();
    for (t, prefix) in prefixes.iter().enumerate() {
        let Some(prefix) = *prefix else { continue };
        for r in 0..rows {
            let id = sparse[r * sw + t];
            if distinct[t].contains_key(&id) {
                continue;
            }
            distinct[t].insert(id, found.len());
            let key = row_key(prefix, id);
            match cache.get(&key) {
                Some(row) => found.push(Some(row)),
                None => {
                    miss_at.push((found.len(), cache.epoch(&key)));
                    miss_keys.push(key);
                    found.push(None);
                }
            }
        }
    }
    count(&STATS.lookups, found.len() as u64);
    count(&STATS.hits, (found.len() - miss_keys.len()) as u64);
    if !miss_keys.is_empty() {
        fetch_misses(&miss_keys, &miss_at, &mut found);
    }
    let zeros = vec![0f32; d];
    let mut out = vec![Vec::new(); sw];
    let mut malformed = 0u64;
    for (t, ids) in distinct.iter().enumerate() {
        if prefixes[t].is_none() {
            continue;
        }
        let table = &mut out[t];
        table.reserve_exact(rows * d);
        for r in 0..rows {
            let row = ids
                .get(&sparse[r * sw + t])
                .and_then(|&i| found[i].as_deref())
                .unwrap_or(&[]);
            if row.len() == d {
                table.extend_from_slice(row);
            } else {
                // Absent rows are empty (counted when fetched); a row of
                // another width is malformed for this model.
                malformed += u64::from(!row.is_empty());
                table.extend_from_slice(&zeros);
            }
        }
    }
    count(&STATS.malformed, malformed);
    out
}

/// The fetcher's deadline for one batch's misses.
fn fetch_timeout() -> Duration {
    super::settings().row_fetch_timeout
}

fn fetch_misses(keys: &[Vec<u8>], at: &[(usize, u64)], found: &mut [Option<Row>]) {
    let cache = cache();
    count(&STATS.misses, keys.len() as u64);
    let Some(fetcher) = FETCHER.get() else {
        count(&STATS.unanswered, keys.len() as u64);
        return;
    };
    let start = Instant::now();
    let answers = fetcher.fetch(keys, start + fetch_timeout());
    count(&STATS.fetches, 1);
    count(&STATS.fetch_us, start.elapsed().as_micros() as u64);
    for (i, key) in keys.iter().enumerate() {
        let (slot, epoch) = at[i];
        let row: Row = match answers.get(i) {
            Some(Fetched::Row(bytes)) => {
                count(&STATS.fetched, 1);
                count(&STATS.fetched_bytes, bytes.len() as u64);
                match decode(bytes) {
                    Some(v) => v.into(),
                    None => {
                        count(&STATS.malformed, 1);
                        Vec::new().into()
                    }
                }
            }
            Some(Fetched::Absent) => {
                count(&STATS.absent, 1);
                Vec::new().into()
            }
            Some(Fetched::Unanswered) | None => {
                count(&STATS.unanswered, 1);
                continue;
            }
        };
        cache.fill(key, row.clone(), epoch);
        found[slot] = Some(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[test]
    fn keys_and_prefixes() {
        assert_eq!(row_key("emb:cat:", 42), b"emb:cat:42");
        assert!(check_prefix("emb:cat:").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a b").is_err());
        assert!(check_prefix(&"x".repeat(MAX_PREFIX + 1)).is_err());
        assert_eq!(decode(&encode(&[1.0, -2.5])), Some(vec![1.0, -2.5]));
        assert_eq!(decode(&[0, 0, 0]), None);
        assert_eq!(decode(&encode(&[f32::NAN])), None);
    }

    #[test]
    fn leases_name_the_row_keys() {
        let a = PrefixLease::new(vec!["lease-test-a:".into()]);
        let b = PrefixLease::new(vec!["lease-test-a:".into()]);
        assert!(is_row_key(b"lease-test-a:7"));
        assert!(!is_row_key(b"lease-test-b:7"));
        drop(a);
        assert!(
            is_row_key(b"lease-test-a:7"),
            "still held by the second model"
        );
        drop(b);
        assert!(!is_row_key(b"lease-test-a:7"));
    }

    /// A fetcher over a map, recording what it was asked.
    struct MapFetcher {
        rows: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
        asked: Mutex<Vec<Vec<u8>>>,
    }

    impl RowFetcher for &'static MapFetcher {
        fn fetch(&self, keys: &[Vec<u8>], _: Instant) -> Vec<Fetched> {
            self.asked.lock().extend(keys.iter().cloned());
            let rows = self.rows.lock();
            keys.iter()
                .map(|k| match rows.get(k) {
                    Some(b) if b.is_empty() => Fetched::Unanswered,
                    Some(b) => Fetched::Row(b.clone()),
                    None => Fetched::Absent,
                })
                .collect()
        }
    }

    #[test]
    fn gathers_through_the_cache_and_the_fetcher() {
        static F: Lazy<MapFetcher> = Lazy::new(|| MapFetcher {
            rows: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
        });
        install_fetcher(Box::new(&*F));
        {
            let mut rows = F.rows.lock();
            rows.insert(b"gt:1".to_vec(), encode(&[1.0, 1.0]));
            rows.insert(b"gt:2".to_vec(), encode(&[2.0, 2.0]));
            rows.insert(b"gt:3".to_vec(), encode(&[3.0])); // another width
            rows.insert(b"gt:4".to_vec(), Vec::new()); // never answered
        }
        let prefixes = [None, Some("gt:")];
        // Two features per row; the first is inside the model.
        let sparse = [0, 1, 0, 2, 0, 1, 0, 3, 0, 4, 0, 5];
        let out = gather(&prefixes, &sparse, 6, 2);
        assert!(out[0].is_empty());
        assert_eq!(
            out[1],
            [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        // Ids 1, 2, 3, 4, 5 asked once each, id 1 once for two candidates.
        assert_eq!(F.asked.lock().len(), 5);
        // Again: found, absent and malformed rows come from the cache; the
        // unanswered one is asked again.
        F.asked.lock().clear();
        F.rows.lock().insert(b"gt:2".to_vec(), encode(&[9.0, 9.0]));
        let again = gather(&prefixes, &sparse, 6, 2);
        assert_eq!(
            again[1], out[1],
            "the cached row 2 serves until invalidated"
        );
        assert_eq!(*F.asked.lock(), vec![b"gt:4".to_vec()]);
        invalidate(b"gt:2");
        let fresh = gather(&prefixes, &sparse, 6, 2);
        assert_eq!(&fresh[1][2..4], &[9.0, 9.0]);
    }
}
