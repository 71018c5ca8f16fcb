//! Module arguments (`--loadmodule librecsys.so WORKERS 4 HISTORY 50`),
//! parsed once at load and read everywhere else.

use once_cell::sync::OnceCell;

#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads for searches and recommendations.
    pub workers: usize,
    /// Recent items kept per user by RECSYS.EVENT.
    pub history: usize,
    /// Sandbox limits for plugins.
    pub plugin_limits: recsys_core::plugin::Limits,
    /// ONNX Runtime library (libonnxruntime.so.1.31.x); ONNX models are
    /// refused without it.
    pub ort_lib: Option<std::path::PathBuf>,
    /// Where DLRM models run.
    pub gpu: recsys_core::rank::GpuMode,
    /// Largest model MODEL.SET accepts, in bytes.
    pub model_max_bytes: usize,
    /// Smaller batches of a GPU model run on its CPU copy.
    pub gpu_min_rows: usize,
}

static CONFIG: OnceCell<Config> = OnceCell::new();

/// Recent items kept per user (read on every EVENT: no clone of the config).
pub fn history() -> usize {
    CONFIG.get().map_or(DEFAULT_HISTORY, |c| c.history)
}

/// Default of HISTORY.
const DEFAULT_HISTORY: usize = 50;

fn defaults() -> Config {
    Config {
        workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        history: DEFAULT_HISTORY,
        plugin_limits: recsys_core::plugin::Limits::default(),
        ort_lib: None,
        gpu: recsys_core::rank::GpuMode::Auto,
        model_max_bytes: recsys_core::rank::Settings::default().max_bytes,
        gpu_min_rows: recsys_core::rank::Settings::default().gpu_min_rows,
    }
}

fn int_arg(name: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{name} must be an integer between {min} and {max}, got '{value}'"))
}

/// Parses `NAME value` pairs; the error names the bad argument.
pub fn parse(args: &[String]) -> Result<Config, String> {
    let mut c = defaults();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        let name = name.to_ascii_uppercase();
        let value = it
            .next()
            .ok_or_else(|| format!("module argument {name} needs a value"))?;
        match name.as_str() {
            "WORKERS" => c.workers = int_arg("WORKERS", value, 1, 256)?,
            "HISTORY" => c.history = int_arg("HISTORY", value, 1, 10_000)?,
            "PLUGIN_MEMORY_MB" => {
                c.plugin_limits.memory_bytes = int_arg("PLUGIN_MEMORY_MB", value, 1, 4096)? << 20
            }
            "PLUGIN_STACK_KB" => {
                c.plugin_limits.stack_bytes = int_arg("PLUGIN_STACK_KB", value, 16, 1024)? << 10
            }
            "PLUGIN_TIMEOUT_MS" => {
                c.plugin_limits.timeout =
                    std::time::Duration::from_millis(int_arg("PLUGIN_TIMEOUT_MS", value, 1, 60_000)? as u64)
            }
            "PLUGIN_MAX_KB" => {
                c.plugin_limits.max_component_bytes = int_arg("PLUGIN_MAX_KB", value, 1, 1 << 20)? << 10
            }
            "ORT_LIB" => c.ort_lib = Some(std::path::PathBuf::from(value)),
            "GPU" => {
                use recsys_core::rank::GpuMode;
                c.gpu = match value.to_ascii_lowercase().as_str() {
                    "auto" => GpuMode::Auto,
                    "on" => GpuMode::On,
                    "off" => GpuMode::Off,
                    _ => return Err(format!("GPU must be auto, on or off, got '{value}'")),
                }
            }
            "GPU_MIN_ROWS" => c.gpu_min_rows = int_arg("GPU_MIN_ROWS", value, 0, 1 << 24)?,
            "MODEL_MAX_MB" => c.model_max_bytes = int_arg("MODEL_MAX_MB", value, 1, 1 << 16)? << 20,
            other => {
                return Err(format!(
                    "unknown module argument '{other}', expected WORKERS, HISTORY, PLUGIN_MEMORY_MB, PLUGIN_STACK_KB, PLUGIN_TIMEOUT_MS, PLUGIN_MAX_KB, ORT_LIB, GPU, GPU_MIN_ROWS or MODEL_MAX_MB"
                ))
            }
        }
    }
    Ok(c)
}

/// Stores the configuration (once, at module load).
pub fn install(c: Config) {
    let _ = CONFIG.set(c);
}
