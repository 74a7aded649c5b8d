//! The demo under a real istiod (`--control-plane istiod`, issue 10): the same Bookinfo
//! workloads take their certificates and config from istiod (`MESH_ISTIOD_BIN`); the
//! weighted split and the header route must be observed over mTLS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use demo::{ControlPlaneKind, DemoOptions, run};

/// The demo listens on fixed ports: one run at a time in this binary.
static DEMO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_under_istiod() {
    let Some(bin) = mesh_test_support::peer("MESH_ISTIOD_BIN") else {
        return;
    };
    let _one = DEMO.lock().await;
    let opts = DemoOptions {
        duration: Some(Duration::from_secs(3)),
        rate: 100,
        jason_percent: 20,
        admin_addr: ([127, 0, 0, 1], 0).into(),
        quiet: true,
        control_plane: ControlPlaneKind::Istiod,
        istiod_bin: Some(bin),
        ..Default::default()
    };
    let summary = run(opts, std::future::pending()).await.expect("demo runs");
    println!("{}", summary.render());
    let c = &summary.counts;
    let get = |r: &str, s: &str| c.by_route.get(&(r.into(), s.into())).copied().unwrap_or(0);
    let split = get("split", "v1") + get("split", "v2") + get("split", "v3");
    assert!(split >= 150, "too few split requests: {split}");
    // istiod's 90/10 split (binomial sd at n = 240 is about 2 points).
    let share = summary.v3_share();
    assert!((0.03..=0.17).contains(&share), "v3 share {share}");
    assert_eq!(get("split", "v2"), 0, "v2 only through the header route");
    assert!(get("jason", "v2") > 0);
    assert_eq!(
        get("jason", "v1") + get("jason", "v3"),
        0,
        "jason always v2"
    );
    let sa = |s: &str| format!("spiffe://cluster.local/ns/default/sa/{s}");
    for (client, server) in [
        ("loadgen", "productpage"),
        ("productpage", "reviews"),
        ("productpage", "details"),
        ("reviews", "ratings"),
    ] {
        assert!(
            c.peers.contains_key(&(sa(client), sa(server))),
            "{client} -> {server} not seen: {:?}",
            c.peers
        );
    }
    assert_eq!(c.errors.values().sum::<u64>(), 0, "errors: {:?}", c.errors);
    assert!(summary.passed());
}

/// The `demo` binary's stderr after a normal run of `args` and its stop.
fn demo_stderr(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--duration", "3s", "--quiet", "--admin", "127.0.0.1:0"])
        .args(["--admin-grpc", "127.0.0.1:0"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The demo binary's normal stop (embedded control plane) prints nothing on stderr.
#[test]
fn a_normal_stop_prints_no_warning() {
    let _one = DEMO.blocking_lock();
    assert_eq!(demo_stderr(&[]), "");
}

/// Captured log output.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Under istiod, a normal stop closes the workloads' xDS clients before istiod stops:
/// nothing is logged at WARN or above, during the run or in the second after it (they
/// used to log `xDS stream failed ... h2 protocol error` as istiod went away under them).
/// Current-thread runtime: the log capture is this thread's.
#[tokio::test]
async fn a_normal_stop_under_istiod_logs_no_warning() {
    let Some(bin) = mesh_test_support::peer("MESH_ISTIOD_BIN") else {
        return;
    };
    let _one = DEMO.lock().await;
    let log = Log::default();
    let sink = log.clone();
    let _capture = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish(),
    );
    let opts = DemoOptions {
        duration: Some(Duration::from_secs(2)),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        admin_grpc_addr: ([127, 0, 0, 1], 0).into(),
        quiet: true,
        control_plane: ControlPlaneKind::Istiod,
        istiod_bin: Some(bin),
        ..Default::default()
    };
    run(opts, std::future::pending()).await.expect("demo runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert_eq!(log, "", "warnings or errors logged");
}
