//! RECSYS.MODEL.SET, LIST and INFO: a catalog's ranking and query models
//! (MODEL.DEL is a plain catalog write, in cmd/catalog.rs).
//!
//! MODEL.SET checks what it can on the main thread (catalog, name, size,
//! schema), builds the model on a worker (safetensors parsing, ONNX
//! compilation, a trial run), then takes the GIL to swap it into the catalog
//! and replicate the canonical command. Requests in flight keep the `Arc` of
//! the model they started with, so replacing is atomic.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use recsys_core::rank::Model;
use recsys_core::Error;
use redis_module::{Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::cluster;
use crate::commit::commit;
use crate::keys::{catalog_at, holds_catalog, SharedCatalog};
use crate::reply::Reply;
use crate::util::{redis_string, select_db, selected_db};
use crate::workers::{can_block, spawn, Blocked};
use crate::writes;

/// RECSYS.MODEL.SET catalog name (ONNX bytes | DLRM bytes) [ROLE RANK|QUERY] SCHEMA features...
pub fn set(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let spec = writes::model_spec(argv)?;
    let role = spec.role;
    let key = &argv[1];
    let catalog = catalog_at(ctx, key)?;
    let dim = {
        let c = catalog.read();
        c.models().check_put(&spec.name, role)?;
        c.params().dim
    };
    let key_bytes = key.as_slice().to_vec();
    if !can_block(ctx) {
        let model = Model::build(spec, dim).map_err(|e| format!("model refused: {e}"))?;
        return install(ctx, &key_bytes, &catalog, model).map(|_| Reply::Ok);
    }
    let db = selected_db(ctx);
    // SAFETY: the command's live context, and `can_block` said yes.
    spawn(unsafe { Blocked::new(ctx.ctx) }, move || {
        let model = match Model::build(spec, dim) {
            Ok(m) => m,
            Err(e) => return Reply::error(format!("model refused: {e}")),
        };
        // A context of this module (a cluster commit sends bus messages).
        let installed = cluster::with_gil(|ctx| {
            select_db(ctx, db);
            install(ctx, &key_bytes, &catalog, model)
        });
        match installed {
            Some(Ok(())) => Reply::Ok,
            Some(Err(e)) => Reply::Error(e),
            None => Reply::internal("could not take the server lock to install the model"),
        }
    });
    Ok(Reply::Blocked)
}

/// Swaps the model into the catalog (if the key still holds it) and
/// replicates. Runs with the GIL held.
fn install(ctx: &Context, key: &[u8], catalog: &SharedCatalog, model: Model) -> CmdResult<()> {
    let key_name = redis_string(ctx, key);
    if !holds_catalog(ctx, &key_name, catalog) {
        return Err(Error::invalid(format!(
            "catalog '{}' was deleted or replaced while the model was loading",
            String::from_utf8_lossy(key)
        )));
    }
    let mut args = vec![b"RECSYS.MODEL.SET".to_vec()];
    args.extend(model.spec.command_args(key));
    catalog.write().models_mut().put(Arc::new(model))?;
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    commit(ctx, &key_name, catalog, &refs, "recsys.model.set");
    Ok(())
}

fn summary(m: &Model) -> Vec<(String, Reply)> {
    vec![
        ("name".into(), Reply::Text(m.spec.name.clone())),
        ("kind".into(), Reply::Text(m.spec.kind.name().into())),
        ("role".into(), Reply::Text(m.spec.role.name().into())),
        ("device".into(), Reply::Text(m.device())),
        ("size".into(), Reply::Int(m.spec.bytes.len() as i64)),
    ]
}

/// RECSYS.MODEL.LIST catalog
pub fn list(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let catalog = catalog_at(ctx, a.next_string("catalog key")?)?;
    if a.has_more() {
        return Err("RECSYS.MODEL.LIST takes only the catalog key".into());
    }
    let c = catalog.read();
    Ok(Reply::Array(
        c.models().iter().map(|m| Reply::Map(summary(m))).collect(),
    ))
}

/// RECSYS.MODEL.INFO catalog name
pub fn info(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let catalog = catalog_at(ctx, a.next_string("catalog key")?)?;
    let name = a.next_str("model name")?;
    let c = catalog.read();
    let m = c
        .models()
        .get(name)
        .ok_or_else(|| Error::invalid(format!("the catalog has no model named '{name}'")))?;
    let load = |c: &AtomicU64| c.load(Relaxed) as i64;
    let calls = load(&m.stats.calls);
    let mut fields = summary(m);
    fields.extend([
        ("sha256".into(), Reply::Text(m.sha256.clone())),
        ("schema".into(), Reply::Text(m.spec.schema.join(" "))),
        (
            "dense_features".into(),
            Reply::Int(m.schema.dense.len() as i64),
        ),
        (
            "sparse_features".into(),
            Reply::Int(m.schema.sparse.len() as i64),
        ),
        (
            "user_fields".into(),
            Reply::Array(m.user_fields().iter().cloned().map(Reply::Text).collect()),
        ),
        ("calls".into(), Reply::Int(calls)),
        ("rows".into(), Reply::Int(load(&m.stats.rows))),
        ("errors".into(), Reply::Int(load(&m.stats.errors))),
        (
            "gpu_fallbacks".into(),
            Reply::Int(load(&m.stats.gpu_fallbacks)),
        ),
        (
            "avg_us".into(),
            Reply::Int(load(&m.stats.micros).checked_div(calls).unwrap_or(0)),
        ),
        (
            "status".into(),
            Reply::Text(m.runnable().err().unwrap_or_else(|| "ok".into())),
        ),
    ]);
    Ok(Reply::Map(fields))
}
