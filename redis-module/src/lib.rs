//! The redis-recsys Redis module: `redis-server --loadmodule librecsys.so [WORKERS n] [HISTORY n]`.
//!
//! Thin glue between Redis and the `recsys` core crate:
//! - [`registry`]: command table (flags, arity, key specs) and panic guards
//! - [`commands`]: catalog commands (CREATE, ITEM.*, SEARCH, SIMILAR, INFO)
//! - [`recommend`]: RECSYS.RECOMMEND and RECSYS.EVENT
//! - [`plugins`]: RECSYS.PLUGIN.* and plugin persistence
//! - [`models`]: the ranking and query models of a catalog (RECSYS.MODEL.*)
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
mod models;
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
        start_ranking(ctx, &a)?;
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

/// Model settings, ONNX Runtime (optional: its absence only disables ONNX
/// models) and the GPU (`GPU on` without one fails the load).
fn start_ranking(ctx: &Context, a: &config::Config) -> Result<(), String> {
    use recsys_core::rank;
    rank::configure(rank::Settings {
        sessions: a.workers,
        max_bytes: a.model_max_bytes,
        gpu_min_rows: a.gpu_min_rows,
    });
    match &a.ort_lib {
        Some(lib) => match rank::onnx::init(lib) {
            Ok(()) => ctx.log_notice(&format!(
                "recsys: ONNX Runtime loaded from {}",
                lib.display()
            )),
            Err(e) => ctx.log_warning(&format!("recsys: ONNX models disabled: {e}")),
        },
        None => ctx.log_notice("recsys: ONNX models disabled (no ORT_LIB module argument)"),
    }
    let line = rank::gpu::init(a.gpu)?;
    ctx.log_notice(&format!("recsys: {line}"));
    Ok(())
}

redis_module! {
    name: "recsys",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [CATALOG_TYPE],
    init: init,
}
