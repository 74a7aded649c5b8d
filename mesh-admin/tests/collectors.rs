//! The scrape-time collectors of identity, xDS and per-cluster upstream state in one
//! registry, as the admin server exports them: names, labels and values, and the exposition
//! checked by `promtool` (installed by scripts/peers/promtool.sh).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use mesh_admin::{
    ClusterSources, IdentityCollector, UpstreamMetrics, XdsCollector, XdsStatusCache,
};
use mesh_core::model::CircuitBreakers;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_resilience::circuit_breaker::CircuitBreaker;
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::verify::VerifyStats;
use mesh_xds::ResourceType;
use mesh_xds::client::{ClientStatus, ResourceState, ResourceStatus};
use prometheus_client::registry::Registry;

fn xds_status() -> ClientStatus {
    let r = |kind, name: &str, state| ResourceStatus {
        kind,
        name: name.into(),
        state,
        version: "1".into(),
        last_error: None,
        last_update: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        has_value: true,
    };
    ClientStatus {
        connected: true,
        ready: false,
        resources: vec![
            r(ResourceType::Listener, "reviews:9080", ResourceState::Acked),
            r(
                ResourceType::Cluster,
                "outbound|9080||reviews",
                ResourceState::Nacked,
            ),
        ],
        type_versions: vec![(ResourceType::Listener, "1".into())],
    }
}

/// The exposition of a registry with the three collectors, and the breaker it tracks (kept
/// alive: a dropped breaker's cluster leaves the scrape).
fn exposition() -> (String, std::sync::Arc<CircuitBreaker>) {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap();
    let upstream = UpstreamMetrics::new();
    let breaker = CircuitBreaker::new("outbound|9080||ratings", &CircuitBreakers::default());
    upstream.track(
        "outbound|9080||ratings",
        ClusterSources {
            breaker: Some(breaker.clone()),
            ..Default::default()
        },
    );
    let mut registry = Registry::default();
    upstream.register(&mut registry);
    let mesh = registry.sub_registry_with_prefix("mesh");
    mesh.register_collector(Box::new(
        IdentityCollector::new(store).with_verifier("server", VerifyStats::new()),
    ));
    mesh.register_collector(Box::new(XdsCollector::new(XdsStatusCache::fixed(
        xds_status(),
    ))));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    (text, breaker)
}

#[test]
fn identity_xds_and_upstream_families() {
    let (text, _breaker) = exposition();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    };
    for (series, want) in [
        ("mesh_identity_certificate_state{state=\"available\"}", 1.0),
        (
            "mesh_identity_certificate_state{state=\"initializing\"}",
            0.0,
        ),
        ("mesh_identity_rotations_total", 1.0),
        ("mesh_identity_failures_total", 0.0),
        ("mesh_tls_peers_accepted_total{side=\"server\"}", 0.0),
        ("mesh_xds_connected", 1.0),
        ("mesh_xds_ready", 0.0),
        ("mesh_xds_resources{type=\"LDS\",state=\"ACKED\"}", 1.0),
        ("mesh_xds_resources{type=\"CDS\",state=\"NACKED\"}", 1.0),
        ("mesh_xds_resources{type=\"CDS\",state=\"ACKED\"}", 0.0),
        (
            "mesh_xds_last_update_timestamp_seconds{type=\"LDS\"}",
            1.7e9,
        ),
        (
            "mesh_cluster_upstream_rq_pending_overflow_total{cluster_name=\"outbound|9080||ratings\"}",
            0.0,
        ),
    ] {
        assert_eq!(value(series), want, "{series}");
    }
    assert!(
        text.contains("# TYPE mesh_identity_certificate_expiry_timestamp_seconds gauge"),
        "{text}"
    );
    assert!(
        text.contains("mesh_tls_peers_rejected_total{side=\"server\",rule="),
        "{text}"
    );
}

#[test]
fn promtool_accepts_the_exposition() {
    let promtool = mesh_test_support::require_peer!("MESH_PROMTOOL_BIN");
    let (text, _breaker) = exposition();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool ({:?}):\n{report}\n{text}",
        out.status
    );
}
