//! The catalog keys this node holds, by name, each with a weak handle on
//! its catalog. A master announces them without scanning a keyspace of
//! millions of user hashes, and a request routed by its user key finds a
//! catalog in another slot here: Redis 7.2+ looks a key up in the slot of
//! the command that runs, so such a catalog cannot be opened as a key.
//!
//! A name is noted when a command writes or reads a catalog, when a
//! catalog is loaded (RDB, full sync, RESTORE and MIGRATE: [`note_loaded`])
//! and when one is renamed or copied (keyspace events); it is forgotten
//! when Redis unlinks the key ([`forget`], from the data type's `unlink`:
//! DEL, overwrite, expiry, eviction, RENAME's source, MIGRATE's source)
//! and on FLUSHALL. Each announce checks every name again.

use std::collections::BTreeMap;
use std::os::raw::{c_char, c_int};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use recsys_core::catalog::log::LogPos;
use recsys_core::catalog::Catalog;
use redis_module::{raw, Context, RedisString};

use crate::keys::{catalog_if_any, SharedCatalog};
use crate::util::{redis_string, string_bytes};

static HELD: Mutex<BTreeMap<Vec<u8>, Weak<RwLock<Catalog>>>> = Mutex::new(BTreeMap::new());

/// Notes that `key` holds `catalog`.
pub fn note(key: &[u8], catalog: &SharedCatalog) {
    if !super::enabled() {
        return;
    }
    {
        let mut held = HELD.lock();
        match held.get_mut(key) {
            Some(w) if std::ptr::eq(w.as_ptr(), Arc::as_ptr(catalog)) => return,
            Some(w) => *w = Arc::downgrade(catalog),
            None => {
                held.insert(key.to_vec(), Arc::downgrade(catalog));
            }
        }
    }
    // A catalog under a new name (RENAME, MOVE) did not leave this node.
    super::store::forget_handover_of(catalog);
}

/// The key `key` no longer holds `catalog` (it was unlinked).
pub fn forget(key: &[u8], catalog: &SharedCatalog) {
    let mut held = HELD.lock();
    if held
        .get(key)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(catalog)))
    {
        held.remove(key);
    }
}

/// FLUSHALL / FLUSHDB: no key holds a catalog any more.
pub fn forget_all() {
    HELD.lock().clear();
}

/// The catalog this node holds at `key`, without opening the key (see the
/// module doc).
pub fn catalog(key: &[u8]) -> Option<SharedCatalog> {
    HELD.lock().get(key).and_then(Weak::upgrade)
}

/// From a catalog's `rdb_load`: the key being loaded, when the server says.
///
/// # Safety
/// `io` must be the live handle Redis passed to `rdb_load`.
pub unsafe fn note_loaded(io: *mut raw::RedisModuleIO, catalog: &SharedCatalog) {
    if !super::enabled() {
        return;
    }
    // SAFETY: guaranteed by the caller; the API table is set at init.
    unsafe {
        let Some(name_of) = raw::RedisModule_GetKeyNameFromIO else {
            return;
        };
        let name = name_of(io);
        if !name.is_null() {
            note(string_bytes(name), catalog);
        }
    }
}

/// Keyspace events that put a catalog under a new name. The key is in
/// the slot of the command that fired the event, so it can be opened.
///
/// # Safety
/// Called by Redis with a live context, event name and key.
pub unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: guaranteed by the caller.
        let event = unsafe { std::ffi::CStr::from_ptr(event) }.to_bytes();
        if matches!(event, b"rename_to" | b"copy_to" | b"restore" | b"move_to") {
            let ctx = Context::new(ctx);
            // SAFETY: `key` is live during the callback.
            let name = unsafe { string_bytes(key) };
            if let Ok(Some(c)) = catalog_if_any(&ctx, &redis_string(&ctx, name)) {
                note(name, &c);
            }
        }
    });
    raw::REDISMODULE_OK as c_int
}

/// The catalogs this node holds as keys, with their positions; checks
/// every name against the keyspace (outside any command, where every key
/// can be opened) and forgets those that no longer hold one.
pub fn held(ctx: &Context) -> Vec<(Vec<u8>, LogPos)> {
    let names: Vec<Vec<u8>> = HELD.lock().keys().cloned().collect();
    let mut out = Vec::new();
    for name in names {
        let key: RedisString = redis_string(ctx, &name);
        match catalog_if_any(ctx, &key) {
            Ok(Some(c)) => {
                out.push((name.clone(), c.read().log_pos()));
                note(&name, &c);
            }
            _ => {
                HELD.lock().remove(&name);
            }
        }
    }
    out
}

/// Whether this node holds `name` as a catalog key (outside a command).
pub fn holds(ctx: &Context, name: &[u8]) -> bool {
    matches!(catalog_if_any(ctx, &redis_string(ctx, name)), Ok(Some(_)))
}
