//! What the host counts about plugin calls: per plugin (calls, errors,
//! traps, instances made, recent latencies, the last log) and for the whole
//! process (INFO's totals, removed plugins included).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::CallError;

/// Counters and recent latencies of one plugin.
#[derive(Default, Debug)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub traps: AtomicU64,
    /// Instances made: one per call without reuse; with reuse, one per
    /// thread plus one after each call that could not be reset.
    pub instances: AtomicU64,
    /// Last call durations in microseconds (ring of 1024).
    recent: Mutex<(Vec<u32>, usize)>,
    /// Tail of the last call's log.
    last_log: Mutex<String>,
}

/// Calls, errors and traps of every plugin the process ran, removed ones
/// included (INFO's counters only grow).
pub struct PluginTotals {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub traps: AtomicU64,
}

pub static TOTALS: PluginTotals = PluginTotals {
    calls: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    traps: AtomicU64::new(0),
};

impl PluginStats {
    pub(super) fn record(&self, micros: u64, outcome: &Result<(), CallError>, log: String) {
        let counter = match outcome {
            Err(CallError::Trap(_)) => Some((&self.traps, &TOTALS.traps)),
            Err(_) => Some((&self.errors, &TOTALS.errors)),
            Ok(()) => None,
        };
        for c in [&self.calls, &TOTALS.calls] {
            c.fetch_add(1, Relaxed);
        }
        if let Some((mine, total)) = counter {
            mine.fetch_add(1, Relaxed);
            total.fetch_add(1, Relaxed);
        }
        if let Ok(mut r) = self.recent.lock() {
            let (ring, next) = &mut *r;
            let v = micros.min(u32::MAX as u64) as u32;
            if ring.len() < 1024 {
                ring.push(v);
            } else {
                ring[*next] = v;
            }
            *next = (*next + 1) % 1024;
        }
        if !log.is_empty() {
            if let Ok(mut l) = self.last_log.lock() {
                *l = log;
            }
        }
    }

    /// (p50, p99) of recent call durations in microseconds.
    pub fn percentiles(&self) -> (u32, u32) {
        let mut v = self.recent.lock().map(|r| r.0.clone()).unwrap_or_default();
        if v.is_empty() {
            return (0, 0);
        }
        v.sort_unstable();
        (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
    }

    pub fn last_log(&self) -> String {
        self.last_log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
