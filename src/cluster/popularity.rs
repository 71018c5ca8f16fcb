//! Popularity across a Redis Cluster, without Redis types. EVENT records
//! popularity on the master that serves the user; that master also keeps
//! the event here until its next flush, then sends the flushed events to
//! every other master, which records them too: every master's popularity
//! sums the whole cluster's events, within a flush interval and the bus's
//! delay (docs/cluster.md).

use std::collections::HashMap;

/// How often a master sends the events it recorded.
pub const FLUSH_MS: i64 = 250;
/// Most distinct (item, time) events kept per catalog between two flushes;
/// past it events are dropped (and counted), never the server's memory.
pub const MAX_PENDING: usize = 65_536;

/// One EVENT's part in popularity: the item, its weight, its time.
#[derive(Debug, Clone, PartialEq)]
pub struct PopularityEvent {
    pub item: Vec<u8>,
    pub weight: f64,
    pub ts_ms: i64,
}

#[derive(Default)]
struct Pending {
    events: Vec<PopularityEvent>,
    /// Where the event of (item, time) is: events of one item in the same
    /// millisecond are one event with the summed weight.
    at: HashMap<(Vec<u8>, i64), usize>,
}

/// The events recorded on this master since the last flush, by catalog.
#[derive(Default)]
pub struct Outbox {
    by_catalog: HashMap<Vec<u8>, Pending>,
    /// Events dropped because a catalog had [`MAX_PENDING`] waiting.
    pub dropped: u64,
}

impl Outbox {
    /// Keeps an event of `catalog` for the next flush.
    pub fn note(&mut self, catalog: &[u8], item: &[u8], weight: f64, ts_ms: i64) {
        let p = self.by_catalog.entry(catalog.to_vec()).or_default();
        let key = (item.to_vec(), ts_ms);
        if let Some(&i) = p.at.get(&key) {
            p.events[i].weight += weight;
            return;
        }
        if p.events.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        p.at.insert(key, p.events.len());
        p.events.push(PopularityEvent {
            item: item.to_vec(),
            weight,
            ts_ms,
        });
    }

    /// The events to send, by catalog; the outbox is empty after.
    pub fn take(&mut self) -> Vec<(Vec<u8>, Vec<PopularityEvent>)> {
        self.by_catalog
            .drain()
            .map(|(name, p)| (name, p.events))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_catalog.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_one_item_and_millisecond_merge_and_take_empties() {
        let mut o = Outbox::default();
        o.note(b"shop", b"a", 1.0, 10);
        o.note(b"shop", b"a", 2.0, 10);
        o.note(b"shop", b"a", 1.0, 11);
        o.note(b"news", b"b", 0.5, 10);
        let mut taken = o.take();
        taken.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(taken[0].0, b"news");
        assert_eq!(taken[1].1.len(), 2);
        assert_eq!(taken[1].1[0].weight, 3.0);
        assert!(o.is_empty() && o.take().is_empty());
    }

    #[test]
    fn a_full_catalog_drops_and_counts_new_events_only() {
        let mut o = Outbox::default();
        for i in 0..MAX_PENDING + 5 {
            o.note(b"shop", b"a", 1.0, i as i64);
        }
        o.note(b"shop", b"a", 1.0, 0); // merges into a kept event
        assert_eq!(o.dropped, 5);
        let taken = o.take();
        assert_eq!(taken[0].1.len(), MAX_PENDING);
        assert_eq!(taken[0].1[0].weight, 2.0);
    }
}
