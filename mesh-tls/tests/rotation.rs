//! Rotation schedule on a paused Tokio clock with a fake CertProvider: renewal at half
//! life, backoff bounds, fail closed at expiry, recovery, wall-clock jumps.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::rotation::{Rotation, RotationConfig, WallClock};
use mesh_tls::{CertProvider, CertSource, Credentials, IdentityStatus, IdentityStore, TlsError};
use tokio::time::Instant;

/// What the fake CA does on each call.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Issue a certificate valid for this long (real time) from now.
    Issue(Duration),
    Fail,
    /// Never answer.
    Hang,
}

#[derive(Clone)]
struct FakeCa {
    ca: Arc<DevCa>,
    /// Answers in order; the last one repeats.
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Tokio instants of every call.
    calls: Arc<Mutex<Vec<Instant>>>,
}

impl FakeCa {
    fn new(script: &[Answer]) -> Self {
        Self {
            ca: Arc::new(common::ca()),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            calls: Default::default(),
        }
    }

    /// Replaces the script (e.g. the CA comes back).
    fn set(&self, script: &[Answer]) {
        *self.script.lock().unwrap() = script.iter().copied().collect();
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

impl CertProvider for FakeCa {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, TlsError>> {
        self.calls.lock().unwrap().push(Instant::now());
        let answer = {
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                *script.front().unwrap()
            }
        };
        let result = match answer {
            Answer::Issue(ttl) => Ok(self.ca.issue(&common::id("web"), ttl).unwrap()),
            Answer::Fail => Err(TlsError::Ca("fake CA is down".into())),
            Answer::Hang => return Box::pin(std::future::pending()),
        };
        Box::pin(async move { result })
    }
}

fn spawn(fake: &FakeCa) -> IdentityStore {
    let store = IdentityStore::new();
    let source: Box<Rotation<FakeCa>> = Box::new(Rotation::new(fake.clone()));
    tokio::spawn(source.run(store.clone()));
    store
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::test(start_paused = true)]
async fn renews_at_half_life_with_jitter() {
    let fake = FakeCa::new(&[Answer::Issue(Duration::from_secs(100))]);
    let store = spawn(&fake);
    store.ready().await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let calls = fake.calls();
    assert!(
        calls.len() >= 3,
        "expected renewals, got {} calls",
        calls.len()
    );
    for pair in calls.windows(2) {
        // Remaining lifetime at issue is just under 100 s (second-granular certificates);
        // renewal is due at 50% of it, up to 10% earlier.
        let gap = secs(pair[1] - pair[0]);
        assert!(
            (39.0..=50.0).contains(&gap),
            "renewal after {gap} s, want 40..50 s"
        );
    }
    assert_eq!(store.stats().rotations as usize, calls.len());
    assert!(matches!(store.status(), IdentityStatus::Available { .. }));
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_from_1s_to_150s() {
    let fake = FakeCa::new(&[Answer::Fail]);
    let store = spawn(&fake);
    tokio::time::sleep(Duration::from_secs(1500)).await;
    let calls = fake.calls();
    assert!(calls.len() >= 12, "only {} attempts", calls.len());
    for (i, pair) in calls.windows(2).enumerate() {
        let base = 2f64.powi(i as i32).min(150.0);
        let gap = secs(pair[1] - pair[0]);
        assert!(
            (base * 0.8 - 0.001..=base * 1.2 + 0.001).contains(&gap),
            "retry {i}: waited {gap} s, want {base} s +-20%"
        );
    }
    // Fail closed before the first certificate; every failure is recorded.
    assert_eq!(store.status(), IdentityStatus::Initializing);
    assert!(store.current().is_none());
    let stats = store.stats();
    assert_eq!(stats.failures as usize, calls.len());
    assert!(stats.last_error.unwrap().contains("fake CA is down"));
}

#[tokio::test(start_paused = true)]
async fn keeps_valid_cert_on_failure_fails_closed_at_expiry_and_recovers() {
    let fake = FakeCa::new(&[Answer::Issue(Duration::from_secs(3)), Answer::Fail]);
    let store = spawn(&fake);
    let first = store.ready().await;

    // Renewal (at ~1.5 s) fails: the still-valid certificate stays in use.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fake.calls().len() >= 2, "renewal was not attempted");
    assert!(store.stats().failures >= 1);
    let current = store
        .current()
        .expect("still-valid certificate was dropped");
    assert_eq!(current.chain[0], first.chain[0]);

    // The paused Tokio clock does not move SystemTime: let the certificate really expire.
    let wait = first
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    std::thread::sleep(wait + Duration::from_millis(1100));
    assert!(
        store.current().is_none(),
        "expired certificate still served"
    );
    match store.status() {
        IdentityStatus::Unavailable { reason } => {
            assert!(reason.contains("expired"), "{reason}");
            assert!(reason.contains("fake CA is down"), "{reason}");
        }
        other => panic!("want Unavailable, got {other:?}"),
    }
    assert!(store.require().is_err());

    // The CA comes back: the next retry (at most 150 s + 20% away) installs a new one.
    fake.set(&[Answer::Issue(Duration::from_secs(3600))]);
    tokio::time::sleep(Duration::from_secs(181)).await;
    let renewed = store.current().expect("no recovery after the CA came back");
    assert_ne!(renewed.chain[0], first.chain[0]);
    assert!(matches!(store.status(), IdentityStatus::Available { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_hung_request_times_out_and_is_retried() {
    let fake = FakeCa::new(&[Answer::Hang, Answer::Issue(Duration::from_secs(3600))]);
    let store = spawn(&fake);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(store.status(), IdentityStatus::Initializing);
    // 60 s fetch timeout, then the first retry after ~1 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(matches!(store.status(), IdentityStatus::Available { .. }));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    let gap = secs(calls[1] - calls[0]);
    assert!((60.8..=61.2).contains(&gap), "retry after {gap} s");
    assert_eq!(store.stats().failures, 1);
}

/// The system clock plus an offset the test moves (an NTP step, a resumed VM).
#[derive(Clone, Default)]
struct JumpingClock(Arc<Mutex<(bool, Duration)>>);

impl JumpingClock {
    fn jump(&self, forward: bool, by: Duration) {
        *self.0.lock().unwrap() = (forward, by);
    }

    fn wall_clock(&self) -> WallClock {
        let offset = self.0.clone();
        WallClock::new(move || match *offset.lock().unwrap() {
            (true, by) => SystemTime::now() + by,
            (false, by) => SystemTime::now() - by,
        })
    }

    /// A rotation of `fake` on this clock, checked every 30 s (the default).
    fn spawn(&self, fake: &FakeCa) -> IdentityStore {
        let config = RotationConfig {
            wall_clock: self.wall_clock(),
            ..RotationConfig::default()
        };
        let store = IdentityStore::new();
        let source = Box::new(Rotation::with_config(fake.clone(), config));
        tokio::spawn(source.run(store.clone()));
        store
    }
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_past_half_life_renews_at_once() {
    // One-hour certificates: the monotonic timer would renew after 27-30 minutes.
    let fake = FakeCa::new(&[Answer::Issue(Duration::from_secs(3600))]);
    let clock = JumpingClock::default();
    let store = clock.spawn(&fake);
    store.ready().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.calls().len(), 1, "renewed before half life");

    // The wall clock steps 40 minutes forward: past half life, short of expiry.
    clock.jump(true, Duration::from_secs(40 * 60));
    let jumped = Instant::now();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "no renewal within 31 s of the jump");
    assert!(secs(calls[1] - jumped) <= 30.0);
    assert_eq!(store.stats().rotations, 2);

    // A second jump, past the new certificate's expiry: renewed again within the check.
    clock.jump(true, Duration::from_secs(3 * 3600));
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(
        fake.calls().len() >= 3,
        "no renewal after a jump past expiry"
    );
    // The CA's certificates look expired to the jumped clock: asked again every second
    // at most (min_backoff), not in a tight loop.
    let before = fake.calls().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = fake.calls().len() - before;
    assert!((5..=11).contains(&asked), "{asked} requests in 10 s");
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_backward_does_not_stall_renewal() {
    // 100 s certificates (backdated 60 s: 160 s lifetimes); renewal every 40-80 s.
    let fake = FakeCa::new(&[Answer::Issue(Duration::from_secs(100))]);
    let clock = JumpingClock::default();
    let store = clock.spawn(&fake);
    store.ready().await;

    // The wall clock steps an hour back: every certificate now looks valid for an hour
    // longer than it lives, and the next ones are not yet valid by it.
    clock.jump(false, Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(300)).await;
    let calls = fake.calls();
    assert!(
        calls.len() >= 4,
        "renewal stalled: {} requests in 300 s",
        calls.len()
    );
    for pair in calls.windows(2) {
        let gap = secs(pair[1] - pair[0]);
        assert!(gap <= 80.0, "renewal after {gap} s");
    }
    // Still serving, no failure recorded.
    assert!(store.current().is_some());
    assert_eq!(store.stats().failures, 0);
    assert_eq!(store.stats().rotations as usize, calls.len());
}
