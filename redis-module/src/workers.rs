//! Threads: the worker pool, blocked clients, and the reaper.
//!
//! # The threading model
//!
//! Redis runs every command on its main thread, one at a time. A command
//! that only parses and touches a few fields (ITEM.GET, EVENT, INFO) runs
//! there and replies at once. A command whose work grows with the data
//! (SEARCH, SIMILAR, RECOMMEND, PLUGIN.LOAD's compilation, MODEL.SET's
//! build) parses and validates on the main thread, reads what it needs
//! from the keyspace (copies of the user's hash fields, the catalog's
//! `Arc`), then blocks its client ([`Blocked`]) and hands a job to this
//! pool ([`run_blocking`]), which parses those fields and runs it.
//! The worker computes a [`Reply`], a small owned tree, and unblocks the
//! client; Redis calls the reply callback on the main thread, which writes
//! it. Other clients are served meanwhile.
//!
//! Locking: a catalog is an `Arc<RwLock<Catalog>>`. Workers take the read
//! lock for the whole request, so a request sees one consistent catalog.
//! Writes (ITEM.SET, DEL, MODEL.SET's swap) take the write lock on the main
//! thread and wait for requests in flight on that catalog; requests on other
//! catalogs are unaffected. Popularity updates (EVENT) are atomics under
//! the read lock, so they never wait for searches. Deleting a key drops
//! the key's reference; a request in flight keeps its own `Arc`, finishes
//! on the old catalog, and the last reference frees it on the reaper
//! thread ([`drop_in_background`]) so a large graph never stalls Redis.
//!
//! Where Redis forbids blocking (inside MULTI, Lua, or when a replica or
//! the AOF loader replays a command) the job runs inline on the main thread.
//! So does a request whose work has a hard bound smaller than a thread hop
//! (an exact scan of a small catalog, [`run_blocking_unless`]; the rule and
//! its measured bound are in `recsys_core::pipeline::cost`), as Redis's
//! vector sets do with NOTHREAD.
//!
//! Rejected alternatives: running searches on the main thread (simple, but
//! one 2 ms RECOMMEND stalls every client), and a lock per HNSW node (fine
//! grained, but costs every search on a read-mostly structure and makes
//! deterministic replicas much harder). Redis vector sets make the same
//! choice: a read-mostly index under a read/write lock, searches on threads.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crossbeam_channel::{unbounded, Sender};
use once_cell::sync::OnceCell;
use redis_module::{raw, Context, ContextFlags};

use crate::metrics::{self, Timing};
use crate::reply::Reply;
use crate::util::{log_warning, panic_message};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Stack of worker (and batch) threads: room for the filter language's
/// recursive parser and evaluator on the largest expressions accepted.
pub const WORKER_STACK: usize = 16 << 20;

static POOL: OnceCell<Sender<Job>> = OnceCell::new();
static REAPER: OnceCell<Sender<Box<dyn Send>>> = OnceCell::new();
static THREADS: AtomicUsize = AtomicUsize::new(0);
static BUSY: AtomicUsize = AtomicUsize::new(0);
/// Requests that could have gone to a worker: answered inline because
/// their work was small ([`run_blocking_unless`]), and handed to a worker.
static INLINE: AtomicUsize = AtomicUsize::new(0);
static HANDED: AtomicUsize = AtomicUsize::new(0);

/// (requests answered inline as small, requests handed to workers) (INFO).
pub fn placement() -> (usize, usize) {
    (INLINE.load(Relaxed), HANDED.load(Relaxed))
}

/// Worker threads, those running a job, and jobs waiting (INFO).
pub fn load() -> (usize, usize, usize) {
    (
        THREADS.load(Relaxed),
        BUSY.load(Relaxed),
        POOL.get().map_or(0, |p| p.len()),
    )
}

/// Starts `n` worker threads and the reaper. Called from module init, as
/// its last fallible step; a library that stays mapped after a failed load
/// (Rust cdylibs are not unloaded) keeps its threads, and a later load
/// reuses them instead of failing.
pub fn start(n: usize) -> Result<(), String> {
    POOL.get_or_try_init(|| {
        let (tx, rx) = unbounded::<Job>();
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("recsys-worker-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        BUSY.fetch_add(1, Relaxed);
                        job();
                        BUSY.fetch_sub(1, Relaxed);
                    }
                })
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
            THREADS.fetch_add(1, Relaxed);
        }
        Ok::<_, String>(tx)
    })?;
    REAPER.get_or_try_init(|| {
        let (tx, rx) = unbounded::<Box<dyn Send>>();
        std::thread::Builder::new()
            .name("recsys-reaper".into())
            .spawn(move || {
                while let Ok(garbage) = rx.recv() {
                    drop(garbage);
                }
            })
            .map_err(|e| format!("cannot start reaper thread: {e}"))?;
        Ok::<_, String>(tx)
    })?;
    Ok(())
}

/// Frees `value` on the reaper thread (inline when the reaper is not running).
pub fn drop_in_background<T: Send + 'static>(value: T) {
    match REAPER.get() {
        Some(tx) => {
            if let Err(e) = tx.send(Box::new(value)) {
                drop(e.into_inner());
            }
        }
        None => drop(value),
    }
}

/// Work that follows a reply on the main thread, with the client's
/// context (RECOMMEND ... NOREPEAT writes what it served to the user hash).
pub type Then = Box<dyn FnOnce(&Context) + Send>;

/// What a worker hands the main thread: the reply, and what follows it.
struct Finished {
    reply: Reply,
    then: Option<Then>,
}

/// A blocked client waiting for a worker's reply, and the command's
/// timing (recorded when the reply is ready).
pub struct Blocked {
    client: *mut raw::RedisModuleBlockedClient,
    timing: Option<Timing>,
}

// SAFETY: Redis allows unblocking a blocked client from any thread.
unsafe impl Send for Blocked {}

impl Blocked {
    /// Blocks the client of `ctx`.
    ///
    /// # Safety
    /// `ctx` must be the live context of the command running on the main
    /// thread, in a context that may block (see [`can_block`]).
    pub unsafe fn new(ctx: *mut raw::RedisModuleCtx) -> Blocked {
        // SAFETY: guaranteed by the caller.
        let bc = unsafe {
            raw::RedisModule_BlockClient.unwrap()(
                ctx,
                Some(reply_callback),
                None,
                Some(free_reply),
                0,
            )
        };
        Blocked {
            client: bc,
            timing: metrics::current(),
        }
    }

    /// Starts (or resumes) the clock Redis adds to the command's time in
    /// commandstats, latencystats and SLOWLOG: the worker's time counts.
    fn measure(&self, start: bool) {
        // SAFETY: a live blocked client; Redis allows these from any thread.
        unsafe {
            let f = if start {
                raw::RedisModule_BlockedClientMeasureTimeStart
            } else {
                raw::RedisModule_BlockedClientMeasureTimeEnd
            };
            if let Some(f) = f {
                f(self.client);
            }
        }
    }

    /// Answers the client (from any thread) and unblocks it.
    pub fn answer(self, reply: Reply) {
        self.finish(reply, None);
    }

    /// Hands the reply (and what follows it) to the main thread and
    /// unblocks the client.
    fn finish(mut self, reply: Reply, then: Option<Then>) {
        self.unblock(reply, then);
        std::mem::forget(self);
    }

    fn unblock(&mut self, reply: Reply, then: Option<Then>) {
        if let Some((stats, started)) = self.timing.take() {
            stats.record(started, matches!(reply, Reply::Error(_)));
        }
        let data = Box::into_raw(Box::new(Finished { reply, then })) as *mut c_void;
        // SAFETY: `client` came from RedisModule_BlockClient and is
        // unblocked once (`finish` forgets self, so `drop` does not run).
        unsafe { raw::RedisModule_UnblockClient.unwrap()(self.client, data) };
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // A job that never produced a reply still must unblock its client.
        self.unblock(Reply::internal("request was dropped"), None);
    }
}

extern "C" fn reply_callback(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let written = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: called by Redis on the main thread with the privdata we
        // passed: a Box<Finished> from `finish`/`drop`, alive until
        // `free_reply`, and only used here (one call per blocked client).
        unsafe {
            let data = raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx) as *mut Finished;
            if let Some(finished) = data.as_mut() {
                finished.reply.write(ctx);
                if let Some(then) = finished.then.take() {
                    then(&Context::new(ctx));
                }
            }
        }
    }));
    if let Err(p) = written {
        log_warning(&format!(
            "recsys: writing a reply failed: {}",
            panic_message(&p)
        ));
    }
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_reply(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // Dropping a reply tree cannot panic; the guard keeps it that way.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `data` is the Box<Finished> leaked in `finish`/`drop`.
            drop(unsafe { Box::from_raw(data as *mut Finished) });
        }));
    }
}

/// Runs `job` on a worker; its reply (or a panic turned into an error)
/// unblocks the client. Without a pool the job runs inline.
pub fn spawn(blocked: Blocked, job: impl FnOnce() -> Reply + Send + 'static) {
    spawn_then(blocked, move || (job(), None));
}

/// [`spawn`] for a job whose reply may be followed by work on the main
/// thread.
fn spawn_then(blocked: Blocked, job: impl FnOnce() -> (Reply, Option<Then>) + Send + 'static) {
    let run = move || {
        blocked.measure(true);
        let (reply, then) = catch_unwind(AssertUnwindSafe(job))
            .unwrap_or_else(|p| (Reply::internal(panic_message(&p)), None));
        blocked.measure(false);
        blocked.finish(reply, then);
    };
    match POOL.get() {
        Some(tx) => {
            if let Err(e) = tx.send(Box::new(run)) {
                (e.into_inner())();
            }
        }
        None => run(),
    }
}

/// Whether Redis lets this command block its client (not inside MULTI, Lua,
/// or a replicated / AOF-loaded stream).
pub fn can_block(ctx: &Context) -> bool {
    !ctx.get_flags()
        .intersects(ContextFlags::DENY_BLOCKING | ContextFlags::MULTI | ContextFlags::LUA)
}

/// Runs `job` on a worker through a blocked client, or inline where Redis
/// forbids blocking.
pub fn run_blocking(ctx: &Context, job: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    run_blocking_unless(ctx, false, job)
}

/// Like [`run_blocking`], but runs `job` inline on the main thread when
/// `inline` says its work has a small hard bound (`recsys_core::pipeline::
/// cost`): a thread hop would cost more than the work.
pub fn run_blocking_unless(
    ctx: &Context,
    inline: bool,
    job: impl FnOnce() -> Reply + Send + 'static,
) -> Reply {
    run_then_unless(ctx, inline, move || (job(), None))
}

/// Like [`run_blocking_unless`] for a job that may leave work to do on the
/// main thread right after its reply (with the client's context).
pub fn run_then_unless(
    ctx: &Context,
    inline: bool,
    job: impl FnOnce() -> (Reply, Option<Then>) + Send + 'static,
) -> Reply {
    let now = |job: Box<dyn FnOnce() -> (Reply, Option<Then>)>| {
        let (reply, then) = job();
        if let Some(then) = then {
            then(ctx);
        }
        reply
    };
    if inline {
        INLINE.fetch_add(1, Relaxed);
        return now(Box::new(job));
    }
    if !can_block(ctx) {
        return now(Box::new(job));
    }
    HANDED.fetch_add(1, Relaxed);
    // SAFETY: the command's live context, and blocking is allowed here.
    spawn_then(unsafe { Blocked::new(ctx.ctx) }, job);
    Reply::Blocked
}

/// Runs `job` on a worker with no client waiting for it (a cluster
/// snapshot being encoded or decoded); a panic is logged, never reaches
/// Redis. Never inline: such jobs take the GIL, which the caller holds.
pub fn run_detached(what: &'static str, job: impl FnOnce() + Send + 'static) {
    let guarded = move || {
        if let Err(p) = catch_unwind(AssertUnwindSafe(job)) {
            crate::util::log_warning(&format!(
                "recsys: {what} failed: {}",
                crate::util::panic_message(&p)
            ));
        }
    };
    let job: Job = Box::new(guarded);
    let job = match POOL.get() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(e) => e.into_inner(),
        },
        None => job,
    };
    if let Err(e) = std::thread::Builder::new()
        .name("recsys-cluster".into())
        .spawn(job)
    {
        log_warning(&format!("recsys: {what}: cannot start a thread: {e}"));
    }
}
