//! Opening the keys commands work on: catalogs (the module type) and user
//! hashes, with WRONGTYPE for keys of another type, and reading a user's
//! hash as a [`RawUser`] (copies of its fields, parsed off the main thread).

use std::sync::Arc;

use parking_lot::RwLock;
use recsys_core::catalog::Catalog;
use recsys_core::pipeline::request::RawUser;
use recsys_core::user::{EMB_FIELD, RECENT_FIELD, SEEN_FIELD};
use recsys_core::Error;
use redis_module::key::RedisKey;
use redis_module::{Context, KeyType, RedisString};

use crate::args::CmdResult;
use crate::datatype::{CatalogValue, CATALOG_TYPE};
use crate::util::now_ms;

/// A shared catalog.
pub type SharedCatalog = Arc<RwLock<Catalog>>;

fn wrong_type() -> Error {
    Error::wrong_type("Operation against a key holding the wrong kind of value")
}

/// The catalog at `key`, if any; WRONGTYPE for a key of another type.
pub fn catalog_if_any(ctx: &Context, key: &RedisString) -> CmdResult<Option<SharedCatalog>> {
    let k = ctx.open_key(key);
    match k.get_value::<CatalogValue>(&CATALOG_TYPE) {
        Ok(v) => Ok(v.map(|v| v.0.clone())),
        Err(_) => Err(wrong_type()),
    }
}

/// The catalog at `key`; errors when missing or of another type.
pub fn catalog_at(ctx: &Context, key: &RedisString) -> CmdResult<SharedCatalog> {
    catalog_if_any(ctx, key)?.ok_or_else(|| {
        Error::invalid(format!(
            "catalog '{key}' does not exist (create it with RECSYS.CREATE)"
        ))
    })
}

/// Whether the key at `key` still holds this very catalog (work finished
/// off the main thread checks it before writing).
pub fn holds_catalog(ctx: &Context, key: &RedisString, catalog: &SharedCatalog) -> bool {
    let k = ctx.open_key(key);
    matches!(
        k.get_value::<CatalogValue>(&CATALOG_TYPE),
        Ok(Some(v)) if Arc::ptr_eq(&v.0, catalog)
    )
}

/// Refuses a user key that is not a hash (a missing key is a new user).
pub fn check_user_key(key_type: KeyType, user: &RedisString) -> CmdResult<()> {
    match key_type {
        KeyType::Empty | KeyType::Hash => Ok(()),
        _ => Err(Error::wrong_type(format!(
            "user key '{user}' must be a hash (fields: emb, recent, ...)"
        ))),
    }
}

/// A field of an open hash, as bytes.
pub fn hash_field(key: &RedisKey, field: &str) -> CmdResult<Option<RedisString>> {
    key.hash_get(field)
        .map_err(|e| Error::invalid(e.to_string()))
}

/// What a request reads of a user's hash.
pub struct UserFields<'a> {
    /// The request brought its own vector: `emb` is not read.
    pub vector_given: bool,
    /// EXCLUDE_SEEN: the `seen` set is read.
    pub seen: bool,
    /// The feature fields the request's models read.
    pub features: &'a [String],
}

/// What a request reads (`emb` unless the vector is given, `recent`,
/// `seen` for EXCLUDE_SEEN, and the models' feature fields) on the main
/// thread or under the GIL: copies of the fields, parsed later off that
/// thread ([`RawUser::parse`]).
pub fn read_user(ctx: &Context, user: &RedisString, what: &UserFields) -> CmdResult<RawUser> {
    let u = ctx.open_key(user);
    check_user_key(u.key_type(), user)?;
    let mut raw = RawUser {
        now_ms: now_ms(),
        user_id: user.to_string_lossy(),
        ..RawUser::default()
    };
    if u.key_type() == KeyType::Hash {
        let copy = |field: &str| -> CmdResult<Option<Vec<u8>>> {
            Ok(hash_field(&u, field)?.map(|v| v.as_slice().to_vec()))
        };
        if !what.vector_given {
            raw.emb = copy(EMB_FIELD)?;
        }
        raw.recent = copy(RECENT_FIELD)?;
        if what.seen {
            raw.seen = copy(SEEN_FIELD)?;
        }
        for f in what.features {
            if let Some(v) = hash_field(&u, f)? {
                raw.features.insert(f.clone(), v.to_string_lossy());
            }
        }
    }
    Ok(raw)
}

/// Tells Redis that a command changed `key` in place: WATCH aborts the
/// transactions that watch it, client-side caching invalidates it, and the
/// keyspace event `event` (class `d`, module events, in
/// notify-keyspace-events) is published. Catalog writes mutate the value
/// behind the key's pointer, so Redis cannot see them without this.
pub fn wrote(ctx: &Context, key: &RedisString, event: &str) {
    // SAFETY: the command's (or a locked thread-safe) context and a live key name.
    unsafe {
        if let Some(signal) = redis_module::raw::RedisModule_SignalModifiedKey {
            signal(ctx.ctx, key.inner);
        }
    }
    ctx.notify_keyspace_event(redis_module::NotifyEvent::MODULE, event, key);
}
