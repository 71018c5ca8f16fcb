//! Embedding rows kept as Redis keys (`SCHEMA ... ROWS <prefix>`,
//! docs/ranking.md): where a RANK finds the rows its batch misses in the
//! core's hot-row cache (`recsys_core::rank::rows`), and how the caches
//! learn that a row changed.
//!
//! - Fetch ([`KeyspaceRows`], on a worker): with the GIL held (once per
//!   [`KEYS_PER_LOCK`] keys), the keys of slots this node serves (every
//!   key outside a cluster) are read from the keyspace, and one `RowFetch`
//!   goes to the master of each other slot's keys. The worker then waits, without the GIL, for the
//!   `RowData` answers until the deadline (`recsys.row-fetch-timeout-ms`);
//!   what is not answered by then is read as zeros, and counted. The
//!   client stays blocked meanwhile; the main thread never waits.
//! - Answer ([`on_fetch`], main thread): a master reads the keys of its
//!   slots and says `NotMine` for the others (a slot that moved).
//! - Invalidate: a keyspace event on a key under a loaded model's prefix
//!   (SET, DEL, EXPIRE, eviction, a slot migrating in...) drops the row
//!   from this node's cache at once; a master also queues the key, and
//!   every [`FLUSH_MS`] sends the queue to every node (`RowsChanged`), so
//!   another node's cache holds an old row at most that long after the
//!   write (plus the bus's latency). FLUSHALL and a full sync empty the
//!   cache.

use std::collections::HashMap;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_cell::sync::Lazy;
use parking_lot::{Condvar, Mutex};
use recsys_core::cluster::message::{Message, RowAnswer, MAX_ROW_KEYS};
use recsys_core::cluster::slot::key_slot;
use recsys_core::rank::rows::{self, Fetched, RowFetcher};
use redis_module::{raw, Context, KeyType, RedisValue};

use super::{enabled, is_master, my_id, send, with_gil};
use crate::util::{redis_string, reply_bytes, string_bytes};

/// How often a master sends the row keys written since the last flush.
pub const FLUSH_MS: i64 = 10;
/// Queued changed keys past which a flush tells every node to forget all
/// rows instead of naming them (a bulk load).
const MAX_QUEUED: usize = 4 * MAX_ROW_KEYS;
/// Most keys read per hold of the GIL (a large batch's misses take it
/// several times, so the main thread never waits long for it).
const KEYS_PER_LOCK: usize = 1024;
const _: () = assert!(KEYS_PER_LOCK <= MAX_ROW_KEYS);
/// How long a slot map read from CLUSTER SLOTS is trusted.
const SLOTS_TTL: Duration = Duration::from_secs(1);

/// Counters for INFO.
static REMOTE_FETCHES: AtomicU64 = AtomicU64::new(0);
static REMOTE_ROWS: AtomicU64 = AtomicU64::new(0);
static LOCAL_ROWS: AtomicU64 = AtomicU64::new(0);
static NOT_MINE: AtomicU64 = AtomicU64::new(0);
static LATE_ANSWERS: AtomicU64 = AtomicU64::new(0);
static FETCHES_SERVED: AtomicU64 = AtomicU64::new(0);
static CHANGES_SENT: AtomicU64 = AtomicU64::new(0);
static CHANGES_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Which master serves each slot, as CLUSTER SLOTS said at `read`.
struct SlotOwners {
    /// Index into `nodes` per slot; `u16::MAX` for a slot no one serves.
    owner: Vec<u16>,
    nodes: Vec<String>,
    read: Instant,
}

static OWNERS: Mutex<Option<SlotOwners>> = Mutex::new(None);
/// Set when a master answered `NotMine`: the map is re-read before the
/// next fetch.
static OWNERS_STALE: AtomicBool = AtomicBool::new(false);

impl SlotOwners {
    fn read(ctx: &Context) -> SlotOwners {
        let mut owners = SlotOwners {
            owner: vec![u16::MAX; 16384],
            nodes: Vec::new(),
            read: Instant::now(),
        };
        let Ok(RedisValue::Array(ranges)) = ctx.call("CLUSTER", &["SLOTS"][..]) else {
            return owners;
        };
        for range in &ranges {
            let RedisValue::Array(f) = range else {
                continue;
            };
            let (
                Some(RedisValue::Integer(a)),
                Some(RedisValue::Integer(b)),
                Some(RedisValue::Array(master)),
            ) = (f.first(), f.get(1), f.get(2))
            else {
                continue;
            };
            let Some(id) = master.get(2).and_then(reply_bytes) else {
                continue;
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            let n = match owners.nodes.iter().position(|x| *x == id) {
                Some(n) => n,
                None => {
                    owners.nodes.push(id);
                    owners.nodes.len() - 1
                }
            };
            let (a, b) = ((*a).clamp(0, 16383) as usize, (*b).clamp(0, 16383) as usize);
            for slot in a..=b {
                owners.owner[slot] = n as u16;
            }
        }
        owners
    }

    fn of(&self, key: &[u8]) -> Option<&str> {
        let n = self.owner[key_slot(key) as usize];
        self.nodes.get(n as usize).map(String::as_str)
    }
}

/// Where a key's row is: here, on another master, or nowhere known.
enum Place {
    Here,
    Node(String),
    Unknown,
}

/// Runs `f` with the current slot map (re-read when old or stale). With
/// the GIL held.
fn with_owners<T>(ctx: &Context, f: impl FnOnce(&dyn Fn(&[u8]) -> Place) -> T) -> T {
    if !enabled() {
        return f(&|_| Place::Here);
    }
    let mut guard = OWNERS.lock();
    let fresh = guard
        .as_ref()
        .is_some_and(|o| o.read.elapsed() < SLOTS_TTL && !OWNERS_STALE.load(Relaxed));
    if !fresh {
        *guard = None;
    }
    let owners = guard.get_or_insert_with(|| {
        OWNERS_STALE.store(false, Relaxed);
        SlotOwners::read(ctx)
    });
    let me = my_id();
    f(&|key| match owners.of(key) {
        Some(id) if id == me => Place::Here,
        Some(id) => Place::Node(id.to_string()),
        None => Place::Unknown,
    })
}

/// The row at `key` in this node's keyspace. With the GIL held.
fn read_local(ctx: &Context, key: &[u8]) -> Fetched {
    let k = ctx.open_key(&redis_string(ctx, key));
    if k.key_type() != KeyType::String {
        return Fetched::Absent;
    }
    match k.read() {
        Ok(Some(bytes)) => Fetched::Row(bytes.to_vec()),
        _ => Fetched::Absent,
    }
}

/// A fetch waiting for other masters' answers.
struct Pending {
    state: Mutex<PendingState>,
    answered: Condvar,
}

struct PendingState {
    answers: Vec<Fetched>,
    /// Per master still to answer: the positions of its keys.
    waiting: HashMap<String, Vec<usize>>,
}

static PENDING: Lazy<Mutex<HashMap<u64, Arc<Pending>>>> = Lazy::new(Default::default);
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// The module's [`RowFetcher`]: this node's keyspace, then other masters.
pub struct KeyspaceRows;

impl RowFetcher for KeyspaceRows {
    fn fetch(&self, keys: &[Vec<u8>], deadline: Instant) -> Vec<Fetched> {
        keys.chunks(KEYS_PER_LOCK)
            .flat_map(|chunk| fetch_chunk(chunk, deadline))
            .collect()
    }
}

/// Fetches up to [`KEYS_PER_LOCK`] keys: reads this node's, asks the other
/// masters for theirs, then waits for them until `deadline`.
fn fetch_chunk(keys: &[Vec<u8>], deadline: Instant) -> Vec<Fetched> {
    let request = NEXT_REQUEST.fetch_add(1, Relaxed);
    let pending = with_gil(|ctx| {
        let mut answers = vec![Fetched::Unanswered; keys.len()];
        let mut remote: HashMap<String, Vec<usize>> = HashMap::new();
        with_owners(ctx, |place| {
            for (i, key) in keys.iter().enumerate() {
                match place(key) {
                    Place::Here => answers[i] = read_local(ctx, key),
                    Place::Node(id) => remote.entry(id).or_default().push(i),
                    Place::Unknown => {}
                }
            }
        });
        LOCAL_ROWS.fetch_add(
            (keys.len() - remote.values().map(Vec::len).sum::<usize>()) as u64,
            Relaxed,
        );
        if remote.is_empty() {
            return Err(answers);
        }
        // KEYS_PER_LOCK <= MAX_ROW_KEYS: one message per master.
        for (node, at) in &remote {
            let keys = at.iter().map(|&i| keys[i].clone()).collect();
            send(ctx, Some(node), &Message::RowFetch { request, keys });
            REMOTE_FETCHES.fetch_add(1, Relaxed);
        }
        let pending = Arc::new(Pending {
            state: Mutex::new(PendingState {
                answers,
                waiting: remote,
            }),
            answered: Condvar::new(),
        });
        PENDING.lock().insert(request, pending.clone());
        Ok(pending)
    });
    let pending = match pending {
        Some(Ok(p)) => p,
        Some(Err(answers)) => return answers,
        None => return vec![Fetched::Unanswered; keys.len()],
    };
    let mut state = pending.state.lock();
    while !state.waiting.is_empty() {
        if pending
            .answered
            .wait_until(&mut state, deadline)
            .timed_out()
        {
            break;
        }
    }
    let answers = std::mem::take(&mut state.answers);
    drop(state);
    PENDING.lock().remove(&request);
    answers
}

/// A `RowFetch` from `from` (main thread): the rows of this master's
/// slots, `NotMine` for the others.
pub fn on_fetch(ctx: &Context, from: &str, request: u64, keys: Vec<Vec<u8>>) {
    let master = is_master(ctx);
    let rows = with_owners(ctx, |place| {
        keys.iter()
            .map(|key| match (master, place(key)) {
                (true, Place::Here) => match read_local(ctx, key) {
                    Fetched::Row(bytes) => RowAnswer::Row(bytes),
                    _ => RowAnswer::Absent,
                },
                _ => RowAnswer::NotMine,
            })
            .collect()
    });
    FETCHES_SERVED.fetch_add(1, Relaxed);
    send(ctx, Some(from), &Message::RowData { request, rows });
}

/// A `RowData` answer (main thread): hands the rows to the waiting fetch.
pub fn on_data(from: &str, request: u64, rows: Vec<RowAnswer>) {
    let Some(pending) = PENDING.lock().get(&request).cloned() else {
        LATE_ANSWERS.fetch_add(1, Relaxed);
        return;
    };
    let mut state = pending.state.lock();
    // The answer to the one RowFetch sent to that master: its keys' places.
    let Some(mine) = state.waiting.remove(from) else {
        LATE_ANSWERS.fetch_add(1, Relaxed);
        return;
    };
    for (i, answer) in mine.into_iter().zip(rows) {
        state.answers[i] = match answer {
            RowAnswer::Row(bytes) => {
                REMOTE_ROWS.fetch_add(1, Relaxed);
                Fetched::Row(bytes)
            }
            RowAnswer::Absent => Fetched::Absent,
            RowAnswer::NotMine => {
                NOT_MINE.fetch_add(1, Relaxed);
                OWNERS_STALE.store(true, Relaxed);
                Fetched::Unanswered
            }
        };
    }
    if state.waiting.is_empty() {
        pending.answered.notify_all();
    }
}

/// Changed row keys a master has not sent yet; `None` once past
/// [`MAX_QUEUED`] (every node forgets all rows).
static CHANGED: Mutex<Option<Vec<Vec<u8>>>> = Mutex::new(Some(Vec::new()));

/// A keyspace event: a row key changed or went away.
///
/// # Safety
/// Called by Redis on the main thread with a live event name and key.
unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    _event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `key` is live during the callback.
        let key = unsafe { string_bytes(key) };
        if !rows::is_row_key(key) {
            return;
        }
        rows::invalidate(key);
        if enabled() && is_master(&Context::new(ctx)) {
            let mut changed = CHANGED.lock();
            if let Some(list) = changed.as_mut() {
                if list.len() >= MAX_QUEUED {
                    *changed = None;
                } else {
                    list.push(key.to_vec());
                }
            }
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// Every [`FLUSH_MS`]: the changed keys to every node.
fn flush(ctx: &Context) {
    let changed = CHANGED.lock().replace(Vec::new());
    match changed {
        Some(keys) if keys.is_empty() => {}
        Some(keys) => {
            for chunk in keys.chunks(MAX_ROW_KEYS) {
                CHANGES_SENT.fetch_add(chunk.len() as u64, Relaxed);
                send(
                    ctx,
                    None,
                    &Message::RowsChanged {
                        keys: chunk.to_vec(),
                    },
                );
            }
        }
        None => send(ctx, None, &Message::RowsChanged { keys: Vec::new() }),
    }
}

/// A `RowsChanged` from a master: forget those rows (all of them, when
/// it names none).
pub fn on_changed(keys: &[Vec<u8>]) {
    CHANGES_RECEIVED.fetch_add(keys.len() as u64, Relaxed);
    if keys.is_empty() {
        rows::invalidate_all();
    }
    for key in keys {
        rows::invalidate(key);
    }
}

/// FLUSHALL / FLUSHDB, or a data set loaded (full sync, restart): every
/// cached row may be wrong, here and, for a master's rows, on every node
/// (the next flush tells them to forget all).
extern "C" fn on_flush_or_load(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| {
        rows::invalidate_all();
        if enabled() && is_master(&Context::new(ctx)) {
            *CHANGED.lock() = None;
        }
    });
}

/// At module load, in and out of a cluster: the fetcher, the keyspace
/// events that invalidate rows, and in a cluster the flush timer.
pub fn init(ctx: &Context) -> Result<(), String> {
    rows::install_fetcher(Box::new(KeyspaceRows));
    // SAFETY: module init on the main thread; the API table is set.
    unsafe {
        let subscribe = raw::RedisModule_SubscribeToKeyspaceEvents
            .ok_or("this server has no keyspace event API")?;
        let events = raw::REDISMODULE_NOTIFY_GENERIC
            | raw::REDISMODULE_NOTIFY_STRING
            | raw::REDISMODULE_NOTIFY_EXPIRED
            | raw::REDISMODULE_NOTIFY_EVICTED;
        if subscribe(ctx.ctx, events as c_int, Some(on_keyspace_event))
            != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot subscribe to keyspace events".into());
        }
        let server_events =
            raw::RedisModule_SubscribeToServerEvent.ok_or("this server has no server event API")?;
        for id in [
            raw::REDISMODULE_EVENT_FLUSHDB,
            raw::REDISMODULE_EVENT_LOADING,
        ] {
            let event = raw::RedisModuleEvent { id, dataver: 1 };
            if server_events(ctx.ctx, event, Some(on_flush_or_load)) != raw::REDISMODULE_OK as c_int
            {
                return Err("cannot subscribe to flush and loading events".into());
            }
        }
    }
    if enabled() {
        crate::util::every(ctx, FLUSH_MS, "row changes flush", flush);
    }
    Ok(())
}

/// `INFO recsys` fields of the row cache and its fetches.
pub fn info(g: &mut crate::metrics::Gauges) {
    let s = &rows::STATS;
    let (held, bytes) = rows::cache().usage();
    g.add("row_cache_rows", held);
    g.add("row_cache_bytes", bytes);
    g.add("row_cache_capacity_bytes", rows::cache().capacity());
    g.add("row_lookups", s.lookups.load(Relaxed));
    g.add("row_hits", s.hits.load(Relaxed));
    g.add("row_misses", s.misses.load(Relaxed));
    g.add("row_fetches", s.fetches.load(Relaxed));
    g.add("row_fetch_us", s.fetch_us.load(Relaxed));
    g.add("row_fetched", s.fetched.load(Relaxed));
    g.add("row_fetched_bytes", s.fetched_bytes.load(Relaxed));
    g.add("row_fetched_local", LOCAL_ROWS.load(Relaxed));
    g.add("row_fetched_remote", REMOTE_ROWS.load(Relaxed));
    g.add("row_absent", s.absent.load(Relaxed));
    g.add("row_malformed", s.malformed.load(Relaxed));
    g.add("row_unanswered", s.unanswered.load(Relaxed));
    g.add("row_remote_requests", REMOTE_FETCHES.load(Relaxed));
    g.add("row_remote_not_mine", NOT_MINE.load(Relaxed));
    g.add("row_remote_late_answers", LATE_ANSWERS.load(Relaxed));
    g.add("row_requests_served", FETCHES_SERVED.load(Relaxed));
    g.add("row_changes_sent", CHANGES_SENT.load(Relaxed));
    g.add("row_changes_received", CHANGES_RECEIVED.load(Relaxed));
}
