//! Request ids: what RECOMMEND ... EXPERIMENT returns so that feedback can
//! be credited to the variant that served it. An id says everything the
//! attribution needs, so no table of issued requests is kept:
//! `experiment:generation:variant:issued_ms:nonce` (the nonce is 16 hex
//! digits, unique per process). EVENT ... REQUEST checks it against the
//! experiment's generation, the user's own variant and the attribution
//! window; a bounded memory of credited ids ([`Remembered`]) keeps a
//! request from being credited twice with the same event type.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use once_cell::sync::Lazy;

use crate::codec::fnv1a64;

/// A parsed request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId<'a> {
    pub experiment: &'a str,
    pub generation: u64,
    pub variant: usize,
    pub issued_ms: i64,
    pub nonce: u64,
}

/// Per process: a random high half (so two nodes do not issue the same
/// nonce) and a sequence.
static NONCE_BASE: Lazy<u64> = Lazy::new(|| {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = crate::rng::SplitMix::new(t ^ (std::process::id() as u64).rotate_left(32));
    rng.next_u64() & 0xFFFF_FFFF_0000_0000
});
static NONCE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A nonce no other request of this process had.
pub fn next_nonce() -> u64 {
    *NONCE_BASE ^ NONCE_SEQ.fetch_add(1, Relaxed)
}

impl<'a> RequestId<'a> {
    pub fn format(&self) -> String {
        format!(
            "{}:{}:{}:{}:{:016x}",
            self.experiment, self.generation, self.variant, self.issued_ms, self.nonce
        )
    }

    /// `None` for text that is not a request id.
    pub fn parse(text: &'a str) -> Option<RequestId<'a>> {
        let mut parts = text.rsplitn(5, ':');
        let nonce = parts.next()?;
        let issued = parts.next()?;
        let variant = parts.next()?;
        let generation = parts.next()?;
        let experiment = parts.next()?;
        if nonce.len() != 16 {
            return None;
        }
        Some(RequestId {
            experiment,
            generation: generation.parse().ok()?,
            variant: variant.parse().ok()?,
            issued_ms: issued.parse().ok()?,
            nonce: u64::from_str_radix(nonce, 16).ok()?,
        })
    }

    /// The key under which a credit of `kind` to this request is remembered.
    pub fn credit_key(&self, kind: &str) -> u64 {
        fnv1a64(format!("{kind}\0{}", self.format()).as_bytes())
    }
}

/// Most credits an experiment remembers (oldest forgotten first): 16 bytes
/// each plus the set's overhead, about 3 MB at most per experiment.
pub const MAX_REMEMBERED: usize = 100_000;

/// The credits given lately, oldest first.
#[derive(Default)]
pub struct Remembered {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Remembered {
    /// Remembers `key`; false when it was already there.
    pub fn insert(&mut self, key: u64) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > MAX_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The credits, oldest first (what persists).
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.order.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_junk_is_refused() {
        let id = RequestId {
            experiment: "ranker-ab",
            generation: 1_765_000_000_000,
            variant: 1,
            issued_ms: 1_765_000_123_456,
            nonce: next_nonce(),
        };
        let text = id.format();
        assert_eq!(RequestId::parse(&text), Some(id.clone()));
        assert_ne!(next_nonce(), next_nonce());
        for junk in [
            "",
            "a:b",
            "x:1:2:3:zz",
            "x:1:2:3:0123",
            "x:-1:0:5:0000000000000001",
        ] {
            assert_eq!(RequestId::parse(junk), None, "{junk}");
        }
        assert_ne!(id.credit_key("click"), id.credit_key("purchase"));
    }

    #[test]
    fn remembered_is_bounded_and_forgets_the_oldest() {
        let mut r = Remembered::default();
        assert!(r.insert(1));
        assert!(!r.insert(1));
        for k in 2..=(MAX_REMEMBERED as u64 + 1) {
            assert!(r.insert(k));
        }
        assert_eq!(r.len(), MAX_REMEMBERED);
        assert!(r.insert(1), "the oldest was forgotten");
    }
}
