//! The hot-row cache: embedding rows by key, bounded in bytes, shared by
//! every worker of the process (quick_cache: sharded, CLOCK-Pro eviction,
//! weighted by each entry's bytes). A row that does not exist is cached
//! too, as an empty row, so a missing id costs one fetch, not one per
//! request.
//!
//! Updates race reads: a fetch that started before a row changed must not
//! put the old row back after the change removed it. Each shard counts its
//! invalidations ([`RowCache::epoch`]); a fetch notes the count of its key's
//! shard before it reads, and [`RowCache::fill`] keeps the row only if no
//! invalidation reached that shard meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

/// A cached row: its floats, empty when the row does not exist.
pub type Row = Arc<[f32]>;

/// Bytes an entry costs besides its key and floats (the map slot, the
/// Arc's counts, the key's Box): counted so a cache of tiny rows keeps to
/// its budget too.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone)]
struct Bytes;

impl Weighter<Box<[u8]>, Row> for Bytes {
    fn weight(&self, key: &Box<[u8]>, row: &Row) -> u64 {
        key.len() as u64 + 4 * row.len() as u64 + ENTRY_OVERHEAD
    }
}

/// The cache and its invalidation counts.
pub struct RowCache {
    rows: Cache<Box<[u8]>, Row, Bytes>,
    /// Invalidations per shard of `rows`.
    epochs: Box<[AtomicU64]>,
}

impl RowCache {
    /// A cache of at most `bytes` bytes (0 caches nothing).
    pub fn new(bytes: u64) -> RowCache {
        // quick_cache sizes its shards from an item estimate: rows of 32
        // floats and short keys are about 200 bytes each.
        let items = (bytes / 200).clamp(16, 1 << 24) as usize;
        let rows = Cache::with_weighter(items, bytes.max(1), Bytes);
        let epochs = (0..rows.num_shards()).map(|_| AtomicU64::new(0)).collect();
        RowCache { rows, epochs }
    }

    /// Changes the budget; rows over it are evicted.
    pub fn set_capacity(&self, bytes: u64) {
        self.rows.set_capacity(bytes.max(1));
    }

    pub fn get(&self, key: &[u8]) -> Option<Row> {
        self.rows.get(key)
    }

    /// The invalidation count of `key`'s shard, noted before fetching it.
    pub fn epoch(&self, key: &[u8]) -> u64 {
        self.epochs[self.rows.shard_index(key)].load(Ordering::Acquire)
    }

    /// Keeps a fetched row unless `key` may have changed since `epoch` was
    /// noted. Returns whether it was kept.
    pub fn fill(&self, key: &[u8], row: Row, epoch: u64) -> bool {
        let shard = &self.epochs[self.rows.shard_index(key)];
        if shard.load(Ordering::Acquire) != epoch {
            return false;
        }
        self.rows.insert(key.into(), row);
        // An invalidation between the check and the insert: take the row
        // out again (at worst a fresh row another fetch put there, which
        // costs one more fetch, never a stale answer).
        if shard.load(Ordering::Acquire) != epoch {
            self.rows.remove(key);
            return false;
        }
        true
    }

    /// Forgets `key` (its row changed or is gone).
    pub fn invalidate(&self, key: &[u8]) {
        self.epochs[self.rows.shard_index(key)].fetch_add(1, Ordering::AcqRel);
        self.rows.remove(key);
    }

    /// Forgets every row.
    pub fn clear(&self) {
        for e in self.epochs.iter() {
            e.fetch_add(1, Ordering::AcqRel);
        }
        self.rows.clear();
    }

    /// Rows held and the bytes they are counted for.
    pub fn usage(&self) -> (u64, u64) {
        (self.rows.len() as u64, self.rows.weight())
    }

    pub fn capacity(&self) -> u64 {
        self.rows.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(x: f32, d: usize) -> Row {
        vec![x; d].into()
    }

    #[test]
    fn keeps_rows_until_invalidated() {
        let c = RowCache::new(1 << 20);
        let e = c.epoch(b"t:1");
        assert!(c.fill(b"t:1", row(1.0, 4), e));
        assert_eq!(&*c.get(b"t:1").unwrap(), &[1.0; 4]);
        c.invalidate(b"t:1");
        assert!(c.get(b"t:1").is_none());
    }

    #[test]
    fn a_fetch_older_than_an_invalidation_is_not_kept() {
        let c = RowCache::new(1 << 20);
        let before = c.epoch(b"t:7");
        // The row changes while the fetch of its old value is in flight.
        c.invalidate(b"t:7");
        assert!(!c.fill(b"t:7", row(1.0, 4), before));
        assert!(c.get(b"t:7").is_none());
        // A fetch started after the change is kept.
        let after = c.epoch(b"t:7");
        assert!(c.fill(b"t:7", row(2.0, 4), after));
        assert_eq!(c.get(b"t:7").unwrap()[0], 2.0);
    }

    #[test]
    fn stays_within_its_budget() {
        let budget = 64 << 10;
        let c = RowCache::new(budget);
        for i in 0..10_000u32 {
            let key = format!("t:{i}");
            let e = c.epoch(key.as_bytes());
            c.fill(key.as_bytes(), row(i as f32, 32), e);
        }
        let (rows, bytes) = c.usage();
        assert!(bytes <= budget, "{bytes} bytes held, budget {budget}");
        assert!(rows > 100, "only {rows} rows kept");
        assert!(rows < 10_000);
        c.set_capacity(budget / 4);
        assert!(c.usage().1 <= budget / 4);
        c.clear();
        assert_eq!(c.usage().0, 0);
    }
}
