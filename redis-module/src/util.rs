//! Small helpers shared by the glue code.

use std::any::Any;

/// The text of a caught panic payload.
pub fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The database the command runs in (for work finished on another thread).
pub fn selected_db(ctx: &redis_module::Context) -> i32 {
    // SAFETY: a valid context on the main thread; filled at module init.
    unsafe { redis_module::raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) }
}

/// Selects `db` on a (thread-safe) context.
pub fn select_db(ctx: &redis_module::Context, db: i32) {
    // SAFETY: a valid context whose GIL is held; filled at module init.
    unsafe {
        redis_module::raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db);
    }
}

/// Checks a plugin or model name: 1..64 letters, digits, '_' or '-'.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name must be 1..64 letters, digits, '_' or '-', got '{name}'"
        ))
    }
}
