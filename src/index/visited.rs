//! Per-thread "visited" marks for graph searches.
//!
//! Each search needs to know which nodes it has already seen. Clearing a bitmap
//! per query would cost O(N); instead each slot stores the epoch of the last
//! search that touched it, and a search just bumps the epoch (hnswlib's
//! VisitedListPool idea, kept per thread so searches never contend).

use std::cell::RefCell;

pub(crate) struct VisitedList {
    marks: Vec<u16>,
    epoch: u16,
}

impl VisitedList {
    fn new() -> Self {
        VisitedList {
            marks: Vec::new(),
            epoch: 0,
        }
    }

    /// Starts a new search over `n` slots.
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Marks `slot` visited; returns true when it was not visited before.
    #[inline(always)]
    pub(crate) fn insert(&mut self, slot: u32) -> bool {
        let m = &mut self.marks[slot as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<VisitedList> = RefCell::new(VisitedList::new());
}

/// Runs `f` with this thread's visited list, reset for `n` slots.
#[inline(always)]
pub(crate) fn with_visited<R>(n: usize, f: impl FnOnce(&mut VisitedList) -> R) -> R {
    VISITED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut list) => {
            list.reset(n);
            f(&mut list)
        }
        // Re-entrant use on the same thread: use a private list.
        Err(_) => {
            let mut list = VisitedList::new();
            list.reset(n);
            f(&mut list)
        }
    })
}
