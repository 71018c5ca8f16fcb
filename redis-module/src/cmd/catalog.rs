//! The catalog commands (RECSYS.CREATE, ITEM.*, SEARCH, SIMILAR, INFO):
//! parse and validate on the main thread, then either answer at once (cheap
//! commands) or block the client and run on a worker (searches).

use recsys_core::catalog::{check_id, Catalog, Scored};
use recsys_core::features::attrs::Attrs;
use recsys_core::index::params::{MAX_DIM, MAX_EF, MAX_M, MIN_M};
use recsys_core::index::{IndexParams, Metric, Quant};
use recsys_core::pipeline::request::MAX_K;
use recsys_core::vector::{from_fp32_blob, parse_component, to_fp32_blob};
use recsys_core::Error;
use redis_module::{Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::cmd::request_args::session_arg;
use crate::datatype::{CatalogValue, CATALOG_TYPE};
use crate::keys::{catalog_at, catalog_if_any, wrote};
use crate::reply::{self, Reply};
use crate::workers::run_blocking;

/// RECSYS.CREATE key DIM d [METRIC IP|COSINE|L2] [M m] [EF_CONSTRUCTION n] [EF_SEARCH n] [QUANT F32|Q8]
/// [SESSION items weight]
pub fn create(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let mut params = IndexParams::new(0);
    let mut dim_given = false;
    let mut session = None;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "DIM" => {
                params.dim = a.next_usize("DIM", 1, MAX_DIM)?;
                dim_given = true;
            }
            "METRIC" => {
                let s = a.next_str("METRIC")?;
                params.metric = Metric::parse(s)
                    .ok_or_else(|| format!("unknown METRIC '{s}', expected IP, COSINE or L2"))?;
            }
            "M" => {
                params.m = a.next_usize("M", MIN_M, MAX_M)?
            }
            "EF_CONSTRUCTION" => params.ef_construction = a.next_usize("EF_CONSTRUCTION", 1, MAX_EF)?,
            "EF_SEARCH" => params.ef_search = a.next_usize("EF_SEARCH", 1, MAX_EF)?,
            "QUANT" => {
                let s = a.next_str("QUANT")?;
                params.quant = Quant::parse(s)
                    .ok_or_else(|| format!("unknown QUANT '{s}', expected F32 or Q8"))?;
            }
            "SESSION" => session = Some(session_arg(&mut a)?),
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected DIM, METRIC, M, EF_CONSTRUCTION, EF_SEARCH, QUANT or SESSION"
                )))
            }
        }
    }
    if !dim_given {
        return Err(Error::invalid(
            "DIM is required: RECSYS.CREATE key DIM d [options]",
        ));
    }
    let mut catalog = Catalog::new(params)?;
    catalog.set_session_default(session);
    let k = ctx.open_key_writable(key);
    if !k.is_empty() {
        return Err(Error::invalid(format!("key '{key}' already exists")));
    }
    k.set_value(&CATALOG_TYPE, CatalogValue::new(catalog))
        .map_err(|e| Error::internal(e.to_string()))?;
    ctx.replicate_verbatim();
    wrote(ctx, key, "recsys.create");
    Ok(Reply::Ok)
}

/// RECSYS.ALTER key SESSION items weight: changes the catalog's default
/// SESSION blend (0 items: none); requests may still override it.
pub fn alter(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let mut session = None;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "SESSION" => session = Some(session_arg(&mut a)?),
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected SESSION items weight"
                )))
            }
        }
    }
    let Some(session) = session else {
        return Err(Error::invalid(
            "nothing to change: RECSYS.ALTER key SESSION items weight",
        ));
    };
    let catalog = catalog_at(ctx, key)?;
    catalog.write().set_session_default(Some(session));
    ctx.replicate_verbatim();
    wrote(ctx, key, "recsys.alter");
    Ok(Reply::Ok)
}

/// Reads `VALUES v1 .. vd` or `FP32 blob` for a catalog of dimension `dim`.
fn vector_arg(a: &mut Args, dim: usize) -> CmdResult<Vec<f32>> {
    match a.next_keyword()?.as_str() {
        "VALUES" => {
            if a.remaining() < dim {
                return Err(Error::invalid(format!(
                    "VALUES needs {dim} numbers (the catalog's DIM), got {}",
                    a.remaining()
                )));
            }
            (0..dim)
                .map(|_| Ok(parse_component(a.next_str("vector component")?)?))
                .collect()
        }
        "FP32" => Ok(from_fp32_blob(a.next_bytes("FP32 blob")?, dim)?),
        other => Err(Error::invalid(format!(
            "expected VALUES or FP32 before the vector, got '{other}'"
        ))),
    }
}

fn id_arg<'a>(a: &mut Args<'a>) -> CmdResult<&'a str> {
    let id = a.next_str("item id")?;
    check_id(id)?;
    Ok(id)
}

/// RECSYS.ITEM.SET key id (VALUES v1 .. vd | FP32 blob) [ATTRS json]
pub fn item_set(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let catalog = catalog_at(ctx, key)?;
    let id = id_arg(&mut a)?;
    let dim = catalog.read().params().dim;
    let v = vector_arg(&mut a, dim)?;
    let mut attrs = None;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "ATTRS" => attrs = Some(Attrs::parse(a.next_str("ATTRS")?)?),
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected ATTRS"
                )))
            }
        }
    }
    let created = catalog.write().set(id, &v, attrs)?;
    ctx.replicate_verbatim();
    wrote(ctx, key, "recsys.item.set");
    Ok(Reply::Int(created as i64))
}

/// RECSYS.ITEM.MSET key [WITHATTRS] id blob [json] [id blob [json] ...]: all
/// items are checked before any is written.
pub fn item_mset(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let with_attrs = a.peek_keyword().as_deref() == Some("WITHATTRS");
    if with_attrs {
        a.next_keyword()?;
    }
    let per_item = if with_attrs { 3 } else { 2 };
    if a.remaining() == 0 || !a.remaining().is_multiple_of(per_item) {
        return Err(Error::invalid(if with_attrs {
            "expected triples of: id FP32-blob ATTRS-json (a json of {} for none)"
        } else {
            "expected pairs of: id FP32-blob (WITHATTRS before them for id blob json triples)"
        }));
    }
    let catalog = catalog_at(ctx, key)?;
    let mut items = Vec::with_capacity(a.remaining() / per_item);
    {
        let c = catalog.read();
        let dim = c.params().dim;
        while a.has_more() {
            let id = id_arg(&mut a)?;
            let v = from_fp32_blob(a.next_bytes("FP32 blob")?, dim)
                .map_err(|e| format!("item '{id}': {e}"))?;
            c.check_vector(&v)
                .map_err(|e| format!("item '{id}': {e}"))?;
            let attrs = if with_attrs {
                Some(Attrs::parse(a.next_str("ATTRS")?).map_err(|e| format!("item '{id}': {e}"))?)
            } else {
                None
            };
            items.push((id, v, attrs));
        }
    }
    let mut created = 0;
    let mut c = catalog.write();
    for (id, v, attrs) in items {
        created += c.set(id, &v, attrs)? as i64;
    }
    drop(c);
    ctx.replicate_verbatim();
    wrote(ctx, key, "recsys.item.mset");
    Ok(Reply::Int(created))
}

/// RECSYS.ITEM.SETATTRS key id json: replaces the attributes only (`{}`
/// clears them); the vector, graph links and popularity stay.
pub fn item_setattrs(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let id = id_arg(&mut a)?;
    let attrs = Attrs::parse(a.next_str("ATTRS")?)?;
    let attrs = (!attrs.object().is_empty()).then_some(attrs);
    // Arity 4 (checked by Redis) leaves no further arguments.
    let catalog = catalog_at(ctx, key)?;
    catalog.write().set_attrs(id, attrs)?;
    ctx.replicate_verbatim();
    wrote(ctx, key, "recsys.item.setattrs");
    Ok(Reply::Ok)
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

/// RECSYS.ITEM.DEL key id [id ...]
pub fn item_del(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("key")?;
    let mut ids = Vec::new();
    while a.has_more() {
        ids.push(a.next_str("item id")?);
    }
    if ids.is_empty() {
        return Err("expected at least one item id".into());
    }
    let Some(catalog) = catalog_if_any(ctx, key)? else {
        return Ok(Reply::Int(0));
    };
    let removed = {
        let mut c = catalog.write();
        ids.iter().filter(|id| c.remove(id)).count()
    };
    if removed > 0 {
        ctx.replicate_verbatim();
        wrote(ctx, key, "recsys.item.del");
    }
    Ok(Reply::Int(removed as i64))
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
    Ok(run_blocking(ctx, move || {
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
    if !catalog.read().contains(&id) {
        return Err(Error::invalid(format!(
            "item '{id}' does not exist in catalog '{key}'"
        )));
    }
    Ok(run_blocking(ctx, move || {
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
            "distance_kernels".into(),
            Reply::Text(recsys_core::index::distance::kernel_name().into()),
        ),
    ]))
}
