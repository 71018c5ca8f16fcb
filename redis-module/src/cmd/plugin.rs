//! RECSYS.PLUGIN.*: loading, listing, inspecting and deleting WebAssembly
//! plugins (the registry itself is `plugin_store`).
//!
//! LOAD replicates itself verbatim before compiling on a worker; a replica
//! (or an AOF replay) compiles the same bytes and reaches the same state,
//! success or failure. In a cluster a client's LOAD or DEL reaches every
//! node (cluster/plugins.rs).

use std::sync::atomic::Ordering::Relaxed;

use recsys_core::plugin::Plugin;
use recsys_core::Error;
use redis_module::{Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::cluster;
use crate::plugin_store;
use crate::reply::Reply;
use crate::workers::{can_block, run_blocking};
use recsys_core::names::check_name;

/// RECSYS.PLUGIN.LOAD name wasm-bytes [REPLACE], or name REPLACE wasm-bytes
/// (so that `redis-cli -x`, which appends the bytes last, can replace).
pub fn load(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let name = a.next_str("plugin name")?.to_string();
    check_name("plugin name", &name)?;
    let mut replace = a.remaining() == 2 && a.peek_keyword().as_deref() == Some("REPLACE");
    if replace {
        a.next_keyword()?;
    }
    let bytes = a.next_bytes("component bytes")?.to_vec();
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "REPLACE" => replace = true,
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected REPLACE"
                )))
            }
        }
    }
    let host = plugin_store::host_or_err()?;
    if !replace && plugin_store::contains(&name) {
        return Err(plugin_store::exists_error(&name));
    }
    ctx.replicate_verbatim();
    // In a cluster, a client's load is sent on to every node.
    let origin = cluster::enabled() && !cluster::replayed(ctx);
    // Inline (MULTI, scripts) the job runs here, holding the GIL.
    let inline = !can_block(ctx);
    let sent_name = name.clone();
    let reply = run_blocking(ctx, move || {
        let plugin = match host.compile(&name, bytes) {
            Ok(p) => p,
            Err(e) => return Reply::error(format!("plugin '{name}' refused: {e}")),
        };
        let (world, sha) = (plugin.world.name(), plugin.sha256.clone());
        match plugin_store::install(plugin, replace) {
            Ok(()) => {
                if origin && !inline {
                    cluster::plugins::loaded_here(None, &name);
                }
                Reply::Map(vec![
                    ("name".into(), Reply::Text(name)),
                    ("world".into(), Reply::Text(world.into())),
                    ("sha256".into(), Reply::Text(sha)),
                ])
            }
            Err(e) => Reply::Error(e),
        }
    });
    if origin && inline && !matches!(reply, Reply::Error(_)) {
        cluster::plugins::loaded_here(Some(ctx), &sent_name);
    }
    Ok(reply)
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
    Ok(Reply::Array(
        plugin_store::all()
            .iter()
            .map(|p| Reply::Map(summary(p)))
            .collect(),
    ))
}

/// RECSYS.PLUGIN.INFO name
pub fn info(_ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let p = plugin_store::get(a.next_str("plugin name")?)?;
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
        (
            "instance_reuse".into(),
            Reply::Text(match &p.instance_reuse {
                Ok(()) => "yes".into(),
                Err(why) => format!("no: {why}"),
            }),
        ),
        (
            "instances".into(),
            Reply::Int(p.stats.instances.load(Relaxed) as i64),
        ),
        ("last_log".into(), Reply::Text(p.stats.last_log())),
    ]);
    Ok(Reply::Map(fields))
}

/// RECSYS.PLUGIN.DEL name
pub fn del(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let name = a.next_str("plugin name")?;
    let removed = plugin_store::remove(name);
    if removed {
        ctx.replicate_verbatim();
        if !cluster::replayed(ctx) {
            cluster::plugins::removed_here(ctx, name);
        }
    }
    Ok(Reply::Int(removed as i64))
}
