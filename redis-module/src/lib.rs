//! The redis-recsys Redis module: `redis-server --loadmodule librecsys.so [WORKERS n] [HISTORY n]`.
//!
//! Thin glue between Redis and the `recsys` core crate, in layers (each uses
//! only those below it; docs/architecture.md draws them):
//! - this file: loading, and `INFO recsys`;
//! - [`command_table`]: every command's name (and one-dot alias), flags,
//!   arity, key specs, ACL categories and docs, the panic guard and the
//!   counters around each handler;
//! - [`cmd`]: the handlers, one file per command family;
//! - [`commit`] (the last step of every catalog write), [`cluster`]
//!   (catalog copies and plugins across a Redis Cluster), [`experiments`]
//!   (A/B experiments: variants served, counts flushed), [`writes`]
//!   (every catalog write as parse, check, apply: shared by the handlers
//!   and the copies);
//! - [`keys`] (catalogs and user hashes, and telling Redis a key changed),
//!   [`plugin_store`] (loaded plugins and their RDB aux data), [`datatype`]
//!   (the catalog type: RDB, AOF, digest, memory, copy, free);
//! - [`workers`] (the threading model), [`metrics`] (counters and latency
//!   histograms), [`command_docs`] (COMMAND DOCS argument trees), [`acl`]
//!   (checks for keys a command does not name), [`reply`], [`args`],
//!   [`config`] (module arguments and `recsys.*` configs), [`util`].

mod acl;
mod args;
mod cluster;
mod cmd;
mod command_docs;
mod command_table;
mod commit;
mod config;
mod datatype;
mod experiments;
mod keys;
mod metrics;
mod plugin_store;
mod reply;
mod util;
mod workers;
mod writes;

use std::os::raw::c_int;
use std::sync::atomic::Ordering::Relaxed;

use redis_module::{raw, redis_module, Context, ModuleOptions, RedisString, Status};

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
    cluster::install_datatype_hooks();
    let result = config::parse(args).and_then(|()| {
        config::on_change(apply_settings);
        config::register(ctx)?;
        start_ranking()?;
        cluster::detect(ctx);
        command_table::register(ctx)?;
        plugin_store::start(config::plugin_limits());
        workers::start(config::workers())?;
        cluster::init(ctx)?;
        experiments::init(ctx);
        ctx.set_module_options(ModuleOptions::HANDLE_IO_ERRORS);
        // SAFETY: module init on the main thread; replaces the crate's
        // default (empty) info callback.
        if let Some(register) = unsafe { raw::RedisModule_RegisterInfoFunc } {
            unsafe { register(ctx.ctx, Some(info)) };
        }
        util::log_notice(&format!(
            "recsys: loaded with {} worker threads, {} distance kernels",
            config::workers(),
            recsys_core::index::distance::kernel_name()
        ));
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

/// After CONFIG SET: the plugin host's per-call limits and the model
/// settings take the new values.
fn apply_settings() {
    if let Some(host) = plugin_store::host() {
        let l = config::plugin_limits();
        host.set_limits(l.timeout, l.max_component_bytes);
    }
    recsys_core::rank::configure(config::rank_settings());
}

/// Model settings, ONNX Runtime (optional: its absence only disables ONNX
/// models) and the GPU (`GPU on` without one fails the load).
fn start_ranking() -> Result<(), String> {
    use recsys_core::rank;
    rank::configure(config::rank_settings());
    match config::ort_lib() {
        Some(lib) => match rank::onnx::init(lib) {
            Ok(()) => util::log_notice(&format!(
                "recsys: ONNX Runtime loaded from {}",
                lib.display()
            )),
            Err(e) => util::log_warning(&format!("recsys: ONNX models disabled: {e}")),
        },
        None => util::log_notice("recsys: ONNX models disabled (no ORT_LIB module argument)"),
    }
    let line = rank::gpu::init(config::gpu())?;
    util::log_notice(&format!("recsys: {line}"));
    Ok(())
}

/// The crate version as Redis encodes module versions (major * 10000 +
/// minor * 100 + patch: 0.1.0 is 100), shown by MODULE LIST.
const MODULE_VERSION: i32 = encode_version(env!("CARGO_PKG_VERSION"));

const fn encode_version(v: &str) -> i32 {
    let b = v.as_bytes();
    let (mut parts, mut i, mut n) = ([0i32; 3], 0, 0);
    while i < b.len() && n < 3 {
        match b[i] {
            b'0'..=b'9' => parts[n] = parts[n] * 10 + (b[i] - b'0') as i32,
            b'.' => n += 1,
            _ => break, // a pre-release suffix
        }
        i += 1;
    }
    parts[0] * 10000 + parts[1] * 100 + parts[2]
}

/// `INFO recsys`: the module's own numbers (see [`metrics`]).
extern "C" fn info(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    let written = std::panic::catch_unwind(|| {
        let mut g = metrics::Gauges::default();
        let (workers, busy, queued) = workers::load();
        let (catalogs, items, bytes) = datatype::totals();
        let models = &recsys_core::rank::TOTALS;
        let [b_started, b_running, b_done, b_failed] = cmd::batch::counts();
        g.add("version", MODULE_VERSION);
        g.add("workers", workers);
        g.add("workers_busy", busy);
        g.add("worker_queue", queued);
        let (inline, handed) = workers::placement();
        g.add("requests_inline", inline);
        g.add("requests_on_workers", handed);
        g.add("catalogs", catalogs);
        g.add("items", items);
        g.add("catalog_memory_bytes", bytes);
        g.add("plugins", plugin_store::all().len());
        g.add(
            "plugin_calls",
            recsys_core::plugin::TOTALS.calls.load(Relaxed),
        );
        g.add(
            "plugin_errors",
            recsys_core::plugin::TOTALS.errors.load(Relaxed),
        );
        g.add(
            "plugin_traps",
            recsys_core::plugin::TOTALS.traps.load(Relaxed),
        );
        g.add("model_calls", models.calls.load(Relaxed));
        g.add("model_rows", models.rows.load(Relaxed));
        g.add("model_errors", models.errors.load(Relaxed));
        g.add("model_gpu_fallbacks", models.gpu_fallbacks.load(Relaxed));
        g.add("batch_started", b_started);
        g.add("batch_running", b_running);
        g.add("batch_done", b_done);
        g.add("batch_failed", b_failed);
        experiments::info(&mut g);
        cluster::info(&mut g);
        // SAFETY: the info context Redis passed to this callback.
        unsafe { metrics::write_info(ctx, &g, command_table::command_stats()) };
    });
    if let Err(p) = written {
        util::log_warning(&format!("recsys: INFO failed: {}", util::panic_message(&p)));
    }
}

redis_module! {
    name: "recsys",
    version: MODULE_VERSION,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [CATALOG_TYPE],
    init: init,
}
