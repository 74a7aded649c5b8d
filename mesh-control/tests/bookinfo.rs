//! The Bookinfo config in examples/config/bookinfo validates clean and means what it says.

use std::path::PathBuf;

use mesh_control::istio::api::{Action, MtlsMode, SimpleLb, TlsMode};
use mesh_control::istio::{LoadReport, MeshConfig};

fn bookinfo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo")
}

#[test]
fn validates_clean_without_warnings() {
    let report = LoadReport::from_dir(&bookinfo_dir()).unwrap();
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    assert_eq!(report.resources.len(), 22);
}

#[test]
fn snapshot_has_services_workloads_routes_and_policies() {
    let (config, _) = MeshConfig::load_dir(bookinfo_dir()).unwrap();
    let hosts: Vec<&str> = config.services.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "details.default.svc.cluster.local",
            "productpage.default.svc.cluster.local",
            "ratings.default.svc.cluster.local",
            "reviews.default.svc.cluster.local",
        ]
    );

    // Every workload on 127.0.0.1 with its own port and an identity.
    let reviews = &config.services["reviews.default.svc.cluster.local"];
    let eps: Vec<(String, u32, String)> = reviews
        .workloads
        .iter()
        .map(|w| {
            (
                w.entry.labels["version"].clone(),
                w.port_for(&reviews.ports[0]),
                w.identity_path(),
            )
        })
        .collect();
    assert_eq!(
        eps,
        [
            ("v1".into(), 19082, "ns/default/sa/reviews".into()),
            ("v2".into(), 19083, "ns/default/sa/reviews".into()),
            ("v3".into(), 19084, "ns/default/sa/reviews".into()),
        ]
    );
    let mut all_ports: Vec<u32> = config
        .services
        .values()
        .flat_map(|s| s.workloads.iter().map(|w| w.port_for(&s.ports[0])))
        .collect();
    all_ports.sort();
    all_ports.dedup();
    assert_eq!(all_ports.len(), 6, "every workload has its own port");

    // reviews: header route to v2, then a 90/10 split between v1 and v3 with retries.
    let vs = config
        .virtual_service_for("reviews.default.svc.cluster.local")
        .unwrap();
    let jason = &vs.spec.http[0];
    let header = jason.matches[0].headers["end-user"].exact.as_deref();
    assert_eq!(header, Some("jason"));
    assert_eq!(jason.route[0].destination.subset, "v2");
    let split: Vec<(&str, i32)> = vs.spec.http[1]
        .route
        .iter()
        .map(|d| (d.destination.subset.as_str(), d.weight))
        .collect();
    assert_eq!(split, [("v1", 90), ("v3", 10)]);
    let retries = vs.spec.http[1].retries.as_ref().unwrap();
    assert_eq!(retries.attempts, 3);
    assert_eq!(
        retries.per_try_timeout.as_ref().and_then(|d| d.get()),
        Some(std::time::Duration::from_secs(2))
    );

    // DestinationRules: ISTIO_MUTUAL and subsets.
    let dr = config
        .destination_rule_for("reviews.default.svc.cluster.local")
        .unwrap();
    let tp = dr.spec.traffic_policy.as_ref().unwrap();
    assert_eq!(tp.tls.as_ref().unwrap().mode, TlsMode::IstioMutual);
    assert_eq!(
        tp.load_balancer.as_ref().unwrap().simple,
        Some(SimpleLb::LeastRequest)
    );
    let subsets: Vec<&str> = dr.spec.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subsets, ["v1", "v2", "v3"]);
    for dr in &config.destination_rules {
        let tls = dr.spec.traffic_policy.as_ref().and_then(|t| t.tls.as_ref());
        assert_eq!(
            tls.map(|t| t.mode),
            Some(TlsMode::IstioMutual),
            "{}",
            dr.name
        );
    }

    // STRICT mTLS for the namespace; productpage may call reviews.
    assert_eq!(config.peer_authentications.len(), 1);
    let pa = &config.peer_authentications[0];
    assert!(pa.spec.selector.is_none());
    assert_eq!(pa.spec.mtls.as_ref().unwrap().mode, MtlsMode::Strict);
    let ap = config
        .authorization_policies
        .iter()
        .find(|p| p.name == "reviews-viewer")
        .unwrap();
    assert_eq!(ap.spec.action, Action::Allow);
    assert_eq!(
        ap.spec.selector.as_ref().unwrap().match_labels["app"],
        "reviews"
    );
    assert_eq!(
        ap.spec.rules[0].from[0].source.principals,
        ["cluster.local/ns/default/sa/productpage"]
    );
}

#[test]
fn a_new_snapshot_shares_what_did_not_change() {
    use std::sync::Arc;

    use mesh_control::istio::{SourceFile, read_dir};

    let (files, _) = read_dir(&bookinfo_dir()).unwrap();
    let (old, _) = MeshConfig::from_files(&files).unwrap();
    let edited: Vec<SourceFile> = files
        .into_iter()
        .map(|mut f| {
            f.text = f
                .text
                .replace("weight: 90", "weight: 80")
                .replace("weight: 10", "weight: 20");
            f
        })
        .collect();
    let (mut new, _) = MeshConfig::from_files(&edited).unwrap();
    new.share_unchanged(&old);

    for (host, svc) in &new.services {
        assert!(Arc::ptr_eq(svc, &old.services[host]), "{host}");
    }
    let same: Vec<(&str, bool)> = new
        .virtual_services
        .iter()
        .zip(&old.virtual_services)
        .map(|(n, o)| (n.name.as_str(), Arc::ptr_eq(n, o)))
        .collect();
    assert_eq!(
        same,
        [
            ("details", true),
            ("productpage", true),
            ("ratings", true),
            ("reviews", false),
        ]
    );
    assert!(
        new.destination_rules
            .iter()
            .zip(&old.destination_rules)
            .all(|(n, o)| Arc::ptr_eq(n, o))
    );
}
