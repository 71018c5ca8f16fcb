//! The redis-recsys Redis module: `redis-server --loadmodule librecsys.so [WORKERS n] [HISTORY n]`.
//!
//! Thin glue between Redis and the `recsys` core crate:
//! - [`registry`]: command table (flags, arity, key specs) and panic guards
//! - [`commands`]: catalog commands (CREATE, ITEM.*, SEARCH, SIMILAR, INFO)
//! - [`recommend`]: RECSYS.RECOMMEND and RECSYS.EVENT
//! - [`plugins`]: RECSYS.PLUGIN.* and plugin persistence
//! - [`batch`]: RECSYS.BATCH and RECSYS.BATCH.STATUS (background jobs)
//! - [`config`]: module arguments
//! - [`datatype`]: the catalog data type (RDB, AOF, memory, copy, free)
//! - [`workers`]: worker pool, blocked clients, background freeing
//! - [`reply`]: replies that work under RESP2 and RESP3

mod args;
mod batch;
mod commands;
mod config;
mod datatype;
mod plugins;
mod recommend;
mod registry;
mod reply;
mod util;
mod workers;

use redis_module::{redis_module, Context, ModuleOptions, RedisString, Status};

use crate::datatype::CATALOG_TYPE;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    let result = config::parse(&args).and_then(|a| {
        workers::start(a.workers)?;
        plugins::start(ctx, a.plugin_limits);
        registry::register(ctx)?;
        ctx.set_module_options(ModuleOptions::HANDLE_IO_ERRORS);
        ctx.log_notice(&format!(
            "recsys: loaded with {} worker threads, {} distance kernels",
            a.workers,
            recsys_core::index::distance::kernel_name()
        ));
        config::install(a);
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
