//! Heap allocations of the harness process, counted when the `count-allocs` feature is on
//! (a diagnostic: the counters are shared atomics bumped on every allocation, so timings of
//! such a build are not comparable with a normal one).
//!
//! ```sh
//! cargo run --release -p mesh-bench --features count-allocs -- --cases 2,3 --loads seq --rounds 1
//! cargo run --release -p mesh-bench --features dhat-heap -- --cases 3 --loads seq --rounds 1
//! ```

#[cfg(all(feature = "count-allocs", not(feature = "dhat-heap")))]
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

/// Allocations (and reallocations) so far, `None` without the `count-allocs` feature.
pub fn count() -> Option<u64> {
    #[cfg(all(feature = "count-allocs", not(feature = "dhat-heap")))]
    {
        let s = GLOBAL.stats();
        Some((s.allocations + s.reallocations) as u64)
    }
    #[cfg(not(all(feature = "count-allocs", not(feature = "dhat-heap"))))]
    None
}
