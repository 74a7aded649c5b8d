//! Earliest-deadline-first order for weights (Envoy's `EdfScheduler`), precomputed as one
//! full cycle so picks only bump an atomic index.

/// Longest cycle kept; larger weight sums are scaled down (ratios kept to within 1 in 2^20).
const MAX_CYCLE: u64 = 1 << 20;

/// One EDF cycle over integer weights: entry `i` appears `w_i` times, at deadlines `k / w_i`
/// (`k = 1..=w_i`), in deadline order, ties to the lower index (Envoy's FIFO tie-break for
/// entries added in order). Zero weights never appear. Empty when every weight is zero.
pub(crate) fn cycle(weights: &[u64]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|x| x / g).collect();
    let sum: u64 = w.iter().sum();
    if sum > MAX_CYCLE {
        w = w
            .iter()
            .map(|&x| {
                if x == 0 {
                    0
                } else {
                    ((x as u128 * MAX_CYCLE as u128 / sum as u128) as u64).max(1)
                }
            })
            .collect();
    }
    let mut entries: Vec<(u64, u64, u32)> = Vec::with_capacity(w.iter().sum::<u64>() as usize);
    for (i, &wi) in w.iter().enumerate() {
        for k in 1..=wi {
            entries.push((k, wi, i as u32));
        }
    }
    // Compare k1/w1 with k2/w2 exactly.
    entries.sort_by(|a, b| {
        (a.0 as u128 * b.1 as u128)
            .cmp(&(b.0 as u128 * a.1 as u128))
            .then(a.2.cmp(&b.2))
    });
    entries.into_iter().map(|e| e.2).collect()
}

/// Float weights (effective locality weights) as integers with three decimal digits.
pub(crate) fn cycle_f64(weights: &[f64]) -> Vec<u32> {
    let ints: Vec<u64> = weights
        .iter()
        .map(|w| {
            if w.is_finite() && *w > 0.0 {
                (w * 1000.0).round().max(1.0) as u64
            } else {
                0
            }
        })
        .collect();
    cycle(&ints)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order() {
        assert_eq!(cycle(&[1, 1, 1]), vec![0, 1, 2]);
        // Weight 2 vs 1: the heavy entry's deadlines are 0.5 and 1.0, the light one's 1.0.
        assert_eq!(cycle(&[2, 1]), vec![0, 0, 1]);
        assert_eq!(cycle(&[4, 2]), vec![0, 0, 1], "reduced by the gcd");
        let c = cycle(&[5, 1, 1]);
        assert_eq!(c.len(), 7);
        assert_eq!(c.iter().filter(|&&i| i == 0).count(), 5);
        // Interleaved by deadline: 1/3, 1/2, 2/3, 1 (tie to the lower index), 1.
        assert_eq!(cycle(&[3, 2]), vec![0, 1, 0, 0, 1]);
        assert_eq!(cycle(&[0, 3]), vec![1]);
        assert!(cycle(&[0, 0]).is_empty());
        let big = cycle(&[u32::MAX as u64, 1]);
        assert!(big.len() as u64 <= MAX_CYCLE + 1);
        assert!(big.contains(&1));
    }
}
