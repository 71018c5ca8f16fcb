//! The module in a Redis Cluster (docs/cluster.md). A catalog key lives
//! on the master that owns its slot, as any key does; every other master
//! keeps a copy of it, fed over the cluster bus, so RECSYS.RECOMMEND and
//! RECSYS.EVENT are routed by the user key and served where the user's
//! hash is. Each master's copies reach its replicas and its AOF as
//! ordinary replicated commands (RECSYS.COPY), and its RDB as aux data.
//!
//! - this file: whether the server runs in cluster mode, this node's id,
//!   sending messages, the announce timer and the counters INFO shows;
//! - [`bus`]: receiving messages and acting on them;
//! - [`nodelay`]: TCP_NODELAY on the bus links Redis 7.0 opens without it;
//! - [`store`]: the copies, the catalog a request uses, applying updates
//!   and snapshots, RECSYS.COPY and RECSYS.COPIES, and the copies' RDB
//!   aux data;
//! - [`registry`]: the names of the catalog keys this node holds;
//! - [`plugins`]: plugins loaded or removed on one node reach every node;
//! - [`popularity`]: every master's popularity sums the cluster's EVENTs;
//! - [`wait`]: RECSYS.COPIES.WAIT, a writer waiting for other masters'
//!   copies;
//! - [`rows`]: embedding rows kept as keys: fetched from the keyspace and
//!   other masters, and invalidated in every node's cache (also outside a
//!   cluster).
//!
//! The rules that keep a copy equal to its owner's catalog, or out of
//! service, are in the core (`recsys_core::cluster::copies`).

pub mod bus;
pub mod nodelay;
pub mod plugins;
pub mod popularity;
pub mod registry;
pub mod rows;
pub mod store;
pub mod wait;

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use once_cell::sync::OnceCell;
use recsys_core::cluster::message::Message;
use redis_module::{raw, Context, ContextFlags, RedisValue};

use crate::util::{log_warning, panic_message, reply_bytes};

/// The message type of every recsys bus message.
const MESSAGE_TYPE: u8 = 0x52;
/// How often each master announces its catalogs and plugins.
pub const ANNOUNCE_MS: i64 = 1000;
/// Bytes of catalog encoding per snapshot message.
pub const PART_BYTES: usize = 1 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether this node was a master at the last tick (INFO has no context).
static WAS_MASTER: AtomicBool = AtomicBool::new(true);

/// Counters for INFO.
pub static SENT: AtomicU64 = AtomicU64::new(0);
pub static SENT_BYTES: AtomicU64 = AtomicU64::new(0);
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
pub static RECEIVED_BYTES: AtomicU64 = AtomicU64::new(0);
pub static BAD_MESSAGES: AtomicU64 = AtomicU64::new(0);
pub static SEND_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Whether the server runs with `cluster-enabled yes`.
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Whether this node is a master (only masters announce, answer snapshot
/// requests and apply bus updates; replicas follow their master).
pub fn is_master(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::MASTER)
}

/// Whether the command runs from the replication stream or the AOF (its
/// effects are already everywhere they must be).
pub fn replayed(ctx: &Context) -> bool {
    ctx.get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
}

/// This node's cluster id (40 characters).
pub fn my_id() -> String {
    // SAFETY: the API table is set at init; the id is 40 bytes, not
    // NUL-terminated, owned by the server.
    unsafe {
        match raw::RedisModule_GetMyClusterID {
            Some(f) => {
                let p = f();
                if p.is_null() {
                    return String::new();
                }
                let bytes = std::slice::from_raw_parts(
                    p as *const u8,
                    raw::REDISMODULE_NODE_ID_LEN as usize,
                );
                String::from_utf8_lossy(bytes).into_owned()
            }
            None => String::new(),
        }
    }
}

/// A module context usable from any thread once its lock is taken
/// (`RedisModule_GetDetachedThreadSafeContext`, made at load).
struct Detached(*mut raw::RedisModuleCtx);
// SAFETY: used only between ThreadSafeContextLock and Unlock.
unsafe impl Send for Detached {}
unsafe impl Sync for Detached {}
static DETACHED: OnceCell<Detached> = OnceCell::new();
/// Redis's main thread, where [`with_gil`] would wait for itself.
static MAIN_THREAD: OnceCell<std::thread::ThreadId> = OnceCell::new();

/// Runs `f` with the GIL held on a context of this module, from a thread
/// that is not the main thread.
pub fn with_gil<T>(f: impl FnOnce(&Context) -> T) -> Option<T> {
    if MAIN_THREAD.get() == Some(&std::thread::current().id()) {
        // The main thread holds the GIL already: taking it again would
        // wait forever.
        return None;
    }
    let d = DETACHED.get()?;
    // SAFETY: the API table is set at init; the detached context lives as
    // long as the process; the lock is released before returning.
    unsafe {
        let (Some(lock), Some(unlock)) = (
            raw::RedisModule_ThreadSafeContextLock,
            raw::RedisModule_ThreadSafeContextUnlock,
        ) else {
            return None;
        };
        lock(d.0);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&Context::new(d.0))));
        unlock(d.0);
        match out {
            Ok(v) => Some(v),
            Err(p) => {
                log_warning(&format!(
                    "recsys: cluster job failed: {}",
                    panic_message(&p)
                ));
                None
            }
        }
    }
}

/// Sends `m` to node `to`, or with `None` to every node. With the GIL held.
pub fn send(ctx: &Context, to: Option<&str>, m: &Message) {
    let bytes = m.encode();
    let Ok(len) = u32::try_from(bytes.len()) else {
        SEND_FAILURES.fetch_add(1, Relaxed);
        return;
    };
    let target = match to.map(CString::new) {
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            SEND_FAILURES.fetch_add(1, Relaxed);
            return;
        }
        None => None,
    };
    // SAFETY: the API table is set at init; `ctx` has this module; the
    // target and payload outlive the call.
    let ok = unsafe {
        match raw::RedisModule_SendClusterMessage {
            Some(f) => {
                f(
                    ctx.ctx,
                    target.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                    MESSAGE_TYPE,
                    bytes.as_ptr().cast(),
                    len,
                ) == raw::REDISMODULE_OK as c_int
            }
            None => false,
        }
    };
    if ok {
        SENT.fetch_add(1, Relaxed);
        SENT_BYTES.fetch_add(bytes.len() as u64, Relaxed);
    } else {
        SEND_FAILURES.fetch_add(1, Relaxed);
    }
}

/// The slot ranges this node serves as a master, as `a-b,c,d-e` (from
/// CLUSTER SLOTS); outside a cluster every slot, `0-16383`. Empty when
/// the node serves none (a replica, or a master without slots).
pub fn served_slots(ctx: &Context) -> String {
    if !enabled() {
        return "0-16383".into();
    }
    let me = my_id();
    let Ok(RedisValue::Array(ranges)) = ctx.call("CLUSTER", &["SLOTS"][..]) else {
        return String::new();
    };
    let mut mine: Vec<(i64, i64)> = ranges
        .iter()
        .filter_map(|r| {
            let RedisValue::Array(f) = r else { return None };
            let (RedisValue::Integer(a), RedisValue::Integer(b), RedisValue::Array(master)) =
                (f.first()?, f.get(1)?, f.get(2)?)
            else {
                return None;
            };
            (reply_bytes(master.get(2)?)? == me.as_bytes()).then_some((*a, *b))
        })
        .collect();
    mine.sort_unstable();
    mine.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The cluster's parts of the catalog data type's callbacks
/// ([`crate::datatype::Hooks`]): installed at module load.
pub fn install_datatype_hooks() {
    crate::datatype::set_hooks(crate::datatype::Hooks {
        // SAFETY: the data type passes the live RDB handle of the load.
        loaded: |rdb, catalog| unsafe { registry::note_loaded(rdb, catalog) },
        unlink: |name, catalog| {
            registry::forget(name, catalog);
            store::hand_over(name, catalog);
        },
        aux_save: |rdb| {
            // SAFETY: the data type passes the live RDB handle of its aux save.
            unsafe {
                plugins::aux_save(rdb);
                store::aux_save(rdb);
            }
        },
        aux_load: |rdb| {
            // SAFETY: the data type passes the live RDB handle of its aux load.
            unsafe {
                plugins::aux_load(rdb)?;
                store::aux_load(rdb)
            }
        },
    });
}

/// Whether the server runs in cluster mode: before the commands are
/// registered (their key specs depend on it).
pub fn detect(ctx: &Context) {
    ENABLED.store(ctx.get_flags().contains(ContextFlags::CLUSTER), Relaxed);
}

/// `INFO recsys` fields of the cluster part.
pub fn info(g: &mut crate::metrics::Gauges) {
    let master = WAS_MASTER.load(Relaxed);
    let [copies, serving, catching_up, updates, snapshots] = store::counts(master);
    g.add("cluster_enabled", enabled() as u64);
    g.add("copies", copies);
    g.add("copies_serving", serving);
    g.add("copies_catching_up", catching_up);
    g.add("copy_updates_applied", updates);
    g.add("copy_snapshots_installed", snapshots);
    g.add("copy_snapshots_sent", store::SNAPSHOTS_SENT.load(Relaxed));
    let [waits, watches] = wait::counts();
    g.add("copy_waits", waits);
    g.add("copy_watches", watches);
    let [sent, recorded, refused, dropped] = popularity::counts();
    g.add("popularity_events_sent", sent);
    g.add("popularity_events_received", recorded);
    g.add("popularity_events_refused", refused);
    g.add("popularity_events_dropped", dropped);
    rows::info(g);
    g.add("bus_messages_sent", SENT.load(Relaxed));
    g.add("bus_bytes_sent", SENT_BYTES.load(Relaxed));
    g.add("bus_messages_received", RECEIVED.load(Relaxed));
    g.add("bus_bytes_received", RECEIVED_BYTES.load(Relaxed));
    g.add("bus_bad_messages", BAD_MESSAGES.load(Relaxed));
    g.add("bus_send_failures", SEND_FAILURES.load(Relaxed));
    g.add("bus_links_nodelay_set", nodelay::SET.load(Relaxed));
}

/// At module load: the detached context ([`with_gil`]); in cluster mode
/// also the bus receiver, the announce timer, and the keyspace and flush
/// events that keep the registry of catalog keys.
pub fn init(ctx: &Context) -> Result<(), String> {
    // SAFETY: module init on the main thread; the API table is set.
    unsafe {
        let detached = raw::RedisModule_GetDetachedThreadSafeContext
            .ok_or("this server has no detached thread-safe contexts")?;
        if DETACHED.get().is_none() {
            let _ = DETACHED.set(Detached(detached(ctx.ctx)));
        }
    }
    let _ = MAIN_THREAD.set(std::thread::current().id());
    rows::init(ctx)?;
    if !enabled() {
        return Ok(());
    }
    // SAFETY: module init on the main thread; the API table is set.
    unsafe {
        let register = raw::RedisModule_RegisterClusterMessageReceiver
            .ok_or("this server has no cluster message API")?;
        register(ctx.ctx, MESSAGE_TYPE, Some(bus::on_message));
        let subscribe = raw::RedisModule_SubscribeToKeyspaceEvents
            .ok_or("this server has no keyspace event API")?;
        if subscribe(
            ctx.ctx,
            raw::REDISMODULE_NOTIFY_GENERIC as c_int,
            Some(registry::on_keyspace_event),
        ) != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot subscribe to keyspace events".into());
        }
        let server_events =
            raw::RedisModule_SubscribeToServerEvent.ok_or("this server has no server event API")?;
        let flush = raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_FLUSHDB,
            dataver: 1,
        };
        if server_events(ctx.ctx, flush, Some(on_flush)) != raw::REDISMODULE_OK as c_int {
            return Err("cannot subscribe to FLUSHDB events".into());
        }
        let loading = raw::RedisModuleEvent {
            id: raw::REDISMODULE_EVENT_LOADING,
            dataver: 1,
        };
        if server_events(ctx.ctx, loading, Some(on_loading)) != raw::REDISMODULE_OK as c_int {
            return Err("cannot subscribe to loading events".into());
        }
    }
    crate::util::every(ctx, ANNOUNCE_MS, "cluster tick", tick);
    crate::util::every(
        ctx,
        recsys_core::cluster::popularity::FLUSH_MS,
        "popularity flush",
        popularity::flush,
    );
    Ok(())
}

/// FLUSHALL / FLUSHDB: the catalog keys are gone (their values may be
/// freed later, in the background).
extern "C" fn on_flush(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    registry::forget_all();
}

/// The data set is loaded (AOF replay, RDB at start or full sync): the
/// copies in it may have missed writes while this node was away, so none
/// serves on a master until an owner confirms it (within an announce).
extern "C" fn on_loading(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        store::unconfirm_all();
    }
}

/// Every announce interval: a master announces what it holds; copies
/// whose owner stopped announcing them, or whose key this node now holds,
/// are dropped.
fn tick(ctx: &Context) {
    let held = registry::held(ctx);
    WAS_MASTER.store(is_master(ctx), Relaxed);
    nodelay::apply(ctx);
    if is_master(ctx) {
        store::drop_shadowed(ctx, &held);
        store::expire(ctx);
        send(
            ctx,
            None,
            &Message::Announce {
                catalogs: held,
                plugins: plugins::versions(),
            },
        );
    }
}
