//! Process-wide counters and latency histograms, and the `INFO recsys`
//! sections that show them: per command (calls, errors, time to reply with
//! the worker's part included), per pipeline stage, the worker pool,
//! catalogs, plugins, models and batch jobs.
//!
//! Every field is `name:number` so monitoring reads it without parsing
//! (docs/operations.md; docs/monitoring/recsys.lua hands them to
//! redis_exporter). Recording is a few atomics and one short mutex per
//! command; INFO runs on the main thread.

use std::ffi::CString;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use hdrhistogram::Histogram;
use once_cell::sync::OnceCell;
use parking_lot::Mutex;
use redis_module::raw;

/// Latencies in microseconds (1 µs to 1 hour, 2 significant digits: a
/// few KiB per histogram).
pub struct Latency(OnceCell<Mutex<Histogram<u64>>>);

impl Latency {
    pub const fn new() -> Latency {
        Latency(OnceCell::new())
    }

    fn histogram(&self) -> Option<&Mutex<Histogram<u64>>> {
        self.0
            .get_or_try_init(|| Histogram::new_with_bounds(1, 3_600_000_000, 2).map(Mutex::new))
            .ok()
    }

    pub fn record(&self, micros: u64) {
        if let Some(h) = self.histogram() {
            h.lock().saturating_record(micros.max(1));
        }
    }

    /// (p50, p99, p99.9) in microseconds; zeros before the first record.
    pub fn percentiles(&self) -> [u64; 3] {
        match self.0.get() {
            Some(h) => {
                let h = h.lock();
                if h.is_empty() {
                    return [0; 3];
                }
                [50.0, 99.0, 99.9].map(|q| h.value_at_quantile(q / 100.0))
            }
            None => [0; 3],
        }
    }
}

/// One command's counters.
pub struct CommandStats {
    /// The command's name (`RECSYS.ITEM.SET`); INFO shows it as
    /// [`CommandStats::info_name`].
    pub name: &'static str,
    calls: AtomicU64,
    errors: AtomicU64,
    latency: Latency,
}

impl CommandStats {
    pub const fn new(name: &'static str) -> CommandStats {
        CommandStats {
            name,
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Latency::new(),
        }
    }

    /// The name in INFO's fields: `RECSYS.ITEM.SET` -> `item_set`.
    pub fn info_name(&self) -> String {
        let bare = self.name.strip_prefix("RECSYS.").unwrap_or(self.name);
        bare.to_ascii_lowercase().replace('.', "_")
    }

    /// Counts a call that took from `started` until now.
    pub fn record(&self, started: Instant, failed: bool) {
        self.calls.fetch_add(1, Relaxed);
        if failed {
            self.errors.fetch_add(1, Relaxed);
        }
        self.latency.record(started.elapsed().as_micros() as u64);
    }
}

/// The command running on this thread and when it started, set by the
/// dispatcher so that a command which blocks its client can hand its
/// timing to the worker that finishes it.
pub type Timing = (&'static CommandStats, Instant);

thread_local! {
    static CURRENT: std::cell::Cell<Option<Timing>> = const { std::cell::Cell::new(None) };
}

/// Marks the command now running on the main thread (None when it ends).
pub fn set_current(t: Option<Timing>) {
    CURRENT.with(|c| c.set(t));
}

/// The command now running on this thread, if any.
pub fn current() -> Option<Timing> {
    CURRENT.with(|c| c.get())
}

/// Names of the pipeline stages, in `recsys_core::pipeline::explain::Stage` order.
pub const STAGE_NAMES: [&str; 5] = ["user_vector", "retrieve", "rank", "plugins", "order"];

static STAGES: [Latency; 5] = [
    Latency::new(),
    Latency::new(),
    Latency::new(),
    Latency::new(),
    Latency::new(),
];

/// Records one request's microseconds per stage.
pub fn record_stages(stage_us: &[u64; 5]) {
    for (l, us) in STAGES.iter().zip(stage_us) {
        l.record(*us);
    }
}

/// Numbers the other layers report for INFO (they own them; this module
/// only prints).
#[derive(Default)]
pub struct Gauges {
    pub fields: Vec<(&'static str, i64)>,
}

impl Gauges {
    pub fn add(&mut self, name: &'static str, value: impl TryInto<i64>) {
        self.fields
            .push((name, value.try_into().unwrap_or(i64::MAX)));
    }
}

/// Writes the sections: `recsys` (the gauges), `recsys_commands`,
/// `recsys_stages`.
///
/// # Safety
/// `ctx` must be the live info context Redis passed to the info callback.
pub unsafe fn write_info(
    ctx: *mut raw::RedisModuleInfoCtx,
    gauges: &Gauges,
    commands: impl Iterator<Item = &'static CommandStats>,
) {
    let mut w = InfoWriter { ctx };
    w.section(None);
    for (name, v) in &gauges.fields {
        w.field(name, *v);
    }
    w.section(Some("commands"));
    for c in commands {
        let name = c.info_name();
        let [p50, p99, p999] = c.latency.percentiles();
        for (suffix, v) in [
            ("calls", c.calls.load(Relaxed)),
            ("errors", c.errors.load(Relaxed)),
            ("p50_us", p50),
            ("p99_us", p99),
            ("p999_us", p999),
        ] {
            w.field(&format!("cmd_{name}_{suffix}"), v as i64);
        }
    }
    w.section(Some("stages"));
    for (name, l) in STAGE_NAMES.iter().zip(&STAGES) {
        let [p50, p99, p999] = l.percentiles();
        for (suffix, v) in [("p50_us", p50), ("p99_us", p99), ("p999_us", p999)] {
            w.field(&format!("stage_{name}_{suffix}"), v as i64);
        }
    }
}

struct InfoWriter {
    ctx: *mut raw::RedisModuleInfoCtx,
}

impl InfoWriter {
    fn section(&mut self, name: Option<&str>) {
        let name = name.and_then(|n| CString::new(n).ok());
        // SAFETY: live info context (see `write_info`); a NULL name is the
        // module's default section.
        unsafe {
            if let Some(add) = raw::RedisModule_InfoAddSection {
                add(
                    self.ctx,
                    name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
                );
            }
        }
    }

    fn field(&mut self, name: &str, value: i64) {
        let Ok(name) = CString::new(name) else {
            return;
        };
        // SAFETY: live info context and string.
        unsafe {
            if let Some(add) = raw::RedisModule_InfoAddFieldLongLong {
                let _: c_int = add(self.ctx, name.as_ptr(), value);
            }
        }
    }
}
