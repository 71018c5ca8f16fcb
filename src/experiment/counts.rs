//! What an experiment counts per variant (requests served, requests
//! clicked, requests bought from, distinct users) and how the counts move
//! between nodes: every counter has a `total` (what every copy of the
//! catalog agrees on, changed only by applying a [`Delta`]) and a
//! `pending` part (what this node counted since its last flush). Readers
//! add both; the flush takes the pending parts as a [`Delta`], which the
//! catalog's owner applies to the totals and replicates. Workers count
//! with atomics under the catalog's read lock: counting never waits for
//! a lock and never allocates.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

use crate::codec::{Reader, Writer};

/// HyperLogLog registers per variant (2^12: standard error ~1.6%; small
/// counts are exact up to hash collisions, by linear counting).
pub const HLL_REGISTERS: usize = 1 << HLL_BITS;
const HLL_BITS: u32 = 12;

/// One counter: the agreed total and this node's unflushed part.
#[derive(Default)]
pub struct Counter {
    total: AtomicU64,
    pending: AtomicU64,
}

impl Counter {
    /// Total plus pending.
    pub fn get(&self) -> u64 {
        self.total
            .load(Relaxed)
            .saturating_add(self.pending.load(Relaxed))
    }
    pub fn count(&self) {
        self.pending.fetch_add(1, Relaxed);
    }
    fn take_pending(&self) -> u64 {
        self.pending.swap(0, Relaxed)
    }
    fn add_total(&self, n: u64) {
        // Totals only change on the main thread (applying a delta).
        let t = self.total.load(Relaxed);
        self.total.store(t.saturating_add(n), Relaxed);
    }
}

/// Distinct users, as a HyperLogLog whose registers also have a total and
/// a pending part (a register's value is the larger of the two).
pub struct Users {
    total: Box<[AtomicU8]>,
    pending: Box<[AtomicU8]>,
}

impl Default for Users {
    fn default() -> Self {
        let regs = || (0..HLL_REGISTERS).map(|_| AtomicU8::new(0)).collect();
        Users {
            total: regs(),
            pending: regs(),
        }
    }
}

impl Users {
    /// Notes a user by a 64-bit hash of its key.
    pub fn observe(&self, hash: u64) {
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rest = (hash << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = (rest.leading_zeros() + 1) as u8;
        if self.total[index].load(Relaxed) < rank {
            self.pending[index].fetch_max(rank, Relaxed);
        }
    }

    fn register(&self, i: usize) -> u8 {
        self.total[i]
            .load(Relaxed)
            .max(self.pending[i].load(Relaxed))
    }

    /// The estimated number of distinct users (HyperLogLog with linear
    /// counting for small numbers).
    pub fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let (mut sum, mut zeros) = (0.0f64, 0usize);
        for i in 0..HLL_REGISTERS {
            let r = self.register(i);
            sum += 2f64.powi(-(r as i32));
            zeros += (r == 0) as usize;
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// The pending registers that are set, cleared.
    fn take_pending(&self) -> Vec<(u16, u8)> {
        let mut out = Vec::new();
        for (i, p) in self.pending.iter().enumerate() {
            if p.load(Relaxed) != 0 {
                let r = p.swap(0, Relaxed);
                if r > self.total[i].load(Relaxed) {
                    out.push((i as u16, r));
                }
            }
        }
        out
    }

    /// The totals that are set (what a full state carries).
    fn totals(&self) -> Vec<(u16, u8)> {
        (0..HLL_REGISTERS)
            .filter_map(|i| {
                let r = self.total[i].load(Relaxed);
                (r != 0).then_some((i as u16, r))
            })
            .collect()
    }

    fn merge_total(&self, regs: &[(u16, u8)]) {
        for &(i, r) in regs {
            if let Some(t) = self.total.get(i as usize) {
                t.fetch_max(r, Relaxed);
            }
        }
    }
}

/// The counters of one variant.
#[derive(Default)]
pub struct VariantCounts {
    /// Requests served with this variant.
    pub impressions: Counter,
    /// Requests with at least one click attributed.
    pub clicks: Counter,
    /// Requests with at least one purchase attributed.
    pub purchases: Counter,
    /// Distinct users served.
    pub users: Users,
}

/// Attribution outcomes that did not count as feedback.
#[derive(Default)]
pub struct Unattributed {
    /// The request id was issued longer ago than the attribution window.
    pub expired: Counter,
    /// The request id does not belong to this user (its variant is not
    /// the user's), or names a variant the experiment does not have.
    pub mismatched: Counter,
    /// The same request was already credited with this event type.
    pub duplicates: Counter,
}

/// User registers that are set: (index, value).
pub type Registers = Vec<(u16, u8)>;

/// The counts one node took from its pending parts: what the catalog's
/// owner adds to every copy's totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    /// Per variant: impressions, clicks, purchases, and user registers.
    pub variants: Vec<([u64; 3], Registers)>,
    /// Expired, mismatched, duplicates.
    pub unattributed: [u64; 3],
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.unattributed == [0; 3]
            && self
                .variants
                .iter()
                .all(|(c, regs)| *c == [0; 3] && regs.is_empty())
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.variants.len() as u64);
        for (counts, regs) in &self.variants {
            for c in counts {
                w.u64(*c);
            }
            w.u64(regs.len() as u64);
            for &(i, r) in regs {
                w.u32(((i as u32) << 8) | r as u32);
            }
        }
        for c in self.unattributed {
            w.u64(c);
        }
    }

    pub fn decode(r: &mut Reader) -> Result<Delta, String> {
        let n = r.count(32)?;
        let mut variants = Vec::with_capacity(n);
        for _ in 0..n {
            let counts = [r.u64()?, r.u64()?, r.u64()?];
            let m = r.count(4)?;
            if m > HLL_REGISTERS {
                return Err("more user registers than a variant has".into());
            }
            let mut regs = Vec::with_capacity(m);
            for _ in 0..m {
                let v = r.u32()?;
                let (i, rank) = ((v >> 8) as u16, (v & 0xff) as u8);
                if i as usize >= HLL_REGISTERS || rank == 0 || rank > 64 {
                    return Err("user register out of range".into());
                }
                regs.push((i, rank));
            }
            variants.push((counts, regs));
        }
        Ok(Delta {
            variants,
            unattributed: [r.u64()?, r.u64()?, r.u64()?],
        })
    }
}

/// All counters of an experiment.
pub struct Counts {
    pub variants: Vec<VariantCounts>,
    pub unattributed: Unattributed,
}

impl Counts {
    pub fn new(variants: usize) -> Counts {
        Counts {
            variants: (0..variants).map(|_| VariantCounts::default()).collect(),
            unattributed: Unattributed::default(),
        }
    }

    fn unattributed(&self) -> [&Counter; 3] {
        let u = &self.unattributed;
        [&u.expired, &u.mismatched, &u.duplicates]
    }

    /// Takes every pending part (the flush).
    pub fn take_pending(&self) -> Delta {
        Delta {
            variants: self
                .variants
                .iter()
                .map(|v| {
                    (
                        [
                            v.impressions.take_pending(),
                            v.clicks.take_pending(),
                            v.purchases.take_pending(),
                        ],
                        v.users.take_pending(),
                    )
                })
                .collect(),
            unattributed: self.unattributed().map(Counter::take_pending),
        }
    }

    /// The totals, as a delta from nothing (a full state: RDB, AOF).
    pub fn totals(&self) -> Delta {
        let total = |c: &Counter| c.total.load(Relaxed);
        Delta {
            variants: self
                .variants
                .iter()
                .map(|v| {
                    (
                        [total(&v.impressions), total(&v.clicks), total(&v.purchases)],
                        v.users.totals(),
                    )
                })
                .collect(),
            unattributed: self.unattributed().map(total),
        }
    }

    /// Adds a delta to the totals; fails (changing nothing) when it has
    /// another number of variants.
    pub fn apply(&self, d: &Delta) -> Result<(), String> {
        if d.variants.len() != self.variants.len() {
            return Err(format!(
                "counts for {} variants, the experiment has {}",
                d.variants.len(),
                self.variants.len()
            ));
        }
        for (v, (counts, regs)) in self.variants.iter().zip(&d.variants) {
            v.impressions.add_total(counts[0]);
            v.clicks.add_total(counts[1]);
            v.purchases.add_total(counts[2]);
            v.users.merge_total(regs);
        }
        for (c, n) in self.unattributed().iter().zip(d.unattributed) {
            c.add_total(n);
        }
        Ok(())
    }

    /// Heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.variants.len() * (std::mem::size_of::<VariantCounts>() + 2 * HLL_REGISTERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    #[test]
    fn users_estimate_within_a_few_percent() {
        let u = Users::default();
        let mut rng = SplitMix::new(7);
        for n in 1..=20_000u64 {
            u.observe(rng.next_u64());
            if [1, 10, 100, 1000, 20_000].contains(&n) {
                let e = u.estimate() as f64;
                assert!(
                    (e - n as f64).abs() <= (n as f64 * 0.05).max(1.0),
                    "{n}: {e}"
                );
            }
        }
    }

    #[test]
    fn pending_moves_to_totals_through_a_delta_once() {
        let (node, owner) = (Counts::new(2), Counts::new(2));
        node.variants[1].impressions.count();
        node.variants[1].impressions.count();
        node.variants[1].clicks.count();
        node.variants[0].users.observe(u64::MAX / 3);
        node.unattributed.expired.count();
        let d = node.take_pending();
        assert!(!d.is_empty());
        assert!(node.take_pending().is_empty(), "taken once");
        let mut bytes = Vec::new();
        d.encode(&mut Writer(&mut bytes));
        let back = Delta::decode(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(back, d);
        owner.apply(&back).unwrap();
        assert_eq!(owner.variants[1].impressions.get(), 2);
        assert_eq!(owner.variants[1].clicks.get(), 1);
        assert_eq!(owner.variants[0].users.estimate(), 1);
        assert_eq!(owner.unattributed.expired.get(), 1);
        assert_eq!(owner.totals(), back);
        assert!(
            owner.apply(&Delta::default()).is_err(),
            "variant count differs"
        );
        let mut bad = bytes.clone();
        bad.truncate(bytes.len() - 3);
        assert!(Delta::decode(&mut Reader::new(&bad)).is_err());
    }
}
