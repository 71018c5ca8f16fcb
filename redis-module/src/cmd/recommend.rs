//! RECSYS.RECOMMEND and RECSYS.EVENT: the user side of the product.
//!
//! User data lives in an ordinary Redis hash at `userkey` (fields and rules:
//! `recsys_core::user`). RECOMMEND reads the hash on the main thread, then
//! runs the pipeline on a worker. EVENT updates the hash and the item's
//! popularity on the main thread and replicates itself with an explicit
//! timestamp. In a cluster both are routed by the user key and use the
//! catalog's copy on the user's node (docs/cluster.md).

use std::sync::atomic::Ordering::Relaxed;

use recsys_core::catalog::popularity::{check_event_time, MAX_EVENT_MS, MAX_WEIGHT};
use recsys_core::pipeline::explain::{Explain, Stage};
use recsys_core::pipeline::recommend as run_pipeline;
use recsys_core::pipeline::request::{Request, UserInput};
use recsys_core::user::{
    check_event_type, event_count_field, format_recent, parse_recent, push_recent, SeenSet,
    MAX_NOREPEAT, RECENT_FIELD, SEEN_FIELD,
};
use recsys_core::vector::from_fp32_blob;
use recsys_core::Error;

use redis_module::{Context, ContextFlags, RedisString};

use crate::acl::KeyAccess;
use crate::args::{Args, CmdResult};
use crate::cluster;
use crate::cmd::request_args::{model_fields, pipeline_option, unknown_option};
use crate::config;
use crate::experiments;
use crate::keys::{check_user_key, read_user, wrote, UserFields};
use crate::plugin_store;
use crate::reply::{self, Reply};
use crate::util::{now_ms, redis_string, replicate};

use crate::cmd::norepeat;
use crate::workers::run_then_unless;
use recsys_core::pipeline::cost::{recommend_work, runs_inline};

/// What RECOMMEND's own options (besides the pipeline's) ask for.
#[derive(Default)]
struct Own<'a> {
    vector: Option<&'a [u8]>,
    with_scores: bool,
    with_source: bool,
    explain: bool,
    experiment: Option<&'a str>,
    norepeat: Option<usize>,
}

/// One of RECOMMEND's own options: keyword, COMMAND DOCS grammar, parser.
pub struct OwnOption {
    pub name: &'static str,
    pub syntax: &'static str,
    parse: for<'a> fn(&mut Args<'a>, &mut Own<'a>) -> CmdResult<()>,
}

/// RECOMMEND's own options: the one list its parser, its "unknown option"
/// error and its COMMAND DOCS (`{recommend}`) come from.
pub const OWN_OPTIONS: &[OwnOption] = &[
    OwnOption {
        name: "VECTOR",
        syntax: "[VECTOR vector:string]",
        parse: |a, o| {
            o.vector = Some(a.next_bytes("VECTOR blob")?);
            Ok(())
        },
    },
    OwnOption {
        name: "NOREPEAT",
        syntax: "[NOREPEAT norepeat:integer]",
        parse: |a, o| {
            o.norepeat = Some(a.next_usize("NOREPEAT", 1, MAX_NOREPEAT)?);
            Ok(())
        },
    },
    OwnOption {
        name: "WITHSCORES",
        syntax: "[WITHSCORES]",
        parse: |_, o| {
            o.with_scores = true;
            Ok(())
        },
    },
    OwnOption {
        name: "WITHSOURCE",
        syntax: "[WITHSOURCE]",
        parse: |_, o| {
            o.with_source = true;
            Ok(())
        },
    },
    OwnOption {
        name: "EXPLAIN",
        syntax: "[EXPLAIN]",
        parse: |_, o| {
            o.explain = true;
            Ok(())
        },
    },
    OwnOption {
        name: "EXPERIMENT",
        syntax: "[EXPERIMENT experiment:string]",
        parse: |a, o| {
            o.experiment = Some(a.next_str("EXPERIMENT name")?);
            Ok(())
        },
    },
];

/// The COMMAND DOCS grammar of RECOMMEND's own options.
pub fn own_syntax() -> String {
    let parts: Vec<&str> = OWN_OPTIONS.iter().map(|o| o.syntax).collect();
    parts.join(" ")
}

/// RECSYS.RECOMMEND catalog userkey [K k] [pipeline options] [VECTOR blob]
/// [NOREPEAT n] [WITHSCORES] [WITHSOURCE] [EXPLAIN] [EXPERIMENT name]: with
/// EXPERIMENT or EXPLAIN the reply is a map of `items` and `request` +
/// `variant` (the experiment's) or `explain`.
pub fn recommend(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog key")?;
    let user = a.next_string("user key")?;
    let mut req = Request::new(10);
    let mut own = Own::default();
    while a.has_more() {
        let kw = a.next_keyword()?;
        if pipeline_option(&kw, &mut a, &mut req)? {
            continue;
        }
        match OWN_OPTIONS.iter().find(|o| o.name == kw) {
            Some(option) => (option.parse)(&mut a, &mut own)?,
            None => {
                let names: Vec<&str> = OWN_OPTIONS.iter().map(|o| o.name).collect();
                return Err(unknown_option(&kw, &names));
            }
        }
    }
    let Own {
        vector: vector_blob,
        with_scores,
        with_source,
        explain,
        experiment,
        norepeat,
    } = own;
    let catalog = cluster::store::catalog_for_undeclared(ctx, key, KeyAccess::Read, Some(user))?;
    let served = match experiment {
        Some(name) => Some(experiments::serve(
            ctx, key, &catalog, name, user, &mut req,
        )?),
        None => None,
    };
    if let Some(n) = norepeat {
        let shown = norepeat::shown_before(ctx, user)?;
        req.exclude.extend(shown.last(n).cloned());
    }
    let req = req.validate()?;
    let (dim, fields) = {
        let c = catalog.read();
        (c.params().dim, model_fields(&c, &req)?)
    };
    let vector_arg = match vector_blob {
        Some(b) => Some(from_fp32_blob(b, dim).map_err(|e| format!("VECTOR: {e}"))?),
        None => None,
    };
    let what = UserFields {
        vector_given: vector_arg.is_some(),
        seen: req.exclude_seen,
        features: &fields,
    };
    let raw = read_user(ctx, user, &what)?;
    let shape = raw.shape(vector_arg.is_some());
    let inline = runs_inline(recommend_work(&catalog.read(), &shape, &req));
    // NOREPEAT writes to the user hash after the reply.
    let norepeat = norepeat.map(|n| (n, user.as_slice().to_vec()));

    Ok(run_then_unless(ctx, inline, move || {
        // The ids served, for NOREPEAT to remember after the reply.
        let mut shown: Option<Vec<String>> = None;
        let reply = (|| {
            let input = match raw.parse(dim) {
                Ok(input) => UserInput {
                    vector_arg,
                    ..input
                },
                Err(e) => return Reply::Error(e),
            };
            let c = catalog.read();
            match run_pipeline(&c, &input, &req, plugin_store::host()) {
                Ok(r) => {
                    crate::metrics::record_stages(&r.explain.stage_us);
                    if norepeat.is_some() {
                        shown = Some(r.items.iter().map(|(id, _)| id.clone()).collect());
                    }
                    let items = if with_source {
                        reply::with_source(&r.items, &r.sources, with_scores)
                    } else {
                        reply::scored(r.items.iter().map(|(id, s)| (id.as_str(), *s)), with_scores)
                    };
                    if served.is_none() && !explain {
                        return items;
                    }
                    let mut fields = vec![("items".into(), items)];
                    if let Some(s) = &served {
                        s.experiment.count_impression(&s.placed);
                        experiments::IMPRESSIONS.fetch_add(1, Relaxed);
                        fields.push(("request".into(), Reply::Text(s.request_id.clone())));
                        fields.push(("variant".into(), Reply::Text(s.variant_name().into())));
                    }
                    if explain {
                        fields.push(("explain".into(), explain_reply(&r.explain)));
                    }
                    Reply::Map(fields)
                }
                Err(e) => Reply::Error(e),
            }
        })();
        let then = match (norepeat, shown) {
            (Some((n, user)), Some(ids)) => Some(norepeat::remember(user, ids, n)),
            _ => None,
        };
        (reply, then)
    }))
}

/// EXPLAIN's map: each stage's facts and microseconds.
fn explain_reply(e: &Explain) -> Reply {
    let n = |v: usize| Reply::Int(v as i64);
    let us = |stage: Stage| Reply::Int(e.micros(stage) as i64);
    Reply::Map(vec![
        (
            "user_vector".into(),
            Reply::Text(e.source.map(|s| s.describe()).unwrap_or_default()),
        ),
        ("session_items".into(), n(e.session_items)),
        ("sequence_items".into(), n(e.tower_items)),
        ("sequence_us".into(), Reply::Int(e.tower_us as i64)),
        ("user_us".into(), us(Stage::UserVector)),
        ("retrieved".into(), n(e.retrieved)),
        ("retrieve_us".into(), us(Stage::Retrieve)),
        ("walk_visits".into(), n(e.walk_visits)),
        ("filter_mode".into(), Reply::Text(e.filter_mode.into())),
        ("below_min_score".into(), n(e.below_min_score)),
        ("examples_used".into(), n(e.examples_used)),
        ("examples_missing".into(), n(e.examples_missing)),
        ("nearer_negative".into(), n(e.nearer_negative)),
        (
            "sources".into(),
            Reply::Text(
                e.source_counts
                    .iter()
                    .map(|(s, found)| format!("{} {found}", s.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ),
        ("fallback_added".into(), n(e.fallback_added)),
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
        ("rank_us".into(), us(Stage::Rank)),
        (
            "rank_features_us".into(),
            Reply::Int(e.rank_features_us as i64),
        ),
        ("plugin_us".into(), us(Stage::Plugins)),
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
        ("order_us".into(), us(Stage::Order)),
        ("returned".into(), n(e.returned)),
    ])
}

/// RECSYS.EVENT catalog userkey item [TYPE t] [WEIGHT w] [TS ms] [REQUEST id]
pub fn event(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog key")?;
    let user = a.next_string("user key")?;
    let item = a.next_str("item id")?;
    let (mut kind, mut weight, mut ts) = ("event".to_string(), 1.0f64, None);
    let mut request = None;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "TYPE" => {
                let t = a.next_str("TYPE")?;
                check_event_type(t)?;
                kind = t.to_string();
            }
            "WEIGHT" => weight = a.next_float("WEIGHT", -MAX_WEIGHT, MAX_WEIGHT)?,
            "TS" => ts = Some(a.next_int("TS", 0, MAX_EVENT_MS)?),
            "REQUEST" => request = Some(a.next_str("REQUEST id")?),
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected TYPE, WEIGHT, TS or REQUEST"
                )))
            }
        }
    }
    let now = now_ms();
    let ts = ts.unwrap_or(now);
    // The master checks the clock; replicas and AOF replay apply what it accepted.
    if !ctx
        .get_flags()
        .intersects(ContextFlags::REPLICATED | ContextFlags::LOADING)
    {
        check_event_time(ts, now)?;
    }
    let catalog = cluster::store::catalog_for_undeclared(ctx, key, KeyAccess::Write, Some(user))?;
    let slot = catalog
        .read()
        .slot_of(item)
        .ok_or_else(|| format!("item '{item}' does not exist in catalog '{key}'"))?;

    let u = ctx.open_key_writable(user);
    check_user_key(u.key_type(), user)?;
    let field = |name: &str| u.hash_get(name).map_err(|e| Error::invalid(e.to_string()));
    let mut recent = parse_recent(field(RECENT_FIELD)?.as_ref().map(|s| s.as_slice()), || {
        user.to_string_lossy()
    })?;
    push_recent(&mut recent, item, config::history());
    let stored_seen = field(SEEN_FIELD)?;
    let stored_seen = stored_seen.as_ref().map(|s| s.as_slice());
    let mut seen = SeenSet::parse(stored_seen, || user.to_string_lossy())?;
    let seen_grew = seen.insert(item);
    let count_field = event_count_field(&kind);
    let count = field(&count_field)?
        .and_then(|v| v.to_string_lossy().parse::<i64>().ok())
        .unwrap_or(0)
        + 1;
    u.hash_set(
        RECENT_FIELD,
        redis_string(ctx, format_recent(&recent).as_bytes()),
    );
    // Written as text: also when only the form changes (a hash written
    // before text was the format), so text clients can read it.
    if seen_grew || stored_seen.is_some_and(SeenSet::is_binary) {
        u.hash_set(SEEN_FIELD, redis_string(ctx, seen.to_text().as_bytes()));
    }
    u.hash_set(
        &count_field,
        redis_string(ctx, count.to_string().as_bytes()),
    );
    drop(u);
    catalog.read().record_popularity(slot, weight, ts);
    if cluster::enabled() && !cluster::replayed(ctx) && cluster::is_master(ctx) {
        cluster::popularity::note(key.as_slice(), item, weight, ts);
    }
    if let Some(id) = request {
        experiments::credit(ctx, key, &catalog, id, user, &kind, now);
    }

    // Replicate with the timestamp resolved here, so replicas and the AOF
    // compute the same popularity.
    let (w, t) = (weight.to_string(), ts.to_string());
    let mut args: Vec<&[u8]> = vec![
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
    if let Some(id) = request {
        args.extend([&b"REQUEST"[..], id.as_bytes()]);
    }
    replicate(ctx, "RECSYS.EVENT", &args);
    // The user hash and the catalog's popularity both changed.
    wrote(ctx, user, "recsys.event");
    wrote(ctx, key, "recsys.event");
    Ok(Reply::Int(recent.len() as i64))
}
