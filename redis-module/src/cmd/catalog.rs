//! The catalog commands (RECSYS.CREATE, ALTER, ITEM.*, POPULARITY.SET,
//! MODEL.DEL, SEARCH, SIMILAR, INFO). Writes parse, check and apply in
//! [`crate::writes`] and are committed by [`crate::commit`]; reads answer
//! at once (cheap ones) or block the client and run on a worker (searches).

use recsys_core::catalog::Scored;
use recsys_core::index::params::MAX_EF;
use recsys_core::pipeline::request::MAX_K;
use recsys_core::vector::to_fp32_blob;
use recsys_core::Error;
use redis_module::{Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::commit::commit_verbatim;
use crate::commit::Applied;
use crate::datatype::{CatalogValue, CATALOG_TYPE};
use crate::keys::{catalog_at, catalog_if_any, SharedCatalog};
use crate::reply::{self, Reply};
use crate::workers::run_blocking_unless;
use crate::writes::{self, vector_arg};
use recsys_core::pipeline::cost::{runs_inline, search_work};

/// RECSYS.CREATE key DIM d [METRIC IP|COSINE|L2] [M m] [EF_CONSTRUCTION n] [EF_SEARCH n] [QUANT F32|Q8]
/// [SESSION items weight]
pub fn create(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let catalog = writes::create(argv)?;
    let key = &argv[1];
    let k = ctx.open_key_writable(key);
    if !k.is_empty() {
        return Err(Error::invalid(format!("key '{key}' already exists")));
    }
    let value = CatalogValue::new(catalog);
    let shared = value.0.clone();
    k.set_value(&CATALOG_TYPE, value)
        .map_err(|e| Error::internal(e.to_string()))?;
    commit_verbatim(ctx, key, &shared, argv, "recsys.create");
    Ok(Reply::Ok)
}

/// Runs a catalog write on the catalog at `argv[1]` and commits it when
/// it changed something.
fn write_key(
    ctx: &Context,
    argv: &[RedisString],
    event: &str,
    apply: fn(&SharedCatalog, &[RedisString]) -> CmdResult<Applied>,
) -> CmdResult<Reply> {
    let key = Args::new(argv).next_string("key")?;
    let catalog = catalog_at(ctx, key)?;
    let applied = apply(&catalog, argv)?;
    if applied.changed {
        commit_verbatim(ctx, key, &catalog, argv, event);
    }
    Ok(applied.reply.into())
}

/// RECSYS.ALTER key [SESSION items weight] [SEQUENCE weight]: changes the
/// catalog's default SESSION blend (0 items: none) or SEQUENCE weight (0:
/// off); requests may still override them.
/// (`LOGPOS seq:hash`, written by AOF rewrite, restores the write-log
/// position and is replicated, not logged.)
pub fn alter(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    if writes::alter_sets_only_log_pos(argv) {
        let catalog = catalog_at(ctx, &argv[1])?;
        writes::alter(&catalog, argv)?;
        ctx.replicate_verbatim();
        return Ok(Reply::Ok);
    }
    write_key(ctx, argv, "recsys.alter", writes::alter)
}

/// RECSYS.ITEM.SET key id (VALUES v1 .. vd | FP32 blob) [ATTRS json]
pub fn item_set(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    write_key(ctx, argv, "recsys.item.set", writes::item_set)
}

/// RECSYS.ITEM.MSET key [WITHATTRS] id blob [json] [id blob [json] ...]: all
/// items are checked before any is written.
pub fn item_mset(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    write_key(ctx, argv, "recsys.item.mset", writes::item_mset)
}

/// RECSYS.ITEM.SETATTRS key id json: replaces the attributes only (`{}`
/// clears them); the vector, graph links and popularity stay.
pub fn item_setattrs(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    write_key(ctx, argv, "recsys.item.setattrs", writes::item_setattrs)
}

/// RECSYS.ITEM.GET key id [FP32]
pub fn item_get(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let id = a.next_str("item id")?;
    let mut blob = false;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "FP32" => blob = true,
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected FP32"
                )))
            }
        }
    }
    let catalog = catalog_at(ctx, key)?;
    let c = catalog.read();
    let Some((v, attrs)) = c.get(id) else {
        return Ok(Reply::Null);
    };
    let vector = if blob {
        Reply::Bulk(to_fp32_blob(&v))
    } else {
        Reply::Array(v.iter().map(|&x| Reply::Double(x as f64)).collect())
    };
    Ok(Reply::Map(vec![
        ("vector".into(), vector),
        (
            "attrs".into(),
            attrs.map_or(Reply::Null, |s| Reply::Text(s.to_string())),
        ),
    ]))
}

/// RECSYS.ITEM.DEL key id [id ...] (a missing catalog deletes nothing).
pub fn item_del(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    writes::item_del_ids(argv)?;
    if catalog_if_any(ctx, &argv[1])?.is_none() {
        return Ok(Reply::Int(0));
    }
    write_key(ctx, argv, "recsys.item.del", writes::item_del)
}

/// RECSYS.POPULARITY.SET catalog EPOCH ms id score [id score ...]: sets items'
/// popularity, each score in units at epoch `ms` (a score of s at epoch e is
/// worth s * 2^(-(t - e) / 1 day) at time t). AOF rewrite writes popularity
/// back with it; it also imports popularity computed elsewhere. All pairs are
/// checked before any is applied.
pub fn popularity_set(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    write_key(ctx, argv, "recsys.popularity.set", writes::popularity_set)
}

/// RECSYS.MODEL.DEL catalog name
pub fn model_del(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    write_key(ctx, argv, "recsys.model.del", writes::model_del)
}

/// Options shared by SEARCH and SIMILAR.
struct SearchOpts {
    ef: Option<usize>,
    with_scores: bool,
}

fn search_opts(a: &mut Args) -> CmdResult<SearchOpts> {
    let mut o = SearchOpts {
        ef: None,
        with_scores: false,
    };
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "EF" => o.ef = Some(a.next_usize("EF", 1, MAX_EF)?),
            "WITHSCORES" => o.with_scores = true,
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected EF or WITHSCORES"
                )))
            }
        }
    }
    Ok(o)
}

fn scored_hits<'a>(hits: &'a [Scored<'a>]) -> impl Iterator<Item = (&'a str, f32)> + 'a {
    hits.iter().map(|h| (h.id, h.score))
}

/// RECSYS.SEARCH key K (VALUES ... | FP32 blob) [EF n] [WITHSCORES]
pub fn search(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let k = a.next_usize("K", 1, MAX_K)?;
    let catalog = catalog_at(ctx, key)?;
    let (v, dim_ok) = {
        let c = catalog.read();
        let v = vector_arg(&mut a, c.params().dim)?;
        let ok = c.check_vector(&v);
        (v, ok)
    };
    dim_ok?;
    let o = search_opts(&mut a)?;
    let inline = {
        let c = catalog.read();
        runs_inline(search_work(&c, k, o.ef.unwrap_or(c.params().ef_search)))
    };
    Ok(run_blocking_unless(ctx, inline, move || {
        let c = catalog.read();
        reply::scored(scored_hits(&c.search(&v, k, o.ef)), o.with_scores)
    }))
}

/// RECSYS.SIMILAR key id K [EF n] [WITHSCORES]
pub fn similar(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let id = a.next_str("item id")?.to_string();
    let k = a.next_usize("K", 1, MAX_K)?;
    let o = search_opts(&mut a)?;
    let catalog = catalog_at(ctx, key)?;
    let inline = {
        let c = catalog.read();
        if !c.contains(&id) {
            return Err(Error::invalid(format!(
                "item '{id}' does not exist in catalog '{key}'"
            )));
        }
        runs_inline(search_work(&c, k, o.ef.unwrap_or(c.params().ef_search)))
    };
    Ok(run_blocking_unless(ctx, inline, move || {
        let c = catalog.read();
        match c.similar(&id, k, o.ef) {
            Ok(hits) => reply::scored(scored_hits(&hits), o.with_scores),
            // Deleted between the check and the search.
            Err(e) => Reply::Error(e),
        }
    }))
}

/// RECSYS.INFO key
pub fn info(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    if a.has_more() {
        return Err("RECSYS.INFO takes only the key".into());
    }
    let catalog = catalog_at(ctx, key)?;
    let i = catalog.read().info();
    let p = i.params;
    Ok(Reply::Map(vec![
        ("dim".into(), Reply::Int(p.dim as i64)),
        ("metric".into(), Reply::Text(p.metric.name().into())),
        ("quant".into(), Reply::Text(p.quant.name().into())),
        ("m".into(), Reply::Int(p.m as i64)),
        (
            "ef_construction".into(),
            Reply::Int(p.ef_construction as i64),
        ),
        ("ef_search".into(), Reply::Int(p.ef_search as i64)),
        ("items".into(), Reply::Int(i.items as i64)),
        (
            "deleted_not_reclaimed".into(),
            Reply::Int(i.deleted_pending as i64),
        ),
        ("slots".into(), Reply::Int(i.slots as i64)),
        ("memory_bytes".into(), Reply::Int(i.memory_bytes as i64)),
        ("models".into(), Reply::Int(i.models as i64)),
        (
            "session".into(),
            Reply::Text(match i.session_default {
                Some(s) => format!("{} {}", s.items, s.weight),
                None => "off".into(),
            }),
        ),
        (
            "sequence".into(),
            Reply::Double(i.sequence_default.unwrap_or(1.0) as f64),
        ),
        (
            "distance_kernels".into(),
            Reply::Text(recsys_core::index::distance::kernel_name().into()),
        ),
        (
            "retrieval".into(),
            Reply::Text(if i.scans { "exact scan" } else { "graph walk" }.into()),
        ),
        ("scan_up_to".into(), Reply::Int(i.scan_up_to as i64)),
    ]))
}
