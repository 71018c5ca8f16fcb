//! Linear memories of reusable plugin instances: wasmtime asks this creator
//! for them, so the host knows where each lives and can put it back, after
//! every call, to the bytes it had when the instance was new.
//!
//! A memory is one private anonymous mapping: the reservation wasmtime asks
//! for plus its guard, inaccessible except for the bytes in use. The creator
//! notes every memory it makes on the creating thread; [`Snapshot::take`]
//! collects the ones made by the instantiation that just ran there.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// What the host keeps of a memory: where it starts and how large it is now.
struct Shared {
    base: usize,
    size: AtomicUsize,
}

thread_local! {
    /// Memories created on this thread since the last [`Snapshot::take`].
    static CREATED: RefCell<Vec<Arc<Shared>>> = const { RefCell::new(Vec::new()) };
}

/// Makes memories for the reusable-instance engine.
pub struct Creator;

// SAFETY: every memory is a fresh mapping of `reserved + guard` bytes, zero
// filled, never moved; only its first `size` bytes are accessible and growth
// stays within the reservation, as `new_memory`'s contract asks.
unsafe impl MemoryCreator for Creator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved: Option<usize>,
        guard: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let page = 4096;
        let reserved = reserved
            .or(maximum)
            .unwrap_or(minimum)
            .max(minimum)
            .next_multiple_of(page);
        let len = reserved
            .checked_add(guard)
            .ok_or("memory reservation too large")?;
        // SAFETY: a new private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "cannot reserve {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let memory = Mapped {
            shared: Arc::new(Shared {
                base: base as usize,
                size: AtomicUsize::new(0),
            }),
            reserved,
            len,
        };
        memory.open(minimum).map_err(|e| e.to_string())?;
        CREATED.with(|c| c.borrow_mut().push(Arc::clone(&memory.shared)));
        Ok(Box::new(memory))
    }
}

struct Mapped {
    shared: Arc<Shared>,
    reserved: usize,
    len: usize,
}

impl Mapped {
    /// Makes the first `size` bytes accessible.
    fn open(&self, size: usize) -> std::io::Result<()> {
        if size > self.reserved {
            return Err(std::io::Error::other("memory grows past its reservation"));
        }
        let start = self.shared.size.load(Relaxed).next_multiple_of(4096);
        let end = size.next_multiple_of(4096);
        if end > start {
            // SAFETY: [start, end) lies inside this mapping's reservation.
            let rc = unsafe {
                libc::mprotect(
                    (self.shared.base + start) as *mut libc::c_void,
                    end - start,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        self.shared.size.store(size, Relaxed);
        Ok(())
    }
}

// SAFETY: the mapping stays at `base` for the object's life; `open` keeps the
// accessible prefix equal to `byte_size`.
unsafe impl LinearMemory for Mapped {
    fn byte_size(&self) -> usize {
        self.shared.size.load(Relaxed)
    }

    fn byte_capacity(&self) -> usize {
        self.reserved
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        self.open(new_size).map_err(wasmtime::Error::from)
    }

    fn as_ptr(&self) -> *mut u8 {
        self.shared.base as *mut u8
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new_memory`, unmapped once.
        unsafe { libc::munmap(self.shared.base as *mut libc::c_void, self.len) };
    }
}

/// The contents of an instance's memories when it was new.
pub struct Snapshot {
    memories: Vec<Image>,
}

/// One memory as it was: its length and the runs of pages that were not
/// all zero (the rest is zero: mostly stack and heap). Restoring zeroes the
/// zero runs and copies the others, about half the cost of copying it all.
/// Zero runs past the first [`KEEP_RESIDENT`] bytes are given back to the
/// kernel instead (`MADV_DONTNEED`: the next read sees zeros), so a plugin
/// with a large static arena it barely touches does not pay for writing all
/// of it after every call.
struct Image {
    memory: Arc<Shared>,
    len: usize,
    /// (offset, bytes) of each run of pages holding a non-zero byte.
    data: Vec<(usize, Box<[u8]>)>,
}

/// Granularity of the zero / data runs.
const RUN_PAGE: usize = 4096;

/// Zero runs below this offset are zeroed in place (they stay resident: no
/// page faults in the next call); above it they are released.
const KEEP_RESIDENT: usize = 128 << 10;

impl Image {
    fn of(memory: Arc<Shared>, bytes: &[u8]) -> Image {
        let mut data: Vec<(usize, Box<[u8]>)> = Vec::new();
        let mut run: Option<usize> = None;
        for (i, page) in bytes.chunks(RUN_PAGE).enumerate() {
            let zero = page.iter().all(|&b| b == 0);
            match (zero, run) {
                (false, None) => run = Some(i * RUN_PAGE),
                (true, Some(start)) => {
                    data.push((start, bytes[start..i * RUN_PAGE].into()));
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            data.push((start, bytes[start..].into()));
        }
        Image {
            memory,
            len: bytes.len(),
            data,
        }
    }

    /// # Safety
    /// The memory is `self.len` bytes long, mapped, writable and idle.
    unsafe fn restore(&self) {
        let base = self.memory.base as *mut u8;
        let mut at = 0;
        for (start, bytes) in &self.data {
            // SAFETY: runs lie within `len` (built from the memory's bytes).
            unsafe {
                zero(base, at, *start);
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(*start), bytes.len());
            }
            at = start + bytes.len();
        }
        // SAFETY: as above.
        unsafe { zero(base, at, self.len) };
    }
}

/// Zeroes `[from, to)` of the memory at `base`: in place below
/// [`KEEP_RESIDENT`], by releasing the pages above it.
///
/// # Safety
/// `[from, to)` lies within the memory's accessible, idle bytes; both ends
/// are multiples of [`RUN_PAGE`] or the memory's end (a multiple of the wasm
/// page size).
unsafe fn zero(base: *mut u8, from: usize, to: usize) {
    let split = KEEP_RESIDENT.clamp(from, to);
    // SAFETY: within the range the caller vouches for.
    unsafe { std::ptr::write_bytes(base.add(from), 0, split - from) };
    if to > split {
        // SAFETY: page-aligned range of our own anonymous private mapping;
        // its pages read as zeros afterwards. Should the call fail, zero by
        // hand.
        let rc = unsafe {
            libc::madvise(
                base.add(split) as *mut libc::c_void,
                to - split,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            // SAFETY: as above.
            unsafe { std::ptr::write_bytes(base.add(split), 0, to - split) };
        }
    }
}

impl Snapshot {
    /// Forgets memories noted on this thread (call before instantiating).
    pub fn forget_created() {
        CREATED.with(|c| c.borrow_mut().clear());
    }

    /// Copies the memories created on this thread since
    /// [`Snapshot::forget_created`].
    ///
    /// # Safety
    /// The instance that owns them must be alive and not running.
    pub unsafe fn take() -> Snapshot {
        let created = CREATED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        let memories = created
            .into_iter()
            .map(|m| {
                let size = m.size.load(Relaxed);
                // SAFETY: `size` bytes from `base` are mapped and readable
                // (caller: the owner is alive and idle).
                let bytes = unsafe { std::slice::from_raw_parts(m.base as *const u8, size) };
                Image::of(Arc::clone(&m), bytes)
            })
            .collect();
        Snapshot { memories }
    }

    /// Puts every memory back as it was, or returns false (and changes
    /// nothing) when one has grown since: a larger memory cannot be made
    /// smaller, so that instance must not serve again.
    ///
    /// # Safety
    /// The instance that owns the memories must be alive and not running.
    pub unsafe fn restore(&self) -> bool {
        if self
            .memories
            .iter()
            .any(|image| image.memory.size.load(Relaxed) != image.len)
        {
            return false;
        }
        for image in &self.memories {
            // SAFETY: the memory is `image.len` bytes long (checked above),
            // mapped and writable, and nothing runs in it (caller).
            unsafe { image.restore() };
        }
        true
    }
}
