//! The module's settings: module arguments (`--loadmodule librecsys.so
//! WORKERS 4 HISTORY 50`) and the same settings as Redis configs
//! (`CONFIG GET recsys.*`, `CONFIG SET recsys.history 20`, `recsys.history
//! 20` in redis.conf, kept by CONFIG REWRITE). A module argument sets the
//! default; a config in redis.conf or on the command line wins over it.
//! Settings marked immutable (threads, sandbox memory, the GPU) are fixed
//! at load: CONFIG SET refuses them.

use std::ffi::{c_char, c_longlong, CString};
use std::os::raw::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use once_cell::sync::OnceCell;
use recsys_core::rank::GpuMode;
use redis_module::{raw, Context};

/// A numeric setting: its config name (after `recsys.`), its module
/// argument, bounds, and whether CONFIG SET may change it.
pub struct Numeric {
    pub name: &'static str,
    pub arg: &'static str,
    pub min: i64,
    pub max: i64,
    pub runtime: bool,
    default: i64,
    value: AtomicI64,
}

const fn numeric(
    name: &'static str,
    arg: &'static str,
    default: i64,
    (min, max): (i64, i64),
    runtime: bool,
) -> Numeric {
    Numeric {
        name,
        arg,
        min,
        max,
        runtime,
        default,
        value: AtomicI64::new(default),
    }
}

impl Numeric {
    pub fn get(&self) -> i64 {
        self.value.load(Relaxed)
    }

    fn get_usize(&self) -> usize {
        self.get().max(0) as usize
    }
}

pub static WORKERS: Numeric = numeric(
    "workers",
    "WORKERS",
    0, // 0 until load: the machine's cores
    (1, 256),
    false,
);
pub static HISTORY: Numeric = numeric("history", "HISTORY", 50, (1, 10_000), true);
pub static PLUGIN_MEMORY_MB: Numeric =
    numeric("plugin-memory-mb", "PLUGIN_MEMORY_MB", 16, (1, 4096), false);
pub static PLUGIN_STACK_KB: Numeric =
    numeric("plugin-stack-kb", "PLUGIN_STACK_KB", 128, (16, 1024), false);
pub static PLUGIN_TIMEOUT_MS: Numeric = numeric(
    "plugin-timeout-ms",
    "PLUGIN_TIMEOUT_MS",
    5,
    (1, 60_000),
    true,
);
pub static PLUGIN_MAX_KB: Numeric = numeric(
    "plugin-max-kb",
    "PLUGIN_MAX_KB",
    8 << 10,
    (1, 1 << 20),
    true,
);
pub static MODEL_MAX_MB: Numeric = numeric("model-max-mb", "MODEL_MAX_MB", 256, (1, 1 << 16), true);
pub static GPU_MIN_ROWS: Numeric = numeric("gpu-min-rows", "GPU_MIN_ROWS", 128, (0, 1 << 24), true);
/// How long after RECOMMEND ... EXPERIMENT its request id takes feedback.
pub static EXPERIMENT_WINDOW_S: Numeric = numeric(
    "experiment-window-s",
    "EXPERIMENT_WINDOW_S",
    86_400,
    (1, 90 * 86_400),
    true,
);

/// The hot-row cache of embedding tables kept as keys (docs/ranking.md).
pub static ROW_CACHE_MB: Numeric = numeric("row-cache-mb", "ROW_CACHE_MB", 64, (0, 1 << 20), true);
/// How long a RANK waits for embedding rows it does not hold.
pub static ROW_FETCH_TIMEOUT_MS: Numeric = numeric(
    "row-fetch-timeout-ms",
    "ROW_FETCH_TIMEOUT_MS",
    20,
    (1, 10_000),
    true,
);

/// Every numeric setting, in the order docs/operations.md lists them.
pub static NUMERIC: [&Numeric; 11] = [
    &WORKERS,
    &HISTORY,
    &PLUGIN_MEMORY_MB,
    &PLUGIN_STACK_KB,
    &PLUGIN_TIMEOUT_MS,
    &PLUGIN_MAX_KB,
    &MODEL_MAX_MB,
    &GPU_MIN_ROWS,
    &EXPERIMENT_WINDOW_S,
    &ROW_CACHE_MB,
    &ROW_FETCH_TIMEOUT_MS,
];

/// `recsys.gpu`: auto, on or off (immutable).
static GPU: AtomicI64 = AtomicI64::new(0);
const GPU_NAMES: [&str; 3] = ["auto", "on", "off"];

/// ONNX Runtime library (module argument ORT_LIB only).
static ORT_LIB: OnceCell<std::path::PathBuf> = OnceCell::new();

/// Recent items kept per user (read on every EVENT).
pub fn history() -> usize {
    HISTORY.get_usize()
}

/// The attribution window of experiment request ids, in ms.
pub fn experiment_window_ms() -> i64 {
    EXPERIMENT_WINDOW_S.get().saturating_mul(1000)
}

pub fn workers() -> usize {
    WORKERS.get_usize()
}

pub fn gpu() -> GpuMode {
    match GPU.load(Relaxed) {
        1 => GpuMode::On,
        2 => GpuMode::Off,
        _ => GpuMode::Auto,
    }
}

pub fn ort_lib() -> Option<&'static std::path::Path> {
    ORT_LIB.get().map(|p| p.as_path())
}

/// Sandbox limits for plugins, from the settings.
pub fn plugin_limits() -> recsys_core::plugin::Limits {
    recsys_core::plugin::Limits {
        memory_bytes: PLUGIN_MEMORY_MB.get_usize() << 20,
        stack_bytes: PLUGIN_STACK_KB.get_usize() << 10,
        timeout: Duration::from_millis(PLUGIN_TIMEOUT_MS.get() as u64),
        max_component_bytes: PLUGIN_MAX_KB.get_usize() << 10,
        ..recsys_core::plugin::Limits::default()
    }
}

/// Model settings, from the settings.
pub fn rank_settings() -> recsys_core::rank::Settings {
    recsys_core::rank::Settings {
        sessions: workers(),
        max_bytes: MODEL_MAX_MB.get_usize() << 20,
        gpu_min_rows: GPU_MIN_ROWS.get_usize(),
        row_cache_bytes: (ROW_CACHE_MB.get_usize() as u64) << 20,
        row_fetch_timeout: Duration::from_millis(ROW_FETCH_TIMEOUT_MS.get() as u64),
    }
}

/// Parses module arguments (`NAME value` pairs) into the settings; the
/// error names the bad argument.
pub fn parse(args: &[String]) -> Result<(), String> {
    // Defaults first: a library left mapped after a failed load keeps
    // its statics, and a later load must not inherit its arguments.
    for n in NUMERIC.iter() {
        n.value.store(n.default, Relaxed);
    }
    GPU.store(0, Relaxed);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    WORKERS
        .value
        .store(cores.min(WORKERS.max as usize) as i64, Relaxed);
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let name = name.to_ascii_uppercase();
        let value = it
            .next()
            .ok_or_else(|| format!("module argument {name} needs a value"))?;
        if let Some(n) = NUMERIC.iter().find(|n| n.arg == name) {
            let v = value
                .parse::<i64>()
                .ok()
                .filter(|v| (n.min..=n.max).contains(v))
                .ok_or_else(|| {
                    format!(
                        "{} must be an integer between {} and {}, got '{value}'",
                        n.arg, n.min, n.max
                    )
                })?;
            n.value.store(v, Relaxed);
            continue;
        }
        match name.as_str() {
            "ORT_LIB" => {
                let _ = ORT_LIB.set(std::path::PathBuf::from(value));
            }
            "GPU" => {
                let i = GPU_NAMES
                    .iter()
                    .position(|g| value.eq_ignore_ascii_case(g))
                    .ok_or_else(|| format!("GPU must be auto, on or off, got '{value}'"))?;
                GPU.store(i as i64, Relaxed);
            }
            other => {
                let known: Vec<&str> = NUMERIC.iter().map(|n| n.arg).collect();
                return Err(format!(
                    "unknown module argument '{other}', expected {}, ORT_LIB or GPU",
                    known.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Registers the settings as Redis configs (defaults: the values the
/// module arguments gave) and applies what redis.conf or the command line
/// set for them. Redis 7.0+.
pub fn register(ctx: &Context) -> Result<(), String> {
    // SAFETY: module init on the main thread; the API table is set.
    unsafe {
        let (Some(reg_num), Some(reg_enum), Some(load)) = (
            raw::RedisModule_RegisterNumericConfig,
            raw::RedisModule_RegisterEnumConfig,
            raw::RedisModule_LoadConfigs,
        ) else {
            return Err(
                "this Redis has no module config API (Redis 7.0 or later is needed)".into(),
            );
        };
        for n in NUMERIC.iter() {
            let name = CString::new(n.name).map_err(|e| e.to_string())?;
            let flags = if n.runtime {
                raw::REDISMODULE_CONFIG_DEFAULT
            } else {
                raw::REDISMODULE_CONFIG_IMMUTABLE
            };
            let privdata = *n as *const Numeric as *mut c_void;
            if reg_num(
                ctx.ctx,
                name.as_ptr(),
                n.get(),
                flags as c_uint,
                n.min,
                n.max,
                Some(get_numeric),
                Some(set_numeric),
                Some(apply),
                privdata,
            ) != raw::REDISMODULE_OK as c_int
            {
                return Err(format!("cannot register config recsys.{}", n.name));
            }
        }
        let names: Vec<CString> = GPU_NAMES
            .iter()
            .map(|g| CString::new(*g).unwrap_or_default())
            .collect();
        let mut name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let values: [c_int; 3] = [0, 1, 2];
        if reg_enum(
            ctx.ctx,
            c"gpu".as_ptr(),
            GPU.load(Relaxed) as c_int,
            raw::REDISMODULE_CONFIG_IMMUTABLE as c_uint,
            name_ptrs.as_mut_ptr(),
            values.as_ptr(),
            3,
            Some(get_gpu),
            Some(set_gpu),
            None,
            std::ptr::null_mut(),
        ) != raw::REDISMODULE_OK as c_int
        {
            return Err("cannot register config recsys.gpu".into());
        }
        if load(ctx.ctx) != raw::REDISMODULE_OK as c_int {
            return Err(
                "a recsys.* config in the server's configuration was refused (see the log)".into(),
            );
        }
    }
    Ok(())
}

extern "C" fn get_numeric(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    // SAFETY: privdata is one of the `'static` settings (see `register`).
    unsafe { &*(privdata as *const Numeric) }.get()
}

extern "C" fn set_numeric(
    _name: *const c_char,
    value: c_longlong,
    privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: as in `get_numeric`; Redis checked the bounds.
    unsafe { &*(privdata as *const Numeric) }
        .value
        .store(value, Relaxed);
    raw::REDISMODULE_OK as c_int
}

extern "C" fn get_gpu(_name: *const c_char, _privdata: *mut c_void) -> c_int {
    GPU.load(Relaxed) as c_int
}

extern "C" fn set_gpu(
    _name: *const c_char,
    value: c_int,
    _privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    GPU.store(value as i64, Relaxed);
    raw::REDISMODULE_OK as c_int
}

/// What to run after CONFIG SET changes a setting: the module's top level
/// installs it ([`on_change`]) and hands the new values to the parts that
/// copy them (this floor module imports none of them).
static ON_CHANGE: OnceCell<fn()> = OnceCell::new();

/// Installs the hook run after each CONFIG SET of a `recsys.*` setting.
pub fn on_change(hook: fn()) {
    let _ = ON_CHANGE.set(hook);
}

extern "C" fn apply(
    _ctx: *mut raw::RedisModuleCtx,
    _privdata: *mut c_void,
    _err: *mut *mut raw::RedisModuleString,
) -> c_int {
    if let Some(hook) = ON_CHANGE.get() {
        let _ = std::panic::catch_unwind(hook);
    }
    raw::REDISMODULE_OK as c_int
}
