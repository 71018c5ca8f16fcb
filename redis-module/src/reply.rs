//! Replies built off the main thread and written later: a small owned tree
//! that maps onto RESP2 and RESP3 (maps keep their order; RESP2 clients see
//! them as flat arrays, as Redis does for its own commands).

use std::ffi::CString;
use std::os::raw::c_long;

use recsys_core::{Error, ErrorKind};
use redis_module::raw;

#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    Int(i64),
    Double(f64),
    Bulk(Vec<u8>),
    Text(String),
    Null,
    Array(Vec<Reply>),
    /// Ordered key/value pairs: a RESP3 map, a flat array under RESP2.
    Map(Vec<(String, Reply)>),
    /// An error; its kind picks the prefix ([`prefix`]).
    Error(Error),
    /// The client was blocked; its reply comes later from a worker.
    Blocked,
}

/// The reply prefix of each kind of error: the one place where errors
/// meet the protocol.
pub fn prefix(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Invalid => "ERR",
        ErrorKind::WrongType => "WRONGTYPE",
        ErrorKind::NoPermission => "NOPERM",
        ErrorKind::Internal => "ERR internal error:",
        ErrorKind::TryAgain => "TRYAGAIN",
    }
}

/// Ids best first; with scores a map id -> score (flat pairs under RESP2).
pub fn scored<'a>(hits: impl Iterator<Item = (&'a str, f32)>, with_scores: bool) -> Reply {
    if with_scores {
        Reply::Map(
            hits.map(|(id, s)| (id.to_string(), Reply::Double(s as f64)))
                .collect(),
        )
    } else {
        Reply::Array(hits.map(|(id, _)| Reply::Text(id.to_string())).collect())
    }
}

/// Ids best first, each with the source that found it: a map id -> source,
/// with scores id -> [score, source] (flat pairs under RESP2).
pub fn with_source(
    items: &[(String, f32)],
    sources: &[recsys_core::pipeline::sources::Source],
    with_scores: bool,
) -> Reply {
    let entries = items.iter().zip(sources).map(|((id, score), source)| {
        let name = Reply::Text(source.name().into());
        let value = match with_scores {
            true => Reply::Array(vec![Reply::Double(*score as f64), name]),
            false => name,
        };
        (id.clone(), value)
    });
    Reply::Map(entries.collect())
}

impl Reply {
    /// An error reply of kind [`ErrorKind::Invalid`] (`-ERR ...`).
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(Error::invalid(msg))
    }

    /// `-ERR internal error: ...` (a caught panic, a lost job).
    pub fn internal(msg: impl Into<String>) -> Reply {
        Reply::Error(Error::internal(msg))
    }

    /// Writes the reply on `ctx`.
    ///
    /// # Safety
    /// `ctx` must be the live context Redis handed to the command (or to the
    /// blocked client's reply callback), on the main thread.
    pub unsafe fn write(&self, ctx: *mut raw::RedisModuleCtx) {
        // SAFETY: guaranteed by the caller.
        unsafe {
            match self {
                Reply::Ok => {
                    raw::RedisModule_ReplyWithSimpleString.unwrap()(ctx, c"OK".as_ptr());
                }
                Reply::Int(i) => {
                    raw::RedisModule_ReplyWithLongLong.unwrap()(ctx, *i);
                }
                Reply::Double(d) => {
                    raw::RedisModule_ReplyWithDouble.unwrap()(ctx, *d);
                }
                Reply::Bulk(b) => {
                    raw::RedisModule_ReplyWithStringBuffer.unwrap()(
                        ctx,
                        b.as_ptr().cast(),
                        b.len(),
                    );
                }
                Reply::Text(s) => {
                    raw::RedisModule_ReplyWithStringBuffer.unwrap()(
                        ctx,
                        s.as_ptr().cast(),
                        s.len(),
                    );
                }
                Reply::Null => {
                    raw::RedisModule_ReplyWithNull.unwrap()(ctx);
                }
                Reply::Array(items) => {
                    raw::RedisModule_ReplyWithArray.unwrap()(ctx, items.len() as c_long);
                    items.iter().for_each(|r| r.write(ctx));
                }
                Reply::Map(pairs) => {
                    raw::RedisModule_ReplyWithMap.unwrap()(ctx, pairs.len() as c_long);
                    for (k, v) in pairs {
                        raw::RedisModule_ReplyWithStringBuffer.unwrap()(
                            ctx,
                            k.as_ptr().cast(),
                            k.len(),
                        );
                        v.write(ctx);
                    }
                }
                Reply::Error(e) => {
                    let text = format!("{} {}", prefix(e.kind), e.message);
                    let text = CString::new(text.replace('\0', " ").replace(['\r', '\n'], " "))
                        .unwrap_or_default();
                    raw::RedisModule_ReplyWithError.unwrap()(ctx, text.as_ptr());
                }
                Reply::Blocked => {}
            }
        }
    }
}
