//! RECOMMEND ... NOREPEAT n: what the user's last n such requests served
//! is not served again (a refresh shows new items). The served ids are
//! kept in the user hash's `shown` field (text: JSON, newest request
//! first, bounded by `recsys_core::user::{MAX_NOREPEAT, MAX_SHOWN_IDS}`),
//! read before the request and written right after its reply, on the main
//! thread, as a replicated HSET, so replicas, the AOF and app code (any
//! text client) see it like any other field.
//!
//! Writing makes NOREPEAT a write: it is refused on a replica, and needs
//! the caller's write permission on the user key.

use recsys_core::user::{Shown, SHOWN_FIELD};
use recsys_core::Error;
use redis_module::{CallOptionsBuilder, CallResult, Context, RedisString};

use crate::acl::{Caller, KeyAccess};
use crate::args::CmdResult;
use crate::cluster;
use crate::keys::{check_user_key, hash_field};
use crate::util::log_warning;
use crate::workers::Then;

/// The user's `shown` field, after checking that this request may write it.
pub fn shown_before(ctx: &Context, user: &RedisString) -> CmdResult<Shown> {
    if !cluster::is_master(ctx) || cluster::replayed(ctx) {
        return Err(Error::invalid(
            "NOREPEAT records what it serves in the user hash: send it to the master",
        ));
    }
    if !Caller::of(ctx)?.may(ctx, user.as_slice(), KeyAccess::Write)? {
        return Err(Error::no_permission(format!(
            "NOREPEAT writes the user hash '{user}', which this user may not write"
        )));
    }
    let u = ctx.open_key(user);
    check_user_key(u.key_type(), user)?;
    let raw = hash_field(&u, SHOWN_FIELD)?;
    Shown::parse(raw.as_ref().map(|s| s.as_slice()), || {
        user.to_string_lossy()
    })
}

/// After the reply: `served` goes in front of the user's `shown` field
/// (read again, so concurrent requests of one user all count), keeping
/// the last `requests` requests.
pub fn remember(user: Vec<u8>, served: Vec<String>, requests: usize) -> Then {
    Box::new(move |ctx: &Context| {
        let name = crate::util::redis_string(ctx, &user);
        let current = {
            let u = ctx.open_key(&name);
            hash_field(&u, SHOWN_FIELD).ok().flatten()
        };
        // A field made unreadable meanwhile (by app code) starts afresh.
        let mut shown =
            Shown::parse(current.as_ref().map(|s| s.as_slice()), String::new).unwrap_or_default();
        shown.push(served, requests);
        let text = shown.to_text();
        let opts = CallOptionsBuilder::new().replicate().verify_oom().build();
        let args: [&[u8]; 3] = [&user, SHOWN_FIELD.as_bytes(), text.as_bytes()];
        let written: CallResult = ctx.call_ext("HSET", &opts, &args[..]);
        if let Err(e) = written {
            log_warning(&format!(
                "recsys: NOREPEAT could not record what user '{}' was shown: {e}",
                String::from_utf8_lossy(&user)
            ));
        }
    })
}
