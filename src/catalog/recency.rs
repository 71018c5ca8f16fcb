//! When each item was added, as an order: every insert (a new item, or an
//! item set again) takes the next number of the catalog's counter, so
//! FALLBACK latest serves the newest items first. The newest [`RECENT_LEN`]
//! are also kept in a short list, newest last, so the fallback walks a few
//! entries instead of every slot; an entry whose slot was deleted or
//! reused since is skipped. 4 bytes per slot.
//!
//! The numbers follow the order of the writes, so a replica, an AOF replay
//! and a cluster copy number items alike; AOF rewrite writes the items in
//! this order, and the RDB keeps the numbers. Numbers are `u32`: when the
//! counter would pass `u32::MAX` (four billion inserts), the live items are
//! renumbered 1, 2, ... in their order, which keeps every answer the same
//! (only the order matters) and happens at the same write on every copy.
//! The RDB stores numbers as `u64`, as it did when they were kept so.

use std::collections::VecDeque;

use crate::codec::{Reader, Writer};

/// How many of the newest items the short list holds.
pub const RECENT_LEN: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct Recency {
    /// Per slot: its insert's number (0: none).
    added: Vec<u32>,
    /// The last number given.
    last: u32,
    /// (number, slot) of the newest inserts, oldest first.
    recent: VecDeque<(u32, u32)>,
    /// Slots with a number.
    live: usize,
}

impl Recency {
    /// Numbers the insert of `slot`.
    pub fn inserted(&mut self, slot: u32) {
        let s = slot as usize;
        if self.added.len() <= s {
            crate::growth::resize_by_eighths(&mut self.added, s + 1, 0);
        }
        if self.last == u32::MAX {
            self.renumber();
        }
        self.last += 1;
        if self.added[s] == 0 {
            self.live += 1;
        }
        self.added[s] = self.last;
        self.recent.push_back((self.last, slot));
        if self.recent.len() > RECENT_LEN {
            self.recent.pop_front();
        }
    }

    /// Numbers the live slots 1, 2, ... in their order (the short list
    /// keeps its live entries, renumbered alike). Runs once per four
    /// billion inserts, in O(slots log slots).
    fn renumber(&mut self) {
        let order = self.order(|_| true);
        let mut new_number = vec![0u32; self.added.len()];
        for (i, &slot) in order.iter().enumerate() {
            new_number[slot as usize] = i as u32 + 1;
        }
        self.recent = (self.recent.iter())
            .filter(|&&(number, slot)| self.added(slot) == number)
            .map(|&(_, slot)| (new_number[slot as usize], slot))
            .collect();
        self.added = new_number;
        self.last = order.len() as u32;
    }

    /// `slot` no longer holds an item.
    pub fn removed(&mut self, slot: u32) {
        if let Some(a) = self.added.get_mut(slot as usize) {
            if *a != 0 {
                self.live -= 1;
            }
            *a = 0;
        }
    }

    /// The number of `slot`'s insert (0: none).
    pub fn added(&self, slot: u32) -> u32 {
        self.added.get(slot as usize).copied().unwrap_or(0)
    }

    /// Up to `n` slots accepted by `accept`, newest first: from the short
    /// list, or from every slot when it holds fewer accepted ones than `n`
    /// and older items exist.
    pub fn newest(&self, n: usize, accept: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(n.min(RECENT_LEN));
        if n == 0 {
            return out;
        }
        let mut valid = 0;
        for &(number, slot) in self.recent.iter().rev() {
            if self.added(slot) != number {
                continue;
            }
            valid += 1;
            if accept(slot) {
                out.push(slot);
                if out.len() == n {
                    return out;
                }
            }
        }
        if valid == self.live {
            // The short list holds every item.
            return out;
        }
        let mut all: Vec<(u32, u32)> = self
            .added
            .iter()
            .enumerate()
            .filter(|&(s, &a)| a != 0 && accept(s as u32))
            .map(|(s, &a)| (a, s as u32))
            .collect();
        all.sort_unstable_by_key(|&(a, _)| std::cmp::Reverse(a));
        all.into_iter().take(n).map(|(_, s)| s).collect()
    }

    /// Live slots, oldest insert first (AOF rewrite writes items so).
    pub fn order(&self, live: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut slots: Vec<(u32, u32)> = self
            .added
            .iter()
            .enumerate()
            .filter(|&(s, &a)| a != 0 && live(s as u32))
            .map(|(s, &a)| (a, s as u32))
            .collect();
        slots.sort_unstable();
        slots.into_iter().map(|(_, s)| s).collect()
    }

    pub fn memory_bytes(&self) -> usize {
        self.added.capacity() * 4 + self.recent.capacity() * 8
    }

    /// The counter and the numbers of the live slots.
    pub fn encode(&self, w: &mut Writer, live: impl Fn(u32) -> bool) {
        w.u64(self.last.into());
        let numbered: Vec<(u32, u32)> = (0..self.added.len() as u32)
            .filter(|&s| live(s) && self.added(s) != 0)
            .map(|s| (s, self.added(s)))
            .collect();
        w.u64(numbered.len() as u64);
        for (s, a) in numbered {
            w.u32(s);
            w.u64(a.into());
        }
    }

    /// Reads [`Recency::encode`]'s bytes for a catalog of `slots` slots.
    /// Numbers past `u32::MAX` (kept by a build that counted in `u64`) are
    /// renumbered in their order.
    pub fn decode(r: &mut Reader, slots: usize) -> Result<Recency, String> {
        let last = r.u64()?;
        let n = r.count(12)?;
        let mut numbered: Vec<(u64, u32)> = Vec::with_capacity(n);
        let mut seen = vec![false; slots];
        for _ in 0..n {
            let (s, a) = (r.u32()?, r.u64()?);
            if s as usize >= slots || a == 0 || a > last || seen[s as usize] {
                return Err("item order record out of range or repeated".into());
            }
            seen[s as usize] = true;
            numbered.push((a, s));
        }
        numbered.sort_unstable();
        let fits = u32::try_from(last).ok();
        let mut rec = Recency {
            added: vec![0; slots],
            last: fits.unwrap_or(n as u32),
            recent: VecDeque::new(),
            live: n,
        };
        for (i, &(a, s)) in numbered.iter().enumerate() {
            let number = fits.map_or(i as u32 + 1, |_| a as u32);
            rec.added[s as usize] = number;
        }
        let skip = numbered.len().saturating_sub(RECENT_LEN);
        rec.recent = (numbered.iter().skip(skip))
            .map(|&(_, s)| (rec.added[s as usize], s))
            .collect();
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_skipping_removed_and_reused_slots() {
        let mut r = Recency::default();
        for s in 0..10 {
            r.inserted(s);
        }
        r.removed(9);
        r.inserted(3); // set again: newest now
        assert_eq!(r.newest(4, |_| true), [3, 8, 7, 6]);
        assert_eq!(r.newest(2, |s| s % 2 == 0), [8, 6]);
        let mut bytes = Vec::new();
        r.encode(&mut Writer(&mut bytes), |s| s != 9);
        let back = Recency::decode(&mut Reader::new(&bytes), 10).unwrap();
        assert_eq!(back.newest(20, |_| true), r.newest(20, |_| true));
        assert_eq!(back.order(|s| s != 9), [0, 1, 2, 4, 5, 6, 7, 8, 3]);
        assert!(Recency::decode(&mut Reader::new(&bytes), 3).is_err());
    }

    #[test]
    fn a_counter_that_runs_out_renumbers_in_order() {
        let mut r = Recency::default();
        for s in 0..6 {
            r.inserted(s);
        }
        r.removed(2);
        r.last = u32::MAX - 1;
        r.inserted(4); // numbered u32::MAX: the newest
        let before = (r.newest(10, |_| true), r.order(|_| true));
        assert_eq!(before.0, [4, 5, 3, 1, 0]);
        r.inserted(2); // the counter has run out: renumber first
        assert_eq!(r.last, 6, "five live items renumbered, then one more");
        assert_eq!(r.newest(10, |_| true), [2, 4, 5, 3, 1, 0]);
        assert_eq!(r.order(|_| true), [0, 1, 3, 5, 4, 2]);
        // An RDB written with u64 numbers past u32::MAX is renumbered.
        let mut bytes = Vec::new();
        let mut w = Writer(&mut bytes);
        w.u64(u32::MAX as u64 + 10);
        w.u64(3);
        for (slot, number) in [(0u32, 5u64), (1, u32::MAX as u64 + 9), (2, 7)] {
            w.u32(slot);
            w.u64(number);
        }
        let back = Recency::decode(&mut Reader::new(&bytes), 3).unwrap();
        assert_eq!(back.newest(3, |_| true), [1, 2, 0]);
        assert_eq!(
            (back.added(0), back.added(2), back.added(1), back.last),
            (1, 2, 3, 3)
        );
    }

    #[test]
    fn past_the_short_list_every_slot_is_searched() {
        let mut r = Recency::default();
        for s in 0..(RECENT_LEN as u32 + 100) {
            r.inserted(s);
        }
        // Only old items pass: the short list has none of them.
        let old = r.newest(3, |s| s < 50);
        assert_eq!(old, [49, 48, 47]);
    }
}
