//! Item ids: the id of each slot, the slot of each id, and each slot's
//! [`seen_hash`] (what EXCLUDE_SEEN compares with a user's `seen` set, so a
//! request never hashes a candidate's id string).
//!
//! The id text is held once, per slot, in 24 bytes when it fits (ids of up
//! to 24 bytes, the usual numbers, SKUs and keys, need no allocation of
//! their own); the lookup table holds only slot numbers (4 bytes a bucket)
//! and finds the text through the slot. Table
//! hashes are keyed per process (SipHash, as Redis's own dictionaries), so
//! chosen ids cannot flood one bucket; the seen hash is FNV-1a, the
//! documented format of the `seen` field.

use std::hash::{BuildHasher, RandomState};

use compact_str::CompactString;
use hashbrown::HashTable;

use crate::growth::resize_by_eighths;
use crate::user::seen_hash;

#[derive(Default)]
pub struct ItemIds {
    /// Id per slot; `None` for free slots.
    by_slot: Vec<Option<CompactString>>,
    /// [`seen_hash`] of the id per slot (0 for free slots).
    seen: Vec<u64>,
    /// Slots of the live ids, hashed by their id text.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl ItemIds {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot holding `id`.
    pub fn slot(&self, id: &str) -> Option<u32> {
        let by_slot = &self.by_slot;
        self.table
            .find(self.hash(id), |&s| {
                by_slot[s as usize].as_deref() == Some(id)
            })
            .copied()
    }

    /// The id in `slot`.
    pub fn id(&self, slot: u32) -> Option<&str> {
        self.by_slot.get(slot as usize)?.as_deref()
    }

    /// The [`seen_hash`] of the id in `slot` (0 when the slot is free).
    #[inline]
    pub fn seen_hash(&self, slot: u32) -> u64 {
        self.seen.get(slot as usize).copied().unwrap_or(0)
    }

    /// Slots known (live and free).
    pub fn slots(&self) -> usize {
        self.by_slot.len()
    }

    /// Puts `id` in `slot` (which must be free, and `id` unknown); returns
    /// false, changing nothing, when `id` is already in another slot.
    pub fn insert(&mut self, slot: u32, id: &str) -> bool {
        if self.slot(id).is_some() {
            return false;
        }
        let s = slot as usize;
        if s >= self.by_slot.len() {
            resize_by_eighths(&mut self.by_slot, s + 1, None);
            resize_by_eighths(&mut self.seen, s + 1, 0);
        }
        debug_assert!(self.by_slot[s].is_none());
        let hash = self.hash(id);
        let (by_slot, hasher) = (&self.by_slot, &self.hasher);
        self.table.insert_unique(hash, slot, |&x| {
            hasher.hash_one(by_slot[x as usize].as_deref().unwrap_or(""))
        });
        self.by_slot[s] = Some(CompactString::new(id));
        self.seen[s] = seen_hash(id);
        true
    }

    /// Frees `slot`; returns the id it held.
    pub fn remove_slot(&mut self, slot: u32) -> Option<CompactString> {
        let id = self.by_slot.get_mut(slot as usize)?.take()?;
        let hash = self.hash(&id);
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.seen[slot as usize] = 0;
        Some(id)
    }

    /// Heap bytes: the per-slot arrays, the table and the id texts (with
    /// the allocator's 8-byte header and 16-byte rounding).
    pub fn heap_bytes(&self) -> usize {
        let texts: usize = self
            .by_slot
            .iter()
            .flatten()
            .filter(|id| id.is_heap_allocated())
            .map(|id| (id.capacity() + 8).next_multiple_of(16))
            .sum();
        self.by_slot.capacity() * std::mem::size_of::<Option<CompactString>>()
            + self.seen.capacity() * 8
            // Buckets: hashbrown fills at most 7 in 8.
            + self.table.capacity() * 8 / 7 * (std::mem::size_of::<u32>() + 1)
            + texts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_slots_and_seen_hashes_stay_in_step() {
        let mut ids = ItemIds::default();
        for i in 0..1000u32 {
            assert!(ids.insert(i, &format!("item:{i}")));
        }
        assert!(!ids.insert(1000, "item:5"), "an id lives in one slot");
        assert_eq!(ids.slot("item:5"), Some(5));
        assert_eq!(ids.seen_hash(5), seen_hash("item:5"));
        assert_eq!(ids.remove_slot(5).as_deref(), Some("item:5"));
        assert_eq!(
            (ids.slot("item:5"), ids.id(5), ids.seen_hash(5)),
            (None, None, 0)
        );
        assert!(ids.insert(5, "other"));
        assert_eq!(ids.slot("other"), Some(5));
        assert_eq!(ids.slot("item:999"), Some(999));
        assert_eq!(ids.id(999), Some("item:999"));
        assert_eq!(ids.remove_slot(5000), None);
    }
}
