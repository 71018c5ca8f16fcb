//! Every write to a catalog, as one function that parses a command's
//! arguments, checks all of them, and applies the change to a catalog:
//! the command handlers (`cmd/`) call these on the catalog of a key, and a
//! cluster copy (`cluster/`) calls the same ones with the arguments its
//! owner replicated, so a key and its copies change alike. A function that
//! fails has changed nothing.

use std::sync::Arc;

use recsys_core::catalog::popularity::MAX_EVENT_MS;
use recsys_core::catalog::{check_id, Catalog};
use recsys_core::features::attrs::Attrs;
use recsys_core::index::params::{MAX_DIM, MAX_EF, MAX_M, MIN_M};
use recsys_core::index::{IndexParams, Metric, Quant};
use recsys_core::names::check_name;
use recsys_core::rank::{check_size, Kind, Model, ModelSpec, Role};
use recsys_core::vector::{from_fp32_blob, parse_component};
use recsys_core::Error;
use redis_module::RedisString;

use crate::args::{Args, CmdResult};
use crate::commit::{changed, Applied, WriteReply};
use crate::keys::SharedCatalog;

/// RECSYS.CREATE key DIM d [METRIC ..] [M m] [EF_CONSTRUCTION n] [EF_SEARCH n] [QUANT ..] [SESSION items weight]:
/// the new, empty catalog.
pub fn create(argv: &[RedisString]) -> CmdResult<Catalog> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
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
            "M" => params.m = a.next_usize("M", MIN_M, MAX_M)?,
            "EF_CONSTRUCTION" => {
                params.ef_construction = a.next_usize("EF_CONSTRUCTION", 1, MAX_EF)?
            }
            "EF_SEARCH" => params.ef_search = a.next_usize("EF_SEARCH", 1, MAX_EF)?,
            "QUANT" => {
                let s = a.next_str("QUANT")?;
                params.quant = Quant::parse(s)
                    .ok_or_else(|| format!("unknown QUANT '{s}', expected F32 or Q8"))?;
            }
            "SESSION" => session = Some(a.next_session()?),
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
    Ok(catalog)
}

/// RECSYS.ALTER key [SESSION items weight] [SEQUENCE weight] [LOGPOS seq:hash]:
/// the default SESSION blend and SEQUENCE weight; LOGPOS (written by AOF rewrite, like XSETID) sets the
/// write-log position.
pub fn alter(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    let (mut session, mut tower, mut log_pos) = (None, None, None);
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "SESSION" => session = Some(a.next_session()?),
            "SEQUENCE" => tower = Some(a.next_sequence_weight()?),
            "LOGPOS" => {
                let t = a.next_str("LOGPOS")?;
                log_pos = Some(
                    recsys_core::catalog::log::LogPos::parse(t)
                        .ok_or_else(|| format!("LOGPOS must be seq:32-hex-digits, got '{t}'"))?,
                );
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected SESSION items weight or SEQUENCE weight"
                )))
            }
        }
    }
    if session.is_none() && tower.is_none() && log_pos.is_none() {
        return Err(Error::invalid(
            "nothing to change: RECSYS.ALTER key [SESSION items weight] [SEQUENCE weight]",
        ));
    }
    let mut c = c.write();
    if let Some(s) = session {
        c.set_session_default(Some(s));
    }
    if tower.is_some() {
        c.set_sequence_default(tower);
    }
    if let Some(p) = log_pos {
        c.set_log_pos(p);
    }
    Ok(changed(WriteReply::Ok))
}

/// Whether ALTER only restores the log position (it is then not logged).
pub fn alter_sets_only_log_pos(argv: &[RedisString]) -> bool {
    argv.len() == 4 && argv[2].as_slice().eq_ignore_ascii_case(b"LOGPOS")
}

/// Reads `VALUES v1 .. vd` or `FP32 blob` for a catalog of dimension `dim`.
pub fn vector_arg(a: &mut Args, dim: usize) -> CmdResult<Vec<f32>> {
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
pub fn item_set(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    let id = id_arg(&mut a)?;
    let dim = c.read().params().dim;
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
    let created = c.write().set(id, &v, attrs)?;
    Ok(changed(WriteReply::Int(created as i64)))
}

/// RECSYS.ITEM.MSET key [WITHATTRS] id blob [json] [id blob [json] ...]: all
/// items are checked before any is written.
pub fn item_mset(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
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
    let mut items = Vec::with_capacity(a.remaining() / per_item);
    {
        let c = c.read();
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
    let mut c = c.write();
    for (id, v, attrs) in items {
        created += c.set(id, &v, attrs)? as i64;
    }
    Ok(changed(WriteReply::Int(created)))
}

/// RECSYS.ITEM.SETATTRS key id json: replaces the attributes only (`{}`
/// clears them); the vector, graph links and popularity stay.
pub fn item_setattrs(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    let id = id_arg(&mut a)?;
    let attrs = Attrs::parse(a.next_str("ATTRS")?)?;
    let attrs = (!attrs.object().is_empty()).then_some(attrs);
    if a.has_more() {
        return Err("RECSYS.ITEM.SETATTRS takes the key, one id and one json".into());
    }
    c.write().set_attrs(id, attrs)?;
    Ok(changed(WriteReply::Ok))
}

/// The ids of RECSYS.ITEM.DEL key id [id ...].
pub fn item_del_ids(argv: &[RedisString]) -> CmdResult<Vec<&str>> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    let mut ids = Vec::new();
    while a.has_more() {
        ids.push(a.next_str("item id")?);
    }
    if ids.is_empty() {
        return Err("expected at least one item id".into());
    }
    Ok(ids)
}

/// RECSYS.ITEM.DEL key id [id ...]
pub fn item_del(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let ids = item_del_ids(argv)?;
    let removed = {
        let mut c = c.write();
        ids.iter().filter(|id| c.remove(id)).count()
    };
    Ok(Applied {
        reply: WriteReply::Int(removed as i64),
        changed: removed > 0,
    })
}

/// RECSYS.POPULARITY.SET catalog EPOCH ms id score [id score ...]: all pairs
/// are checked before any is applied.
pub fn popularity_set(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog key")?;
    if a.next_keyword()? != "EPOCH" {
        return Err(Error::invalid(
            "expected EPOCH ms after the catalog key: RECSYS.POPULARITY.SET catalog EPOCH ms id score [id score ...]",
        ));
    }
    let epoch = a.next_int("EPOCH", 0, MAX_EVENT_MS)?;
    if a.remaining() == 0 || !a.remaining().is_multiple_of(2) {
        return Err(Error::invalid("expected pairs of: id score"));
    }
    let c = c.read();
    let mut pairs = Vec::with_capacity(a.remaining() / 2);
    while a.has_more() {
        let id = a.next_str("item id")?;
        let score = a.next_float("popularity score", 0.0, f64::MAX)?;
        if !c.contains(id) {
            return Err(Error::invalid(format!(
                "item '{id}' does not exist in catalog '{key}'"
            )));
        }
        pairs.push((id, score));
    }
    for (id, score) in &pairs {
        c.set_popularity(id, epoch, *score)?;
    }
    Ok(changed(WriteReply::Int(pairs.len() as i64)))
}

/// SCHEMA takes the rest of the arguments; each may hold several
/// whitespace-separated tokens (`SCHEMA "DENSE user.age SPARSE item.genre 10"`).
fn schema_tokens(a: &mut Args) -> CmdResult<Vec<String>> {
    let mut tokens = Vec::new();
    while a.has_more() {
        tokens.extend(
            a.next_str("SCHEMA token")?
                .split_whitespace()
                .map(str::to_string),
        );
    }
    Ok(tokens)
}

/// RECSYS.MODEL.SET catalog name (ONNX bytes | DLRM bytes) [ROLE RANK|QUERY] SCHEMA features...:
/// the model's spec, checked (not yet built).
pub fn model_spec(argv: &[RedisString]) -> CmdResult<ModelSpec> {
    let mut a = Args::new(argv);
    a.next_string("catalog key")?;
    let name = a.next_str("model name")?.to_string();
    check_name("model name", &name)?;
    let kind_text = a.next_str("model kind")?;
    let kind = Kind::parse(kind_text).ok_or_else(|| {
        format!(
            "unknown model kind '{kind_text}', expected {}",
            names(Kind::ALL.iter().map(Kind::name))
        )
    })?;
    let bytes = a.next_bytes("model bytes")?;
    check_size(bytes.len())?;
    let mut role = kind.default_role();
    let mut schema = None;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "ROLE" => {
                let r = a.next_str("ROLE")?;
                role = Role::parse(r).ok_or_else(|| {
                    format!(
                        "unknown ROLE '{r}', expected {}",
                        names(Role::ALL.iter().map(Role::name))
                    )
                })?;
            }
            "SCHEMA" => schema = Some(schema_tokens(&mut a)?),
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected ROLE or SCHEMA"
                )))
            }
        }
    }
    let schema =
        match schema {
            Some(s) => s,
            None if !kind.takes_schema() => Vec::new(),
            None => return Err(Error::invalid(
                "SCHEMA is required: SCHEMA DENSE <source> ... SPARSE <source> <cardinality> ...",
            )),
        };
    let spec = ModelSpec {
        name,
        kind,
        role,
        schema,
        bytes: bytes.into(),
    };
    spec.parse_schema()?;
    Ok(spec)
}

/// `A, B or C`.
fn names<'a>(all: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = all.collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.join(""),
    }
}

/// Builds and installs a model in place (a cluster copy applying its
/// owner's MODEL.SET; the owner builds on a worker, see cmd/model.rs).
pub fn model_set_now(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let spec = model_spec(argv)?;
    let dim = {
        let c = c.read();
        c.models().check_put(&spec.name, spec.role)?;
        c.params().dim
    };
    let model = Model::build(spec, dim).map_err(|e| format!("model refused: {e}"))?;
    c.write().models_mut().put(Arc::new(model))?;
    Ok(changed(WriteReply::Ok))
}

/// RECSYS.MODEL.DEL catalog name
pub fn model_del(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("catalog key")?;
    let name = a.next_str("model name")?;
    if a.has_more() {
        return Err("RECSYS.MODEL.DEL takes the catalog key and one model name".into());
    }
    let removed = c.write().models_mut().remove(name);
    Ok(Applied {
        reply: WriteReply::Int(removed as i64),
        changed: removed,
    })
}

/// The canonical (two-dot, upper-case) name of a command name as typed:
/// a one-dot alias (`RECSYS.ITEM_SET`, see the command table's
/// `one_dot_alias`; no command name has a `_` of its own) is read back as
/// `RECSYS.ITEM.SET`.
pub fn canonical_name(typed: &[u8]) -> String {
    let upper = String::from_utf8_lossy(typed).to_ascii_uppercase();
    match upper.strip_prefix("RECSYS.") {
        Some(rest) if !rest.contains('.') => format!("RECSYS.{}", rest.replace('_', ".")),
        _ => upper,
    }
}

/// Applies a replicated catalog write (`argv[0]` is the command) to a
/// copy: `None` for CREATE, which returns the new catalog.
pub fn apply_replicated(
    copy: Option<&SharedCatalog>,
    argv: &[RedisString],
) -> CmdResult<Option<Catalog>> {
    let name = canonical_name(argv.first().map(|s| s.as_slice()).unwrap_or_default());
    if name == "RECSYS.CREATE" {
        return create(argv).map(Some);
    }
    let c = copy.ok_or_else(|| Error::invalid(format!("{name} before RECSYS.CREATE")))?;
    let apply = match name.as_str() {
        "RECSYS.ALTER" => alter,
        "RECSYS.ITEM.SET" => item_set,
        "RECSYS.ITEM.MSET" => item_mset,
        "RECSYS.ITEM.SETATTRS" => item_setattrs,
        "RECSYS.ITEM.DEL" => item_del,
        "RECSYS.POPULARITY.SET" => popularity_set,
        "RECSYS.MODEL.SET" => model_set_now,
        "RECSYS.MODEL.DEL" => model_del,
        "RECSYS.EXPERIMENT.SET" => crate::experiments::set_now,
        "RECSYS.EXPERIMENT.DEL" => crate::experiments::del_now,
        "RECSYS.EXPERIMENT.SYNC" => crate::experiments::sync_now,
        other => return Err(Error::invalid(format!("{other} is not a catalog write"))),
    };
    apply(c, argv)?;
    Ok(None)
}
