//! Heap allocations of a process, counted in front of its real allocator: counters sharded
//! per thread, so a benchmark can report allocations per request beside its latency and CPU
//! figures. Each thread adds to its own cache line: one shared counter (as `stats_alloc`
//! keeps) bounces between the cores on every allocation and charges a case CPU in
//! proportion to its allocations, which its users never pay. A shard has one writer, so it
//! is added to with a plain load and store, not a locked read-modify-write (two of those per
//! allocation were 2.7% of an in-process mesh case's CPU); threads past the first `SHARDS`
//! share one more shard with atomic additions.
//!
//! ```
//! use mesh_alloc_count::{Counting, snapshot};
//!
//! #[global_allocator]
//! static HEAP: Counting<std::alloc::System> = Counting::new(std::alloc::System);
//!
//! let before = snapshot();
//! let v = std::hint::black_box(Vec::<u8>::with_capacity(64));
//! assert!(snapshot().since(before).allocs >= 1);
//! # drop(v);
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// One thread's counters, alone on their cache lines.
#[repr(align(128))]
struct Shard {
    allocs: AtomicU64,
    bytes: AtomicU64,
}

impl Shard {
    /// Adds as the shard's only writer: readers see each value whole (atomic loads and
    /// stores), and no other thread stores in between.
    fn add_alone(&self, bytes: u64) {
        self.allocs.store(self.allocs.load(Relaxed) + 1, Relaxed);
        self.bytes.store(self.bytes.load(Relaxed) + bytes, Relaxed);
    }

    fn add_shared(&self, bytes: u64) {
        self.allocs.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }
}

/// Shards with one writer each; the last one, `COUNTS[SHARDS]`, is shared by the threads
/// that came after them (and by allocations during a thread's teardown).
const SHARDS: usize = 64;
static COUNTS: [Shard; SHARDS + 1] = [const {
    Shard {
        allocs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    }
}; SHARDS + 1];
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // No destructor and a const initializer: readable inside the allocator.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count(bytes: usize) {
    let i = SLOT
        .try_with(|slot| {
            if slot.get() == usize::MAX {
                slot.set(NEXT.fetch_add(1, Relaxed).min(SHARDS));
            }
            slot.get()
        })
        .unwrap_or(SHARDS);
    if i < SHARDS {
        COUNTS[i].add_alone(bytes as u64);
    } else {
        COUNTS[SHARDS].add_shared(bytes as u64);
    }
}

/// `A`, counting allocations and reallocations (growth in bytes) into the process's
/// counters, which [`snapshot`] reads. Install one as the `#[global_allocator]`.
#[derive(Debug)]
pub struct Counting<A>(A);

impl<A> Counting<A> {
    /// Counts in front of `inner`.
    pub const fn new(inner: A) -> Self {
        Self(inner)
    }
}

// SAFETY: every call is forwarded to the inner allocator unchanged.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { self.0.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Counter values at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Allocations, reallocations included.
    pub allocs: u64,
    /// Bytes requested by them (growth by reallocation counts; shrinking does not).
    pub bytes: u64,
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            allocs: self.allocs.saturating_sub(earlier.allocs),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }

    /// What happened between `earlier` and `self`, per `requests` (`None` for zero requests).
    pub fn per_request_since(&self, earlier: Snapshot, requests: u64) -> Option<(f64, f64)> {
        (requests > 0).then(|| {
            let n = requests as f64;
            let d = self.since(earlier);
            (d.allocs as f64 / n, d.bytes as f64 / n)
        })
    }
}

/// The process's counters so far (all zero unless a [`Counting`] is the global allocator).
pub fn snapshot() -> Snapshot {
    COUNTS.iter().fold(Snapshot::default(), |s, c| Snapshot {
        allocs: s.allocs + c.allocs.load(Relaxed),
        bytes: s.bytes + c.bytes.load(Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static HEAP: Counting<std::alloc::System> = Counting::new(std::alloc::System);

    #[test]
    fn counts_this_process_allocations() {
        let before = snapshot();
        let v: Vec<u8> = Vec::with_capacity(4096);
        std::hint::black_box(&v);
        let after = snapshot();
        assert!(after.allocs > before.allocs);
        assert!(after.bytes - before.bytes >= 4096);
        let (a, b) = after.per_request_since(before, 1).unwrap();
        assert!(a >= 1.0 && b >= 4096.0);
        assert_eq!(after.per_request_since(before, 0), None);
    }

    #[test]
    fn counts_every_thread() {
        let before = snapshot();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for i in 0..1000usize {
                        std::hint::black_box(Vec::<u8>::with_capacity(i + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let after = snapshot().since(before);
        assert!(after.allocs >= 4000);
        assert!(after.bytes >= 4 * 500_500);
    }

    #[test]
    fn threads_past_the_shards_share_one_and_lose_nothing() {
        // More threads than single-writer shards, all allocating at once: the ones past
        // `SHARDS` add atomically to the shared shard, so the total is exact.
        let before = snapshot();
        let threads: Vec<_> = (0..SHARDS + 8)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..200 {
                        std::hint::black_box(Vec::<u8>::with_capacity(8));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(snapshot().since(before).allocs >= (SHARDS as u64 + 8) * 200);
    }
}
