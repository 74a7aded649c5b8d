//! Bounds on load-balancer settings shared by the cluster's `lb_policy` and the typed
//! `load_balancing_policy` translators.

/// gRPC A42's upper bound on ring sizes.
pub(crate) const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// Whether `n` is prime (Maglev table sizes must be).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}
