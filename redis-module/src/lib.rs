//! The redis-recsys Redis module: `redis-server --loadmodule librecsys.so [WORKERS n] [HISTORY n]`.
//!
//! Thin glue between Redis and the `recsys` core crate, in layers (each uses
//! only those below it; docs/architecture.md draws them):
//! - [`command_table`]: every command's name, flags, arity, key specs and
//!   docs, and the panic guard around each handler;
//! - [`cmd`]: the handlers, one file per command family;
//! - [`keys`] (catalogs and user hashes), [`plugin_store`] (loaded plugins
//!   and their RDB aux data), [`datatype`] (the catalog type: RDB, AOF,
//!   memory, copy, free);
//! - [`workers`] (the threading model), [`acl`] (checks for keys a command
//!   does not name), [`reply`], [`args`], [`config`], [`util`].

mod acl;
mod args;
mod cmd;
mod command_table;
mod config;
mod datatype;
mod keys;
mod plugin_store;
mod reply;
mod util;
mod workers;

use redis_module::{redis_module, Context, ModuleOptions, RedisString, Status};

use crate::datatype::CATALOG_TYPE;

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy()).collect();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(ctx, &args))).unwrap_or_else(
        |p| {
            util::log_warning(&format!(
                "recsys: cannot load module: {}",
                util::panic_message(&p)
            ));
            Status::Err
        },
    )
}

fn load(ctx: &Context, args: &[String]) -> Status {
    // Fallible steps first, threads last: a load that fails leaves nothing
    // running (and a later load reuses what an earlier one started).
    let result = config::parse(args).and_then(|a| {
        start_ranking(&a)?;
        command_table::register(ctx)?;
        plugin_store::start(a.plugin_limits);
        workers::start(a.workers)?;
        ctx.set_module_options(ModuleOptions::HANDLE_IO_ERRORS);
        util::log_notice(&format!(
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
            util::log_warning(&format!("recsys: cannot load module: {e}"));
            Status::Err
        }
    }
}

/// Model settings, ONNX Runtime (optional: its absence only disables ONNX
/// models) and the GPU (`GPU on` without one fails the load).
fn start_ranking(a: &config::Config) -> Result<(), String> {
    use recsys_core::rank;
    rank::configure(rank::Settings {
        sessions: a.workers,
        max_bytes: a.model_max_bytes,
        gpu_min_rows: a.gpu_min_rows,
    });
    match &a.ort_lib {
        Some(lib) => match rank::onnx::init(lib) {
            Ok(()) => util::log_notice(&format!(
                "recsys: ONNX Runtime loaded from {}",
                lib.display()
            )),
            Err(e) => util::log_warning(&format!("recsys: ONNX models disabled: {e}")),
        },
        None => util::log_notice("recsys: ONNX models disabled (no ORT_LIB module argument)"),
    }
    let line = rank::gpu::init(a.gpu)?;
    util::log_notice(&format!("recsys: {line}"));
    Ok(())
}

redis_module! {
    name: "recsys",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [CATALOG_TYPE],
    init: init,
}
