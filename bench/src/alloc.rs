//! Heap allocations of the harness process, counted in every build ([`mesh_alloc_count`]
//! in front of the heap), so every in-process case reports allocations per request beside
//! its latency and CPU figures. The heap is jemalloc (feature `jemalloc`, on by default), as
//! in the proxy and the demo; `--no-default-features` measures glibc's allocator instead.
//!
//! `--features dhat-heap` swaps it for DHAT's allocator, which records every call site
//! (much slower; the counters then read `None`):
//!
//! ```sh
//! cargo run --release -p mesh-bench --features dhat-heap -- --cases 3 --loads seq --rounds 1
//! ```

pub use mesh_alloc_count::Snapshot;

#[cfg(not(any(feature = "jemalloc", feature = "dhat-heap")))]
use std::alloc::System as Heap;
#[cfg(all(feature = "jemalloc", not(feature = "dhat-heap")))]
use tikv_jemallocator::Jemalloc as Heap;

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: mesh_alloc_count::Counting<Heap> = mesh_alloc_count::Counting::new(Heap);

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
    cfg!(not(feature = "dhat-heap")).then(mesh_alloc_count::snapshot)
}
