//! Per-thread "visited" marks for graph searches.
//!
//! Each search needs to know which nodes it has already seen. Clearing a bitmap
//! per query would cost O(N); instead each slot stores the epoch of the last
//! search that touched it, and a search just bumps the epoch (hnswlib's
//! VisitedListPool idea, kept per thread so searches never contend).
//!
//! The list is lent as a guard ([`Visited::take`]) rather than through a
//! closure: a closure written in the generic walk would be compiled without
//! the SIMD features of the function that calls the walk, and the distance
//! could not be inlined into it.

use std::cell::RefCell;

#[derive(Default)]
pub(crate) struct VisitedList {
    marks: Vec<u16>,
    epoch: u16,
}

impl VisitedList {
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
    static VISITED: RefCell<VisitedList> = RefCell::new(VisitedList::default());
}

/// This thread's visited list for one search; given back when dropped.
pub(crate) struct Visited(VisitedList);

impl Visited {
    /// Takes this thread's list, reset for `n` slots. A search nested in
    /// another on the same thread finds it taken and starts an empty one.
    #[inline]
    pub(crate) fn take(n: usize) -> Visited {
        let mut list = VISITED.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        list.reset(n);
        Visited(list)
    }
}

impl std::ops::Deref for Visited {
    type Target = VisitedList;
    fn deref(&self) -> &VisitedList {
        &self.0
    }
}

impl std::ops::DerefMut for Visited {
    fn deref_mut(&mut self) -> &mut VisitedList {
        &mut self.0
    }
}

impl Drop for Visited {
    fn drop(&mut self) {
        let list = std::mem::take(&mut self.0);
        // Keep the larger of the two lists when a nested search gave one back
        // first (the outer search's, usually).
        VISITED.with(|cell| {
            let mut kept = cell.borrow_mut();
            if list.marks.len() >= kept.marks.len() {
                *kept = list;
            }
        });
    }
}
