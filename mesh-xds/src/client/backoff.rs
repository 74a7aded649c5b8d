//! Exponential backoff with full jitter between ADS stream attempts.

use std::time::Duration;

use rand::Rng;

/// How long to wait between attempts to (re)open the ADS stream.
///
/// The delay grows from `initial` by `multiplier` up to `max`; each wait is drawn
/// uniformly from `[delay * (1 - jitter), delay]` so that many clients restarted together
/// do not reconnect in lockstep. The sequence restarts from `initial` after a stream that
/// received at least one response (gRPC's rule: a stream that worked was not a failure).
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First delay.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Growth factor per failed attempt (>= 1).
    pub multiplier: f64,
    /// Fraction of the delay that is randomised, in `[0, 1]`.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    /// gRPC's connection backoff: 1 s, x1.6, up to 120 s, 20 % jitter.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(120),
            multiplier: 1.6,
            jitter: 0.2,
        }
    }
}

/// The running state of a [`BackoffConfig`].
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        let next = config.initial;
        Self { config, next }
    }

    /// The delay before the next attempt; advances the sequence.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.config.max);
        // Odd settings (NaN, huge values) degrade to something sane rather than panic.
        let grown = base.as_secs_f64() * self.config.multiplier.max(1.0);
        self.next = Duration::try_from_secs_f64(grown.min(self.config.max.as_secs_f64()))
            .unwrap_or(self.config.max);
        let jitter = if self.config.jitter.is_finite() {
            self.config.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - jitter)..=1.0);
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(base)
    }

    /// Restart from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.config.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(jitter: f64) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_exponentially_up_to_max_then_resets() {
        let mut b = Backoff::new(cfg(0.0));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn odd_settings_do_not_panic() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::MAX,
            multiplier: f64::NAN,
            jitter: f64::NAN,
        });
        for _ in 0..100 {
            let _ = b.next_delay();
        }
        let mut b = Backoff::new(BackoffConfig {
            multiplier: 1e300,
            max: Duration::MAX,
            jitter: 5.0,
            ..BackoffConfig::default()
        });
        for _ in 0..5 {
            let _ = b.next_delay();
        }
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(cfg(0.5));
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
            seen.insert(d.as_micros());
        }
        assert!(seen.len() > 10, "jitter should spread the delays");
    }
}
