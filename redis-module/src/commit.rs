//! The last step of every catalog write on a key: move the catalog's
//! write-log position, replicate the write, tell Redis the key changed,
//! and in a cluster (on the master a client wrote to) send the write to
//! every other node's copy. One function, so a key, its replicas, its AOF
//! and its copies see the same writes with the same positions. Also what
//! a write did ([`Applied`]), which every write returns.

use recsys_core::cluster::message::Message;
use redis_module::{Context, RedisString};

use crate::cluster;
use crate::keys::{wrote, SharedCatalog};
use crate::util::replicate;

/// What a write did: the reply for its client, and whether anything
/// changed (a write that changed nothing is neither replicated nor logged).
pub struct Applied {
    pub reply: WriteReply,
    pub changed: bool,
}

/// The reply value of a write.
pub enum WriteReply {
    Ok,
    Int(i64),
}

impl From<WriteReply> for crate::reply::Reply {
    fn from(r: WriteReply) -> Self {
        match r {
            WriteReply::Ok => crate::reply::Reply::Ok,
            WriteReply::Int(n) => crate::reply::Reply::Int(n),
        }
    }
}

/// A write that changed something.
pub fn changed(reply: WriteReply) -> Applied {
    Applied {
        reply,
        changed: true,
    }
}

/// Commits `write` (the command and its arguments, exactly as they are
/// replicated) applied to `catalog` at `key`; `event` is the keyspace event.
pub fn commit(
    ctx: &Context,
    key: &RedisString,
    catalog: &SharedCatalog,
    write: &[&[u8]],
    event: &str,
) {
    let (prev, pos) = {
        let mut c = catalog.write();
        let prev = c.log_pos();
        (prev, c.advance_log(write))
    };
    let name = String::from_utf8_lossy(write[0]);
    replicate(ctx, &name, &write[1..]);
    wrote(ctx, key, event);
    cluster::registry::note(key.as_slice(), catalog);
    if cluster::enabled() && !cluster::replayed(ctx) && cluster::is_master(ctx) {
        cluster::send(
            ctx,
            None,
            &Message::Update {
                catalog: key.as_slice().to_vec(),
                prev,
                pos,
                write: write.iter().map(|w| w.to_vec()).collect(),
            },
        );
    }
}

/// [`commit`] for a command replicated as it was sent.
pub fn commit_verbatim(
    ctx: &Context,
    key: &RedisString,
    catalog: &SharedCatalog,
    argv: &[RedisString],
    event: &str,
) {
    let write: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
    commit(ctx, key, catalog, &write, event);
}
