//! The proxy's heap, chosen by the binary (src/main.rs): jemalloc (feature `jemalloc`, on by
//! default: under load it costs less CPU per request than glibc's allocator; see
//! docs/performance.md, "Session 11: the allocator"), or the system allocator without it.
//!
//! With the `count-allocs` feature (off by default; for the bench) the binary counts every
//! allocation in front of that heap ([`mesh_alloc_count::Counting`]) and the admin port's
//! `/stats/prometheus` shows the counts as `mesh_heap_allocations_total` and
//! `mesh_heap_allocated_bytes_total`, so the bench can report a proxy's allocations per
//! request (`cargo build --profile sidecar -p mesh-proxy --features count-allocs`).

/// Allocations (reallocations included) and bytes requested since the process started.
pub(crate) fn totals() -> (u64, u64) {
    let s = mesh_alloc_count::snapshot();
    (s.allocs, s.bytes)
}
