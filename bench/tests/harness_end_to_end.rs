//! The harness end to end, briefly, on the in-process HTTP cases (1-3, 8, 9): every case starts, every
//! load runs, and numbers come out (no timing assertions: speed is measured by
//! `scripts/bench`, not by tests).

use std::time::Duration;

use mesh_bench::cases::CaseId;
use mesh_bench::harness::{self, Options};
use mesh_bench::loadgen::Load;
use mesh_bench::{report, svg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_of_the_in_process_cases_produces_numbers() {
    let opts = Options {
        rounds: 1,
        duration: Duration::from_millis(100),
        warmup: Duration::from_millis(20),
        cases: vec![
            CaseId::HyperH1,
            CaseId::HyperMtls,
            CaseId::Mesh,
            CaseId::HyperMtlsH1,
            CaseId::MeshH2,
        ],
        ..Options::quick()
    };
    let results = harness::run(&opts).await.unwrap();
    for c in &results.cases {
        assert!(
            c.not_measured.is_none(),
            "{:?}: {:?}",
            c.case,
            c.not_measured
        );
    }
    assert_eq!(results.measurements.len(), 5 * Load::ALL.len());
    for m in &results.measurements {
        assert!(
            m.ok > 0,
            "{:?} at {}: no answer ({:?})",
            m.case,
            m.load,
            m.first_error
        );
        assert_eq!(
            m.errors, 0,
            "{:?} at {}: {:?}",
            m.case, m.load, m.first_error
        );
        assert!(m.p50_us > 0.0 && m.p99_us >= m.p50_us && m.rps > 0.0);
        assert!(
            m.cpu_us_per_req > 0.0,
            "{:?} at {}: no CPU time counted",
            m.case,
            m.load
        );
        assert!(m.rss.is_empty(), "in-process cases have no proxy process");
        // The harness's counting allocator sees every in-process request allocate (hyper's
        // buffers at least), and counts bytes with them.
        let allocs = m
            .allocs_per_req
            .expect("in-process allocations are counted");
        assert!(
            allocs >= 1.0,
            "{:?} at {}: {allocs} allocations",
            m.case,
            m.load
        );
        assert!(m.alloc_bytes_per_req.is_some_and(|b| b > 0.0));
    }

    let rows = report::summarize(&results);
    assert_eq!(rows.len(), 15);
    let md = report::markdown(&results, &[], Some("plot.svg"));
    assert!(md.starts_with(report::BEGIN) && md.trim_end().ends_with(report::END));
    assert!(md.contains("| 3. in-process mesh |"));
    // Each mesh case is compared with the baseline of its own protocol.
    assert!(md.contains("| 3. in-process mesh |") && md.contains("| 9. in-process mesh h2 |"));
    for line in md.lines() {
        if line.starts_with("| 3. in-process mesh |") {
            assert_eq!(line.split(" | ").nth(7), Some("8"), "{line}");
        }
        if line.starts_with("| 9. in-process mesh h2 |") {
            assert_eq!(line.split(" | ").nth(7), Some("2"), "{line}");
        }
    }
    assert!(md.contains("| #5 #19 | case 3 p50 at 2,000 rps / case 8 |"));
    assert!(md.contains("| #19 | case 9 allocations per request at saturation - case 2 |"));
    // Cases 4 and 5 were not asked for: their targets are reported as not measured.
    assert!(md.contains(
        "| #9 | proxy pair throughput at saturation / Envoy pair | — | >= 1.50x | not measured |"
    ));
    let plot = svg::plot(&rows);
    assert!(plot.contains("2. hyper+rustls mTLS h2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_of_the_hbone_case_produces_numbers() {
    let opts = Options {
        rounds: 1,
        duration: Duration::from_millis(100),
        warmup: Duration::from_millis(20),
        cases: vec![CaseId::HyperMtls, CaseId::Hbone],
        ..Options::quick()
    };
    let results = harness::run(&opts).await.unwrap();
    for m in results
        .measurements
        .iter()
        .filter(|m| m.case == CaseId::Hbone)
    {
        assert!(m.ok > 0 && m.errors == 0, "{m:?}");
    }
    assert_eq!(
        results
            .measurements
            .iter()
            .filter(|m| m.case == CaseId::Hbone)
            .count(),
        Load::ALL.len()
    );
    let md = report::markdown(&results, &[], None);
    assert!(md.contains("| 11. HBONE in-process |"), "{md}");
    assert!(md.contains("HBONE in-process throughput at saturation / case 2"));
}

/// `mesh-bench --idle` end to end, briefly: both apps start (the mesh one resolving its 10
/// clusters from the embedded control plane and routing its first request), and the table
/// reports resident memory and wake-ups for each.
#[test]
fn idle_footprint_reports_both_apps() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["--idle", "--idle-secs", "1"])
        .env_remove("MESH_PROXY_BIN")
        .env_remove("MESH_ENVOY_BIN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(" app")).collect();
    assert!(rows.iter().any(|l| l.starts_with("| plain app")), "{text}");
    assert!(
        rows.iter()
            .any(|l| l.starts_with("| mesh app") && l.contains("10 clusters, 100 endpoints")),
        "{text}"
    );
    assert!(text.contains("Mesh app - plain app RSS:"), "{text}");
    // Each row splits its RSS into anonymous and file-backed pages, which add up to it
    // (each rounded to 0.1 MiB) and both of which a running process has.
    for row in rows
        .iter()
        .filter(|l| l.starts_with("| plain app") || l.starts_with("| mesh app"))
    {
        let mib: Vec<f64> = row
            .split('|')
            .filter_map(|c| c.trim().strip_suffix(" MiB")?.parse().ok())
            .collect();
        let [rss, anon, file] = mib[..] else {
            panic!("expected RSS, anonymous and file-backed columns: {row}");
        };
        assert!(anon > 0.0 && file > 0.0, "{row}");
        assert!((anon + file - rss).abs() <= 0.2, "{row}");
    }
}

/// `mesh-bench --churn` end to end, briefly: one quiet and one churned second of case 9 at
/// 2,000 rps; the churned run edits the endpoints every 100 ms and rotates the client's
/// certificate, and no request fails meanwhile.
#[test]
fn churn_edits_endpoints_and_rotates_without_failures() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["--churn", "--rounds", "1", "--duration", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cells = |run: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("| 0 | {run} |")))
            .unwrap_or_else(|| panic!("no {run} row in\n{text}"));
        line.split('|').map(|c| c.trim().to_owned()).collect()
    };
    // | round | run | p50 | p99 | max | ok | errors | edits | rotations |
    let quiet = cells("quiet");
    let churn = cells("churn");
    assert_eq!(quiet[7], "0", "{text}");
    assert_eq!(churn[7], "0", "requests failed under churn:\n{text}");
    assert!(churn[6].parse::<u64>().unwrap() > 0, "{text}");
    assert!(churn[8].parse::<u64>().unwrap() >= 5, "edits: {text}");
    assert!(churn[9].parse::<u64>().unwrap() >= 1, "rotations: {text}");
    assert_eq!(quiet[8], "0", "{text}");
    assert!(text.contains("Median p99: quiet"), "{text}");
}

/// `mesh-bench --cold-start 1` end to end without the proxies: the in-process workload
/// (a child process joining the mesh through the embedded control plane's Istio CA and
/// ADS) routes its mTLS request, and its row and milestones come out with numbers.
#[test]
fn cold_start_times_the_in_process_workload() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-bench"))
        .args(["--cold-start", "1"])
        .env_remove("MESH_PROXY_BIN")
        .env_remove("MESH_ENVOY_BIN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ms = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} row in\n{text}"));
        line.split('|')
            .nth(2)
            .unwrap()
            .trim()
            .strip_suffix(" ms")
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = ms("| in-process workload");
    assert!(total > 0.0, "{text}");
    // Each milestone came after the process started and no later than the response.
    let milestones = [
        "| main entered",
        "| identity issued",
        "| first xDS response",
        "| routes ready",
        "| request sent",
        "| response",
    ];
    for m in milestones {
        let v = ms(m);
        assert!(v > 0.0 && v <= total, "{m}: {v} ms of {total}\n{text}");
    }
    assert_eq!(ms("| response"), total, "{text}");
}
