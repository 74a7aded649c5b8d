//! Outlier detection's failure-percentage threshold, its local-origin detectors and its
//! ejection times, on real traffic (the detectors' other fields: `clusters.rs`).

use super::harness::*;

/// The listener `<cluster>.test:80`, every request to `cluster`.
pub(super) fn via(cluster: &str) -> Listener {
    let vh = VirtualHost {
        routes: vec![forward(prefix("/"), to(cluster))],
        ..Default::default()
    };
    listener(&format!("{cluster}.test:80"), hcm(routes(vh)))
}

/// A backend that answers 503 to every second request it gets: 50% failures.
async fn flaky() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let calls = calls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    let status = if n % 2 == 1 { 503 } else { 200 };
                    let resp = Response::builder()
                        .status(status)
                        .header("x-backend", "flaky")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// A loopback port nothing listens on: connecting fails (a local-origin error).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn pct(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

/// Outlier detection with every detector unenforced, so that a case enforces only the one
/// under test.
fn quiet() -> OutlierDetection {
    OutlierDetection {
        enforcing_consecutive_5xx: pct(0),
        enforcing_success_rate: pct(0),
        enforcing_consecutive_gateway_failure: pct(0),
        enforcing_consecutive_local_origin_failure: pct(0),
        enforcing_local_origin_success_rate: pct(0),
        enforcing_failure_percentage: pct(0),
        enforcing_failure_percentage_local_origin: pct(0),
        ..Default::default()
    }
}

/// A random-balanced cluster `name` over backend a and `other`, with `od` sweeping every
/// 150 ms and ejecting for a minute.
fn detected(name: &str, a: u16, other: u16, od: OutlierDetection) -> Cluster {
    let mut c = cluster(name, &[a, other], None);
    c.outlier_detection = Some(OutlierDetection {
        interval: ms(150),
        base_ejection_time: ms(60_000),
        max_ejection_percent: pct(50),
        ..od
    });
    c
}

impl Fixture {
    /// How many of `n` requests to `<cluster>.test:80` failed.
    async fn failed(&self, cluster: &str, n: usize) -> usize {
        let mut failed = 0;
        for _ in 0..n {
            let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
            failed += usize::from(got.status != 200);
        }
        failed
    }

    /// How many requests to `<cluster>.test:80` failed in `run` of back-to-back requests.
    async fn failed_during(&self, cluster: &str, run: Duration) -> usize {
        let (started, mut failed) = (Instant::now(), 0);
        while started.elapsed() < run {
            let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
            failed += usize::from(got.status != 200);
        }
        failed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_thresholds_and_local_origin_detectors_eject_or_spare() {
    let fp = |threshold: u32| OutlierDetection {
        failure_percentage_threshold: pct(threshold),
        enforcing_failure_percentage: pct(100),
        failure_percentage_minimum_hosts: pct(2),
        failure_percentage_request_volume: pct(5),
        ..quiet()
    };
    // Local-origin errors counted apart; the detectors' volumes met by 2 hosts and 5
    // requests.
    let split = |od: OutlierDetection| OutlierDetection {
        split_external_local_origin_errors: true,
        failure_percentage_threshold: pct(50),
        failure_percentage_minimum_hosts: pct(2),
        failure_percentage_request_volume: pct(5),
        success_rate_minimum_hosts: pct(2),
        success_rate_request_volume: pct(5),
        success_rate_stdev_factor: pct(500),
        ..od
    };
    let names = [
        "fp-20",
        "fp-80",
        "local-fp",
        "local-fp-external",
        "local-sr",
        "local-sr-external",
    ];
    let mut flaky_ports = Vec::new();
    for _ in 0..2 {
        flaky_ports.push(flaky().await);
    }
    let closed = closed_port().await;
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        vec![
            // a and a backend failing half its requests.
            detected("fp-20", p.a, flaky_ports[0], fp(20)),
            detected("fp-80", p.a, flaky_ports[1], fp(80)),
            // a and a port that refuses connections.
            detected(
                "local-fp",
                p.a,
                closed,
                split(OutlierDetection {
                    enforcing_failure_percentage_local_origin: pct(100),
                    ..quiet()
                }),
            ),
            detected(
                "local-fp-external",
                p.a,
                closed,
                split(OutlierDetection {
                    enforcing_failure_percentage: pct(100),
                    ..quiet()
                }),
            ),
            detected(
                "local-sr",
                p.a,
                closed,
                split(OutlierDetection {
                    enforcing_local_origin_success_rate: pct(100),
                    ..quiet()
                }),
            ),
            detected(
                "local-sr-external",
                p.a,
                closed,
                split(OutlierDetection {
                    enforcing_success_rate: pct(100),
                    ..quiet()
                }),
            ),
        ]
    })
    .await;
    // Traffic to every cluster, then three intervals for the detectors to run.
    for name in names {
        f.failed(name, 40).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = BTreeMap::new();
    for name in names {
        after.insert(name, f.failed(name, 40).await);
    }
    // OutlierDetection.failure_percentage_threshold: the 50%-failing endpoint is at or over
    // 20% (ejected: no failure left) and under 80% (spared: about a quarter of the requests
    // still fail).
    assert_eq!(after["fp-20"], 0, "{after:?}");
    assert!(after["fp-80"] >= 3, "{after:?}");
    // OutlierDetection.enforcing_failure_percentage_local_origin: the refusing port's
    // connect failures are 100% local-origin failures: ejected. With the split, the
    // external detector (enforcing_failure_percentage) does not count them: spared.
    assert_eq!(after["local-fp"], 0, "{after:?}");
    assert!(after["local-fp-external"] >= 8, "{after:?}");
    // OutlierDetection.enforcing_local_origin_success_rate: its local-origin success rate
    // (0%) is below the mean (50%) - 0.5 stdev: ejected; the external success rate does
    // not count connect failures: spared.
    assert_eq!(after["local-sr"], 0, "{after:?}");
    assert!(after["local-sr-external"] >= 8, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_times_are_capped_and_jittered() {
    // a and the backend that always answers 503, ejected on its first 503, swept every
    // 25 ms.
    let ejecting = |name: &str, p: &Ports, od: OutlierDetection| {
        let mut c = cluster(name, &[p.a, p.broken], None);
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: pct(1),
            interval: ms(25),
            max_ejection_percent: pct(50),
            ..od
        });
        c
    };
    let names = ["capped", "uncapped", "jittered", "steady"];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        vec![
            ejecting(
                "capped",
                p,
                OutlierDetection {
                    base_ejection_time: ms(50),
                    max_ejection_time: ms(50),
                    ..Default::default()
                },
            ),
            ejecting(
                "uncapped",
                p,
                OutlierDetection {
                    base_ejection_time: ms(50),
                    ..Default::default()
                },
            ),
            ejecting(
                "jittered",
                p,
                OutlierDetection {
                    base_ejection_time: ms(50),
                    max_ejection_time_jitter: ms(3_600_000),
                    ..Default::default()
                },
            ),
            ejecting(
                "steady",
                p,
                OutlierDetection {
                    base_ejection_time: ms(50),
                    ..Default::default()
                },
            ),
        ]
    })
    .await;
    // OutlierDetection.max_ejection_time: each return of the failing endpoint costs one
    // 503 and ejects it again. Capped at 50 ms it is back about every 60-100 ms (25-40
    // returns in 2.5 s); uncapped its ejections last 50, 100, 150... ms (about 10 returns).
    let capped = f.failed_during("capped", Duration::from_millis(2500)).await;
    let uncapped = f
        .failed_during("uncapped", Duration::from_millis(2500))
        .await;
    assert!(
        capped >= uncapped + 6,
        "capped: {capped} returns, uncapped: {uncapped}"
    );
    // OutlierDetection.max_ejection_time_jitter: both eject the failing endpoint for 50 ms,
    // one plus up to an hour at random. A second later the steady one has it back (a 503
    // again); the jittered one (but for a 1 in 3,600 chance) does not.
    for name in ["jittered", "steady"] {
        assert!(f.failed(name, 20).await >= 1, "{name}: never ejected");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(f.failed("steady", 20).await >= 1, "steady: still ejected");
    assert_eq!(f.failed("jittered", 20).await, 0, "jittered: back already");
}
