//! A/B experiments of one catalog (RECSYS.EXPERIMENT.*): variants with
//! weights and the RECOMMEND options each applies, the stable assignment
//! of users to variants, and what is counted per variant.
//!
//! - this file: [`Experiment`] (definition, assignment, attribution) and
//!   [`Experiments`] (a catalog's set, and its byte format);
//! - [`counts`]: the counters, their pending parts and the deltas that
//!   carry them to the catalog's owner;
//! - [`request_id`]: the ids RECOMMEND returns and EVENT credits;
//! - [`stats`]: rates, intervals and the significance test of a report.
//!
//! Assignment is `u64::from_be_bytes(SHA-256(experiment "\n" user)[0..8])
//! mod (sum of weights)`, walked over the variants in their order: stable
//! across restarts, nodes and versions, and computable by app code.

pub mod counts;
pub mod request_id;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::names::check_name;
use counts::{Counts, Delta};
use request_id::{Remembered, RequestId};

/// Most variants of one experiment.
pub const MAX_VARIANTS: usize = 16;
/// Most experiments of one catalog.
pub const MAX_EXPERIMENTS: usize = 64;
/// Largest weight of one variant.
pub const MAX_WEIGHT: u64 = 1_000_000;
/// Longest OPTIONS text of one variant, in bytes.
pub const MAX_OPTIONS_LEN: usize = 16 * 1024;

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    /// Relative share of users.
    pub weight: u64,
    /// RECOMMEND options applied after the request's own.
    pub options: String,
}

/// Feedback an experiment counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Click,
    Purchase,
}

impl Feedback {
    /// The EVENT TYPEs credited to a request, and what each counts as.
    pub const TYPES: &'static [(&'static str, Feedback)] =
        &[("click", Feedback::Click), ("purchase", Feedback::Purchase)];

    pub fn of_type(event_type: &str) -> Option<Feedback> {
        Self::TYPES
            .iter()
            .find(|(t, _)| *t == event_type)
            .map(|&(_, f)| f)
    }
}

/// What crediting an event to a request id did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    Credited {
        variant: usize,
        feedback: Feedback,
    },
    /// An event type that is not feedback (only click and purchase are).
    NotFeedback,
    /// Issued longer ago than the attribution window (or in the future).
    Expired,
    /// Another generation of the experiment, a variant that is not this
    /// user's, or one the experiment does not have.
    Mismatched,
    /// This request was already credited with this event type.
    Duplicate,
}

/// Where a user falls in an experiment ([`Experiment::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub variant: usize,
    /// SHA-256 bytes 8..16 of the assignment's input (distinct users).
    user_hash: u64,
}

/// An experiment: its definition and its counts.
pub struct Experiment {
    pub name: String,
    /// When it was set (ms on the master that set it): request ids of an
    /// earlier definition under the same name do not count.
    pub generation: u64,
    pub variants: Vec<Variant>,
    pub counts: Counts,
    remembered: Mutex<Remembered>,
}

impl std::fmt::Debug for Experiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Experiment({} {:?})", self.name, self.variants)
    }
}

impl Experiment {
    /// A checked definition with zero counts.
    pub fn new(name: &str, generation: u64, variants: Vec<Variant>) -> Result<Experiment> {
        check_name("experiment name", name)?;
        if variants.is_empty() || variants.len() > MAX_VARIANTS {
            return Err(Error::invalid(format!(
                "an experiment has 1 to {MAX_VARIANTS} variants, got {}",
                variants.len()
            )));
        }
        for (i, v) in variants.iter().enumerate() {
            check_name("variant name", &v.name)?;
            if variants[..i].iter().any(|o| o.name == v.name) {
                return Err(Error::invalid(format!(
                    "variant '{}' is named twice",
                    v.name
                )));
            }
            if v.weight > MAX_WEIGHT {
                return Err(Error::invalid(format!(
                    "variant '{}': WEIGHT must be between 0 and {MAX_WEIGHT}, got {}",
                    v.name, v.weight
                )));
            }
            if v.options.len() > MAX_OPTIONS_LEN {
                return Err(Error::invalid(format!(
                    "variant '{}': OPTIONS longer than {MAX_OPTIONS_LEN} bytes",
                    v.name
                )));
            }
        }
        if variants.iter().all(|v| v.weight == 0) {
            return Err(Error::invalid(
                "at least one variant needs a WEIGHT above 0",
            ));
        }
        Ok(Experiment {
            name: name.to_string(),
            generation,
            counts: Counts::new(variants.len()),
            variants,
            remembered: Mutex::default(),
        })
    }

    fn digest(&self, user: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update(b"\n");
        h.update(user);
        h.finalize().into()
    }

    /// The variant of `user` (a user key), and the hash its impressions
    /// count distinct users by: one SHA-256 per request.
    pub fn place(&self, user: &[u8]) -> Placement {
        let d = self.digest(user);
        let half =
            |r: std::ops::Range<usize>| u64::from_be_bytes(d[r].try_into().unwrap_or_default());
        Placement {
            variant: self.variant_at(half(0..8)),
            user_hash: half(8..16),
        }
    }

    /// The variant of `user` (a user key).
    pub fn assign(&self, user: &[u8]) -> usize {
        self.place(user).variant
    }

    fn variant_at(&self, hash: u64) -> usize {
        let total: u64 = self.variants.iter().map(|v| v.weight).sum();
        let mut bucket = hash % total.max(1);
        for (i, v) in self.variants.iter().enumerate() {
            if bucket < v.weight {
                return i;
            }
            bucket -= v.weight;
        }
        self.variants.len() - 1
    }

    /// Counts one request served to the user `placed`.
    pub fn count_impression(&self, placed: &Placement) {
        if let Some(v) = self.counts.variants.get(placed.variant) {
            v.impressions.count();
            v.users.observe(placed.user_hash);
        }
    }

    /// Credits an event of `event_type` by `user` to request `id` (whose
    /// experiment is this one). With `count` false (a replica or AOF
    /// replaying the event) nothing is counted, only remembered: the
    /// master's counts arrive separately.
    pub fn attribute(
        &self,
        id: &RequestId,
        user: &[u8],
        event_type: &str,
        now_ms: i64,
        window_ms: i64,
        count: bool,
    ) -> Attribution {
        let Some(feedback) = Feedback::of_type(event_type) else {
            return Attribution::NotFeedback;
        };
        let u = &self.counts.unattributed;
        let tally = |c: &counts::Counter| {
            if count {
                c.count()
            }
        };
        if id.generation != self.generation
            || id.variant >= self.variants.len()
            || self.assign(user) != id.variant
        {
            tally(&u.mismatched);
            return Attribution::Mismatched;
        }
        if count
            && (id.issued_ms > now_ms.saturating_add(60_000)
                || now_ms.saturating_sub(id.issued_ms) > window_ms)
        {
            tally(&u.expired);
            return Attribution::Expired;
        }
        if !self.remembered.lock().insert(id.credit_key(event_type)) {
            tally(&u.duplicates);
            return Attribution::Duplicate;
        }
        if count {
            let v = &self.counts.variants[id.variant];
            match feedback {
                Feedback::Click => v.clicks.count(),
                Feedback::Purchase => v.purchases.count(),
            }
        }
        Attribution::Credited {
            variant: id.variant,
            feedback,
        }
    }

    /// Credits remembered (bounded by [`request_id::MAX_REMEMBERED`]).
    pub fn remembered(&self) -> usize {
        self.remembered.lock().len()
    }

    /// Definition, totals and remembered credits (RDB, AOF, copies).
    pub fn encode(&self, w: &mut Writer) {
        w.blob(self.name.as_bytes());
        w.u64(self.generation);
        w.u64(self.variants.len() as u64);
        for v in &self.variants {
            w.blob(v.name.as_bytes());
            w.u64(v.weight);
            w.blob(v.options.as_bytes());
        }
        self.counts.totals().encode(w);
        let remembered = self.remembered.lock();
        w.u64(remembered.len() as u64);
        for key in remembered.keys() {
            w.u64(key);
        }
    }

    pub fn decode(r: &mut Reader) -> std::result::Result<Experiment, String> {
        let name = r.text("experiment name")?.to_string();
        let generation = r.u64()?;
        let n = r.count(24)?;
        let mut variants = Vec::with_capacity(n.min(MAX_VARIANTS));
        for _ in 0..n {
            variants.push(Variant {
                name: r.text("variant name")?.to_string(),
                weight: r.u64()?,
                options: r.text("variant OPTIONS")?.to_string(),
            });
        }
        let e = Experiment::new(&name, generation, variants).map_err(String::from)?;
        e.counts.apply(&Delta::decode(r)?)?;
        let n = r.count(8)?;
        if n > request_id::MAX_REMEMBERED {
            return Err("more remembered credits than an experiment keeps".into());
        }
        {
            let mut remembered = e.remembered.lock();
            for _ in 0..n {
                remembered.insert(r.u64()?);
            }
        }
        Ok(e)
    }

    /// Heap bytes (counters and the remembered credits).
    pub fn memory_bytes(&self) -> usize {
        let text: usize = self
            .variants
            .iter()
            .map(|v| v.name.len() + v.options.len() + 64)
            .sum();
        self.counts.memory_bytes() + text + self.remembered() * 40
    }
}

/// A catalog's experiments, by name.
#[derive(Default, Clone)]
pub struct Experiments(BTreeMap<String, Arc<Experiment>>);

impl Experiments {
    pub fn get(&self, name: &str) -> Option<&Arc<Experiment>> {
        self.0.get(name)
    }

    /// Sets (or replaces, counts and all) an experiment.
    pub fn put(&mut self, e: Experiment) -> Result<()> {
        if !self.0.contains_key(&e.name) && self.0.len() >= MAX_EXPERIMENTS {
            return Err(Error::invalid(format!(
                "a catalog holds at most {MAX_EXPERIMENTS} experiments"
            )));
        }
        self.0.insert(e.name.clone(), Arc::new(e));
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Experiment>> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.0.len() as u64);
        for e in self.0.values() {
            e.encode(w);
        }
    }

    pub fn decode(r: &mut Reader) -> std::result::Result<Experiments, String> {
        let n = r.count(64)?;
        if n > MAX_EXPERIMENTS {
            return Err("more experiments than a catalog holds".into());
        }
        let mut out = Experiments::default();
        for _ in 0..n {
            let e = Experiment::decode(r)?;
            out.put(e).map_err(String::from)?;
        }
        Ok(out)
    }

    pub fn memory_bytes(&self) -> usize {
        self.0.values().map(|e| e.memory_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab(weights: &[u64]) -> Experiment {
        let variants = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Variant {
                name: format!("v{i}"),
                weight: w,
                options: format!("K {}", i + 1),
            })
            .collect();
        Experiment::new("exp", 42, variants).unwrap()
    }

    #[test]
    fn assignment_is_stable_and_follows_the_weights() {
        let e = ab(&[90, 10]);
        let mut n = [0usize; 2];
        for u in 0..20_000 {
            let key = format!("user:{u}");
            let v = e.assign(key.as_bytes());
            assert_eq!(v, e.assign(key.as_bytes()));
            n[v] += 1;
        }
        let share = n[1] as f64 / 20_000.0;
        assert!((share - 0.10).abs() < 0.01, "{share}");
        // Reproducible outside: SHA-256("exp\nuser:1")[0..8] mod 100.
        let d: [u8; 32] = Sha256::digest(b"exp\nuser:1").into();
        let bucket = u64::from_be_bytes(d[..8].try_into().unwrap()) % 100;
        assert_eq!(e.assign(b"user:1"), (bucket >= 90) as usize);
        assert_eq!(ab(&[0, 5]).assign(b"anyone"), 1);
    }

    #[test]
    fn bad_definitions_are_refused() {
        let v = |name: &str, weight| Variant {
            name: name.into(),
            weight,
            options: String::new(),
        };
        assert!(Experiment::new("bad name", 1, vec![v("a", 1)]).is_err());
        assert!(Experiment::new("e", 1, vec![]).is_err());
        assert!(Experiment::new("e", 1, vec![v("a", 1), v("a", 2)]).is_err());
        assert!(Experiment::new("e", 1, vec![v("a", 0)]).is_err());
        assert!(Experiment::new("e", 1, vec![v("a", MAX_WEIGHT + 1)]).is_err());
    }

    #[test]
    fn feedback_is_credited_once_to_the_users_variant() {
        let e = ab(&[50, 50]);
        let user = b"user:7";
        let placed = e.place(user);
        let v = placed.variant;
        e.count_impression(&placed);
        let id = RequestId {
            experiment: "exp",
            generation: 42,
            variant: v,
            issued_ms: 1_000,
            nonce: 9,
        };
        let credit = |id: &RequestId, user: &[u8], t: &str, now: i64| {
            e.attribute(id, user, t, now, 10_000, true)
        };
        assert_eq!(
            credit(&id, user, "click", 2_000),
            Attribution::Credited {
                variant: v,
                feedback: Feedback::Click
            }
        );
        assert_eq!(credit(&id, user, "click", 2_000), Attribution::Duplicate);
        assert!(matches!(
            credit(&id, user, "purchase", 2_000),
            Attribution::Credited { .. }
        ));
        assert_eq!(credit(&id, user, "view", 2_000), Attribution::NotFeedback);
        let later = RequestId {
            nonce: 10,
            ..id.clone()
        };
        assert_eq!(credit(&later, user, "click", 20_000), Attribution::Expired);
        let other = RequestId {
            variant: 1 - v,
            nonce: 11,
            ..id.clone()
        };
        assert_eq!(
            credit(&other, user, "click", 2_000),
            Attribution::Mismatched
        );
        let old = RequestId {
            generation: 41,
            nonce: 12,
            ..id.clone()
        };
        assert_eq!(credit(&old, user, "click", 2_000), Attribution::Mismatched);
        let c = &e.counts.variants[v];
        assert_eq!(
            (c.impressions.get(), c.clicks.get(), c.purchases.get()),
            (1, 1, 1)
        );
        let u = &e.counts.unattributed;
        assert_eq!(
            (u.expired.get(), u.mismatched.get(), u.duplicates.get()),
            (1, 2, 1)
        );
        // A replica replaying the event remembers it but counts nothing.
        let replica = ab(&[50, 50]);
        let replayed = RequestId { nonce: 13, ..id };
        assert!(matches!(
            replica.attribute(&replayed, user, "click", 2_000, 10_000, false),
            Attribution::Credited { .. }
        ));
        assert_eq!(replica.counts.variants[v].clicks.get(), 0);
        assert_eq!(replica.remembered(), 1);
    }

    #[test]
    fn experiments_round_trip_with_their_totals() {
        let mut set = Experiments::default();
        let e = ab(&[1, 2, 3]);
        let v = e.assign(b"u");
        e.count_impression(&e.place(b"u"));
        let id = RequestId {
            experiment: "exp",
            generation: 42,
            variant: v,
            issued_ms: 5,
            nonce: 1,
        };
        assert!(matches!(
            e.attribute(&id, b"u", "click", 6, 100, true),
            Attribution::Credited { .. }
        ));
        let d = e.counts.take_pending();
        e.counts.apply(&d).unwrap();
        set.put(e).unwrap();
        let mut bytes = Vec::new();
        set.encode(&mut Writer(&mut bytes));
        let back = Experiments::decode(&mut Reader::new(&bytes)).unwrap();
        let b = back.get("exp").unwrap();
        assert_eq!(b.remembered(), 1, "credits persist");
        assert_eq!(b.variants, set.get("exp").unwrap().variants);
        assert_eq!(b.counts.variants[v].impressions.get(), 1);
        assert_eq!(b.counts.variants[v].users.estimate(), 1);
        for cut in [1, 9, bytes.len() / 2, bytes.len() - 1] {
            assert!(Experiments::decode(&mut Reader::new(&bytes[..cut])).is_err());
        }
    }
}
