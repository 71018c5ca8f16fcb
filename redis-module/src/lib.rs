//! The redis-recsys Redis module: `redis-server --loadmodule librecsys.so [WORKERS n]`.
//!
//! Thin glue between Redis and the `recsys` core crate:
//! - [`registry`]: command table (flags, arity, key specs) and panic guards
//! - [`commands`]: argument parsing and the handlers
//! - [`datatype`]: the catalog data type (RDB, AOF, memory, copy, free)
//! - [`workers`]: worker pool, blocked clients, background freeing
//! - [`reply`]: replies that work under RESP2 and RESP3

mod args;
mod commands;
mod datatype;
mod registry;
mod reply;
mod util;
mod workers;

use redis_module::{redis_module, Context, ModuleOptions, RedisString, Status};

use crate::datatype::CATALOG_TYPE;

/// Module arguments (`--loadmodule librecsys.so WORKERS 4`).
struct ModuleArgs {
    workers: usize,
}

fn parse_module_args(args: &[RedisString]) -> Result<ModuleArgs, String> {
    let mut out = ModuleArgs {
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let name = name.to_string_lossy().to_ascii_uppercase();
        let value = it
            .next()
            .map(|v| v.to_string_lossy())
            .ok_or_else(|| format!("module argument {name} needs a value"))?;
        match name.as_str() {
            "WORKERS" => {
                out.workers = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| {
                        format!("WORKERS must be an integer between 1 and 256, got '{value}'")
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown module argument '{other}', expected WORKERS n"
                ))
            }
        }
    }
    Ok(out)
}

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let result = parse_module_args(args).and_then(|a| {
        workers::start(a.workers)?;
        registry::register(ctx)?;
        ctx.set_module_options(ModuleOptions::HANDLE_IO_ERRORS);
        ctx.log_notice(&format!(
            "recsys: loaded with {} worker threads, {} distance kernels",
            a.workers,
            recsys_core::index::distance::kernel_name()
        ));
        Ok(())
    });
    match result {
        Ok(()) => Status::Ok,
        Err(e) => {
            ctx.log_warning(&format!("recsys: cannot load module: {e}"));
            Status::Err
        }
    }
}

redis_module! {
    name: "recsys",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [CATALOG_TYPE],
    init: init,
}
