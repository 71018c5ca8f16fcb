//! The plugin store: the process-wide plugin engine, the registry of loaded
//! plugins by name, and its persistence as RDB aux data.
//!
//! The registry maps names to compiled plugins behind an `Arc`: REPLACE swaps
//! the pointer, so calls in flight finish on the version they started with.

use std::collections::{BTreeMap, HashMap};
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use once_cell::sync::{Lazy, OnceCell};
use parking_lot::RwLock;
use recsys_core::plugin::{Host, Limits, Plugin};
use recsys_core::{Error, Result};
use redis_module::raw;

use crate::util::{log_warning, panic_message};

static HOST: OnceCell<Host> = OnceCell::new();
static REGISTRY: Lazy<RwLock<HashMap<String, Arc<Plugin>>>> = Lazy::new(Default::default);

/// Starts the plugin engine (once per process); a failure only disables
/// plugins (logged).
pub fn start(limits: Limits) {
    if HOST.get().is_some() {
        return;
    }
    match Host::new(limits) {
        Ok(h) => {
            let _ = HOST.set(h);
        }
        Err(e) => log_warning(&format!("recsys: plugins disabled: {e}")),
    }
}

pub fn host() -> Option<&'static Host> {
    HOST.get()
}

/// The engine, or why there is none.
pub fn host_or_err() -> Result<&'static Host> {
    host().ok_or_else(|| {
        Error::invalid("the plugin engine did not start on this server (see the log)")
    })
}

/// The plugin called `name`.
pub fn get(name: &str) -> Result<Arc<Plugin>> {
    REGISTRY.read().get(name).cloned().ok_or_else(|| {
        Error::invalid(format!(
            "no plugin named '{name}' (load it with RECSYS.PLUGIN.LOAD)"
        ))
    })
}

/// Whether a plugin called `name` is loaded.
pub fn contains(name: &str) -> bool {
    REGISTRY.read().contains_key(name)
}

/// The error for loading over an existing plugin without REPLACE.
pub fn exists_error(name: &str) -> Error {
    Error::invalid(format!(
        "plugin '{name}' already exists (add REPLACE to swap it)"
    ))
}

/// Adds a compiled plugin (or with `replace` swaps it in).
pub fn install(plugin: Plugin, replace: bool) -> Result<()> {
    let mut reg = REGISTRY.write();
    if reg.contains_key(&plugin.name) && !replace {
        return Err(exists_error(&plugin.name));
    }
    reg.insert(plugin.name.clone(), Arc::new(plugin));
    Ok(())
}

/// Removes a plugin; false when there was none.
pub fn remove(name: &str) -> bool {
    REGISTRY.write().remove(name).is_some()
}

/// Every plugin, by name.
pub fn all() -> Vec<Arc<Plugin>> {
    let reg = REGISTRY.read();
    let sorted: BTreeMap<&String, &Arc<Plugin>> = reg.iter().collect();
    sorted.into_values().cloned().collect()
}

/// RDB aux data (the first part, see datatype.rs): every plugin's name and bytes.
///
/// # Safety
/// Called by Redis with a live RDB handle.
pub unsafe fn aux_save(rdb: *mut raw::RedisModuleIO) {
    let saved = catch_unwind(AssertUnwindSafe(|| {
        let plugins = all();
        raw::save_unsigned(rdb, plugins.len() as u64);
        for p in plugins {
            raw::save_slice(rdb, p.name.as_bytes());
            raw::save_slice(rdb, &p.bytes);
        }
    }));
    if let Err(p) = saved {
        log_warning(&format!(
            "recsys: saving plugins failed: {}",
            panic_message(&p)
        ));
    }
}

/// Reads what [`aux_save`] wrote and compiles the plugins; one that no
/// longer compiles is dropped with a log line.
///
/// # Safety
/// Called by Redis with a live RDB handle.
pub unsafe fn aux_load(rdb: *mut raw::RedisModuleIO) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let n = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        let mut loaded = Vec::new();
        for _ in 0..n {
            let name = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            let bytes = raw::load_string_buffer(rdb)
                .map_err(|e| e.to_string())?
                .as_ref()
                .to_vec();
            loaded.push((name, bytes));
        }
        let Some(host) = host() else {
            log_warning(&format!(
                "recsys: {} plugins in the RDB ignored: plugin engine not running",
                loaded.len()
            ));
            return Ok(());
        };
        let mut reg = HashMap::new();
        for (name, bytes) in loaded {
            if let Err(e) = recsys_core::names::check_name("plugin name", &name) {
                log_warning(&format!("recsys: plugin from the RDB refused: {e}"));
                continue;
            }
            match host.compile(&name, bytes) {
                Ok(p) => {
                    reg.insert(name, Arc::new(p));
                }
                Err(e) => log_warning(&format!(
                    "recsys: plugin '{name}' from the RDB refused: {e}"
                )),
            }
        }
        *REGISTRY.write() = reg;
        Ok(())
    }));
    match result {
        Ok(Ok(())) => raw::REDISMODULE_OK as c_int,
        Ok(Err(e)) => {
            log_warning(&format!("recsys: cannot read plugins from the RDB: {e}"));
            raw::REDISMODULE_ERR as c_int
        }
        Err(p) => {
            log_warning(&format!(
                "recsys: plugin loader failed: {}",
                panic_message(&p)
            ));
            raw::REDISMODULE_ERR as c_int
        }
    }
}
