//! ACL checks for keys a command reaches without naming them (RECSYS.BATCH
//! scans user hashes and writes lists): Redis checks the keys in a command's
//! key specs, these checks cover the rest, against the caller's ACL user.

use std::os::raw::c_int;

use recsys_core::{Error, Result};
use redis_module::{raw, Context, RedisString};

use crate::util::redis_string;

/// What a command does to a key.
#[derive(Clone, Copy)]
pub enum KeyAccess {
    Read,
    Write,
}

/// The ACL user a command runs as, by name (looked up again whenever it is
/// used, so a user deleted or changed meanwhile is honoured).
#[derive(Clone, Debug)]
pub struct Caller(Vec<u8>);

/// A looked-up ACL user, freed on drop. Use with the GIL held.
struct User(*mut raw::RedisModuleUser);

impl Drop for User {
    fn drop(&mut self) {
        // SAFETY: the API table is set at init; the pointer came from
        // GetModuleUserFromUserName and is freed once.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeModuleUser {
                free(self.0);
            }
        }
    }
}

impl Caller {
    /// The user running the command on `ctx`.
    pub fn of(ctx: &Context) -> Result<Caller> {
        // SAFETY: the API table is set at init; `ctx` is the command's context.
        let name = unsafe {
            match raw::RedisModule_GetCurrentUserName {
                Some(f) => f(ctx.ctx),
                None => std::ptr::null_mut(),
            }
        };
        if name.is_null() {
            return Err(Error::internal(
                "cannot tell which ACL user runs this command",
            ));
        }
        let name = RedisString::from_redis_module_string(ctx.ctx, name);
        Ok(Caller(name.as_slice().to_vec()))
    }

    fn user(&self, ctx: &Context) -> Result<User> {
        let name = redis_string(ctx, &self.0);
        // SAFETY: the API table is set at init; the GIL is held.
        let user = unsafe {
            match raw::RedisModule_GetModuleUserFromUserName {
                Some(f) => f(name.inner),
                None => std::ptr::null_mut(),
            }
        };
        if user.is_null() {
            return Err(Error::no_permission(format!(
                "ACL user '{}' no longer exists",
                String::from_utf8_lossy(&self.0)
            )));
        }
        Ok(User(user))
    }

    /// Whether the caller may read (or write) `key`.
    pub fn may(&self, ctx: &Context, key: &[u8], access: KeyAccess) -> Result<bool> {
        let user = self.user(ctx)?;
        // The server accepts only the ACCESS/INSERT/DELETE/UPDATE flags
        // here (anything else is EINVAL, which would read as "denied").
        let flags = match access {
            KeyAccess::Read => raw::REDISMODULE_CMD_KEY_ACCESS,
            KeyAccess::Write => {
                raw::REDISMODULE_CMD_KEY_INSERT
                    | raw::REDISMODULE_CMD_KEY_DELETE
                    | raw::REDISMODULE_CMD_KEY_UPDATE
            }
        };
        let key = redis_string(ctx, key);
        // SAFETY: live user and key; the GIL is held.
        let ok = unsafe {
            match raw::RedisModule_ACLCheckKeyPermissions {
                Some(f) => f(user.0, key.inner, flags as c_int),
                None => raw::REDISMODULE_OK as c_int,
            }
        };
        Ok(ok == raw::REDISMODULE_OK as c_int)
    }

    /// Whether the caller may run `command args...`.
    pub fn may_run(&self, ctx: &Context, command: &[&[u8]]) -> Result<bool> {
        let user = self.user(ctx)?;
        let strings: Vec<RedisString> = command.iter().map(|a| redis_string(ctx, a)).collect();
        let mut argv: Vec<*mut raw::RedisModuleString> = strings.iter().map(|s| s.inner).collect();
        // SAFETY: live user and strings; the GIL is held.
        let ok = unsafe {
            match raw::RedisModule_ACLCheckCommandPermissions {
                Some(f) => f(user.0, argv.as_mut_ptr(), argv.len() as c_int),
                None => raw::REDISMODULE_OK as c_int,
            }
        };
        Ok(ok == raw::REDISMODULE_OK as c_int)
    }
}
