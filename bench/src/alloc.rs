//! Heap allocations of the harness process, counted in every build: the system allocator
//! behind counters sharded per thread, so every in-process case reports allocations per
//! request beside its latency and CPU figures. Each thread adds to its own cache line: one
//! shared counter (as `stats_alloc` keeps) bounces between the cores on every allocation
//! and charges a case CPU in proportion to its allocations, which its users never pay.
//!
//! `--features dhat-heap` swaps it for DHAT's allocator, which records every call site
//! (much slower; the counters then read `None`):
//!
//! ```sh
//! cargo run --release -p mesh-bench --features dhat-heap -- --cases 3 --loads seq --rounds 1
//! ```

// A `GlobalAlloc` is unsafe to implement; this one only forwards to `System`.
#[cfg(not(feature = "dhat-heap"))]
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

    /// One thread's counters, alone on their cache lines (threads beyond `SHARDS` share).
    #[repr(align(128))]
    pub(super) struct Shard {
        pub(super) allocs: AtomicU64,
        pub(super) bytes: AtomicU64,
    }

    const SHARDS: usize = 64;
    pub(super) static COUNTS: [Shard; SHARDS] = [const {
        Shard {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }; SHARDS];
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        // No destructor and a const initializer: readable inside the allocator.
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    fn count(bytes: usize) {
        let i = SLOT
            .try_with(|slot| {
                if slot.get() == usize::MAX {
                    slot.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
                }
                slot.get()
            })
            .unwrap_or(0);
        COUNTS[i].allocs.fetch_add(1, Relaxed);
        COUNTS[i].bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// The system allocator, counting allocations and reallocations (growth in bytes).
    pub(super) struct Counting;

    // SAFETY: every call is forwarded to `System` unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count(new_size.saturating_sub(layout.size()));
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

/// Counter values at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Allocations, reallocations included.
    pub allocs: u64,
    /// Bytes requested by them.
    pub bytes: u64,
}

impl Snapshot {
    /// What happened between `earlier` and `self`, per `requests` (`None` for zero requests).
    pub fn per_request_since(&self, earlier: Snapshot, requests: u64) -> Option<(f64, f64)> {
        (requests > 0).then(|| {
            let n = requests as f64;
            (
                self.allocs.saturating_sub(earlier.allocs) as f64 / n,
                self.bytes.saturating_sub(earlier.bytes) as f64 / n,
            )
        })
    }
}

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static DHAT: dhat::Alloc = dhat::Alloc;

/// Records every allocation's call site until the returned guard drops, then writes
/// `dhat-heap.json` (open it in DHAT's viewer, or sort its program points by `tb`, total
/// blocks). Much slower than a normal run.
#[cfg(feature = "dhat-heap")]
pub fn profile_sites() -> dhat::Profiler {
    dhat::Profiler::new_heap()
}

/// The counters so far, `None` in a `dhat-heap` build.
pub fn snapshot() -> Option<Snapshot> {
    #[cfg(not(feature = "dhat-heap"))]
    {
        use std::sync::atomic::Ordering::Relaxed;
        // Growth by reallocation counts as bytes requested; shrinking does not.
        Some(
            counting::COUNTS
                .iter()
                .fold(Snapshot::default(), |s, c| Snapshot {
                    allocs: s.allocs + c.allocs.load(Relaxed),
                    bytes: s.bytes + c.bytes.load(Relaxed),
                }),
        )
    }
    #[cfg(feature = "dhat-heap")]
    None
}

#[cfg(all(test, not(feature = "dhat-heap")))]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_allocations() {
        let before = snapshot().unwrap();
        let v: Vec<u8> = Vec::with_capacity(4096);
        std::hint::black_box(&v);
        let after = snapshot().unwrap();
        assert!(after.allocs > before.allocs);
        assert!(after.bytes - before.bytes >= 4096);
        let (a, b) = after.per_request_since(before, 1).unwrap();
        assert!(a >= 1.0 && b >= 4096.0);
        assert_eq!(after.per_request_since(before, 0), None);
    }

    #[test]
    fn counts_every_thread() {
        let before = snapshot().unwrap();
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
        let after = snapshot().unwrap();
        assert!(after.allocs - before.allocs >= 4000);
        assert!(after.bytes - before.bytes >= 4 * 500_500);
    }
}
