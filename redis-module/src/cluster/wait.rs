//! RECSYS.COPIES.WAIT: a writer waits until other masters' copies of a
//! catalog have its writes, as WAIT does for replicas (docs/commands.md).
//! The owner blocks the client and asks every node (`CopyWait`); a master
//! whose copy serves at that position or later answers `CopyAt` at once,
//! or as soon as its copy gets there; the client gets the number of
//! masters that answered, when enough did or when its timeout passes. The
//! rules are in the core (`recsys_core::cluster::wait`).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::raw::{c_int, c_void};

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use recsys_core::catalog::log::LogPos;
use recsys_core::cluster::message::Message;
use recsys_core::cluster::wait::{Waits, Watches, MAX_WAIT_MS};
use recsys_core::Error;
use redis_module::{raw, Context, RedisString};

use super::{enabled, is_master, send, store};
use crate::args::{Args, CmdResult};
use crate::keys::catalog_at;
use crate::reply::Reply;
use crate::util::{log_warning, now_ms, panic_message};
use crate::workers::{can_block, Blocked};

/// Clients waiting on this node (as a catalog's owner).
static WAITS: Lazy<Mutex<Waits<Blocked>>> = Lazy::new(Default::default);
/// Positions owners asked about that this node's copies have not reached.
static WATCHES: Lazy<Mutex<Watches>> = Lazy::new(Default::default);

/// RECSYS.COPIES.WAIT catalog numcopies timeout
pub fn command(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog")?;
    let wanted = a.next_usize("numcopies", 0, 1 << 14)?;
    let timeout = a.next_int("timeout (milliseconds)", 1, MAX_WAIT_MS)?;
    if a.has_more() {
        return Err(Error::invalid(
            "RECSYS.COPIES.WAIT takes catalog, numcopies and timeout (milliseconds)",
        ));
    }
    let catalog = catalog_at(ctx, key)?;
    if !enabled() || wanted == 0 {
        return Ok(Reply::Int(0));
    }
    if !is_master(ctx) {
        return Err(Error::invalid(
            "RECSYS.COPIES.WAIT runs on the catalog's master (this node is a replica)",
        ));
    }
    if !can_block(ctx) {
        return Err(Error::invalid(
            "RECSYS.COPIES.WAIT cannot wait inside MULTI or a script",
        ));
    }
    let target = catalog.read().log_pos();
    let expected = other_masters(ctx);
    let name = key.as_slice().to_vec();
    // SAFETY: the command's live context on the main thread, and it may
    // block (checked above).
    let blocked = unsafe { Blocked::new(ctx.ctx) };
    let id = WAITS.lock().add(blocked, &name, target, wanted, expected);
    send(
        ctx,
        None,
        &Message::CopyWait {
            catalog: name,
            pos: target,
        },
    );
    // SAFETY: main thread; the API table is set at init; the timer's data is
    // the wait's id, not a pointer.
    unsafe {
        if let Some(create) = raw::RedisModule_CreateTimer {
            create(ctx.ctx, timeout, Some(time_up), id as usize as *mut c_void);
        }
    }
    Ok(Reply::Blocked)
}

/// A wait's timeout passed: answer with the masters that reached it so far.
extern "C" fn time_up(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    let run = || {
        let answered = WAITS.lock().take(data as usize as u64);
        if let Some((client, reached)) = answered {
            client.answer(Reply::Int(reached as i64));
        }
    };
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        log_warning(&format!(
            "recsys: ending a copies wait failed: {}",
            panic_message(&p)
        ));
    }
}

/// The ids of the cluster's masters other than this node.
fn other_masters(ctx: &Context) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // SAFETY: main thread; the API table is set at init. The list holds
    // `n` ids of REDISMODULE_NODE_ID_LEN bytes (not NUL-terminated); each
    // is copied into a C string before it is passed back, and the list is
    // freed with the function Redis gives for it.
    unsafe {
        let (Some(list), Some(free), Some(info)) = (
            raw::RedisModule_GetClusterNodesList,
            raw::RedisModule_FreeClusterNodesList,
            raw::RedisModule_GetClusterNodeInfo,
        ) else {
            return out;
        };
        let mut n = 0usize;
        let ids = list(ctx.ctx, &mut n);
        if ids.is_null() {
            return out;
        }
        for i in 0..n {
            let p = *ids.add(i);
            if p.is_null() {
                continue;
            }
            let bytes =
                std::slice::from_raw_parts(p as *const u8, raw::REDISMODULE_NODE_ID_LEN as usize);
            let Ok(id) = CString::new(bytes) else {
                continue;
            };
            let mut flags: c_int = 0;
            let found = info(
                ctx.ctx,
                id.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut flags,
            ) == raw::REDISMODULE_OK as c_int;
            let flags = flags as u32;
            if found
                && flags & raw::REDISMODULE_NODE_MASTER != 0
                && flags & raw::REDISMODULE_NODE_MYSELF == 0
            {
                out.insert(String::from_utf8_lossy(bytes).into_owned());
            }
        }
        free(ids);
    }
    out
}

/// The owner `from` asks about this master's copy of `catalog` at `pos`.
pub fn on_copy_wait(ctx: &Context, from: &str, catalog: Vec<u8>, pos: LogPos) {
    match store::serving_pos(&catalog) {
        Some(at) if recsys_core::cluster::wait::reaches(&at, &pos) => {
            send(ctx, Some(from), &Message::CopyAt { catalog, pos: at });
        }
        _ => WATCHES.lock().watch(&catalog, from, pos, now_ms()),
    }
}

/// A master reports its copy of `catalog` at `pos`: answer the waits it
/// completes.
pub fn on_copy_at(from: &str, catalog: &[u8], pos: &LogPos) {
    let answered = WAITS.lock().on_copy_at(from, catalog, pos);
    for (client, reached) in answered {
        client.answer(Reply::Int(reached as i64));
    }
}

/// This master's copy of `catalog` may have moved (a write applied, a
/// snapshot installed, an owner's confirmation): tell the owners waiting
/// for a position it has reached.
pub fn copy_advanced(ctx: &Context, catalog: &[u8]) {
    if WATCHES.lock().is_empty() || !is_master(ctx) {
        return;
    }
    let Some(at) = store::serving_pos(catalog) else {
        return;
    };
    let owners = WATCHES.lock().advanced(catalog, &at);
    for owner in owners {
        send(
            ctx,
            Some(&owner),
            &Message::CopyAt {
                catalog: catalog.to_vec(),
                pos: at,
            },
        );
    }
}

/// After an announce (copies may have been confirmed): every watched
/// catalog is checked; watches older than the longest wait go.
pub fn recheck(ctx: &Context) {
    let catalogs = {
        let mut w = WATCHES.lock();
        w.expire(now_ms());
        w.catalogs()
    };
    for c in catalogs {
        copy_advanced(ctx, &c);
    }
}

/// Clients waiting, positions watched (INFO).
pub fn counts() -> [u64; 2] {
    [WAITS.lock().len() as u64, WATCHES.lock().len() as u64]
}
