//! Popularity summed across the cluster (docs/cluster.md). EVENT records
//! popularity on the master that serves the user and notes the event here;
//! every `FLUSH_MS` the noted events go to every node. A master records the
//! events it receives in its catalog or copy, and replicates them to its
//! replicas and AOF as `RECSYS.COPY POPULARITY`. The rules are in the core
//! (`recsys_core::cluster::popularity`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use recsys_core::catalog::popularity::{check_event_time, MAX_EVENT_MS};
use recsys_core::cluster::message::Message;
use recsys_core::cluster::popularity::{Outbox, PopularityEvent};
use redis_module::Context;

use super::{is_master, send, store};
use crate::keys::{catalog_if_any, SharedCatalog};
use crate::util::{now_ms, redis_string, replicate};

static OUTBOX: Lazy<Mutex<Outbox>> = Lazy::new(Default::default);
/// Events this node sent and recorded from other masters (INFO).
static SENT: AtomicU64 = AtomicU64::new(0);
static RECORDED: AtomicU64 = AtomicU64::new(0);
/// Received events refused (a time or weight out of bounds, an unknown
/// item) (INFO).
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Events per bus message.
const EVENTS_PER_MESSAGE: usize = 4096;

/// An EVENT a client sent to this master recorded popularity: the other
/// masters get it at the next flush.
pub fn note(catalog: &[u8], item: &str, weight: f64, ts_ms: i64) {
    OUTBOX.lock().note(catalog, item.as_bytes(), weight, ts_ms);
}

/// Every `FLUSH_MS` on the main thread: sends the noted events to every
/// node. A node that is no longer a master drops them (its events reached
/// its replicas as EVENTs; the new master's clients send new ones).
pub fn flush(ctx: &Context) {
    let batches = {
        let mut o = OUTBOX.lock();
        if o.is_empty() {
            return;
        }
        o.take()
    };
    if !is_master(ctx) {
        return;
    }
    for (catalog, events) in batches {
        for chunk in events.chunks(EVENTS_PER_MESSAGE) {
            SENT.fetch_add(chunk.len() as u64, Relaxed);
            send(
                ctx,
                None,
                &Message::Popularity {
                    catalog: catalog.clone(),
                    events: chunk.to_vec(),
                },
            );
        }
    }
}

/// The catalog named `name` on this node: its key, or its copy.
fn catalog_named(ctx: &Context, name: &[u8]) -> Option<SharedCatalog> {
    match catalog_if_any(ctx, &redis_string(ctx, name)) {
        Ok(Some(c)) => Some(c),
        _ => store::copy_catalog(name),
    }
}

/// Records `events` in `catalog`; returns the ones recorded.
fn record(catalog: &SharedCatalog, events: &[PopularityEvent]) -> Vec<PopularityEvent> {
    let now = now_ms();
    let c = catalog.read();
    events
        .iter()
        .filter(|e| {
            let slot = std::str::from_utf8(&e.item)
                .ok()
                .and_then(|id| c.slot_of(id));
            let ok = e.weight.is_finite()
                && (0..=MAX_EVENT_MS).contains(&e.ts_ms)
                && check_event_time(e.ts_ms, now).is_ok();
            match (slot, ok) {
                (Some(slot), true) => {
                    c.record_popularity(slot, e.weight, e.ts_ms);
                    true
                }
                _ => {
                    REFUSED.fetch_add(1, Relaxed);
                    false
                }
            }
        })
        .cloned()
        .collect()
}

/// Another master's events on `name`: recorded here (a master only), and
/// replicated to this node's replicas and AOF.
pub fn on_events(ctx: &Context, name: &[u8], events: &[PopularityEvent]) {
    let Some(catalog) = catalog_named(ctx, name) else {
        return;
    };
    let recorded = record(&catalog, events);
    RECORDED.fetch_add(recorded.len() as u64, Relaxed);
    if recorded.is_empty() {
        return;
    }
    let fields: Vec<(String, String)> = recorded
        .iter()
        .map(|e| (e.weight.to_string(), e.ts_ms.to_string()))
        .collect();
    let mut args: Vec<&[u8]> = vec![b"POPULARITY", name];
    for (e, (w, t)) in recorded.iter().zip(&fields) {
        args.extend([&e.item[..], w.as_bytes(), t.as_bytes()]);
    }
    replicate(ctx, "RECSYS.COPY", &args);
}

/// `RECSYS.COPY POPULARITY catalog (item weight ts)...` replayed by a
/// replica or the AOF: the events another master sent this node's master.
pub fn replay(ctx: &Context, name: &[u8], args: &[&[u8]]) -> Result<(), String> {
    if !args.len().is_multiple_of(3) {
        return Err("POPULARITY takes item, weight and time triples".into());
    }
    let number = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
    let events = args
        .chunks(3)
        .map(|t| {
            Some(PopularityEvent {
                item: t[0].to_vec(),
                weight: number(t[1])?.parse().ok()?,
                ts_ms: number(t[2])?.parse().ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("POPULARITY has a weight or time that is not a number")?;
    if let Some(catalog) = catalog_named(ctx, name) {
        RECORDED.fetch_add(record(&catalog, &events).len() as u64, Relaxed);
    }
    Ok(())
}

/// Events sent, recorded from other masters, refused, dropped (INFO).
pub fn counts() -> [u64; 4] {
    [
        SENT.load(Relaxed),
        RECORDED.load(Relaxed),
        REFUSED.load(Relaxed),
        OUTBOX.lock().dropped,
    ]
}
