//! [`Rotation`]: drives a one-shot [`CertProvider`] (a CSR-based CA) as a [`CertSource`].
//!
//! The schedule follows Istio and ztunnel:
//! - fetch at start;
//! - renew at half of the certificate's remaining lifetime (its half life, for a fresh
//!   certificate), minus a random jitter of up to 10% of it, never later, so a fleet started
//!   together does not renew together;
//! - on failure, retry with exponential backoff from 1 s to 150 s with +-20% jitter, keeping
//!   the still-valid certificate (the [`IdentityStore`] keeps it and records the error);
//! - when the certificate expires without a replacement, the store fails closed
//!   ([`crate::IdentityStatus::Unavailable`]) and retries continue.
//!
//! Timers run on [`tokio::time::Instant`], computed from the certificate's *remaining*
//! lifetime at the moment it was received, so a paused Tokio clock drives the schedule in
//! tests.
//!
//! Certificate validity is judged on the wall clock, which can jump (NTP steps, a resumed
//! VM). The rotation looks at it every [`RotationConfig::wall_clock_check`]: a jump forward
//! past the renewal time renews at once rather than when the monotonic timer fires (perhaps
//! after the certificate expired). A jump backward never postpones renewal: the monotonic
//! timer stays, and the remaining lifetime is capped at the certificate's whole lifetime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use rand::Rng;
use tokio::time::Instant;

use crate::{CertProvider, CertSource, Credentials, IdentityStore, TlsError};

/// Timing of renewals and retries. The defaults are Istio's.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Fraction of the remaining lifetime after which to renew (default 0.5: half life).
    pub renew_at: f64,
    /// Renew up to this fraction of the remaining lifetime *earlier* than `renew_at`, at
    /// random (default 0.1).
    pub renew_jitter: f64,
    /// First retry delay after a failure (default 1 s).
    pub min_backoff: Duration,
    /// Largest retry delay (default 150 s).
    pub max_backoff: Duration,
    /// Relative jitter applied to each retry delay (default 0.2: +-20%).
    pub backoff_jitter: f64,
    /// A fetch that takes longer counts as a failure (default 60 s), so a hung CA cannot
    /// stall renewal.
    pub fetch_timeout: Duration,
    /// How often, between renewals, to check whether the wall clock jumped past the renewal
    /// time (default 30 s); zero turns the check off (renewal follows the monotonic clock
    /// only).
    pub wall_clock_check: Duration,
    /// The wall clock validity is judged on (default [`SystemTime::now`]; tests inject a
    /// jumping one).
    pub wall_clock: WallClock,
}

/// A source of wall-clock time; see [`RotationConfig::wall_clock`].
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl WallClock {
    /// The system's clock.
    pub fn system() -> Self {
        Self::new(SystemTime::now)
    }

    /// A clock that reads `now` (e.g. the system clock plus an offset a test changes).
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WallClock")
    }
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            renew_at: 0.5,
            renew_jitter: 0.1,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(150),
            backoff_jitter: 0.2,
            fetch_timeout: Duration::from_secs(60),
            wall_clock_check: Duration::from_secs(30),
            wall_clock: WallClock::system(),
        }
    }
}

/// Exponential backoff with relative jitter: `min * 2^n` capped at `max`, then multiplied
/// by a random factor in `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `min`, doubling up to `max`, each delay jittered by
    /// `+-jitter` (a fraction, e.g. 0.2).
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// The un-jittered delay for the current attempt.
    pub fn base(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The next delay; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base();
        self.attempt = self.attempt.saturating_add(1);
        let j = self.jitter;
        let factor = if j > 0.0 {
            rand::rng().random_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        base.mul_f64(factor)
    }

    /// Starts over from `min` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Renews credentials from a [`CertProvider`] at half life; see the [module docs](self).
///
/// ```no_run
/// # async fn f(provider: impl mesh_tls::CertProvider) {
/// use mesh_tls::{IdentityStore, rotation::Rotation};
/// let (store, _task) = IdentityStore::spawn(Rotation::new(provider));
/// let creds = store.ready().await; // first certificate
/// # }
/// ```
pub struct Rotation<P> {
    provider: P,
    config: RotationConfig,
}

impl<P: CertProvider> Rotation<P> {
    /// Rotation with the default (Istio) timing.
    pub fn new(provider: P) -> Self {
        Self::with_config(provider, RotationConfig::default())
    }

    /// Rotation with explicit timing.
    pub fn with_config(provider: P, config: RotationConfig) -> Self {
        Self { provider, config }
    }

    /// Runs the rotation on the current Tokio runtime, publishing into `store`, until the
    /// returned handle is aborted. Use this rather than [`IdentityStore::spawn`] when the
    /// provider needs the store itself, e.g.
    /// [`IstioCaClient::with_client_certificate`](crate::ca::IstioCaClient::with_client_certificate).
    pub fn spawn(self, store: IdentityStore) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run_loop(store))
    }

    async fn run_loop(self, store: IdentityStore) {
        let cfg = &self.config;
        let mut backoff = Backoff::new(cfg.min_backoff, cfg.max_backoff, cfg.backoff_jitter);
        // When the installed certificate expires, on the Tokio clock.
        let mut expires_at: Option<Instant> = None;
        loop {
            // When renewal is due on the wall clock (after a success only: retries follow
            // the backoff).
            let mut renew_wall = None;
            let fetched = tokio::time::timeout(cfg.fetch_timeout, self.provider.fetch())
                .await
                .unwrap_or_else(|_| {
                    Err(TlsError::Ca(format!(
                        "certificate request timed out after {:?}",
                        cfg.fetch_timeout
                    )))
                });
            let next = match fetched {
                Ok(creds) => {
                    let wall_now = cfg.wall_clock.now();
                    let (renew_in, valid_for) = schedule(&creds, cfg, wall_now);
                    match store.publish(creds) {
                        Ok(()) => {
                            backoff.reset();
                            renew_wall = Some(wall_now + renew_in);
                            let now = Instant::now();
                            expires_at = Some(now + valid_for);
                            tracing::debug!(?renew_in, "next certificate renewal scheduled");
                            now + renew_in
                        }
                        // `publish` already reported the error to the store.
                        Err(_) => Instant::now() + backoff.next_delay(),
                    }
                }
                Err(e) => {
                    store.report_error(&e);
                    Instant::now() + backoff.next_delay()
                }
            };
            // Wake up at expiry (if it comes first) to log that we now fail closed; the
            // store's status says so on its own, with the last renewal error.
            if let Some(exp) = expires_at.filter(|exp| *exp < next) {
                if !self.sleep_until(exp, renew_wall).await {
                    continue;
                }
                expires_at = None;
                tracing::warn!(
                    "workload certificate expired before it could be renewed; failing closed"
                );
            }
            self.sleep_until(next, renew_wall).await;
        }
    }

    /// Sleeps until `deadline` on the monotonic clock, or until the wall clock reaches
    /// `wall_due` (checked every `wall_clock_check`). Returns false in the second case.
    async fn sleep_until(&self, deadline: Instant, wall_due: Option<SystemTime>) -> bool {
        let check = self.config.wall_clock_check;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            if wall_due.is_some_and(|due| self.config.wall_clock.now() >= due) {
                tracing::info!("the wall clock jumped past the renewal time; renewing now");
                return false;
            }
            let wake = match check.is_zero() {
                true => deadline,
                false => deadline.min(now + check),
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

impl<P: CertProvider> CertSource for Rotation<P> {
    fn run(self: Box<Self>, store: IdentityStore) -> BoxFuture<'static, ()> {
        Box::pin((*self).run_loop(store))
    }
}

/// When to renew and how long the credentials stay valid, both relative to `now`.
///
/// Renewal is due after `renew_at` of the *remaining* lifetime, less up to `renew_jitter`
/// of it. For a freshly issued certificate that is its half life; measuring from `now`
/// rather than `not_before` keeps backdated certificates (CAs backdate `notBefore` for clock
/// skew) from looking overdue the moment they arrive. The remaining lifetime is capped at
/// the whole lifetime, so a wall clock set back before `not_before` cannot postpone renewal.
fn schedule(creds: &Credentials, cfg: &RotationConfig, now: SystemTime) -> (Duration, Duration) {
    let lifetime = creds
        .not_after
        .duration_since(creds.not_before)
        .unwrap_or_default();
    let valid_for = creds
        .not_after
        .duration_since(now)
        .unwrap_or_default()
        .min(lifetime);
    let at = cfg.renew_at.clamp(0.0, 1.0);
    let jitter = if cfg.renew_jitter > 0.0 {
        rand::rng().random_range(0.0..=cfg.renew_jitter.clamp(0.0, at))
    } else {
        0.0
    };
    // Never sooner than `min_backoff` (unless the certificate expires first): a CA that
    // hands out nearly expired certificates must not be hammered in a tight loop. One
    // already expired by our clock (a CA whose clock disagrees) is asked again after it.
    let floor = match valid_for.is_zero() {
        true => cfg.min_backoff,
        false => cfg.min_backoff.min(valid_for),
    };
    (valid_for.mul_f64(at - jitter).max(floor), valid_for)
}

#[cfg(test)]
#[cfg(feature = "dev-ca")] // certificates from the dev CA
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(150), 0.2);
        let bases = [1u64, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150];
        for base in bases {
            let d = b.next_delay().as_secs_f64();
            let base = base as f64;
            assert!(
                (base * 0.8..=base * 1.2).contains(&d),
                "delay {d} outside +-20% of {base}"
            );
        }
        b.reset();
        assert_eq!(b.base(), Duration::from_secs(1));
    }

    fn creds_valid_for(ttl: Duration) -> Credentials {
        let td = mesh_core::TrustDomain::new("cluster.local").unwrap();
        let ca = crate::dev_ca::DevCa::new(td.clone()).unwrap();
        let id = mesh_core::SpiffeId::istio(&td, "default", "web").unwrap();
        let mut opts = crate::dev_ca::IssueOptions::new(&id, ttl);
        opts.not_before = SystemTime::now();
        ca.issue_with(opts).unwrap()
    }

    #[test]
    fn schedule_renews_at_half_of_the_remaining_lifetime() {
        let cfg = RotationConfig::default();
        let creds = creds_valid_for(Duration::from_secs(1000));
        let now = SystemTime::now();
        for _ in 0..50 {
            let (renew_in, valid_for) = schedule(&creds, &cfg, now);
            assert!(valid_for > Duration::from_secs(998) && valid_for <= Duration::from_secs(1000));
            let frac = renew_in.as_secs_f64() / valid_for.as_secs_f64();
            assert!(
                (0.4..=0.5).contains(&frac),
                "renewal at {frac} of the lifetime"
            );
        }
    }

    #[test]
    fn schedule_never_renews_in_a_tight_loop() {
        let cfg = RotationConfig::default();
        // 1.x s left: half of it would be < 1 s; renew after min_backoff instead.
        let creds = creds_valid_for(Duration::from_secs(2));
        let (renew_in, valid_for) = schedule(&creds, &cfg, SystemTime::now());
        assert!(valid_for < Duration::from_secs(2));
        assert_eq!(renew_in, Duration::from_secs(1).min(valid_for));
        // Expired by our clock (publish rejects it, unless the clocks disagree): asked
        // again after min_backoff, not at once.
        let (renew_in, valid_for) =
            schedule(&creds, &cfg, SystemTime::now() + Duration::from_secs(10));
        assert_eq!(
            (renew_in, valid_for),
            (Duration::from_secs(1), Duration::ZERO)
        );
    }

    #[test]
    fn schedule_caps_the_remaining_lifetime_at_the_whole_lifetime() {
        // A wall clock set back an hour: the certificate looks valid for an hour more than
        // it lives; renewal stays at half of its 1,000 s.
        let cfg = RotationConfig::default();
        let creds = creds_valid_for(Duration::from_secs(1000));
        let (renew_in, valid_for) =
            schedule(&creds, &cfg, SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(valid_for, Duration::from_secs(1000));
        assert!(renew_in <= Duration::from_secs(500), "{renew_in:?}");
    }

    #[test]
    fn backoff_survives_many_attempts() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(150), 0.0);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(150));
    }
}
