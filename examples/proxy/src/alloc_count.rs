//! Heap allocations of this process, counted when the `count-allocs` feature is on (off by
//! default): the system allocator behind `stats_alloc`'s atomic counters, read by the admin
//! port's `/stats/prometheus` as `mesh_heap_allocations_total` and
//! `mesh_heap_allocated_bytes_total`, so the bench can report a proxy's allocations per
//! request (`cargo build --release -p mesh-proxy --features count-allocs`).

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Allocations (reallocations included) and bytes requested since the process started.
pub(crate) fn totals() -> (u64, u64) {
    let s = GLOBAL.stats();
    (
        (s.allocations + s.reallocations) as u64,
        s.bytes_allocated as u64 + s.bytes_reallocated.max(0) as u64,
    )
}
