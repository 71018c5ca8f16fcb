//! Small helpers shared by the glue: panic payloads, the selected database,
//! replication of binary-safe commands, the clock, timers that repeat, and
//! logging that nothing can make panic.

use std::any::Any;
use std::ffi::CString;
use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context, RedisString};

/// The text of a caught panic payload.
pub fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// A job that runs every `period_ms` on the main thread.
struct Repeat {
    period_ms: i64,
    what: &'static str,
    tick: fn(&Context),
}

/// Calls `tick` on the main thread every `period_ms` milliseconds, from a
/// module timer that re-arms itself after each call (for the life of the
/// process); a panic in `tick` is logged as `what` failing, and the timer
/// goes on.
pub fn every(ctx: &Context, period_ms: i64, what: &'static str, tick: fn(&Context)) {
    let job = Box::into_raw(Box::new(Repeat {
        period_ms,
        what,
        tick,
    }));
    arm(ctx, job);
}

fn arm(ctx: &Context, job: *mut Repeat) {
    // SAFETY: the API table is set at init; main thread; `job` lives for
    // the process (leaked by `every`).
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx.ctx, (*job).period_ms, Some(fire), job as *mut c_void);
        }
    }
}

extern "C" fn fire(ctx: *mut raw::RedisModuleCtx, job: *mut c_void) {
    let ctx = Context::new(ctx);
    let job = job as *mut Repeat;
    // SAFETY: the Repeat leaked by `every`, never freed.
    let (what, tick) = unsafe { ((*job).what, (*job).tick) };
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| tick(&ctx))) {
        log_warning(&format!("recsys: {what} failed: {}", panic_message(&p)));
    }
    arm(&ctx, job);
}

/// The bytes of a string reply of `Context::call` (simple, bulk or
/// binary); `None` for any other reply.
pub fn reply_bytes(v: &redis_module::RedisValue) -> Option<Vec<u8>> {
    use redis_module::RedisValue;
    match v {
        RedisValue::SimpleString(s) | RedisValue::BulkString(s) => Some(s.as_bytes().to_vec()),
        RedisValue::StringBuffer(b) => Some(b.clone()),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The database the command runs in (for work finished on another thread).
pub fn selected_db(ctx: &Context) -> i32 {
    // SAFETY: the API table is written once by RedisModule_Init, before any
    // command runs; `ctx` is the command's live context.
    unsafe {
        match raw::RedisModule_GetSelectedDb {
            Some(f) => f(ctx.ctx),
            None => 0,
        }
    }
}

/// Selects `db` on a (thread-safe) context.
pub fn select_db(ctx: &Context, db: i32) {
    // SAFETY: as in `selected_db`; the context's GIL is held.
    unsafe {
        if let Some(f) = raw::RedisModule_SelectDb {
            f(ctx.ctx, db);
        }
    }
}

/// A Redis string holding `bytes` (binary-safe: unlike
/// `Context::create_string`, NUL bytes are kept, never a panic).
pub fn redis_string(ctx: &Context, bytes: &[u8]) -> RedisString {
    RedisString::create_from_slice(ctx.ctx, bytes)
}

/// The bytes of a string Redis passed to a callback (empty when the API
/// is missing).
///
/// # Safety
/// `s` must be a live string; the slice must not outlive it.
pub unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    // SAFETY: the API table is set at init; guaranteed by the caller.
    unsafe {
        let Some(ptr_len) = raw::RedisModule_StringPtrLen else {
            return &[];
        };
        let mut len = 0usize;
        let p = ptr_len(s, &mut len);
        std::slice::from_raw_parts(p as *const u8, len)
    }
}

/// Replicates `cmd args...` (binary-safe) to replicas and the AOF.
pub fn replicate(ctx: &Context, cmd: &str, args: &[&[u8]]) {
    let strings: Vec<RedisString> = args.iter().map(|a| redis_string(ctx, a)).collect();
    let mut ptrs: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.inner).collect();
    // SAFETY: the API table is written once by RedisModule_Init.
    let (Ok(name), Some(f)) = (CString::new(cmd), unsafe { raw::RedisModule_Replicate }) else {
        return;
    };
    // SAFETY: "v" passes an array of RedisModuleString pointers and its
    // length; the strings outlive the call.
    unsafe {
        f(
            ctx.ctx,
            name.as_ptr(),
            c"v".as_ptr(),
            ptrs.as_mut_ptr(),
            ptrs.len(),
        );
    }
}

/// Log levels the module uses.
#[derive(Clone, Copy)]
pub enum Level {
    Notice,
    Warning,
}

/// Writes a line to the Redis log. Safe for any text: NUL bytes (which
/// user data may carry) are replaced, and the message is passed as a `%s`
/// argument, never as the format string.
pub fn log(level: Level, message: &str) {
    // SAFETY: the API table is written once by RedisModule_Init.
    let Some(f) = (unsafe { raw::RedisModule_Log }) else {
        return;
    };
    let level = match level {
        Level::Notice => c"notice",
        Level::Warning => c"warning",
    };
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: a NULL context is allowed (the line is not tagged with the
    // module name); the format takes exactly one C string.
    unsafe {
        f(
            std::ptr::null_mut(),
            level.as_ptr(),
            c"%s".as_ptr(),
            text.as_ptr(),
        )
    };
}

pub fn log_notice(message: &str) {
    log(Level::Notice, message);
}

pub fn log_warning(message: &str) {
    log(Level::Warning, message);
}
