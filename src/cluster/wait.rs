//! RECSYS.COPIES.WAIT's rules, without Redis types. On the catalog's owner:
//! the waits in progress (which masters must report which position, and
//! when each wait is answered). On every other master: the positions an
//! owner asked about that this node's copy has not reached yet, so the
//! copy reports once it gets there.

use std::collections::{BTreeSet, HashMap};

use crate::catalog::log::LogPos;

/// The longest wait a client may ask for, in milliseconds; a copy forgets
/// a position it was asked about after this long.
pub const MAX_WAIT_MS: i64 = 3_600_000;
/// Most positions a node watches for owners at once (the oldest go first).
pub const MAX_WATCHES: usize = 4096;

/// Whether a copy at `at` has every write up to `target`: a later position
/// has them; at the same sequence number only the same history does.
pub fn reaches(at: &LogPos, target: &LogPos) -> bool {
    at.seq > target.seq || at == target
}

struct Wait<T> {
    ticket: T,
    catalog: Vec<u8>,
    target: LogPos,
    wanted: usize,
    expected: BTreeSet<String>,
    reached: BTreeSet<String>,
}

/// The waits of one owner, by id. `T` is what answers the client (the
/// module's blocked client).
pub struct Waits<T> {
    waits: HashMap<u64, Wait<T>>,
    next_id: u64,
}

impl<T> Default for Waits<T> {
    fn default() -> Self {
        Waits {
            waits: HashMap::new(),
            next_id: 1,
        }
    }
}

impl<T> Waits<T> {
    /// A client waits until `wanted` of the `expected` masters report a
    /// copy of `catalog` at `target` or later. Returns the wait's id.
    pub fn add(
        &mut self,
        ticket: T,
        catalog: &[u8],
        target: LogPos,
        wanted: usize,
        expected: BTreeSet<String>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waits.insert(
            id,
            Wait {
                ticket,
                catalog: catalog.to_vec(),
                target,
                wanted,
                expected,
                reached: BTreeSet::new(),
            },
        );
        id
    }

    /// `node` reports its copy of `catalog` at `pos`: the waits this
    /// answers, with the number of masters that reached each.
    pub fn on_copy_at(&mut self, node: &str, catalog: &[u8], pos: &LogPos) -> Vec<(T, usize)> {
        let mut done = Vec::new();
        for (&id, w) in self.waits.iter_mut() {
            if w.catalog == catalog && w.expected.contains(node) && reaches(pos, &w.target) {
                w.reached.insert(node.to_string());
                if w.reached.len() >= w.wanted {
                    done.push(id);
                }
            }
        }
        done.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Ends a wait (its time is up): the ticket and the masters reached so
    /// far; `None` when it was already answered.
    pub fn take(&mut self, id: u64) -> Option<(T, usize)> {
        self.waits.remove(&id).map(|w| (w.ticket, w.reached.len()))
    }

    pub fn len(&self) -> usize {
        self.waits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }
}

struct Watch {
    owner: String,
    target: LogPos,
    since_ms: i64,
}

/// The positions owners asked this node about, by catalog (no catalog
/// with an empty list is kept).
#[derive(Default)]
pub struct Watches {
    by_catalog: HashMap<Vec<u8>, Vec<Watch>>,
}

impl Watches {
    /// `owner` asks to hear when this node's copy of `catalog` reaches
    /// `target`. At most [`MAX_WATCHES`] are kept: the oldest goes first.
    pub fn watch(&mut self, catalog: &[u8], owner: &str, target: LogPos, now_ms: i64) {
        if self.len() >= MAX_WATCHES {
            self.drop_oldest();
        }
        self.by_catalog
            .entry(catalog.to_vec())
            .or_default()
            .push(Watch {
                owner: owner.to_string(),
                target,
                since_ms: now_ms,
            });
    }

    /// This node's copy of `catalog` serves at `pos`: the owners to tell
    /// (each once); their watches end.
    pub fn advanced(&mut self, catalog: &[u8], pos: &LogPos) -> Vec<String> {
        let Some(list) = self.by_catalog.get_mut(catalog) else {
            return Vec::new();
        };
        let mut owners = Vec::new();
        list.retain(|w| {
            let reached = reaches(pos, &w.target);
            if reached && !owners.contains(&w.owner) {
                owners.push(w.owner.clone());
            }
            !reached
        });
        self.drop_empty();
        owners
    }

    /// The catalogs with watches.
    pub fn catalogs(&self) -> Vec<Vec<u8>> {
        self.by_catalog.keys().cloned().collect()
    }

    /// Forgets watches older than [`MAX_WAIT_MS`] (their client has its
    /// answer by now).
    pub fn expire(&mut self, now_ms: i64) {
        for list in self.by_catalog.values_mut() {
            list.retain(|w| now_ms - w.since_ms < MAX_WAIT_MS);
        }
        self.drop_empty();
    }

    pub fn len(&self) -> usize {
        self.by_catalog.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_catalog.is_empty()
    }

    fn drop_oldest(&mut self) {
        let oldest = self
            .by_catalog
            .iter()
            .filter_map(|(name, list)| list.first().map(|w| (w.since_ms, name.clone())))
            .min();
        if let Some((_, name)) = oldest {
            if let Some(list) = self.by_catalog.get_mut(&name) {
                list.remove(0);
            }
        }
        self.drop_empty();
    }

    fn drop_empty(&mut self) {
        self.by_catalog.retain(|_, list| !list.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_later_position_reaches_a_target_and_another_history_does_not() {
        let a = LogPos::ZERO.next(&[b"a"]);
        let b = LogPos::ZERO.next(&[b"b"]);
        assert!(reaches(&a, &a));
        assert!(reaches(&a.next(&[b"c"]), &a));
        assert!(!reaches(&LogPos::ZERO, &a));
        assert!(!reaches(&b, &a), "same sequence number, other write");
    }

    #[test]
    fn a_wait_is_answered_when_enough_expected_masters_report() {
        let target = LogPos::ZERO.next(&[b"w"]);
        let mut waits = Waits::default();
        let id = waits.add("client", b"shop", target, 2, nodes(&["n1", "n2", "n3"]));
        assert!(
            waits.on_copy_at("n1", b"shop", &LogPos::ZERO).is_empty(),
            "behind"
        );
        assert!(
            waits.on_copy_at("n9", b"shop", &target).is_empty(),
            "not expected"
        );
        assert!(
            waits.on_copy_at("n1", b"other", &target).is_empty(),
            "other catalog"
        );
        assert!(
            waits.on_copy_at("n1", b"shop", &target).is_empty(),
            "one of two"
        );
        assert!(
            waits.on_copy_at("n1", b"shop", &target).is_empty(),
            "counted once"
        );
        assert_eq!(
            waits.on_copy_at("n2", b"shop", &target),
            vec![("client", 2)]
        );
        assert!(waits.is_empty());
        assert_eq!(waits.take(id), None, "answered once");
    }

    #[test]
    fn a_wait_whose_time_is_up_answers_what_reached() {
        let target = LogPos::ZERO.next(&[b"w"]);
        let mut waits = Waits::default();
        let id = waits.add(7, b"shop", target, 2, nodes(&["n1", "n2"]));
        waits.on_copy_at("n2", b"shop", &target);
        assert_eq!(waits.take(id), Some((7, 1)));
        assert!(waits.is_empty());
    }

    #[test]
    fn watches_tell_each_owner_once_when_the_copy_gets_there() {
        let p1 = LogPos::ZERO.next(&[b"1"]);
        let p2 = p1.next(&[b"2"]);
        let mut w = Watches::default();
        w.watch(b"shop", "owner", p2, 0);
        w.watch(b"shop", "owner", p1, 0);
        w.watch(b"shop", "other", p2, 0);
        assert_eq!(w.advanced(b"shop", &p1), vec!["owner".to_string()]);
        assert_eq!(w.len(), 2);
        let mut told = w.advanced(b"shop", &p2);
        told.sort();
        assert_eq!(told, vec!["other".to_string(), "owner".to_string()]);
        assert!(w.is_empty() && w.catalogs().is_empty());
    }

    #[test]
    fn watches_are_bounded_and_expire() {
        let p = LogPos::ZERO.next(&[b"1"]);
        let mut w = Watches::default();
        for i in 0..MAX_WATCHES + 10 {
            w.watch(format!("c{}", i % 3).as_bytes(), "o", p, i as i64);
        }
        assert_eq!(w.len(), MAX_WATCHES);
        assert!(w.advanced(b"c0", &LogPos::ZERO).is_empty());
        w.expire(MAX_WAIT_MS + 100);
        assert_eq!(w.len(), MAX_WATCHES - 101 + 10);
        w.expire(MAX_WAIT_MS * 3);
        assert!(w.is_empty());
    }
}
