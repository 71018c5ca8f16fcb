//! Receiving cluster bus messages: decode, count, and hand each to the
//! part that acts on it. Only masters act on catalog messages (replicas
//! follow their master's RECSYS.COPY commands); a message that does not
//! decode is counted and dropped. Nothing here can panic into Redis.

use std::os::raw::{c_char, c_uchar};
use std::sync::atomic::Ordering::Relaxed;

use recsys_core::cluster::copies::Update;
use recsys_core::cluster::message::Message;
use redis_module::{raw, Context};

use super::{
    is_master, plugins, popularity, registry, rows, store, wait, BAD_MESSAGES, RECEIVED,
    RECEIVED_BYTES,
};
use crate::util::{log_warning, panic_message};

/// The receiver registered for [`super::MESSAGE_TYPE`].
///
/// # Safety
/// Called by Redis on the main thread with a 40-byte sender id and a
/// payload of `len` bytes.
pub unsafe extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender_id: *const c_char,
    _type: u8,
    payload: *const c_uchar,
    len: u32,
) {
    let run = || {
        // SAFETY: guaranteed by the caller.
        let (sender, bytes) = unsafe {
            (
                std::slice::from_raw_parts(
                    sender_id as *const u8,
                    raw::REDISMODULE_NODE_ID_LEN as usize,
                ),
                if payload.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(payload, len as usize)
                },
            )
        };
        RECEIVED.fetch_add(1, Relaxed);
        RECEIVED_BYTES.fetch_add(bytes.len() as u64, Relaxed);
        let from = String::from_utf8_lossy(sender).into_owned();
        match Message::decode(bytes) {
            Ok(m) => handle(&Context::new(ctx), &from, m),
            Err(e) => {
                BAD_MESSAGES.fetch_add(1, Relaxed);
                log_warning(&format!("recsys: bad cluster message from {from}: {e}"));
            }
        }
    };
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        log_warning(&format!(
            "recsys: cluster message handler failed: {}",
            panic_message(&p)
        ));
    }
}

fn handle(ctx: &Context, from: &str, m: Message) {
    let master = is_master(ctx);
    match m {
        Message::Update {
            catalog,
            prev,
            pos,
            write,
        } => {
            if master && !registry::holds(ctx, &catalog) {
                store::on_update(ctx, from, catalog, Update { prev, pos, write });
            }
        }
        Message::Announce { catalogs, plugins } => {
            if master {
                store::on_announce(ctx, from, catalogs);
                plugins::on_announce(ctx, from, plugins);
            }
        }
        Message::SnapshotRequest { catalog } => {
            if master {
                store::on_snapshot_request(ctx, from, catalog);
            }
        }
        Message::SnapshotPart {
            catalog,
            pos,
            part,
            parts,
            bytes,
        } => {
            if master {
                store::on_snapshot_part(from, catalog, pos, part, parts, &bytes);
            }
        }
        Message::Plugin { version, bytes } => {
            if master {
                plugins::on_plugin(ctx, version, bytes);
            }
        }
        Message::PluginRequest { name } => {
            if master {
                plugins::on_request(ctx, from, &name);
            }
        }
        Message::ExperimentCounts {
            catalog,
            experiment,
            generation,
            delta,
        } => {
            if master {
                crate::experiments::on_counts(ctx, &catalog, &experiment, generation, &delta);
            }
        }
        Message::CopyWait { catalog, pos } => {
            if master && !registry::holds(ctx, &catalog) {
                wait::on_copy_wait(ctx, from, catalog, pos);
            }
        }
        Message::Popularity { catalog, events } => {
            if master {
                popularity::on_events(ctx, &catalog, &events);
            }
        }
        Message::CopyAt { catalog, pos } => {
            if master {
                wait::on_copy_at(from, &catalog, &pos);
            }
        }
        Message::RowFetch { request, keys } => rows::on_fetch(ctx, from, request, keys),
        Message::RowData { request, rows } => rows::on_data(from, request, rows),
        // Replicas that serve reads keep a cache too.
        Message::RowsChanged { keys } => rows::on_changed(&keys),
    }
}
