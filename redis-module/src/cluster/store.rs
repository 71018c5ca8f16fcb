//! This node's copies of other nodes' catalogs: which catalog a request
//! uses, applying the owner's updates and snapshots, telling this node's
//! replicas and AOF (RECSYS.COPY), listing them (RECSYS.COPIES), and their
//! RDB aux data.
//!
//! A master applies what comes over the bus and replicates it as
//! `RECSYS.COPY APPLY|LOAD|DROP|CONFIRM`; a replica (and an AOF being loaded)
//! applies those commands, never the bus, so a replica's copies are its
//! master's, and a promoted replica starts with them.

use std::sync::Arc;

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use recsys_core::catalog::log::LogPos;
use recsys_core::catalog::Catalog;
use recsys_core::cluster::copies::{Copies, Copy, Update, UpdateAction};
use recsys_core::cluster::message::Message;
use recsys_core::cluster::slot::key_slot;
use recsys_core::Error;
use redis_module::{raw, Context, RedisString};

use super::{is_master, registry, replayed, send, with_gil, PART_BYTES};
use crate::acl::{Caller, KeyAccess};
use crate::args::{Args, CmdResult};
use crate::datatype::{load_payload, save_payload, CatalogValue};
use crate::keys::{catalog_at, catalog_if_any, SharedCatalog};
use crate::reply::Reply;
use crate::util::{log_warning, now_ms, redis_string, replicate};
use crate::workers::run_detached;
use crate::writes;

static COPIES: Lazy<Mutex<Copies<SharedCatalog>>> = Lazy::new(Default::default);

/// A shared catalog made from a decoded or created one (counted by INFO).
fn share(c: Catalog) -> SharedCatalog {
    CatalogValue::new(c).0
}

/// The catalog of a command that, in a cluster, does not declare it as a
/// key (RECOMMEND and EVENT are routed by the user key `routed_by`, BATCH
/// declares no key and runs on every master): the catalog this node holds
/// under that name, else its copy. A copy catching up answers TRYAGAIN.
///
/// Redis checked the ACL of declared keys only, so the catalog's is
/// checked here. A catalog in another slot than the command's is found in
/// the registry: Redis 7.2+ looks every key up in the command's slot.
pub fn catalog_for_undeclared(
    ctx: &Context,
    key: &RedisString,
    access: KeyAccess,
    routed_by: Option<&RedisString>,
) -> CmdResult<SharedCatalog> {
    if !super::enabled() {
        return catalog_at(ctx, key);
    }
    if !replayed(ctx) {
        let allowed = Caller::of(ctx)?.may(ctx, key.as_slice(), access)?;
        if !allowed {
            return Err(Error::no_permission(format!(
                "this user has no permissions to access the catalog '{key}'"
            )));
        }
    }
    let in_command_slot =
        routed_by.is_none_or(|r| key_slot(r.as_slice()) == key_slot(key.as_slice()));
    let held = if in_command_slot {
        let c = catalog_if_any(ctx, key)?;
        if let Some(c) = &c {
            registry::note(key.as_slice(), c);
        }
        c
    } else {
        registry::catalog(key.as_slice())
    };
    if let Some(c) = held {
        return Ok(c);
    }
    let copies = COPIES.lock();
    match copies.get(key.as_slice()).map(|c| c.serving(is_master(ctx))) {
        Some(Some(c)) => Ok(c.clone()),
        Some(None) => Err(Error::try_again(format!(
            "catalog '{key}' is catching up on this node, retry shortly"
        ))),
        None => Err(Error::invalid(format!(
            "catalog '{key}' does not exist on this cluster node (create it with RECSYS.CREATE; other masters get a copy within a second)"
        ))),
    }
}

/// The owner of this node's copy `name`, when `catalog` is that copy.
pub fn owner_of_copy(name: &[u8], catalog: &SharedCatalog) -> Option<String> {
    let copies = COPIES.lock();
    let copy = copies.get(name)?;
    let same = copy
        .catalog
        .as_ref()
        .is_some_and(|c| Arc::ptr_eq(c, catalog));
    (same && !copy.owner.is_empty()).then(|| copy.owner.clone())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where this master's copy of `name` serves; `None` without a copy that
/// serves.
pub fn serving_pos(name: &[u8]) -> Option<LogPos> {
    COPIES
        .lock()
        .get(name)
        .and_then(|c| c.serving(true).map(|_| c.pos))
}

/// The catalog of this node's copy of `name`, in whatever state.
pub fn copy_catalog(name: &[u8]) -> Option<SharedCatalog> {
    COPIES.lock().get(name).and_then(|c| c.catalog.clone())
}

/// An update from the bus (this node is a master without the key).
pub fn on_update(ctx: &Context, from: &str, name: Vec<u8>, u: Update) {
    let action = COPIES.lock().on_update(from, now_ms(), &name, u.clone());
    match action {
        UpdateAction::Apply { create } => apply(ctx, &name, &u, create, true),
        UpdateAction::Ignore => {}
        UpdateAction::Request(node) => request(ctx, &node, name),
    }
}

fn request(ctx: &Context, node: &str, name: Vec<u8>) {
    send(ctx, Some(node), &Message::SnapshotRequest { catalog: name });
}

/// Applies an update to the copy; with `propagate`, replicates it as
/// `RECSYS.COPY APPLY` to this node's replicas and AOF.
fn apply(ctx: &Context, name: &[u8], u: &Update, create: bool, propagate: bool) {
    let argv: Vec<RedisString> = u.write.iter().map(|b| redis_string(ctx, b)).collect();
    let current = if create {
        None
    } else {
        COPIES.lock().get(name).and_then(|c| c.catalog.clone())
    };
    let result = writes::apply_replicated(current.as_ref(), &argv).and_then(|made| {
        let catalog = match made {
            Some(c) => share(c),
            None => current
                .clone()
                .ok_or_else(|| Error::invalid("no copy to apply to"))?,
        };
        let refs: Vec<&[u8]> = u.write.iter().map(Vec::as_slice).collect();
        let pos = catalog.write().advance_log(&refs);
        if pos != u.pos {
            return Err(Error::invalid(format!(
                "position {pos:?} after the write, the owner has {:?}",
                u.pos
            )));
        }
        Ok(catalog)
    });
    match result {
        Ok(catalog) => {
            COPIES
                .lock()
                .applied(name, create.then(|| catalog.clone()), u.pos, now_ms());
            super::wait::copy_advanced(ctx, name);
            if propagate {
                let (prev, pos) = (u.prev.to_text(), u.pos.to_text());
                let mut args: Vec<&[u8]> = vec![b"APPLY", name, prev.as_bytes(), pos.as_bytes()];
                args.extend(u.write.iter().map(Vec::as_slice));
                replicate(ctx, "RECSYS.COPY", &args);
            }
        }
        Err(e) => {
            log_warning(&format!(
                "recsys: copy of catalog '{}' refused an update ({e}); catching up",
                text(name)
            ));
            let from = COPIES.lock().failed(name, now_ms());
            if let (Some(node), true) = (from, is_master(ctx)) {
                request(ctx, &node, name.to_vec());
            }
        }
    }
}

/// An announce from `from`: confirm, catch up or fetch copies. A
/// handed-over copy it confirms is confirmed on this node's replicas too.
pub fn on_announce(ctx: &Context, from: &str, catalogs: Vec<(Vec<u8>, LogPos)>) {
    let others: Vec<(Vec<u8>, LogPos)> = catalogs
        .into_iter()
        .filter(|(n, _)| !registry::holds(ctx, n))
        .collect();
    let (requests, confirmed) = {
        let mut copies = COPIES.lock();
        let handed_over = copies.handed_over_names();
        let requests = copies.on_announce(from, now_ms(), &others);
        (requests, copies.confirmed_among(&handed_over))
    };
    for (name, pos) in confirmed {
        let p = pos.to_text();
        replicate(ctx, "RECSYS.COPY", &[b"CONFIRM", &name, p.as_bytes()]);
    }
    for (name, node) in requests {
        request(ctx, &node, name);
    }
    super::wait::recheck(ctx);
}

/// The catalog key `name` left this node (from the data type's `unlink`:
/// MIGRATE in a reshard, DEL, RENAME's source): keep its catalog as a copy
/// that serves again once the key's new owner announces it, so users on
/// this node keep their recommendations through a reshard (a DEL's copy
/// is dropped after the grace period; a RENAME's at once, by
/// [`forget_handover_of`]). Replicas and AOF replay do the same on the
/// replicated DEL.
pub fn hand_over(name: &[u8], catalog: &SharedCatalog) {
    if !super::enabled() {
        return;
    }
    let pos = catalog.read().log_pos();
    COPIES
        .lock()
        .hand_over(name, catalog.clone(), pos, &super::my_id(), now_ms());
}

/// A key now holds `catalog` (RENAME, MOVE): it did not leave this node,
/// so a handed-over copy of it goes.
pub fn forget_handover_of(catalog: &SharedCatalog) {
    let mut copies = COPIES.lock();
    let names: Vec<Vec<u8>> = copies
        .map
        .iter()
        .filter(|(_, c)| c.handover && c.catalog.as_ref().is_some_and(|k| Arc::ptr_eq(k, catalog)))
        .map(|(n, _)| n.clone())
        .collect();
    for n in names {
        copies.remove(&n);
    }
}

/// See [`Copies::unconfirm_all`].
pub fn unconfirm_all() {
    COPIES.lock().unconfirm_all();
}

/// A node asks for a catalog this master holds: encode it on a worker
/// and send it in parts.
pub fn on_snapshot_request(ctx: &Context, from: &str, name: Vec<u8>) {
    let Ok(Some(catalog)) = catalog_if_any(ctx, &redis_string(ctx, &name)) else {
        return;
    };
    let to = from.to_string();
    run_detached("sending a catalog snapshot", move || {
        let (bytes, pos) = {
            let c = catalog.read();
            (c.encode(), c.log_pos())
        };
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(PART_BYTES).collect()
        };
        let parts = chunks.len() as u32;
        SNAPSHOTS_SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let m = Message::SnapshotPart {
                catalog: name.clone(),
                pos,
                part: i as u32,
                parts,
                bytes: chunk.to_vec(),
            };
            // One GIL hold per part: the main thread runs in between.
            with_gil(|ctx| send(ctx, Some(&to), &m));
        }
    });
}

/// Snapshots this node sent (INFO).
pub static SNAPSHOTS_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Part of a snapshot; the last one is decoded on a worker and installed.
pub fn on_snapshot_part(
    from: &str,
    name: Vec<u8>,
    pos: LogPos,
    part: u32,
    parts: u32,
    bytes: &[u8],
) {
    let Some(whole) = COPIES
        .lock()
        .on_snapshot_part(from, &name, pos, part, parts, bytes)
    else {
        return;
    };
    run_detached("installing a catalog snapshot", move || {
        let decoded = Catalog::decode(&whole);
        with_gil(|ctx| match decoded {
            Ok(c) if c.log_pos() == pos => install(ctx, &name, share(c), &whole),
            Ok(c) => log_warning(&format!(
                "recsys: snapshot of catalog '{}' is at {:?}, announced {pos:?}; ignored",
                text(&name),
                c.log_pos()
            )),
            Err(e) => log_warning(&format!(
                "recsys: snapshot of catalog '{}' refused: {e}",
                text(&name)
            )),
        });
    });
}

/// Installs a whole copy, replicates it (`RECSYS.COPY LOAD`), then
/// applies the updates that arrived meanwhile.
fn install(ctx: &Context, name: &[u8], catalog: SharedCatalog, payload: &[u8]) {
    let pos = catalog.read().log_pos();
    let (owner, held) = {
        let mut copies = COPIES.lock();
        let owner = copies
            .get(name)
            .map(|c| c.owner.clone())
            .unwrap_or_default();
        (owner, copies.install(name, catalog, pos, now_ms()))
    };
    let p = pos.to_text();
    replicate(
        ctx,
        "RECSYS.COPY",
        &[b"LOAD", name, owner.as_bytes(), p.as_bytes(), payload],
    );
    super::wait::copy_advanced(ctx, name);
    for u in held {
        let action = COPIES.lock().on_update(&owner, now_ms(), name, u.clone());
        match action {
            UpdateAction::Apply { create } => apply(ctx, name, &u, create, true),
            UpdateAction::Ignore => {}
            UpdateAction::Request(node) => {
                request(ctx, &node, name.to_vec());
                break;
            }
        }
    }
}

/// Drops copies whose owner stopped announcing them.
pub fn expire(ctx: &Context) {
    let gone = COPIES.lock().expire(now_ms());
    for name in gone {
        log_warning(&format!(
            "recsys: copy of catalog '{}' dropped: no node announces it any more",
            text(&name)
        ));
        replicate(ctx, "RECSYS.COPY", &[b"DROP", &name]);
    }
}

/// Drops copies of catalogs this node now holds as keys (a reshard moved
/// the key here): the key is the catalog now.
pub fn drop_shadowed(ctx: &Context, held: &[(Vec<u8>, LogPos)]) {
    for (name, _) in held {
        if COPIES.lock().remove(name).is_some() {
            replicate(ctx, "RECSYS.COPY", &[b"DROP", name]);
        }
    }
}

/// RECSYS.COPY APPLY name prev pos cmd args... | LOAD name owner pos payload | DROP name
/// | CONFIRM name pos:
/// what a master did to its copies, replayed by its replicas and its AOF.
/// Refused from clients.
pub fn copy_command(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    if !replayed(ctx) {
        return Err(Error::invalid(
            "RECSYS.COPY is internal: masters send it to their replicas and AOF",
        ));
    }
    let mut a = Args::new(argv);
    let sub = a.next_keyword()?;
    let name = a.next_bytes("catalog name")?.to_vec();
    let pos_arg = |a: &mut Args| -> CmdResult<LogPos> {
        let t = a.next_str("position")?;
        LogPos::parse(t).ok_or_else(|| Error::invalid(format!("bad position '{t}'")))
    };
    match sub.as_str() {
        "APPLY" => {
            let prev = pos_arg(&mut a)?;
            let pos = pos_arg(&mut a)?;
            let mut write = Vec::new();
            while a.has_more() {
                write.push(a.next_bytes("write")?.to_vec());
            }
            let u = Update { prev, pos, write };
            let create = u.is_create();
            let mut copies = COPIES.lock();
            if create {
                copies
                    .map
                    .insert(name.clone(), Copy::empty(String::new(), now_ms()));
            } else if copies.get(&name).map(|c| c.pos) != Some(prev) {
                log_warning(&format!(
                    "recsys: replicated update of copy '{}' does not follow its position; applied anyway",
                    text(&name)
                ));
            }
            drop(copies);
            apply(ctx, &name, &u, create, false);
        }
        "LOAD" => {
            let owner = text(a.next_bytes("owner")?);
            let pos = pos_arg(&mut a)?;
            let payload = a.next_bytes("payload")?;
            let catalog = Catalog::decode(payload)?;
            if catalog.log_pos() != pos {
                return Err(Error::invalid("payload is not at the position given"));
            }
            COPIES.lock().map.insert(
                name.clone(),
                Copy::restored(share(catalog), pos, owner, true, now_ms()),
            );
        }
        "DROP" => {
            COPIES.lock().remove(&name);
        }
        "CONFIRM" => {
            let pos = pos_arg(&mut a)?;
            COPIES.lock().confirm_replicated(&name, pos, now_ms());
        }
        "POPULARITY" => {
            let mut rest = Vec::new();
            while a.has_more() {
                rest.push(a.next_bytes("event")?);
            }
            super::popularity::replay(ctx, &name, &rest).map_err(Error::invalid)?;
        }
        other => {
            return Err(Error::invalid(format!(
                "unknown RECSYS.COPY subcommand '{other}', expected APPLY, LOAD, DROP, CONFIRM or POPULARITY"
            )))
        }
    }
    Ok(Reply::Ok)
}

/// RECSYS.COPIES: this node's copies (catalog, state, position, owner,
/// items, updates applied, snapshots installed).
pub fn copies_command(ctx: &Context, argv: &[RedisString]) -> CmdResult<Reply> {
    if argv.len() > 1 {
        return Err("RECSYS.COPIES takes no arguments".into());
    }
    let master = is_master(ctx);
    let copies = COPIES.lock();
    Ok(Reply::Array(
        copies
            .map
            .iter()
            .map(|(name, c)| {
                let state = if c.catching_up() {
                    "catching-up"
                } else if c.handover {
                    "handed-over"
                } else if c.catalog.is_none() {
                    "empty"
                } else if c.serving(master).is_none() {
                    "unconfirmed"
                } else {
                    "serving"
                };
                let items = c.catalog.as_ref().map_or(0, |c| c.read().len());
                Reply::Map(vec![
                    ("catalog".into(), Reply::Bulk(name.clone())),
                    ("state".into(), Reply::Text(state.into())),
                    ("seq".into(), Reply::Int(c.pos.seq as i64)),
                    ("position".into(), Reply::Text(c.pos.to_text())),
                    ("owner".into(), Reply::Text(c.owner.clone())),
                    ("items".into(), Reply::Int(items as i64)),
                    ("updates".into(), Reply::Int(c.updates as i64)),
                    ("snapshots".into(), Reply::Int(c.snapshots as i64)),
                    (
                        "confirmed_ms_ago".into(),
                        Reply::Int(now_ms().saturating_sub(c.confirmed_ms)),
                    ),
                ])
            })
            .collect(),
    ))
}

/// Copies, serving, catching up, updates applied, snapshots installed (INFO).
pub fn counts(master: bool) -> [u64; 5] {
    let copies = COPIES.lock();
    let mut out = [copies.map.len() as u64, 0, 0, 0, 0];
    for c in copies.map.values() {
        out[1] += c.serving(master).is_some() as u64;
        out[2] += c.catching_up() as u64;
        out[3] += c.updates;
        out[4] += c.snapshots;
    }
    out
}

/// RDB aux data: every copy that has a catalog (name, owner, catalog).
///
/// # Safety
/// `rdb` must be the live handle of an aux_save callback.
pub unsafe fn aux_save(rdb: *mut raw::RedisModuleIO) {
    let copies: Vec<(Vec<u8>, String, SharedCatalog)> = COPIES
        .lock()
        .map
        .iter()
        .filter_map(|(n, c)| Some((n.clone(), c.owner.clone(), c.catalog.clone()?)))
        .collect();
    raw::save_unsigned(rdb, copies.len() as u64);
    for (name, owner, catalog) in copies {
        raw::save_slice(rdb, &name);
        raw::save_slice(rdb, owner.as_bytes());
        save_payload(rdb, &catalog.read().encode());
    }
}

/// Reads what [`aux_save`] wrote. The copies serve on a master only once
/// their owner confirms their position (they may have missed writes while
/// this node was down).
///
/// # Safety
/// `rdb` must be the live handle of an aux_load callback.
pub unsafe fn aux_load(rdb: *mut raw::RedisModuleIO) -> Result<(), String> {
    let n = raw::load_unsigned(rdb).map_err(|e| e.to_string())?;
    let mut loaded = Copies::default();
    for _ in 0..n {
        let name = raw::load_string_buffer(rdb)
            .map_err(|e| e.to_string())?
            .as_ref()
            .to_vec();
        let owner = text(
            raw::load_string_buffer(rdb)
                .map_err(|e| e.to_string())?
                .as_ref(),
        );
        let mut catalog = load_payload(rdb)?;
        for note in catalog.take_restore_notes() {
            log_warning(&format!("recsys: copy '{}': {note}", text(&name)));
        }
        let pos = catalog.log_pos();
        loaded.map.insert(
            name,
            Copy::restored(share(catalog), pos, owner, false, now_ms()),
        );
    }
    *COPIES.lock() = loaded;
    Ok(())
}
