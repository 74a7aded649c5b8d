//! Priority load and panic, as Envoy's `LoadBalancerBase` computes them
//! (`recalculatePerPriorityState`, `recalculatePerPriorityPanic`,
//! `recalculateLoadInTotalPanic`).

/// Host counts of one priority.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PriorityCounts {
    /// Hosts that may take requests (HEALTHY/UNKNOWN, not ejected).
    pub healthy: u64,
    /// Hosts that count (every host except DRAINING ones, which are excluded).
    pub total: u64,
}

/// The traffic share of each priority, in percent, and whether it balances in panic mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorityLoad {
    /// Percent of requests per priority; sums to 100 (all zero only without hosts).
    pub load: Vec<u32>,
    /// Per priority: in panic (healthy share below the threshold), so all its hosts serve.
    pub panic: Vec<bool>,
}

/// Computes the priority loads for `counts` with Envoy's integer arithmetic:
/// health = min(100, overprovisioning_factor * healthy / total); the load goes to the highest
/// priorities first, scaled up when the total health is below 100; the remainder of integer
/// division goes to the first priorities.
///
/// ```
/// use mesh_route::lb::priority::{compute, PriorityCounts};
/// // Envoy docs: P0 at 50% healthy, P1 fully healthy -> 70% / 30%.
/// let l = compute(&[PriorityCounts { healthy: 50, total: 100 }, PriorityCounts { healthy: 100, total: 100 }], 140, 50.0);
/// assert_eq!(l.load, vec![70, 30]);
/// ```
pub fn compute(
    counts: &[PriorityCounts],
    overprovisioning_factor: u32,
    panic_threshold: f64,
) -> PriorityLoad {
    let n = counts.len();
    let health: Vec<u32> = counts
        .iter()
        .map(|c| {
            (u64::from(overprovisioning_factor) * c.healthy)
                .checked_div(c.total)
                .map_or(0, |h| h.min(100) as u32)
        })
        .collect();
    let normalized: u32 = health.iter().sum::<u32>().min(100);
    let mut load = vec![0u32; n];
    // Envoy's `distributeLoad`: each priority its share, in order, while load remains; the
    // rounding remainder to the first priority with any health (none: nothing healthy).
    if let Some(first) = health.iter().position(|h| *h > 0) {
        let mut remaining = 100u32;
        for (l, h) in load.iter_mut().zip(&health) {
            *l = (h * 100 / normalized).min(remaining);
            remaining -= *l;
        }
        load[first] += remaining;
    }
    let panic: Vec<bool> = counts
        .iter()
        .map(|c| {
            if normalized == 100 {
                return false;
            }
            let pct = if c.total == 0 {
                0.0
            } else {
                100.0 * c.healthy as f64 / c.total as f64
            };
            pct < panic_threshold.min(100.0)
        })
        .collect();
    if n > 0 && panic.iter().all(|p| *p) {
        // Total panic: load by host count, health ignored.
        let total: u64 = counts.iter().map(|c| c.total).sum();
        load = vec![0; n];
        // Without any host, the load still goes somewhere: priority 0.
        let mut rest = 100u32;
        let mut first_non_empty = None;
        for (i, c) in counts.iter().enumerate() {
            if first_non_empty.is_none() && c.total > 0 {
                first_non_empty = Some(i);
            }
            let l = (100 * c.total).checked_div(total).unwrap_or(0) as u32;
            load[i] = l;
            rest -= l;
        }
        load[first_non_empty.unwrap_or(0)] += rest;
    }
    PriorityLoad { load, panic }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(healthy: &[u64]) -> Vec<PriorityCounts> {
        healthy
            .iter()
            .map(|&h| PriorityCounts {
                healthy: h,
                total: 100,
            })
            .collect()
    }

    /// The table of Envoy's "Priority levels" architecture doc (overprovisioning 1.4).
    #[test]
    fn envoy_docs_two_priorities() {
        let cases: [(u64, u64, [u32; 2]); 7] = [
            (100, 100, [100, 0]),
            (72, 72, [100, 0]),
            (71, 71, [99, 1]),
            (50, 60, [70, 30]),
            (25, 100, [35, 65]),
            (25, 25, [50, 50]),
            (0, 100, [0, 100]),
        ];
        for (p0, p1, want) in cases {
            let l = compute(&pct(&[p0, p1]), 140, 0.0);
            assert_eq!(l.load, want, "P0 {p0}% P1 {p1}%");
        }
    }

    #[test]
    fn envoy_docs_three_priorities() {
        // P0 20%, P1 20%, P2 20% healthy: health 28 each, normalized to 84 -> 34/33/33.
        assert_eq!(
            compute(&pct(&[20, 20, 20]), 140, 0.0).load,
            vec![34, 33, 33]
        );
        assert_eq!(
            compute(&pct(&[60, 20, 100]), 140, 0.0).load,
            vec![84, 16, 0]
        );
        assert_eq!(compute(&pct(&[0, 0, 100]), 140, 0.0).load, vec![0, 0, 100]);
    }

    #[test]
    fn the_rounding_remainder_goes_to_the_first_healthy_priority() {
        // Health 1, 32, 32, 32 (factor 1.0): normalized 97, shares 1, 32, 32, 32; Envoy gives
        // the remaining 3 to P0, not spread in a second round (which made 2, 34, 32, 32).
        assert_eq!(
            compute(&pct(&[1, 32, 32, 32]), 100, 0.0).load,
            vec![4, 32, 32, 32]
        );
        // An empty P0 gets nothing: the remainder goes to P1.
        assert_eq!(
            compute(&pct(&[0, 20, 20, 20]), 140, 0.0).load,
            vec![0, 34, 33, 33]
        );
    }

    #[test]
    fn overprovisioning_factor() {
        // Factor 100: 80% healthy keeps only 80% of the load.
        assert_eq!(compute(&pct(&[80, 100]), 100, 0.0).load, vec![80, 20]);
        // Factor 200: 50% healthy is enough.
        assert_eq!(compute(&pct(&[50, 100]), 200, 0.0).load, vec![100, 0]);
    }

    #[test]
    fn panic_threshold() {
        // One priority, 40% healthy, threshold 50: panic; the load stays on P0.
        let l = compute(&pct(&[40]), 140, 50.0);
        assert_eq!(l.panic, vec![true]);
        assert_eq!(l.load, vec![100]);
        let l = compute(&pct(&[60]), 140, 50.0);
        assert_eq!(l.panic, vec![false], "60% * 1.4 >= 100: no panic");
        // Both priorities in panic: load by host count.
        let counts = [
            PriorityCounts {
                healthy: 1,
                total: 30,
            },
            PriorityCounts {
                healthy: 0,
                total: 10,
            },
        ];
        let l = compute(&counts, 140, 50.0);
        assert_eq!(l.panic, vec![true, true]);
        assert_eq!(l.load, vec![75, 25]);
        // Threshold 0 disables panic.
        assert_eq!(compute(&pct(&[1]), 140, 0.0).panic, vec![false]);
    }
}
