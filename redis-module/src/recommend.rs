//! RECSYS.RECOMMEND and RECSYS.EVENT: the user side of the product.
//!
//! User data lives in an ordinary Redis hash at `userkey`:
//! - `emb`: the user's vector as an FP32 blob (written by anyone, e.g. HSET);
//! - `recent`: JSON array of the most recent item ids, newest first
//!   (written by RECSYS.EVENT, bounded by the HISTORY module argument);
//! - `events:<type>`: number of events of each type (RECSYS.EVENT).
//!
//! RECOMMEND reads the hash on the main thread, then runs the pipeline on a
//! worker. EVENT updates the hash and the item's popularity on the main thread
//! and replicates itself with an explicit timestamp.

use std::time::{SystemTime, UNIX_EPOCH};

use recsys_core::catalog::Catalog;
use recsys_core::pipeline::filter::Filter;
use recsys_core::pipeline::plugins::PluginStage;
use recsys_core::pipeline::recommend::{
    rank_model, recommend as run_pipeline, Ordering, Request, UserInput, MAX_CANDIDATES, MAX_K,
};
use recsys_core::plugin::World;
use recsys_core::vector::from_fp32_blob;
use redis_module::{raw, Context, KeyType, RedisString};

use crate::args::{Args, CmdResult};
use crate::commands::{catalog_at, run_blocking, scored_reply};
use crate::config;
use crate::reply::Reply;

/// Hash field with the user's vector.
pub const EMB_FIELD: &str = "emb";
/// Hash field with the recent item ids (JSON array, newest first).
pub const RECENT_FIELD: &str = "recent";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn check_user_key(key_type: KeyType, user: &RedisString) -> CmdResult<()> {
    match key_type {
        KeyType::Empty | KeyType::Hash => Ok(()),
        _ => Err(format!(
            "WRONGTYPE user key '{user}' must be a hash (fields: emb, recent, ...)"
        )),
    }
}

fn parse_recent(raw: Option<RedisString>, user: &RedisString) -> CmdResult<Vec<String>> {
    match raw {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_slice(s.as_slice()).map_err(|_| {
            format!("field '{RECENT_FIELD}' of user '{user}' must be a JSON array of item ids")
        }),
    }
}

/// Parses one pipeline option shared by RECOMMEND and BATCH (`kw` already
/// read). Returns false when `kw` is not a pipeline option.
pub fn pipeline_option(kw: &str, a: &mut Args, req: &mut Request) -> CmdResult<bool> {
    match kw {
        "K" => req.k = a.next_usize("K", 1, MAX_K)?,
        "CANDIDATES" => req.candidates = a.next_usize("CANDIDATES", 1, MAX_CANDIDATES)?,
        "EF" => req.ef = Some(a.next_usize("EF", 1, recsys_core::index::params::MAX_EF)?),
        "WHERE" => req.filter = Some(Filter::cached(a.next_str("WHERE expression")?)?),
        "EXCLUDE_SEEN" => req.exclude_seen = true,
        "SOFTMAX" => {
            let t = a.next_float("SOFTMAX temperature", 1e-6, 1e6)?;
            let mut seed = now_ms() as u64 ^ 0x5EED;
            if a.peek_keyword().as_deref() == Some("SEED") {
                a.next_keyword()?;
                seed = a.next_int("SEED", 0, i64::MAX)? as u64;
            }
            req.ordering = Ordering::Softmax {
                temperature: t as f32,
                seed,
            };
        }
        "SEED" => return Err("SEED must follow SOFTMAX temperature".into()),
        "FILTER" | "ORDER" => {
            let plugin = crate::plugins::get(a.next_str("plugin name")?)?;
            let mut config = String::new();
            if a.peek_keyword().as_deref() == Some("ARGS") {
                a.next_keyword()?;
                config = a.next_str("ARGS")?.to_string();
            }
            let want = if kw == "FILTER" {
                World::Filter
            } else {
                World::Order
            };
            if plugin.world != want {
                return Err(format!(
                    "plugin '{}' implements the {} world, {kw} needs a {} plugin",
                    plugin.name,
                    plugin.world.name(),
                    want.name()
                ));
            }
            let stage = PluginStage { plugin, config };
            if kw == "FILTER" {
                req.filter_plugins.push(stage);
            } else if req.order_plugin.replace(stage).is_some() {
                return Err("only one ORDER plugin per request".into());
            }
        }
        "ARGS" => return Err("ARGS must follow FILTER name or ORDER name".into()),
        "FAILOPEN" => req.fail_open = true,
        "RANK" => req.rank = Some(a.next_str("RANK model name")?.to_string()),
        "DIVERSITY" => {
            let attr = a.next_str("DIVERSITY attribute")?.to_string();
            let max = a.next_usize("DIVERSITY max", 1, MAX_K)?;
            req.diversity = Some((attr, max));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The user hash fields a request's models read (its RANK model's and the
/// catalog's QUERY model's); fails when the RANK model does not exist.
pub fn model_fields(catalog: &Catalog, req: &Request) -> CmdResult<Vec<String>> {
    let mut fields = Vec::new();
    if let Some(name) = &req.rank {
        fields.extend_from_slice(rank_model(catalog, name)?.user_fields());
    }
    if let Some(q) = catalog.models().query_model() {
        fields.extend_from_slice(q.user_fields());
    }
    fields.sort();
    fields.dedup();
    Ok(fields)
}

/// Reads the user's hash (`emb` unless `vector_given`, `recent`, and the
/// model feature `fields`) on the main thread or under the GIL.
pub fn read_user(
    ctx: &Context,
    user: &RedisString,
    dim: usize,
    vector_given: bool,
    fields: &[String],
) -> CmdResult<UserInput> {
    let u = ctx.open_key(user);
    check_user_key(u.key_type(), user)?;
    let mut input = UserInput {
        now_ms: now_ms(),
        ..UserInput::default()
    };
    if u.key_type() == KeyType::Hash {
        if !vector_given {
            if let Some(emb) = u.hash_get(EMB_FIELD).map_err(|e| e.to_string())? {
                input.embedding = Some(
                    from_fp32_blob(emb.as_slice(), dim)
                        .map_err(|e| format!("field '{EMB_FIELD}' of user '{user}': {e}"))?,
                );
            }
        }
        input.recent = parse_recent(u.hash_get(RECENT_FIELD).map_err(|e| e.to_string())?, user)?;
        for f in fields {
            if let Some(v) = u.hash_get(f).map_err(|e| e.to_string())? {
                input.features.insert(f.clone(), v.to_string_lossy());
            }
        }
    }
    Ok(input)
}

/// RECSYS.RECOMMEND catalog userkey [K k] [CANDIDATES n] [EF n] [VECTOR blob]
/// [WHERE expr] [EXCLUDE_SEEN] [SOFTMAX temperature [SEED s]]
/// [DIVERSITY attr max] [WITHSCORES] [EXPLAIN]
pub fn recommend(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog key")?;
    let user = a.next_string("user key")?;
    let mut req = Request::new(10);
    let mut vector_blob: Option<&[u8]> = None;
    let (mut with_scores, mut explain) = (false, false);
    while a.has_more() {
        let kw = a.next_keyword()?;
        if pipeline_option(&kw, &mut a, &mut req)? {
            continue;
        }
        match kw.as_str() {
            "VECTOR" => vector_blob = Some(a.next_bytes("VECTOR blob")?),
            "WITHSCORES" => with_scores = true,
            "EXPLAIN" => explain = true,
            other => {
                return Err(format!(
                    "unknown option '{other}', expected K, CANDIDATES, EF, VECTOR, WHERE, EXCLUDE_SEEN, RANK, FILTER, ORDER, FAILOPEN, SOFTMAX, DIVERSITY, WITHSCORES or EXPLAIN"
                ))
            }
        }
    }
    req.candidates = req.candidates.max(req.k);
    if req.order_plugin.is_some() && matches!(req.ordering, Ordering::Softmax { .. }) {
        return Err("ORDER plugin and SOFTMAX cannot be combined: both decide the order".into());
    }
    let catalog = catalog_at(ctx, key)?;
    let (dim, fields) = {
        let c = catalog.read();
        (c.params().dim, model_fields(&c, &req)?)
    };
    let vector_arg = match vector_blob {
        Some(b) => Some(from_fp32_blob(b, dim).map_err(|e| format!("VECTOR: {e}"))?),
        None => None,
    };
    let mut input = read_user(ctx, user, dim, vector_arg.is_some(), &fields)?;
    input.vector_arg = vector_arg;
    input.user_id = user.to_string_lossy();

    Ok(run_blocking(ctx, move || {
        let c = catalog.read();
        match run_pipeline(&c, &input, &req, crate::plugins::host()) {
            Ok(r) => {
                let items =
                    scored_reply(r.items.iter().map(|(id, s)| (id.as_str(), *s)), with_scores);
                if !explain {
                    return items;
                }
                let e = &r.explain;
                let n = |v: usize| Reply::Int(v as i64);
                let us = |v: u64| Reply::Int(v as i64);
                Reply::Map(vec![
                    ("items".into(), items),
                    (
                        "explain".into(),
                        Reply::Map(vec![
                            (
                                "user_vector".into(),
                                Reply::Text(e.source.map(|s| s.describe()).unwrap_or_default()),
                            ),
                            ("user_us".into(), us(e.user_us)),
                            ("retrieved".into(), n(e.retrieved)),
                            ("retrieve_us".into(), us(e.retrieve_us)),
                            ("filter_mode".into(), Reply::Text(e.filter_mode.into())),
                            ("filter_evaluated".into(), n(e.filter_evaluated)),
                            ("filter_rejected".into(), n(e.filter_rejected)),
                            (
                                "rank".into(),
                                Reply::Text(match &e.rank_model {
                                    Some(m) => format!("model {m}"),
                                    None => "retrieval score".into(),
                                }),
                            ),
                            ("ranked".into(), n(e.ranked)),
                            ("rank_us".into(), us(e.rank_us)),
                            ("plugin_us".into(), us(e.plugin_us)),
                            ("after_plugins".into(), n(e.after_plugins)),
                            (
                                "plugin_failures".into(),
                                Reply::Array(
                                    e.plugin_failures
                                        .iter()
                                        .map(|f| Reply::Text(f.clone()))
                                        .collect(),
                                ),
                            ),
                            ("diversity_dropped".into(), n(e.diversity_dropped)),
                            ("order_us".into(), us(e.order_us)),
                            ("returned".into(), n(e.returned)),
                        ]),
                    ),
                ])
            }
            Err(e) => Reply::error(e),
        }
    }))
}

/// RECSYS.EVENT catalog userkey item [TYPE t] [WEIGHT w] [TS ms]
pub fn event(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog key")?;
    let user = a.next_string("user key")?;
    let item = a.next_str("item id")?;
    let (mut kind, mut weight, mut ts) = ("event".to_string(), 1.0f64, None);
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "TYPE" => {
                let t = a.next_str("TYPE")?;
                if t.is_empty()
                    || t.len() > 64
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "TYPE must be 1..64 letters, digits, '_' or '-', got '{t}'"
                    ));
                }
                kind = t.to_string();
            }
            "WEIGHT" => weight = a.next_float("WEIGHT", -1e6, 1e6)?,
            "TS" => ts = Some(a.next_int("TS", 0, i64::MAX / 2)?),
            other => {
                return Err(format!(
                    "unknown option '{other}', expected TYPE, WEIGHT or TS"
                ))
            }
        }
    }
    let ts = ts.unwrap_or_else(now_ms);
    let catalog = catalog_at(ctx, key)?;
    let slot = catalog
        .read()
        .slot_of(item)
        .ok_or_else(|| format!("item '{item}' does not exist in catalog '{key}'"))?;

    let u = ctx.open_key_writable(user);
    check_user_key(u.key_type(), user)?;
    let mut recent = parse_recent(u.hash_get(RECENT_FIELD).map_err(|e| e.to_string())?, user)?;
    recent.retain(|id| id != item);
    recent.insert(0, item.to_string());
    recent.truncate(config::get().history);
    let json = serde_json::to_string(&recent).map_err(|e| e.to_string())?;
    let count_field = format!("events:{kind}");
    let count = u
        .hash_get(&count_field)
        .map_err(|e| e.to_string())?
        .and_then(|v| v.to_string_lossy().parse::<i64>().ok())
        .unwrap_or(0)
        + 1;
    u.hash_set(RECENT_FIELD, ctx.create_string(json));
    u.hash_set(&count_field, ctx.create_string(count.to_string()));
    drop(u);
    catalog.read().record_popularity(slot, weight, ts);

    // Replicate with the timestamp resolved here, so replicas and the AOF
    // compute the same popularity.
    let (w, t) = (weight.to_string(), ts.to_string());
    let args: [&[u8]; 9] = [
        key.as_slice(),
        user.as_slice(),
        item.as_bytes(),
        b"TYPE",
        kind.as_bytes(),
        b"WEIGHT",
        w.as_bytes(),
        b"TS",
        t.as_bytes(),
    ];
    replicate(ctx, "RECSYS.EVENT", &args);
    Ok(Reply::Int(recent.len() as i64))
}

/// Replicates `cmd args...` (binary-safe) to replicas and the AOF.
fn replicate(ctx: &Context, cmd: &str, args: &[&[u8]]) {
    let strings: Vec<RedisString> = args.iter().map(|a| ctx.create_string(*a)).collect();
    let mut ptrs: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.inner).collect();
    let name = std::ffi::CString::new(cmd).unwrap_or_default();
    // SAFETY: "v" passes an array of RedisModuleString pointers and its length.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx.ctx,
            name.as_ptr(),
            c"v".as_ptr(),
            ptrs.as_mut_ptr(),
            ptrs.len(),
        );
    }
}
