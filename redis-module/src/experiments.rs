//! A/B experiments on the module side (the rules are in
//! `recsys_core::experiment`): the catalog writes RECSYS.EXPERIMENT.SET,
//! DEL and SYNC apply, serving a request with its variant's options, and
//! the flush that moves counts to where they persist.
//!
//! Counting never writes on the request path: RECOMMEND and EVENT count
//! into the experiment's pending parts (atomics) and note the catalog.
//! Once a second ([`FLUSH_MS`]) each master takes the pending counts: for a catalog key it
//! holds, it adds them to the totals and commits `RECSYS.EXPERIMENT.SYNC
//! key ADD name generation delta` (replicas, AOF, and in a cluster every
//! copy); for a copy of another master's catalog it sends the delta over
//! the cluster bus to the catalog's owner, which does the same. So every
//! node's report converges to the sum of what every master counted. A
//! replica counts what it serves and keeps it pending until it is
//! promoted. An RDB or a full sync holds the totals only (what was already
//! replicated), so nothing is counted twice; a crash or restart loses at
//! most the last second's pending counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use recsys_core::catalog::Catalog;
use recsys_core::cluster::message::Message;
use recsys_core::codec::{Reader, Writer};
use recsys_core::experiment::counts::Delta;
use recsys_core::experiment::request_id::{next_nonce, RequestId};
use recsys_core::experiment::{
    Attribution, Experiment, Placement, Variant, MAX_VARIANTS, MAX_WEIGHT,
};
use recsys_core::pipeline::request::Request;
use recsys_core::Error;
use redis_module::{Context, RedisString};

use crate::args::{Args, CmdResult};
use crate::cluster;
use crate::cmd::request_args::{model_fields, pipeline_option, PIPELINE_OPTIONS};
use crate::commit::{changed, commit, Applied, WriteReply};
use crate::config;
use crate::keys::{holds_catalog, SharedCatalog};
use crate::util::{log_warning, now_ms, redis_string, select_db, selected_db};

/// How often pending counts are flushed.
pub const FLUSH_MS: i64 = 1000;

/// Counters for INFO.
pub static CREDITED: AtomicU64 = AtomicU64::new(0);
pub static UNKNOWN_REQUESTS: AtomicU64 = AtomicU64::new(0);
pub static EXPIRED: AtomicU64 = AtomicU64::new(0);
pub static MISMATCHED: AtomicU64 = AtomicU64::new(0);
pub static DUPLICATES: AtomicU64 = AtomicU64::new(0);
pub static IMPRESSIONS: AtomicU64 = AtomicU64::new(0);
pub static FLUSHES: AtomicU64 = AtomicU64::new(0);

/// Catalogs that counted since their last flush, by database and key.
type Dirty = BTreeMap<(i32, Vec<u8>), Weak<RwLock<Catalog>>>;
static DIRTY: Mutex<Dirty> = Mutex::new(BTreeMap::new());

/// Notes that the catalog at `key` (or this node's copy of it) counts.
pub fn note(ctx: &Context, key: &RedisString, catalog: &SharedCatalog) {
    DIRTY.lock().insert(
        (selected_db(ctx), key.as_slice().to_vec()),
        Arc::downgrade(catalog),
    );
}

/// The pipeline options in a variant's OPTIONS text (quoted as a shell
/// would: `WHERE 'price < 50' ORDER boost`), applied to `req`.
pub fn apply_options(ctx: &Context, text: &str, req: &mut Request) -> CmdResult<()> {
    let words = shlex::split(text).ok_or_else(|| Error::invalid("unclosed quote"))?;
    let argv: Vec<RedisString> = words
        .iter()
        .map(|w| redis_string(ctx, w.as_bytes()))
        .collect();
    let mut a = Args::words(&argv);
    while a.has_more() {
        let kw = a.next_keyword()?;
        if !pipeline_option(&kw, &mut a, req)? {
            let names: Vec<&str> = PIPELINE_OPTIONS.iter().map(|o| o.name).collect();
            return Err(Error::invalid(format!(
                "'{kw}' is not a RECOMMEND pipeline option, expected {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// What RECOMMEND ... EXPERIMENT serves with.
pub struct Served {
    pub experiment: Arc<Experiment>,
    pub placed: Placement,
    pub request_id: String,
}

impl Served {
    pub fn variant_name(&self) -> &str {
        &self.experiment.variants[self.placed.variant].name
    }
}

/// Assigns `user` to a variant of experiment `name` and applies its
/// options to `req` (after the request's own).
pub fn serve(
    ctx: &Context,
    key: &RedisString,
    catalog: &SharedCatalog,
    name: &str,
    user: &RedisString,
    req: &mut Request,
) -> CmdResult<Served> {
    let experiment = catalog
        .read()
        .experiments()
        .get(name)
        .cloned()
        .ok_or_else(|| {
            Error::invalid(format!(
                "experiment '{name}' does not exist in catalog '{key}' (set it with RECSYS.EXPERIMENT.SET)"
            ))
        })?;
    let placed = experiment.place(user.as_slice());
    let variant = placed.variant;
    let v = &experiment.variants[variant];
    apply_options(ctx, &v.options, req)
        .map_err(|e| format!("experiment '{name}' variant '{}': OPTIONS: {e}", v.name))?;
    note(ctx, key, catalog);
    let request_id = RequestId {
        experiment: name,
        generation: experiment.generation,
        variant,
        issued_ms: now_ms(),
        nonce: next_nonce(),
    }
    .format();
    Ok(Served {
        experiment,
        placed,
        request_id,
    })
}

/// EVENT ... REQUEST id: credits a click or purchase by `user` to the
/// variant that served request `id` (counted: an id that names no
/// experiment here, one of another user or generation, an expired one, a
/// repeat; never an error, so a late click never fails an app). Replayed
/// (replica, AOF) it only remembers the credit: the master's flush
/// carries the counts.
pub fn credit(
    ctx: &Context,
    key: &RedisString,
    catalog: &SharedCatalog,
    id: &str,
    user: &RedisString,
    event_type: &str,
    now: i64,
) {
    let count = !cluster::replayed(ctx);
    let tally = |c: &AtomicU64| {
        if count {
            c.fetch_add(1, Relaxed);
        }
    };
    let experiment = RequestId::parse(id).and_then(|rid| {
        Some((
            catalog.read().experiments().get(rid.experiment)?.clone(),
            rid,
        ))
    });
    let Some((e, rid)) = experiment else {
        tally(&UNKNOWN_REQUESTS);
        return;
    };
    let window = config::experiment_window_ms();
    match e.attribute(&rid, user.as_slice(), event_type, now, window, count) {
        Attribution::Credited { .. } => tally(&CREDITED),
        Attribution::NotFeedback => return,
        Attribution::Expired => tally(&EXPIRED),
        Attribution::Mismatched => tally(&MISMATCHED),
        Attribution::Duplicate => tally(&DUPLICATES),
    }
    if count {
        note(ctx, key, catalog);
    }
}

/// RECSYS.EXPERIMENT.SET key name VARIANT v WEIGHT w OPTIONS text [VARIANT ...]
/// [CREATED ms]: the experiment and its generation (CREATED, which the
/// master appends when it replicates, else now). With a context to check
/// in, every variant's OPTIONS must parse as RECOMMEND options against
/// this catalog (plugins and models exist); a copy or a replica applies
/// what its owner checked. Also says whether CREATED was given.
pub fn parse_set(
    c: &SharedCatalog,
    argv: &[RedisString],
    check: Option<&Context>,
) -> CmdResult<(Experiment, bool)> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    let name = a.next_str("experiment name")?.to_string();
    let mut variants: Vec<Variant> = Vec::new();
    let mut created = None;
    while a.has_more() {
        match a.next_keyword()?.as_str() {
            "VARIANT" => {
                if variants.len() == MAX_VARIANTS {
                    return Err(Error::invalid(format!(
                        "an experiment has at most {MAX_VARIANTS} variants"
                    )));
                }
                let vname = a.next_str("variant name")?.to_string();
                let mut v = Variant {
                    name: vname,
                    weight: 1,
                    options: String::new(),
                };
                while let Some(kw) = a.peek_keyword() {
                    match kw.as_str() {
                        "WEIGHT" => {
                            a.next_keyword()?;
                            v.weight = a.next_int("variant WEIGHT", 0, MAX_WEIGHT as i64)? as u64;
                        }
                        "OPTIONS" => {
                            a.next_keyword()?;
                            v.options = a.next_str("variant OPTIONS")?.to_string();
                        }
                        _ => break,
                    }
                }
                variants.push(v);
            }
            "CREATED" => created = Some(a.next_int("CREATED", 0, i64::MAX)? as u64),
            other => {
                return Err(Error::invalid(format!(
                    "unknown option '{other}', expected VARIANT name [WEIGHT w] [OPTIONS text]"
                )))
            }
        }
    }
    let given = created.is_some();
    // A new generation is always later than the one it replaces (two SETs
    // within one millisecond must not share request ids).
    let generation = created.unwrap_or_else(|| {
        let previous = c.read().experiments().get(&name).map(|e| e.generation);
        (now_ms() as u64).max(previous.map_or(0, |g| g.saturating_add(1)))
    });
    let experiment = Experiment::new(&name, generation, variants)?;
    if let Some(ctx) = check {
        let catalog = c.read();
        for v in &experiment.variants {
            let mut req = Request::new(10);
            apply_options(ctx, &v.options, &mut req)
                .and_then(|_| req.validate())
                .and_then(|mut req| {
                    // WHERE is compiled now (bounded in size), so a typo fails here.
                    req.compile_filter()?;
                    model_fields(&catalog, &req)
                })
                .map_err(|e| format!("variant '{}': OPTIONS: {e}", v.name))?;
        }
    }
    Ok((experiment, given))
}

/// Puts a parsed experiment in the catalog.
pub fn put(c: &SharedCatalog, e: Experiment) -> CmdResult<Applied> {
    c.write().experiments_mut().put(e)?;
    Ok(changed(WriteReply::Ok))
}

/// RECSYS.EXPERIMENT.SET as a copy or replica applies it (already checked).
pub fn set_now(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let (e, _) = parse_set(c, argv, None)?;
    put(c, e)
}

/// RECSYS.EXPERIMENT.DEL key name
pub fn del_now(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    let name = a.next_str("experiment name")?;
    if a.has_more() {
        return Err("RECSYS.EXPERIMENT.DEL takes the catalog key and one experiment name".into());
    }
    let removed = c.write().experiments_mut().remove(name);
    Ok(Applied {
        reply: WriteReply::Int(removed as i64),
        changed: removed,
    })
}

/// RECSYS.EXPERIMENT.SYNC key ADD name generation delta | key STATE
/// experiment: counts a master flushed (added to the totals; ignored when
/// the experiment is gone or was set again since), or a whole experiment
/// with its totals (AOF rewrite).
pub fn sync_now(c: &SharedCatalog, argv: &[RedisString]) -> CmdResult<Applied> {
    let mut a = Args::new(argv);
    a.next_string("key")?;
    match a.next_keyword()?.as_str() {
        "ADD" => {
            let name = a.next_str("experiment name")?;
            let generation = a.next_int("generation", 0, i64::MAX)? as u64;
            let delta = Delta::decode(&mut Reader::new(a.next_bytes("delta")?))
                .map_err(|e| format!("corrupt experiment counts: {e}"))?;
            let applied = match c.read().experiments().get(name) {
                Some(e) if e.generation == generation => {
                    e.counts.apply(&delta)?;
                    true
                }
                _ => false,
            };
            Ok(Applied {
                reply: WriteReply::Int(applied as i64),
                changed: applied,
            })
        }
        "STATE" => {
            let bytes = a.next_bytes("experiment")?;
            let e = Experiment::decode(&mut Reader::new(bytes))
                .map_err(|e| format!("corrupt experiment: {e}"))?;
            put(c, e)
        }
        other => Err(Error::invalid(format!(
            "unknown SYNC form '{other}', expected ADD or STATE"
        ))),
    }
}

/// The replicated write of a flushed delta.
fn add_write(key: &[u8], e: &Experiment, delta: &Delta) -> Vec<Vec<u8>> {
    let mut blob = Vec::new();
    delta.encode(&mut Writer(&mut blob));
    vec![
        b"RECSYS.EXPERIMENT.SYNC".to_vec(),
        key.to_vec(),
        b"ADD".to_vec(),
        e.name.as_bytes().to_vec(),
        e.generation.to_string().into_bytes(),
        blob,
    ]
}

/// Adds `delta` to experiment `e` of the catalog at `key` (held here) and
/// commits it.
fn add_and_commit(
    ctx: &Context,
    key: &[u8],
    catalog: &SharedCatalog,
    e: &Experiment,
    delta: &Delta,
) {
    if let Err(err) = e.counts.apply(delta) {
        log_warning(&format!("recsys: experiment '{}': {err}", e.name));
        return;
    }
    let write = add_write(key, e, delta);
    let refs: Vec<&[u8]> = write.iter().map(Vec::as_slice).collect();
    commit(
        ctx,
        &redis_string(ctx, key),
        catalog,
        &refs,
        "recsys.experiment",
    );
    FLUSHES.fetch_add(1, Relaxed);
}

/// Counts another master flushed to this node, the catalog's owner.
pub fn on_counts(ctx: &Context, key: &[u8], name: &str, generation: u64, delta: &[u8]) {
    let Some(catalog) = cluster::registry::catalog(key) else {
        return;
    };
    let Ok(delta) = Delta::decode(&mut Reader::new(delta)) else {
        cluster::BAD_MESSAGES.fetch_add(1, Relaxed);
        return;
    };
    let e = catalog.read().experiments().get(name).cloned();
    if let Some(e) = e.filter(|e| e.generation == generation) {
        add_and_commit(ctx, key, &catalog, &e, &delta);
    }
}

/// Takes every noted catalog's pending counts to where they persist (see
/// the module doc). Only masters flush; a catalog is forgotten once a
/// flush finds nothing pending, or when its key and copy are gone.
pub fn flush(ctx: &Context) {
    if !cluster::is_master(ctx) {
        return;
    }
    let noted: Vec<_> = DIRTY
        .lock()
        .iter()
        .map(|(k, w)| (k.clone(), w.clone()))
        .collect();
    let db_before = selected_db(ctx);
    for ((db, key), weak) in noted {
        let forget = || {
            let mut d = DIRTY.lock();
            if d.get(&(db, key.clone())).is_some_and(|w| w.ptr_eq(&weak)) {
                d.remove(&(db, key.clone()));
            }
        };
        let Some(catalog) = weak.upgrade() else {
            forget();
            continue;
        };
        select_db(ctx, db);
        let held = holds_catalog(ctx, &redis_string(ctx, &key), &catalog);
        let owner = match held {
            true => None,
            false => cluster::store::owner_of_copy(&key, &catalog),
        };
        if !held && owner.is_none() {
            forget();
            continue;
        }
        let experiments: Vec<Arc<Experiment>> =
            catalog.read().experiments().iter().cloned().collect();
        let mut flushed = false;
        for e in experiments {
            let delta = e.counts.take_pending();
            if delta.is_empty() {
                continue;
            }
            flushed = true;
            match &owner {
                None => add_and_commit(ctx, &key, &catalog, &e, &delta),
                Some(owner) => {
                    let mut blob = Vec::new();
                    delta.encode(&mut Writer(&mut blob));
                    cluster::send(
                        ctx,
                        Some(owner),
                        &Message::ExperimentCounts {
                            catalog: key.clone(),
                            experiment: e.name.clone(),
                            generation: e.generation,
                            delta: blob,
                        },
                    );
                }
            }
        }
        if !flushed {
            forget();
        }
    }
    select_db(ctx, db_before);
}

/// Starts the flush timer (module load).
pub fn init(ctx: &Context) {
    crate::util::every(ctx, FLUSH_MS, "experiment flush", flush);
}

/// `INFO recsys` fields of experiments.
pub fn info(g: &mut crate::metrics::Gauges) {
    g.add("experiment_impressions", IMPRESSIONS.load(Relaxed));
    g.add("experiment_feedback_credited", CREDITED.load(Relaxed));
    g.add(
        "experiment_unknown_requests",
        UNKNOWN_REQUESTS.load(Relaxed),
    );
    g.add("experiment_expired_requests", EXPIRED.load(Relaxed));
    g.add("experiment_mismatched_requests", MISMATCHED.load(Relaxed));
    g.add("experiment_duplicate_feedback", DUPLICATES.load(Relaxed));
    g.add("experiment_flushes", FLUSHES.load(Relaxed));
    g.add("experiment_catalogs_pending", DIRTY.lock().len());
}
