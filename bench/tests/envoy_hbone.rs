//! Case 12 (two Envoy sidecars over HBONE) end to end, briefly: both Envoys start from the
//! generated configs, every load's requests pass through the tunnel, and the report
//! compares case 11 with it. Needs Envoy (`MESH_ENVOY_BIN`).

use std::time::Duration;

use mesh_bench::cases::CaseId;
use mesh_bench::harness::{self, Options};
use mesh_bench::loadgen::Load;
use mesh_bench::report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_of_the_envoy_hbone_pair_produces_numbers() {
    let envoy = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let opts = Options {
        rounds: 1,
        duration: Duration::from_millis(200),
        warmup: Duration::from_millis(50),
        cases: vec![CaseId::Hbone, CaseId::EnvoyHbone],
        envoy_bin: Some(envoy),
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
    let envoy_runs: Vec<_> = results
        .measurements
        .iter()
        .filter(|m| m.case == CaseId::EnvoyHbone)
        .collect();
    assert_eq!(envoy_runs.len(), Load::ALL.len());
    for m in envoy_runs {
        assert!(m.ok > 0 && m.errors == 0, "{m:?}");
        // Both Envoys' CPU and memory are counted.
        assert!(!m.rss.is_empty(), "{m:?}");
    }
    let md = report::markdown(&results, &[], None);
    assert!(md.contains("| 12. Envoy HBONE pair |"), "{md}");
    assert!(
        md.contains("HBONE in-process throughput at saturation / case 12 (Envoy HBONE pair)"),
        "{md}"
    );
}
