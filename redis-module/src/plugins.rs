//! RECSYS.PLUGIN.*: loading, listing, inspecting and deleting WebAssembly
//! plugins, and their persistence as RDB aux data.
//!
//! The registry maps names to compiled plugins behind an `Arc`: REPLACE swaps
//! the pointer, so calls in flight finish on the version they started with.
//! LOAD replicates itself verbatim before compiling on a worker; a replica
//! (or an AOF replay) compiles the same bytes and reaches the same state,
//! success or failure.

use std::collections::{BTreeMap, HashMap};
use std::os::raw::c_int;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use once_cell::sync::{Lazy, OnceCell};
use parking_lot::RwLock;
use recsys_core::plugin::{Host, Limits, Plugin};
use redis_module::{logging, raw, Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::commands::run_blocking;
use crate::reply::Reply;

static HOST: OnceCell<Host> = OnceCell::new();
static REGISTRY: Lazy<RwLock<HashMap<String, Arc<Plugin>>>> = Lazy::new(Default::default);

/// Starts the plugin engine; a failure only disables plugins (logged).
pub fn start(ctx: &Context, limits: Limits) {
    match Host::new(limits) {
        Ok(h) => {
            let _ = HOST.set(h);
        }
        Err(e) => ctx.log_warning(&format!("recsys: plugins disabled: {e}")),
    }
}

pub fn host() -> Option<&'static Host> {
    HOST.get()
}

fn host_or_err() -> CmdResult<&'static Host> {
    host().ok_or_else(|| "the plugin engine did not start on this server (see the log)".to_string())
}

/// The plugin called `name`.
pub fn get(name: &str) -> CmdResult<Arc<Plugin>> {
    REGISTRY
        .read()
        .get(name)
        .cloned()
        .ok_or_else(|| format!("no plugin named '{name}' (load it with RECSYS.PLUGIN.LOAD)"))
}

fn install(plugin: Plugin, replace: bool) -> CmdResult<()> {
    let mut reg = REGISTRY.write();
    if reg.contains_key(&plugin.name) && !replace {
        return Err(format!(
            "plugin '{}' already exists (add REPLACE to swap it)",
            plugin.name
        ));
    }
    reg.insert(plugin.name.clone(), Arc::new(plugin));
    Ok(())
}

/// RECSYS.PLUGIN.LOAD name wasm-bytes [REPLACE]
pub fn load(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let name = a.next_str("plugin name")?.to_string();
    crate::util::check_name("plugin", &name)?;
    let bytes = a.next_bytes("component bytes")?.to_vec();
    let mut replace = false;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "REPLACE" => replace = true,
            other => return Err(format!("unknown option '{other}', expected REPLACE")),
        }
    }
    let host = host_or_err()?;
    if !replace && REGISTRY.read().contains_key(&name) {
        return Err(format!(
            "plugin '{name}' already exists (add REPLACE to swap it)"
        ));
    }
    ctx.replicate_verbatim();
    Ok(run_blocking(ctx, move || {
        let plugin = match host.compile(&name, bytes) {
            Ok(p) => p,
            Err(e) => return Reply::error(format!("plugin '{name}' refused: {e}")),
        };
        let (world, sha) = (plugin.world.name(), plugin.sha256.clone());
        match install(plugin, replace) {
            Ok(()) => Reply::Map(vec![
                ("name".into(), Reply::Text(name)),
                ("world".into(), Reply::Text(world.into())),
                ("sha256".into(), Reply::Text(sha)),
            ]),
            Err(e) => Reply::error(e),
        }
    }))
}

fn summary(p: &Plugin) -> Vec<(String, Reply)> {
    vec![
        ("name".into(), Reply::Text(p.name.clone())),
        ("world".into(), Reply::Text(p.world.name().into())),
        ("sha256".into(), Reply::Text(p.sha256.clone())),
        ("size".into(), Reply::Int(p.size as i64)),
        (
            "calls".into(),
            Reply::Int(p.stats.calls.load(Relaxed) as i64),
        ),
    ]
}

/// RECSYS.PLUGIN.LIST
pub fn list(_ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    if argv.len() > 1 {
        return Err("RECSYS.PLUGIN.LIST takes no arguments".into());
    }
    let reg = REGISTRY.read();
    let sorted: BTreeMap<&String, &Arc<Plugin>> = reg.iter().collect();
    Ok(Reply::Array(
        sorted.values().map(|p| Reply::Map(summary(p))).collect(),
    ))
}

/// RECSYS.PLUGIN.INFO name
pub fn info(_ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let p = get(a.next_str("plugin name")?)?;
    let (p50, p99) = p.stats.percentiles();
    let mut fields = summary(&p);
    fields.extend([
        (
            "errors".into(),
            Reply::Int(p.stats.errors.load(Relaxed) as i64),
        ),
        (
            "traps".into(),
            Reply::Int(p.stats.traps.load(Relaxed) as i64),
        ),
        ("p50_us".into(), Reply::Int(p50 as i64)),
        ("p99_us".into(), Reply::Int(p99 as i64)),
        ("last_log".into(), Reply::Text(p.stats.last_log())),
    ]);
    Ok(Reply::Map(fields))
}

/// RECSYS.PLUGIN.DEL name
pub fn del(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let name = a.next_str("plugin name")?;
    let removed = REGISTRY.write().remove(name).is_some();
    if removed {
        ctx.replicate_verbatim();
    }
    Ok(Reply::Int(removed as i64))
}

/// RDB aux data: every plugin's name and bytes, before the keyspace.
pub unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return;
    }
    let reg = REGISTRY.read();
    let sorted: BTreeMap<&String, &Arc<Plugin>> = reg.iter().collect();
    raw::save_unsigned(rdb, sorted.len() as u64);
    for p in sorted.values() {
        raw::save_slice(rdb, p.name.as_bytes());
        raw::save_slice(rdb, &p.bytes);
    }
}

pub unsafe extern "C" fn aux_load(
    rdb: *mut raw::RedisModuleIO,
    _encver: c_int,
    when: c_int,
) -> c_int {
    if when != raw::REDISMODULE_AUX_BEFORE_RDB as c_int {
        return raw::REDISMODULE_OK as c_int;
    }
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
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
                logging::log_warning(format!(
                    "recsys: {} plugins in the RDB ignored: plugin engine not running",
                    loaded.len()
                ));
                return Ok(());
            };
            let mut reg = HashMap::new();
            for (name, bytes) in loaded {
                match host.compile(&name, bytes) {
                    Ok(p) => {
                        reg.insert(name, Arc::new(p));
                    }
                    Err(e) => logging::log_warning(format!(
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
            logging::log_warning(format!("recsys: cannot read plugins from the RDB: {e}"));
            raw::REDISMODULE_ERR as c_int
        }
        Err(_) => raw::REDISMODULE_ERR as c_int,
    }
}
