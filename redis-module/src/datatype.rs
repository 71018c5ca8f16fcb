//! The `RecSysCat` module data type: one catalog per key, with RDB save/load
//! (the catalog's own byte format, in chunks, versioned), AOF rewrite,
//! memory reporting, COPY, and freeing in the background.
//!
//! Every callback runs under [`guarded`]: a panic becomes a log line and a
//! safe fallback value, never an abort of the server.
//!
//! What the cluster adds to these callbacks (its registry and copies on
//! unlink, its aux data in the RDB) comes in as [`Hooks`] set at load, so
//! this module never imports the cluster, which imports it.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use recsys_core::catalog::Catalog;
use recsys_core::vector::to_fp32_blob;
use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::util::{log_warning, panic_message, string_bytes};
use crate::workers::drop_in_background;

/// Encoding version of the RDB payload written by this build.
/// 2: RDB aux data also holds cluster copies and plugin versions.
pub const ENCODING_VERSION: i32 = 2;
/// RDB payloads are written as string chunks of at most this size.
const CHUNK: usize = 16 << 20;
/// Largest catalog payload accepted (1 TiB): refuses absurd sizes before
/// allocating.
const MAX_PAYLOAD: u64 = 1 << 40;

/// The cluster's parts of the data type's callbacks.
pub struct Hooks {
    /// A catalog was read from the RDB (the load's handle names its key).
    ///
    /// # Safety
    /// Called with the live RDB handle of the catalog's load.
    pub loaded: unsafe fn(*mut raw::RedisModuleIO, &Arc<RwLock<Catalog>>),
    /// A catalog key is leaving the keyspace (its name and catalog).
    pub unlink: fn(&[u8], &Arc<RwLock<Catalog>>),
    /// Writes the cluster's RDB aux data (after the plugins).
    ///
    /// # Safety
    /// Called with the live RDB handle of an aux save.
    pub aux_save: unsafe fn(*mut raw::RedisModuleIO),
    /// Reads what `aux_save` wrote (aux encoding 2 and later).
    ///
    /// # Safety
    /// Called with the live RDB handle of an aux load.
    pub aux_load: unsafe fn(*mut raw::RedisModuleIO) -> Result<(), String>,
}

static HOOKS: std::sync::OnceLock<Hooks> = std::sync::OnceLock::new();

/// Installs the cluster's hooks (once, at module load, before any RDB is
/// read; a second call changes nothing).
pub fn set_hooks(hooks: Hooks) {
    let _ = HOOKS.set(hooks);
}

/// A catalog shared between the key (main thread) and in-flight searches.
pub struct CatalogValue(pub Arc<RwLock<Catalog>>);

impl CatalogValue {
    pub fn new(catalog: Catalog) -> Self {
        let shared = Arc::new(RwLock::new(catalog));
        LIVE.lock().push(Arc::downgrade(&shared));
        CatalogValue(shared)
    }
}

/// Every catalog alive in the process (keys, and requests still finishing
/// on a deleted or replaced one), for INFO.
static LIVE: parking_lot::Mutex<Vec<Weak<RwLock<Catalog>>>> = parking_lot::Mutex::new(Vec::new());

/// Catalogs alive, their items, and their memory in bytes (a catalog
/// being written at that instant is left out).
pub fn totals() -> (usize, usize, usize) {
    let mut live = LIVE.lock();
    live.retain(|w| w.strong_count() > 0);
    let (mut items, mut bytes) = (0, 0);
    let mut count = 0;
    for shared in live.iter().filter_map(Weak::upgrade) {
        // Never waits: INFO also runs in crash reports, maybe while this
        // thread holds a write lock.
        if let Some(c) = shared.try_read() {
            count += 1;
            items += c.len();
            bytes += c.memory_bytes();
        }
        // The last reference may be this one (a key deleted meanwhile).
        drop_in_background(shared);
    }
    (count, items, bytes)
}

pub static CATALOG_TYPE: RedisType = RedisType::new(
    "RecSysCat",
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as i32,
        free_effort: Some(free_effort),
        unlink: Some(unlink),
        copy: Some(copy),
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    },
);

/// The key is leaving the keyspace (DEL, overwrite, expiry, eviction,
/// RENAME's or MIGRATE's source), maybe before the value is freed.
unsafe extern "C" fn unlink(key: *mut raw::RedisModuleString, value: *const c_void) {
    guarded("unlinking a catalog", (), || {
        // SAFETY: Redis passes the live key name and value of this type.
        let (name, value) = unsafe { (string_bytes(key), value_ref(value)) };
        if let Some(hooks) = HOOKS.get() {
            (hooks.unlink)(name, &value.0);
        }
    })
}

/// Runs a callback body; a panic is logged and answered with `fallback`.
fn guarded<T>(what: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|p| {
        log_warning(&format!("recsys: {what} failed: {}", panic_message(&p)));
        fallback
    })
}

/// The value behind a pointer Redis hands to a callback.
///
/// # Safety
/// `value` must be a pointer made by [`into_raw`] that Redis has not freed.
unsafe fn value_ref<'a>(value: *const c_void) -> &'a CatalogValue {
    // SAFETY: guaranteed by the caller.
    unsafe { &*(value as *const CatalogValue) }
}

/// Boxes a catalog as the raw value pointer Redis stores.
pub fn into_raw(catalog: Catalog) -> *mut c_void {
    Box::into_raw(Box::new(CatalogValue::new(catalog))) as *mut c_void
}

/// Writes a catalog encoding as its length, chunk count and chunks.
pub fn save_payload(rdb: *mut raw::RedisModuleIO, bytes: &[u8]) {
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    raw::save_unsigned(rdb, bytes.len() as u64);
    raw::save_unsigned(rdb, chunks.len() as u64);
    for c in chunks {
        raw::save_slice(rdb, c);
    }
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    guarded("saving a catalog", (), || {
        // SAFETY: Redis passes a live value of this type.
        let bytes = unsafe { value_ref(value) }.0.read().encode();
        save_payload(rdb, &bytes);
    })
}

/// RDB aux data, before the keyspace: the plugins, then (encoding 2) the
/// cluster's plugin versions and this node's catalog copies.
unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return;
    }
    // SAFETY: Redis passes a live RDB handle.
    unsafe { crate::plugin_store::aux_save(rdb) };
    // Without the hooks (never after a load) nothing is written, and a
    // reader of this encoding then fails: better than a silent gap.
    guarded("saving cluster copies", (), || {
        if let Some(hooks) = HOOKS.get() {
            // SAFETY: Redis passes a live RDB handle.
            unsafe { (hooks.aux_save)(rdb) }
        }
    })
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, when: c_int) -> c_int {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return raw::REDISMODULE_OK as c_int;
    }
    if !(1..=ENCODING_VERSION).contains(&encver) {
        log_warning(&format!(
            "recsys: cannot load aux data encoding version {encver} (this build reads 1..={ENCODING_VERSION})"
        ));
        return raw::REDISMODULE_ERR as c_int;
    }
    // SAFETY: Redis passes a live RDB handle.
    if unsafe { crate::plugin_store::aux_load(rdb) } != raw::REDISMODULE_OK as c_int {
        return raw::REDISMODULE_ERR as c_int;
    }
    if encver < 2 {
        return raw::REDISMODULE_OK as c_int;
    }
    let loaded = guarded(
        "loading cluster copies",
        Err("failed".to_string()),
        || match HOOKS.get() {
            // SAFETY: Redis passes a live RDB handle.
            Some(hooks) => unsafe { (hooks.aux_load)(rdb) },
            None => Err("the module's cluster part is not loaded".into()),
        },
    );
    match loaded {
        Ok(()) => raw::REDISMODULE_OK as c_int,
        Err(e) => {
            log_warning(&format!(
                "recsys: cannot read cluster copies from the RDB: {e}"
            ));
            raw::REDISMODULE_ERR as c_int
        }
    }
}

pub fn load_payload(rdb: *mut raw::RedisModuleIO) -> Result<Catalog, String> {
    let total = raw::load_unsigned(rdb).map_err(|e| format!("read error: {e}"))?;
    let chunks = raw::load_unsigned(rdb).map_err(|e| format!("read error: {e}"))?;
    if chunks > total / CHUNK as u64 + 1 || total > MAX_PAYLOAD {
        return Err(format!(
            "implausible payload size {total} in {chunks} chunks"
        ));
    }
    let mut bytes = Vec::new();
    for _ in 0..chunks {
        let chunk = raw::load_string_buffer(rdb).map_err(|e| format!("read error: {e}"))?;
        bytes.extend_from_slice(chunk.as_ref());
        if bytes.len() as u64 > total {
            return Err("payload longer than announced".into());
        }
    }
    if bytes.len() as u64 != total {
        return Err("payload shorter than announced".into());
    }
    Catalog::decode(&bytes).map_err(String::from)
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if !(1..=ENCODING_VERSION).contains(&encver) {
        log_warning(&format!(
            "recsys: cannot load catalog encoding version {encver} (this build reads 1..={ENCODING_VERSION})"
        ));
        return std::ptr::null_mut();
    }
    guarded(
        "loading a catalog",
        std::ptr::null_mut(),
        || match load_payload(rdb) {
            Ok(mut catalog) => {
                for note in catalog.take_restore_notes() {
                    log_warning(&format!("recsys: {note}"));
                }
                let value = CatalogValue::new(catalog);
                if let Some(hooks) = HOOKS.get() {
                    // SAFETY: the live handle of this callback.
                    unsafe { (hooks.loaded)(rdb, &value.0) };
                }
                Box::into_raw(Box::new(value)) as *mut c_void
            }
            Err(e) => {
                log_warning(&format!("recsys: corrupt catalog in RDB payload: {e}"));
                std::ptr::null_mut()
            }
        },
    )
}

/// Calls the variadic `RedisModule_EmitAOF` with ("b": pointer, length)
/// pairs for the listed argument positions.
macro_rules! emit_with {
    ($f:expr, $aof:expr, $name:expr, $fmt:expr, $args:expr; $($i:literal)*) => {
        $f($aof, $name, $fmt, $($args[$i].as_ptr(), $args[$i].len()),*)
    };
}

/// Emits one command into the AOF; `args` are binary-safe.
///
/// # Safety
/// `aof` must be the live handle Redis passed to `aof_rewrite`.
unsafe fn emit(aof: *mut raw::RedisModuleIO, cmd: &str, args: &[&[u8]]) {
    // C variadics need the count at compile time: one arm per arity used.
    let Some(emit) = raw::RedisModule_EmitAOF else {
        return;
    };
    let name = CString::new(cmd).unwrap_or_default();
    let fmt = CString::new("b".repeat(args.len())).unwrap_or_default();
    let (n, f) = (name.as_ptr(), fmt.as_ptr());
    // SAFETY: one (pointer, length) pair per "b" in the format.
    unsafe {
        match args.len() {
            3 => emit_with!(emit, aof, n, f, args; 0 1 2),
            4 => emit_with!(emit, aof, n, f, args; 0 1 2 3),
            5 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4),
            6 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4 5),
            8 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4 5 6 7),
            13 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4 5 6 7 8 9 10 11 12),
            n => log_warning(&format!("recsys: no AOF emitter for {n} arguments")),
        }
    }
}

/// Whether this process already wrote the plugins into the AOF. A rewrite
/// runs in a forked child, so this starts false in every rewrite.
static PLUGINS_WRITTEN: AtomicBool = AtomicBool::new(false);

/// Plugins are server-wide (RDB aux data), and an AOF without an RDB
/// preamble has no aux data: the first catalog rewritten also writes every
/// plugin as PLUGIN.LOAD ... REPLACE. (With no catalog at all, such an AOF
/// has no plugins either; docs/reliability.md says so.)
///
/// # Safety
/// `aof` must be the live handle Redis passed to `aof_rewrite`.
unsafe fn emit_plugins_once(aof: *mut raw::RedisModuleIO) {
    if PLUGINS_WRITTEN.swap(true, Ordering::Relaxed) {
        return;
    }
    for p in crate::plugin_store::all() {
        // SAFETY: guaranteed by the caller.
        unsafe {
            emit(
                aof,
                "RECSYS.PLUGIN.LOAD",
                &[p.name.as_bytes(), &p.bytes, b"REPLACE"],
            )
        };
    }
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    guarded("rewriting a catalog into the AOF", (), || {
        // SAFETY: Redis passes the live key name and value of this type.
        let (key, catalog) = unsafe { (string_bytes(key), value_ref(value).0.read()) };
        let p = *catalog.params();
        let (dim, m, efc, efs) = (
            p.dim.to_string(),
            p.m.to_string(),
            p.ef_construction.to_string(),
            p.ef_search.to_string(),
        );
        let create: [&[u8]; 13] = [
            key,
            b"DIM",
            dim.as_bytes(),
            b"METRIC",
            p.metric.name().as_bytes(),
            b"M",
            m.as_bytes(),
            b"EF_CONSTRUCTION",
            efc.as_bytes(),
            b"EF_SEARCH",
            efs.as_bytes(),
            b"QUANT",
            p.quant.name().as_bytes(),
        ];
        // SAFETY (all emits): `aof` is the handle of this callback.
        unsafe { emit_plugins_once(aof) };
        unsafe { emit(aof, "RECSYS.CREATE", &create) };
        if let Some(session) = catalog.session_default() {
            let (items, weight) = (session.items.to_string(), session.weight.to_string());
            let alter: [&[u8]; 4] = [key, b"SESSION", items.as_bytes(), weight.as_bytes()];
            unsafe { emit(aof, "RECSYS.ALTER", &alter) };
        }
        if let Some(weight) = catalog.sequence_default() {
            let weight = weight.to_string();
            let alter: [&[u8]; 3] = [key, b"SEQUENCE", weight.as_bytes()];
            unsafe { emit(aof, "RECSYS.ALTER", &alter) };
        }
        for model in catalog.models().iter() {
            let args = model.spec.command_args(key);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            unsafe { emit(aof, "RECSYS.MODEL.SET", &refs) };
        }
        for (id, v, attrs) in catalog.items() {
            let blob = to_fp32_blob(&v);
            match attrs {
                Some(a) => unsafe {
                    emit(
                        aof,
                        "RECSYS.ITEM.SET",
                        &[key, id.as_bytes(), b"FP32", &blob, b"ATTRS", a.as_bytes()],
                    )
                },
                None => unsafe {
                    emit(
                        aof,
                        "RECSYS.ITEM.SET",
                        &[key, id.as_bytes(), b"FP32", &blob],
                    )
                },
            }
        }
        let (epoch, records) = catalog.popularity_records();
        let epoch = epoch.to_string();
        for (id, score) in records {
            // `{:?}` is the shortest text that parses back to the same f64.
            let score = format!("{score:?}");
            let args: [&[u8]; 5] = [
                key,
                b"EPOCH",
                epoch.as_bytes(),
                id.as_bytes(),
                score.as_bytes(),
            ];
            unsafe { emit(aof, "RECSYS.POPULARITY.SET", &args) };
        }
        for e in catalog.experiments().iter() {
            let state = crate::cmd::experiment::state_bytes(e);
            unsafe { emit(aof, "RECSYS.EXPERIMENT.SYNC", &[key, b"STATE", &state]) };
        }
        // Last, as XSETID for streams: the write-log position, which the
        // commands above do not reproduce.
        let pos = catalog.log_pos().to_text();
        let logpos: [&[u8]; 3] = [key, b"LOGPOS", pos.as_bytes()];
        unsafe { emit(aof, "RECSYS.ALTER", &logpos) };
    })
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    guarded("measuring a catalog", 0, || {
        // SAFETY: Redis passes a live value of this type.
        let v = unsafe { value_ref(value) };
        std::mem::size_of::<CatalogValue>()
            + std::mem::size_of::<Catalog>()
            + v.0.read().memory_bytes()
    })
}

/// DEBUG DIGEST: one sequence per record of [`Catalog::canonical_records`].
unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    guarded("digesting a catalog", (), || {
        // SAFETY: the API table is set at init; Redis passes a live value
        // of this type and a live digest.
        unsafe {
            let (Some(add), Some(end)) = (
                raw::RedisModule_DigestAddStringBuffer,
                raw::RedisModule_DigestEndSequence,
            ) else {
                return;
            };
            value_ref(value).0.read().canonical_records(|parts| {
                for p in parts {
                    add(md, p.as_ptr().cast(), p.len());
                }
                end(md);
            });
        }
    })
}

unsafe extern "C" fn free(value: *mut c_void) {
    if value.is_null() {
        return;
    }
    guarded("freeing a catalog", (), || {
        // SAFETY: created by `into_raw`; Redis frees each value once.
        let boxed = unsafe { Box::from_raw(value as *mut CatalogValue) };
        // Dropping a large graph takes time: do it off the main thread.
        drop_in_background(boxed);
    })
}

unsafe extern "C" fn free_effort(_key: *mut raw::RedisModuleString, value: *const c_void) -> usize {
    guarded("sizing a catalog", 0, || {
        // SAFETY: Redis passes a live value of this type.
        unsafe { value_ref(value) }.0.read().index().slots()
    })
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    guarded("copying a catalog", std::ptr::null_mut(), || {
        // SAFETY: Redis passes a live value of this type.
        match unsafe { value_ref(value) }.0.read().duplicate() {
            Ok(c) => into_raw(c),
            Err(e) => {
                log_warning(&format!("recsys: cannot copy a catalog: {e}"));
                std::ptr::null_mut()
            }
        }
    })
}
