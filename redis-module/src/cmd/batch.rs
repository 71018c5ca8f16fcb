//! RECSYS.BATCH: offline recommendations for every user hash matching a
//! pattern, computed on a background thread and written as plain Redis lists
//! (`prefix + userkey`), the seed article's first design. RECSYS.BATCH.STATUS
//! reports progress.
//!
//! The job holds the GIL only in short slices: one SCAN page (and reading its
//! users' hashes), then, after computing outside the GIL, writing that page's
//! lists. Each user's list is built under a scratch key in the same slot and
//! renamed over the old one inside one GIL hold, so clients see the old list
//! or the new one, never a mix, and a failed write (OOM) keeps the old list;
//! the writes are replicated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use recsys_core::cluster::slot::{in_slot_of, key_slot};
use recsys_core::pipeline::recommend as run_pipeline;
use recsys_core::pipeline::request::{RawUser, Request};
use recsys_core::Error;
use redis_module::{
    CallOptions, CallOptionsBuilder, CallReply, CallResult, Context, RedisString, RedisValue,
    ThreadSafeContext,
};

use crate::acl::{Caller, KeyAccess};
use crate::args::{Args, CmdResult};
use crate::cluster;
use crate::cmd::request_args::{model_fields, pipeline_option, unknown_option};
use crate::keys::{read_user, SharedCatalog, UserFields};
use crate::plugin_store;
use crate::reply::Reply;
use crate::util::{now_ms, panic_message, redis_string, reply_bytes, select_db, selected_db};

/// Users read per SCAN page (one GIL hold).
const PAGE: usize = 200;
/// Batches remembered by RECSYS.BATCH.STATUS.
const KEEP: usize = 32;

#[derive(Debug, Clone, Default)]
struct Status {
    catalog: String,
    pattern: String,
    state: &'static str,
    users: u64,
    written: u64,
    errors: u64,
    /// Keys skipped because the caller's ACL user may not read (user
    /// hashes) or write (lists) them; their names are not reported.
    denied: u64,
    /// The slots whose users the batch covers (the node's at the start).
    slots: String,
    last_error: Option<String>,
    started_ms: i64,
    finished_ms: Option<i64>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Jobs started, done and failed since the server started (INFO).
static STARTED: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// Batch jobs started, running, done and failed (INFO).
pub fn counts() -> [u64; 4] {
    let [started, done, failed] = [&STARTED, &DONE, &FAILED].map(|c| c.load(Relaxed));
    [started, started.saturating_sub(done + failed), done, failed]
}
static STATUS: Mutex<BTreeMap<u64, Status>> = Mutex::new(BTreeMap::new());

fn update(id: u64, f: impl FnOnce(&mut Status)) {
    if let Some(s) = STATUS.lock().get_mut(&id) {
        f(s);
    }
}

/// A user's key and their recommended ids (or why there are none).
type UserResult = Result<Vec<String>, String>;

struct Job {
    id: u64,
    catalog: SharedCatalog,
    dim: usize,
    /// User hash fields the models read.
    fields: Vec<String>,
    /// The database BATCH ran in.
    db: i32,
    pattern: Vec<u8>,
    prefix: Vec<u8>,
    ttl_ms: Option<i64>,
    req: Request,
    /// The ACL user that started the batch: every key read or written is
    /// checked against it.
    caller: Caller,
}

/// RECSYS.BATCH catalog MATCH pattern K k INTO prefix [TTL s] [pipeline options]
pub fn batch(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let key = a.next_string("catalog key")?;
    let mut req = Request::new(10);
    let (mut pattern, mut prefix, mut ttl_ms) = (None, None, None);
    let mut k_given = false;
    while a.has_more() {
        let kw = a.next_keyword()?;
        k_given |= kw == "K";
        if pipeline_option(&kw, &mut a, &mut req)? {
            continue;
        }
        match kw.as_str() {
            "MATCH" => pattern = Some(a.next_bytes("MATCH pattern")?.to_vec()),
            "INTO" => prefix = Some(a.next_bytes("INTO prefix")?.to_vec()),
            "TTL" => ttl_ms = Some(a.next_int("TTL", 1, i64::MAX / 2000)? * 1000),
            other => return Err(unknown_option(other, &["MATCH", "INTO", "TTL"])),
        }
    }
    let pattern = pattern.ok_or_else(|| Error::invalid("MATCH pattern is required"))?;
    let prefix = prefix.ok_or_else(|| Error::invalid("INTO prefix is required"))?;
    if prefix.is_empty() {
        return Err(Error::invalid(
            "INTO prefix must not be empty: the lists would replace the user hashes",
        ));
    }
    let caller = Caller::of(ctx)?;
    if !caller.may_run(ctx, &[b"SCAN", b"0", b"MATCH", &pattern])? {
        return Err(Error::no_permission(
            "this user has no permissions to run the 'scan' command that RECSYS.BATCH uses",
        ));
    }
    if !k_given {
        return Err(Error::invalid("K is required"));
    }
    let mut req = req.validate()?;
    // Once, here: a bad WHERE fails the command, not every user.
    req.compile_filter()?;
    let catalog = cluster::store::catalog_for_undeclared(ctx, key, KeyAccess::Read, None)?;
    let (dim, fields) = {
        let c = catalog.read();
        (c.params().dim, model_fields(&c, &req)?)
    };
    let id = NEXT_ID.fetch_add(1, Relaxed);
    let slots = cluster::served_slots(ctx);
    {
        let mut all = STATUS.lock();
        all.insert(
            id,
            Status {
                catalog: key.to_string_lossy(),
                pattern: String::from_utf8_lossy(&pattern).into_owned(),
                state: "running",
                slots: slots.clone(),
                started_ms: now_ms(),
                ..Status::default()
            },
        );
        while all.len() > KEEP {
            let oldest = *all.keys().next().unwrap_or(&id);
            all.remove(&oldest);
        }
    }
    let job = Job {
        id,
        catalog,
        dim,
        fields,
        db: selected_db(ctx),
        pattern,
        prefix,
        ttl_ms,
        req,
        caller,
    };
    STARTED.fetch_add(1, Relaxed);
    std::thread::Builder::new()
        .name(format!("recsys-batch-{id}"))
        .stack_size(crate::workers::WORKER_STACK)
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&job)));
            let (state, err) = match outcome {
                Ok(Ok(())) => ("done", None),
                Ok(Err(e)) => ("failed", Some(e)),
                Err(p) => (
                    "failed",
                    Some(format!("internal error: {}", panic_message(&p))),
                ),
            };
            match state {
                "done" => DONE.fetch_add(1, Relaxed),
                _ => FAILED.fetch_add(1, Relaxed),
            };
            update(id, |s| {
                s.state = state;
                s.finished_ms = Some(now_ms());
                if err.is_some() {
                    s.last_error = err;
                }
            });
        })
        .map_err(|e| {
            FAILED.fetch_add(1, Relaxed);
            Error::internal(format!("cannot start batch thread: {e}"))
        })?;
    Ok(Reply::Map(vec![
        ("id".into(), Reply::Int(id as i64)),
        ("slots".into(), Reply::Text(slots)),
    ]))
}

fn run(job: &Job) -> Result<(), String> {
    let tsc = ThreadSafeContext::new();
    // Writes respect maxmemory like a client's would, and replicate.
    let replicate = CallOptionsBuilder::new().replicate().verify_oom().build();
    let mut cursor = b"0".to_vec();
    loop {
        // Users skipped unread, and lists not written, for lack of ACL rights.
        let (mut read_denied, mut write_denied) = (0u64, 0u64);
        // 1. One SCAN page and its users' hashes, under the GIL.
        let (next, users) = {
            let ctx = tsc.lock();
            select_db(&ctx, job.db);
            let page = PAGE.to_string();
            let reply = ctx
                .call(
                    "SCAN",
                    &[
                        &cursor[..],
                        b"MATCH",
                        &job.pattern,
                        b"COUNT",
                        page.as_bytes(),
                        b"TYPE",
                        b"hash",
                    ][..],
                )
                .map_err(|e| format!("SCAN failed: {e}"))?;
            let RedisValue::Array(parts) = reply else {
                return Err("unexpected SCAN reply".into());
            };
            let next = parts
                .first()
                .and_then(reply_bytes)
                .ok_or("SCAN reply has no cursor")?;
            let keys: Vec<Vec<u8>> = match parts.get(1) {
                Some(RedisValue::Array(keys)) => keys.iter().filter_map(reply_bytes).collect(),
                _ => Vec::new(),
            };
            let mut users: Vec<(Vec<u8>, Result<RawUser, String>)> = Vec::new();
            for k in keys {
                if !job.caller.may(&ctx, &k, KeyAccess::Read)? {
                    read_denied += 1;
                    continue;
                }
                let name = redis_string(&ctx, &k);
                let what = UserFields {
                    vector_given: false,
                    seen: job.req.exclude_seen,
                    features: &job.fields,
                };
                let input = read_user(&ctx, &name, &what).map_err(String::from);
                users.push((k, input));
            }
            (next, users)
        };
        // 2. The pipeline, outside the GIL.
        let results: Vec<(Vec<u8>, UserResult)> = {
            let c = job.catalog.read();
            users
                .into_iter()
                .map(|(k, input)| {
                    let r = input
                        .and_then(|raw| raw.parse(job.dim).map_err(String::from))
                        .and_then(|u| {
                            run_pipeline(&c, &u, &job.req, plugin_store::host())
                                .map_err(String::from)
                        });
                    (
                        k,
                        r.map(|r| r.items.into_iter().map(|(id, _)| id).collect()),
                    )
                })
                .collect()
        };
        // 3. Replace each user's list atomically, under the GIL.
        let (mut written, mut errors, mut last_error) = (0u64, 0u64, None);
        {
            let ctx = tsc.lock();
            select_db(&ctx, job.db);
            for (user, r) in &results {
                let ids = match r {
                    Ok(ids) => ids,
                    Err(e) => {
                        errors += 1;
                        last_error = Some(format!("{}: {e}", String::from_utf8_lossy(user)));
                        continue;
                    }
                };
                let dest = list_key(&job.prefix, user);
                if cluster::enabled() && key_slot(&dest) != key_slot(user) {
                    // A `}` in a user key without a hash tag: braces cannot
                    // put its list in the user's slot.
                    errors += 1;
                    last_error = Some(format!(
                        "{}: its list would be in another slot than the user (a '}}' in a key without a hash tag)",
                        String::from_utf8_lossy(user)
                    ));
                    continue;
                }
                if !job.caller.may(&ctx, &dest, KeyAccess::Write)? {
                    write_denied += 1;
                    continue;
                }
                match write_list(&ctx, &replicate, &dest, ids, job.ttl_ms) {
                    Ok(()) => written += 1,
                    Err(e) => {
                        errors += 1;
                        last_error = Some(format!("{}: {e}", String::from_utf8_lossy(&dest)));
                    }
                }
            }
        }
        update(job.id, |s| {
            s.users += results.len() as u64 + read_denied;
            s.written += written;
            s.errors += errors;
            s.denied += read_denied + write_denied;
            if last_error.is_some() {
                s.last_error = last_error;
            }
        });
        if next == b"0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// The list of `user`: `prefix{user}`, or `prefix + user` when the user
/// key has a hash tag of its own; the same name with or without a
/// cluster, so in a cluster it lands on the node that serves the user.
fn list_key(prefix: &[u8], user: &[u8]) -> Vec<u8> {
    in_slot_of(prefix, user)
}

/// A scratch key in the same cluster slot as `key`: `key` keeps its hash
/// tag, or becomes one.
fn scratch_key(key: &[u8]) -> Vec<u8> {
    let mut out = in_slot_of(b"", key);
    out.extend_from_slice(b":recsys-batch-tmp");
    out
}

/// Replaces the list at `dest` with `ids`, replicated: the new list is built
/// under a scratch key and renamed over `dest`, so a write that fails (OOM
/// under maxmemory) leaves the old list as it was. The first failure is the
/// error.
fn write_list(
    ctx: &Context,
    replicate: &CallOptions,
    dest: &[u8],
    ids: &[String],
    ttl_ms: Option<i64>,
) -> Result<(), String> {
    // A NULL reply (the server refused to run the command, e.g. OOM) comes
    // back as `Unknown`: a failure like an error reply.
    let check = |what: &str, r: CallResult| match r {
        Ok(CallReply::Unknown) => Err(format!(
            "{what}: refused by the server (OOM under maxmemory, or not allowed)"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{what}: {e}")),
    };
    if ids.is_empty() {
        return check("DEL", ctx.call_ext("DEL", replicate, &[dest][..]));
    }
    let tmp = scratch_key(dest);
    let mut args: Vec<&[u8]> = vec![&tmp];
    args.extend(ids.iter().map(|s| s.as_bytes()));
    let pushed = check("RPUSH", ctx.call_ext("RPUSH", replicate, &args[..]));
    let expiry = match (&pushed, ttl_ms) {
        (Ok(()), Some(ms)) => {
            let ms = ms.to_string();
            check(
                "PEXPIRE",
                ctx.call_ext("PEXPIRE", replicate, &[&tmp[..], ms.as_bytes()][..]),
            )
        }
        _ => Ok(()),
    };
    if let Err(e) = pushed.and(expiry) {
        let _: CallResult = ctx.call_ext("DEL", replicate, &[&tmp[..]][..]);
        return Err(e);
    }
    check(
        "RENAME",
        ctx.call_ext("RENAME", replicate, &[&tmp[..], dest][..]),
    )
}

fn status_reply(id: u64, s: &Status) -> Reply {
    Reply::Map(vec![
        ("id".into(), Reply::Int(id as i64)),
        ("catalog".into(), Reply::Text(s.catalog.clone())),
        ("pattern".into(), Reply::Text(s.pattern.clone())),
        ("state".into(), Reply::Text(s.state.into())),
        ("users".into(), Reply::Int(s.users as i64)),
        ("written".into(), Reply::Int(s.written as i64)),
        ("errors".into(), Reply::Int(s.errors as i64)),
        ("denied".into(), Reply::Int(s.denied as i64)),
        ("slots".into(), Reply::Text(s.slots.clone())),
        (
            "last_error".into(),
            s.last_error.clone().map_or(Reply::Null, Reply::Text),
        ),
        ("started_ms".into(), Reply::Int(s.started_ms)),
        (
            "finished_ms".into(),
            s.finished_ms.map_or(Reply::Null, Reply::Int),
        ),
    ])
}

/// RECSYS.BATCH.STATUS [id]
pub fn status(_ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    let mut a = Args::new(argv);
    let all = STATUS.lock();
    if a.has_more() {
        let id = a.next_int("batch id", 1, i64::MAX)? as u64;
        if a.has_more() {
            return Err(Error::invalid(
                "RECSYS.BATCH.STATUS takes at most one batch id",
            ));
        }
        let s = all.get(&id).ok_or_else(|| {
            Error::invalid(format!("no batch with id {id} (the last {KEEP} are kept)"))
        })?;
        return Ok(status_reply(id, s));
    }
    Ok(Reply::Array(
        all.iter()
            .rev()
            .map(|(id, s)| status_reply(*id, s))
            .collect(),
    ))
}
