//! Idle instances of reusable plugins, kept per thread: a call takes its
//! plugin's instance out (or the host makes one), and puts it back only if
//! the call left nothing behind (see `reuse.rs` and `memory.rs`).
//!
//! Per thread at most [`PER_THREAD`] instances stay idle, the least recently
//! used going first; an unloaded plugin's instances leave the same way.

use std::cell::RefCell;

use wasmtime::Store;

use super::host::{Bound, StoreData};
use super::memory::Snapshot;

/// Idle instances one thread keeps.
pub const PER_THREAD: usize = 16;

/// An instance between calls, with its store and its memories as new.
pub struct Idle {
    pub store: Store<StoreData>,
    pub bound: Bound,
    pub snapshot: Snapshot,
}

thread_local! {
    /// Most recently used first, keyed by plugin id.
    static IDLE: RefCell<Vec<(u64, Idle)>> = const { RefCell::new(Vec::new()) };
}

/// Takes this thread's idle instance of plugin `id`, if it has one.
pub fn take(id: u64) -> Option<Idle> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let at = idle.iter().position(|(p, _)| *p == id)?;
        Some(idle.remove(at).1)
    })
}

/// Keeps an instance for this thread's next call of plugin `id`.
pub fn put_back(id: u64, instance: Idle) {
    // Dropped outside the borrow: a store's drop runs no plugin code, but
    // keep the cell free all the same.
    let evicted = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.insert(0, (id, instance));
        let keep = idle.len().min(PER_THREAD);
        idle.split_off(keep)
    });
    drop(evicted);
}
