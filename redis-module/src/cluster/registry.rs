//! The names of the catalog keys this node holds, so a master can announce
//! them without scanning a keyspace of millions of user hashes. A name is
//! noted when a command writes or reads a catalog, when a catalog is loaded
//! (RDB, full sync, RESTORE and MIGRATE: [`note_loaded`]) and when one is
//! renamed or copied (keyspace events); each announce checks every name
//! again and forgets those that no longer hold a catalog.

use std::collections::BTreeSet;
use std::os::raw::{c_char, c_int};

use parking_lot::Mutex;
use recsys_core::catalog::log::LogPos;
use redis_module::{raw, Context, RedisString};

use crate::keys::catalog_if_any;
use crate::util::redis_string;

static NAMES: Mutex<BTreeSet<Vec<u8>>> = Mutex::new(BTreeSet::new());

/// Notes that `key` may hold a catalog.
pub fn note(key: &[u8]) {
    if super::enabled() {
        let mut names = NAMES.lock();
        if !names.contains(key) {
            names.insert(key.to_vec());
        }
    }
}

/// From a catalog's `rdb_load`: the key being loaded, when the server says.
///
/// # Safety
/// `io` must be the live handle Redis passed to `rdb_load`.
pub unsafe fn note_loaded(io: *mut raw::RedisModuleIO) {
    if !super::enabled() {
        return;
    }
    // SAFETY: guaranteed by the caller; the API table is set at init.
    unsafe {
        let (Some(name_of), Some(ptr_len)) = (
            raw::RedisModule_GetKeyNameFromIO,
            raw::RedisModule_StringPtrLen,
        ) else {
            return;
        };
        let name = name_of(io);
        if name.is_null() {
            return;
        }
        let mut len = 0usize;
        let p = ptr_len(name, &mut len);
        note(std::slice::from_raw_parts(p as *const u8, len));
    }
}

/// Keyspace events that put a catalog under a new name.
///
/// # Safety
/// Called by Redis with a live event name and key.
pub unsafe extern "C" fn on_keyspace_event(
    _ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: guaranteed by the caller.
        let event = unsafe { std::ffi::CStr::from_ptr(event) }.to_bytes();
        if matches!(event, b"rename_to" | b"copy_to" | b"restore" | b"move_to") {
            // SAFETY: the API table is set at init; `key` is live.
            unsafe {
                if let Some(ptr_len) = raw::RedisModule_StringPtrLen {
                    let mut len = 0usize;
                    let p = ptr_len(key, &mut len);
                    note(std::slice::from_raw_parts(p as *const u8, len));
                }
            }
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// The catalogs this node holds as keys, with their positions; forgets
/// names that no longer hold one.
pub fn held(ctx: &Context) -> Vec<(Vec<u8>, LogPos)> {
    let names: Vec<Vec<u8>> = NAMES.lock().iter().cloned().collect();
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for name in names {
        let key: RedisString = redis_string(ctx, &name);
        match catalog_if_any(ctx, &key) {
            Ok(Some(c)) => {
                let pos = c.read().log_pos();
                out.push((name, pos));
            }
            _ => gone.push(name),
        }
    }
    if !gone.is_empty() {
        let mut names = NAMES.lock();
        for g in gone {
            names.remove(&g);
        }
    }
    out
}

/// Whether this node holds `name` as a catalog key.
pub fn holds(ctx: &Context, name: &[u8]) -> bool {
    matches!(catalog_if_any(ctx, &redis_string(ctx, name)), Ok(Some(_)))
}
