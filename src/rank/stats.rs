//! A model's call counters (MODEL.INFO) and the process's totals (INFO).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Call counters shown by MODEL.INFO.
#[derive(Debug, Default)]
pub struct ModelStats {
    pub calls: AtomicU64,
    pub rows: AtomicU64,
    pub errors: AtomicU64,
    pub micros: AtomicU64,
    /// Calls the GPU failed and the CPU served.
    pub gpu_fallbacks: AtomicU64,
}

/// The counters of every model of the process together (INFO).
pub static TOTALS: ModelStats = ModelStats::new();

impl ModelStats {
    pub const fn new() -> ModelStats {
        ModelStats {
            calls: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            gpu_fallbacks: AtomicU64::new(0),
        }
    }

    /// Adds to this model's counter and to the process's [`TOTALS`].
    pub(super) fn count(&self, counter: impl Fn(&ModelStats) -> &AtomicU64, n: u64) {
        counter(self).fetch_add(n, Relaxed);
        counter(&TOTALS).fetch_add(n, Relaxed);
    }

    pub(super) fn reset(&self) {
        for c in [
            &self.calls,
            &self.rows,
            &self.errors,
            &self.micros,
            &self.gpu_fallbacks,
        ] {
            c.store(0, Relaxed);
        }
    }
}
