//! Plugins across a cluster: PLUGIN.LOAD and PLUGIN.DEL name no key, so a
//! client reaches one node; that node sends the plugin (or its removal)
//! to every node, and every master's announce lists its plugins'
//! versions so a node that missed one (down, partitioned, new) asks for
//! it. Last writer wins by (milliseconds, origin node id); a removal is a
//! version without bytes, remembered so it is not undone by a node that
//! still has the plugin. A master that takes a plugin from the bus
//! replicates PLUGIN.LOAD ... REPLACE (or PLUGIN.DEL) to its replicas and
//! AOF, as if a client had sent it.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use recsys_core::cluster::message::{Message, PluginVersion};
use redis_module::{raw, Context};

use super::{enabled, my_id, send, with_gil};
use crate::plugin_store;
use crate::util::{log_warning, now_ms, replicate};
use crate::workers::run_detached;

/// Every plugin's version, removals included.
static VERSIONS: Mutex<BTreeMap<String, PluginVersion>> = Mutex::new(BTreeMap::new());
/// Plugins asked for or being compiled, at which version (asked once).
static IN_FLIGHT: Mutex<BTreeMap<String, (u64, String)>> = Mutex::new(BTreeMap::new());

/// A SHA-256 from the hex form the plugin host reports.
fn sha256_bytes(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The versions this node announces. A plugin loaded before the node
/// joined a cluster (or read back from an RDB without versions) is
/// announced at version 0, older than any load in the cluster.
pub fn versions() -> Vec<PluginVersion> {
    let mut v = VERSIONS.lock().clone();
    for p in plugin_store::all() {
        v.entry(p.name.clone()).or_insert_with(|| PluginVersion {
            name: p.name.clone(),
            version: 0,
            origin: String::new(),
            sha256: sha256_bytes(&p.sha256),
        });
    }
    v.into_values().collect()
}

fn next_version(name: &str) -> PluginVersion {
    let prev = VERSIONS.lock().get(name).map_or(0, |v| v.version);
    PluginVersion {
        name: name.to_string(),
        version: (now_ms().max(0) as u64).max(prev + 1),
        origin: my_id(),
        sha256: None,
    }
}

/// A client loaded `name` on this node: every other node gets it. With
/// the command's context when it ran inline, else (from a worker) `None`.
pub fn loaded_here(ctx: Option<&Context>, name: &str) {
    if !enabled() {
        return;
    }
    let Ok(p) = plugin_store::get(name) else {
        return;
    };
    let mut v = next_version(name);
    v.sha256 = sha256_bytes(&p.sha256);
    VERSIONS.lock().insert(name.to_string(), v.clone());
    let m = Message::Plugin {
        version: v,
        bytes: Some(p.bytes.to_vec()),
    };
    match ctx {
        Some(ctx) => send(ctx, None, &m),
        None => {
            if with_gil(|ctx| send(ctx, None, &m)).is_none() {
                log_warning("recsys: could not send a plugin to the cluster");
            }
        }
    }
}

/// A client removed `name` on this node (main thread).
pub fn removed_here(ctx: &Context, name: &str) {
    if !enabled() {
        return;
    }
    let v = next_version(name);
    VERSIONS.lock().insert(name.to_string(), v.clone());
    send(
        ctx,
        None,
        &Message::Plugin {
            version: v,
            bytes: None,
        },
    );
}

fn is_newer(v: &PluginVersion) -> bool {
    match VERSIONS.lock().get(&v.name) {
        Some(local) => v.newer_than(local),
        None => match plugin_store::get(&v.name) {
            // Known only from an RDB: version 0.
            Ok(p) => v.version > 0 || sha256_bytes(&p.sha256) != v.sha256,
            Err(_) => v.sha256.is_some(),
        },
    }
}

/// Another master's plugin versions: take removals, ask for newer plugins.
pub fn on_announce(ctx: &Context, from: &str, announced: Vec<PluginVersion>) {
    for v in announced {
        if !is_newer(&v) {
            continue;
        }
        match v.sha256 {
            None => apply_removal(ctx, v),
            Some(_) => {
                let mut asked = IN_FLIGHT.lock();
                let key = (v.version, v.origin.clone());
                if asked.get(&v.name) == Some(&key) {
                    continue;
                }
                asked.insert(v.name.clone(), key);
                drop(asked);
                send(ctx, Some(from), &Message::PluginRequest { name: v.name });
            }
        }
    }
}

/// A node asks for one of this node's plugins.
pub fn on_request(ctx: &Context, from: &str, name: &str) {
    let Ok(p) = plugin_store::get(name) else {
        return;
    };
    let version = versions().into_iter().find(|v| v.name == name);
    if let Some(version) = version {
        send(
            ctx,
            Some(from),
            &Message::Plugin {
                version,
                bytes: Some(p.bytes.to_vec()),
            },
        );
    }
}

fn apply_removal(ctx: &Context, v: PluginVersion) {
    let name = v.name.clone();
    VERSIONS.lock().insert(name.clone(), v);
    if plugin_store::remove(&name) {
        replicate(ctx, "RECSYS.PLUGIN.DEL", &[name.as_bytes()]);
    }
}

/// A plugin (or a removal) from another node: compile it on a worker and
/// install it if it is still the newest.
pub fn on_plugin(ctx: &Context, v: PluginVersion, bytes: Option<Vec<u8>>) {
    if !is_newer(&v) {
        return;
    }
    let Some(bytes) = bytes else {
        return apply_removal(ctx, v);
    };
    let Ok(host) = plugin_store::host_or_err() else {
        return;
    };
    if recsys_core::names::check_name("plugin name", &v.name).is_err() {
        return;
    }
    IN_FLIGHT
        .lock()
        .insert(v.name.clone(), (v.version, v.origin.clone()));
    run_detached("compiling a plugin from the cluster", move || {
        let compiled = host.compile(&v.name, bytes.clone());
        with_gil(|ctx| {
            IN_FLIGHT.lock().remove(&v.name);
            match compiled {
                Ok(p) if is_newer(&v) => {
                    if plugin_store::install(p, true).is_ok() {
                        VERSIONS.lock().insert(v.name.clone(), v.clone());
                        replicate(
                            ctx,
                            "RECSYS.PLUGIN.LOAD",
                            &[v.name.as_bytes(), &bytes, b"REPLACE"],
                        );
                    }
                }
                Ok(_) => {}
                Err(e) => log_warning(&format!(
                    "recsys: plugin '{}' from the cluster refused: {e}",
                    v.name
                )),
            }
        });
    });
}

/// RDB aux data: the versions (so a removal survives a restart).
///
/// # Safety
/// `rdb` must be the live handle of an aux_save callback.
pub unsafe fn aux_save(rdb: *mut raw::RedisModuleIO) {
    let all: Vec<PluginVersion> = VERSIONS.lock().values().cloned().collect();
    raw::save_unsigned(rdb, all.len() as u64);
    for v in all {
        raw::save_slice(rdb, v.name.as_bytes());
        raw::save_unsigned(rdb, v.version);
        raw::save_slice(rdb, v.origin.as_bytes());
        raw::save_slice(rdb, v.sha256.as_ref().map_or(&[][..], |s| &s[..]));
    }
}

/// Reads what [`aux_save`] wrote.
///
/// # Safety
/// `rdb` must be the live handle of an aux_load callback.
pub unsafe fn aux_load(rdb: *mut raw::RedisModuleIO) -> Result<(), String> {
    let n = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
    let mut all = BTreeMap::new();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for _ in 0..n {
        let name = text(
            raw::load_string_buffer(rdb)
                .map_err(|e| e.to_string())?
                .as_ref(),
        );
        let version = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
        let origin = text(
            raw::load_string_buffer(rdb)
                .map_err(|e| e.to_string())?
                .as_ref(),
        );
        let sha = raw::load_string_buffer(rdb).map_err(|e| e.to_string())?;
        let sha256 = <[u8; 32]>::try_from(sha.as_ref()).ok();
        all.insert(
            name.clone(),
            PluginVersion {
                name,
                version,
                origin,
                sha256,
            },
        );
    }
    *VERSIONS.lock() = all;
    Ok(())
}
