//! Replies built off the main thread and written later: a small owned tree
//! that maps onto RESP2 and RESP3 (maps keep their order; RESP2 clients see
//! them as flat arrays, as Redis does for its own commands).

use std::ffi::CString;
use std::os::raw::c_long;

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
    /// The error message, without the "ERR " prefix.
    Error(String),
    /// The client was blocked; its reply comes later from a worker.
    Blocked,
}

impl Reply {
    /// Error replies get the "ERR " prefix unless they start with WRONGTYPE/NOPERM/BUSY.
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// Writes the reply on `ctx`.
    pub fn write(&self, ctx: *mut raw::RedisModuleCtx) {
        // SAFETY: `ctx` is a live context handed to us by Redis for this call.
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
                Reply::Error(msg) => {
                    let coded = ["WRONGTYPE ", "NOPERM ", "BUSY "]
                        .iter()
                        .any(|c| msg.starts_with(c));
                    let text = if coded {
                        msg.clone()
                    } else {
                        format!("ERR {msg}")
                    };
                    let text = CString::new(text.replace('\0', " ").replace(['\r', '\n'], " "))
                        .unwrap_or_default();
                    raw::RedisModule_ReplyWithError.unwrap()(ctx, text.as_ptr());
                }
                Reply::Blocked => {}
            }
        }
    }
}
