//! The `RecSysCat` module data type: one catalog per key, with RDB save/load
//! (the graph itself, in chunks, versioned), AOF rewrite, memory reporting,
//! COPY, and freeing in the background.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::RwLock;
use recsys_core::catalog::Catalog;
use recsys_core::vector::to_fp32_blob;
use redis_module::native_types::RedisType;
use redis_module::{logging, raw};

use crate::workers::drop_in_background;

/// Encoding version of the RDB payload written by this build.
pub const ENCODING_VERSION: i32 = 1;
/// RDB payloads are written as string chunks of at most this size.
const CHUNK: usize = 16 << 20;

/// A catalog shared between the key (main thread) and in-flight searches.
pub struct CatalogValue(pub Arc<RwLock<Catalog>>);

impl CatalogValue {
    pub fn new(catalog: Catalog) -> Self {
        CatalogValue(Arc::new(RwLock::new(catalog)))
    }
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
        digest: None,
        free: Some(free),
        aux_load: Some(crate::plugins::aux_load),
        aux_save: Some(crate::plugins::aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as i32,
        free_effort: Some(free_effort),
        unlink: None,
        copy: Some(copy),
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    },
);

fn value_ref<'a>(value: *mut c_void) -> &'a CatalogValue {
    // SAFETY: Redis only hands us pointers created by `Box::into_raw` below.
    unsafe { &*(value as *const CatalogValue) }
}

/// Boxes a catalog as the raw value pointer Redis stores.
pub fn into_raw(catalog: Catalog) -> *mut c_void {
    Box::into_raw(Box::new(CatalogValue::new(catalog))) as *mut c_void
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    let bytes = value_ref(value).0.read().encode();
    let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    raw::save_unsigned(rdb, bytes.len() as u64);
    raw::save_unsigned(rdb, chunks.len() as u64);
    for c in chunks {
        raw::save_slice(rdb, c);
    }
}

fn load_payload(rdb: *mut raw::RedisModuleIO) -> Result<Catalog, String> {
    let total = raw::load_unsigned(rdb).map_err(|e| format!("read error: {e}"))?;
    let chunks = raw::load_unsigned(rdb).map_err(|e| format!("read error: {e}"))?;
    if chunks > total / CHUNK as u64 + 1 || total > (1u64 << 40) {
        return Err(format!(
            "implausible payload size {total} in {chunks} chunks"
        ));
    }
    let mut bytes = Vec::with_capacity(total as usize);
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
    Catalog::decode(&bytes)
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver < 1 || encver > ENCODING_VERSION {
        logging::log_warning(format!(
            "recsys: cannot load catalog encoding version {encver} (this build reads 1..={ENCODING_VERSION})"
        ));
        return std::ptr::null_mut();
    }
    match catch_unwind(AssertUnwindSafe(|| load_payload(rdb))) {
        Ok(Ok(mut catalog)) => {
            for note in catalog.take_restore_notes() {
                logging::log_warning(format!("recsys: {note}"));
            }
            into_raw(catalog)
        }
        Ok(Err(e)) => {
            logging::log_warning(format!("recsys: corrupt catalog in RDB payload: {e}"));
            std::ptr::null_mut()
        }
        Err(_) => {
            logging::log_warning("recsys: catalog loader panicked; payload rejected");
            std::ptr::null_mut()
        }
    }
}

/// Calls the variadic `RedisModule_EmitAOF` with ("b": pointer, length)
/// pairs for the listed argument positions.
macro_rules! emit_with {
    ($f:expr, $aof:expr, $name:expr, $fmt:expr, $args:expr; $($i:literal)*) => {
        $f($aof, $name, $fmt, $($args[$i].as_ptr(), $args[$i].len()),*)
    };
}

/// Emits one command into the AOF; `args` are binary-safe.
unsafe fn emit(aof: *mut raw::RedisModuleIO, cmd: &str, args: &[&[u8]]) {
    // C variadics need the count at compile time: one arm per arity used.
    let emit = match raw::RedisModule_EmitAOF {
        Some(f) => f,
        None => return,
    };
    let name = CString::new(cmd).unwrap_or_default();
    let fmt = CString::new("b".repeat(args.len())).unwrap_or_default();
    let (n, f) = (name.as_ptr(), fmt.as_ptr());
    match args.len() {
        4 => emit_with!(emit, aof, n, f, args; 0 1 2 3),
        6 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4 5),
        8 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4 5 6 7),
        13 => emit_with!(emit, aof, n, f, args; 0 1 2 3 4 5 6 7 8 9 10 11 12),
        n => logging::log_warning(format!("recsys: no AOF emitter for {n} arguments")),
    }
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let mut len = 0usize;
    let kptr = raw::RedisModule_StringPtrLen.unwrap()(key, &mut len);
    let key = std::slice::from_raw_parts(kptr as *const u8, len);
    let catalog = value_ref(value).0.read();
    let p = *catalog.params();
    let (dim, m, efc, efs) = (
        p.dim.to_string(),
        p.m.to_string(),
        p.ef_construction.to_string(),
        p.ef_search.to_string(),
    );
    emit(
        aof,
        "RECSYS.CREATE",
        &[
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
        ],
    );
    for model in catalog.models().iter() {
        let args = crate::models::canonical_args(key, &model.spec);
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        emit(aof, "RECSYS.MODEL.SET", &refs);
    }
    for (id, v, attrs) in catalog.items() {
        let blob = to_fp32_blob(&v);
        match attrs {
            Some(a) => emit(
                aof,
                "RECSYS.ITEM.SET",
                &[key, id.as_bytes(), b"FP32", &blob, b"ATTRS", a.as_bytes()],
            ),
            None => emit(
                aof,
                "RECSYS.ITEM.SET",
                &[key, id.as_bytes(), b"FP32", &blob],
            ),
        }
    }
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    let v = value_ref(value as *mut c_void);
    std::mem::size_of::<CatalogValue>() + std::mem::size_of::<Catalog>() + v.0.read().memory_bytes()
}

unsafe extern "C" fn free(value: *mut c_void) {
    if value.is_null() {
        return;
    }
    // SAFETY: created by `into_raw`; Redis frees each value once.
    let boxed = Box::from_raw(value as *mut CatalogValue);
    // Dropping a large graph takes time: do it off the main thread.
    drop_in_background(boxed);
}

unsafe extern "C" fn free_effort(_key: *mut raw::RedisModuleString, value: *const c_void) -> usize {
    value_ref(value as *mut c_void).0.read().index().slots()
}

unsafe extern "C" fn copy(
    _from: *mut raw::RedisModuleString,
    _to: *mut raw::RedisModuleString,
    value: *const c_void,
) -> *mut c_void {
    match value_ref(value as *mut c_void).0.read().duplicate() {
        Ok(c) => into_raw(c),
        Err(_) => std::ptr::null_mut(),
    }
}
