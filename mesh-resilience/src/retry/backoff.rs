//! Envoy's fully jittered exponential back-off (`JitteredExponentialBackOffStrategy`).

use std::time::Duration;

use mesh_core::model::RetryBackOff;

/// Back-off state for the retries of one request.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: u64,
    max: u64,
    /// Envoy starts at 1: the first wait is drawn from `[0, base)`, the second from
    /// `[0, 3 * base)`, then `7 * base`, ... capped at `max`.
    current: u32,
}

impl Backoff {
    /// Back-off from the policy's base and max intervals (in milliseconds, as Envoy).
    pub fn new(cfg: &RetryBackOff) -> Self {
        let base = (cfg.base_interval.as_millis() as u64).max(1);
        let max = (cfg.max_interval.as_millis() as u64).max(base);
        Self {
            base,
            max,
            current: 1,
        }
    }

    /// The next wait, drawn with `random` (uniform over u64).
    pub fn next_with(&mut self, random: u64) -> Duration {
        let multiplier = (1u64 << self.current.min(62)) - 1;
        let ceiling = multiplier.saturating_mul(self.base);
        if ceiling <= self.max {
            self.current += 1;
        }
        Duration::from_millis((random % ceiling).min(self.max))
    }

    /// The next wait, with fresh randomness.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_is_jittered() {
        let cfg = RetryBackOff {
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
        };
        let mut b = Backoff::new(&cfg);
        // the largest draw at each step shows the ceiling
        assert_eq!(b.next_with(24), Duration::from_millis(24));
        assert_eq!(b.next_with(74), Duration::from_millis(74));
        assert_eq!(b.next_with(174), Duration::from_millis(174));
        assert_eq!(
            b.next_with(374),
            Duration::from_millis(250),
            "capped at max"
        );
        assert_eq!(
            b.next_with(10),
            Duration::from_millis(10),
            "still jittered from zero"
        );
        let mut b = Backoff::new(&cfg);
        assert_eq!(b.next_with(25), Duration::ZERO, "first draw is below base");
    }
}
