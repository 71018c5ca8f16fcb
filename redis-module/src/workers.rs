//! The worker pool and the blocked-client glue: heavy commands block their
//! client on the main thread, run here, and hand a [`Reply`] back that the main
//! thread writes in the reply callback. Also the background reaper that frees
//! large values off the main thread.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crossbeam_channel::{unbounded, Sender};
use once_cell::sync::OnceCell;
use redis_module::raw;

use crate::reply::Reply;
use crate::util::panic_message;

type Job = Box<dyn FnOnce() + Send + 'static>;

static POOL: OnceCell<Sender<Job>> = OnceCell::new();
static REAPER: OnceCell<Sender<Box<dyn Send>>> = OnceCell::new();

/// Starts `n` worker threads and the reaper; called once from module init.
pub fn start(n: usize) -> Result<(), String> {
    let (tx, rx) = unbounded::<Job>();
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("recsys-worker-{i}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
    }
    let (rtx, rrx) = unbounded::<Box<dyn Send>>();
    std::thread::Builder::new()
        .name("recsys-reaper".into())
        .spawn(move || {
            while let Ok(garbage) = rrx.recv() {
                drop(garbage);
            }
        })
        .map_err(|e| format!("cannot start reaper thread: {e}"))?;
    POOL.set(tx).map_err(|_| "worker pool already started")?;
    REAPER.set(rtx).map_err(|_| "reaper already started")?;
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

/// A blocked client waiting for a worker's reply.
pub struct Blocked(*mut raw::RedisModuleBlockedClient);

// SAFETY: Redis allows unblocking a blocked client from any thread.
unsafe impl Send for Blocked {}

impl Blocked {
    /// Blocks the client of `ctx` (main thread only).
    pub fn new(ctx: *mut raw::RedisModuleCtx) -> Blocked {
        // SAFETY: called on the main thread with the command's context.
        let bc = unsafe {
            raw::RedisModule_BlockClient.unwrap()(
                ctx,
                Some(reply_callback),
                None,
                Some(free_reply),
                0,
            )
        };
        Blocked(bc)
    }

    /// Hands the reply to the main thread and unblocks the client.
    pub fn finish(self, reply: Reply) {
        let data = Box::into_raw(Box::new(reply)) as *mut c_void;
        // SAFETY: `self.0` came from RedisModule_BlockClient and is unblocked once.
        unsafe { raw::RedisModule_UnblockClient.unwrap()(self.0, data) };
        std::mem::forget(self);
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // A job that never produced a reply still must unblock its client.
        let data = Box::into_raw(Box::new(Reply::error("request was dropped"))) as *mut c_void;
        // SAFETY: as in `finish`; `finish` forgets self, so this runs at most once.
        unsafe { raw::RedisModule_UnblockClient.unwrap()(self.0, data) };
    }
}

extern "C" fn reply_callback(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: called by Redis on the main thread with the privdata we passed.
    let data =
        unsafe { raw::RedisModule_GetBlockedClientPrivateData.unwrap()(ctx) } as *const Reply;
    if let Some(reply) = unsafe { data.as_ref() } {
        reply.write(ctx);
    }
    raw::REDISMODULE_OK as c_int
}

extern "C" fn free_reply(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: `data` is the Box<Reply> leaked in `finish`/`drop`.
        drop(unsafe { Box::from_raw(data as *mut Reply) });
    }
}

/// Runs `job` on a worker; its reply (or a panic turned into an error)
/// unblocks the client. Without a pool the job runs inline.
pub fn spawn(blocked: Blocked, job: impl FnOnce() -> Reply + Send + 'static) {
    let run = move || {
        let reply = catch_unwind(AssertUnwindSafe(job))
            .unwrap_or_else(|p| Reply::error(format!("internal error: {}", panic_message(&p))));
        blocked.finish(reply);
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
