//! The proxy's heap: jemalloc (feature `jemalloc`, on by default: under load it costs less
//! CPU per request than glibc's allocator and hands memory back after a burst; see
//! docs/performance.md, "The allocator"), or the system allocator without it.
//!
//! With the `count-allocs` feature (off by default; for the bench) every allocation is
//! counted in front of that heap and the admin port's `/stats/prometheus` shows the counts
//! as `mesh_heap_allocations_total` and `mesh_heap_allocated_bytes_total`, so the bench can
//! report a proxy's allocations per request
//! (`cargo build --profile sidecar -p mesh-proxy --features count-allocs`).

#[cfg(feature = "jemalloc")]
use tikv_jemallocator::Jemalloc as Heap;

#[cfg(all(feature = "count-allocs", not(feature = "jemalloc")))]
use std::alloc::System as Heap;

#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: mesh_alloc_count::Counting<Heap> = mesh_alloc_count::Counting::new(Heap);

#[cfg(all(feature = "jemalloc", not(feature = "count-allocs")))]
#[global_allocator]
static GLOBAL: Heap = Heap;

/// Allocations (reallocations included) and bytes requested since the process started.
#[cfg(feature = "count-allocs")]
pub(crate) fn totals() -> (u64, u64) {
    let s = mesh_alloc_count::snapshot();
    (s.allocs, s.bytes)
}
