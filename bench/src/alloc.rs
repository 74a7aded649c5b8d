//! Heap allocations of the harness process, counted in every build: the system allocator
//! behind `stats_alloc`'s atomic counters (a few atomic additions per allocation, nanoseconds
//! next to a request's tens of microseconds), so every in-process case reports allocations
//! per request beside its latency and CPU figures.
//!
//! `--features dhat-heap` swaps it for DHAT's allocator, which records every call site
//! (much slower; the counters then read `None`):
//!
//! ```sh
//! cargo run --release -p mesh-bench --features dhat-heap -- --cases 3 --loads seq --rounds 1
//! ```

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
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

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
        let s = GLOBAL.stats();
        // Growth by reallocation counts as bytes requested; shrinking does not.
        Some(Snapshot {
            allocs: (s.allocations + s.reallocations) as u64,
            bytes: s.bytes_allocated as u64 + s.bytes_reallocated.max(0) as u64,
        })
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
}
