use super::*;

fn policy(yaml: &str) -> TrafficPolicy {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// One endpoint per locality, each labelled `name: <locality>`, plus `extra` labels.
fn groups(localities: &[(&str, &[(&str, &str)])]) -> Vec<Group> {
    localities
        .iter()
        .map(|(l, extra)| {
            let locality = parse(l);
            let mut labels: BTreeMap<String, String> = extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.insert("name".into(), l.to_string());
            let e = eds::LbEndpoint {
                load_balancing_weight: pb::u32v(1),
                ..Default::default()
            };
            Group {
                endpoints: vec![(e, augment(&labels, &locality))],
                locality,
            }
        })
        .collect()
}

fn client(locality: &str, labels: &[(&str, &str)]) -> Client {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Client::new(Some(&parse(locality)), &labels)
}

/// (region/zone/subzone, priority, weight) of each locality.
fn summary(out: &[eds::LocalityLbEndpoints]) -> Vec<(String, u32, u32)> {
    out.iter()
        .map(|l| {
            let loc = l.locality.clone().unwrap_or_default();
            (
                format!("{}/{}/{}", loc.region, loc.zone, loc.sub_zone),
                l.priority,
                l.load_balancing_weight.as_ref().map_or(0, |w| w.value),
            )
        })
        .collect()
}

const OUTLIER: &str = "outlierDetection: {consecutive5xxErrors: 1}";

#[test]
fn default_failover_orders_by_shared_locality_only_with_outlier_detection() {
    let g = || {
        groups(&[
            ("r1/a/x", &[]),
            ("r1/a/y", &[]),
            ("r1/b/", &[]),
            ("r2/c/", &[]),
        ])
    };
    let c = client("r1/a/x", &[]);
    let out = assign(g(), &policy(OUTLIER), Some(&c), true);
    let prios: Vec<u32> = summary(&out).iter().map(|s| s.1).collect();
    assert_eq!(prios, vec![0, 1, 2, 3]);
    // Without outlier detection, or with `enabled: false`, or without a client: one priority.
    for p in [
        policy("{}"),
        policy(&format!(
            "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{enabled: false}}}}}}"
        )),
    ] {
        assert!(
            assign(g(), &p, Some(&c), true)
                .iter()
                .all(|l| l.priority == 0)
        );
    }
    assert!(
        assign(g(), &policy(OUTLIER), None, true)
            .iter()
            .all(|l| l.priority == 0)
    );
    // Priorities are renumbered without gaps: no subzone-only match here.
    let out = assign(
        groups(&[("r1/a/x", &[]), ("r2/c/", &[])]),
        &policy(OUTLIER),
        Some(&c),
        true,
    );
    assert_eq!(
        out.iter().map(|l| l.priority).collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[test]
fn failover_sends_other_regions_below_the_target_region() {
    let p = policy(&format!(
        "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{failover: [{{from: r1, to: r3}}]}}}}}}"
    ));
    let out = assign(
        groups(&[("r2/a/", &[]), ("r3/a/", &[]), ("r1/b/", &[])]),
        &p,
        Some(&client("r1/a/", &[])),
        true,
    );
    let prios: Vec<(String, u32)> = summary(&out).into_iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        prios,
        vec![
            ("r2/a/".into(), 2),
            ("r3/a/".into(), 1),
            ("r1/b/".into(), 0)
        ]
    );
}

#[test]
fn distribute_weighs_named_localities_and_drops_the_others() {
    let p = policy(
        "loadBalancer: {localityLbSetting: {distribute: [
            {from: r9/*, to: {r9/a/*: 100}},
            {from: r1/a/*, to: {r1/a/*: 70, r1/b/*: 30}}]}}",
    );
    let out = assign(
        groups(&[
            ("r1/a/x", &[]),
            ("r1/a/y", &[]),
            ("r1/b/z", &[]),
            ("r2/c/", &[]),
        ]),
        &p,
        Some(&client("r1/a/x", &[])),
        true,
    );
    // r1/a/* matches two localities of weight 1: 70 split in two; r2 is dropped.
    assert_eq!(
        summary(&out),
        vec![
            ("r1/a/x".into(), 0, 35),
            ("r1/a/y".into(), 0, 35),
            ("r1/b/z".into(), 0, 30)
        ]
    );
    // A client no `from` matches keeps the plain weights.
    let out = assign(
        groups(&[("r1/a/x", &[]), ("r2/c/", &[])]),
        &p,
        Some(&client("r5/a/x", &[])),
        true,
    );
    assert_eq!(
        summary(&out).iter().map(|s| s.2).collect::<Vec<_>>(),
        vec![1, 1]
    );
    assert!(weighted(&p));
    assert!(
        !weighted(&policy(OUTLIER)),
        "default failover keeps plain weights"
    );
}

#[test]
fn failover_priority_prefers_endpoints_matching_the_clients_labels() {
    let p = policy(&format!(
        "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{failoverPriority: [track, {ZONE}]}}}}}}"
    ));
    let g = groups(&[
        ("r1/b/", &[("track", "canary")]),
        ("r1/a/", &[("track", "canary")]),
        ("r1/a/", &[("track", "stable")]),
    ]);
    let out = assign(g, &p, Some(&client("r1/a/", &[("track", "canary")])), true);
    // Both labels match: 0; the zone differs: 1; the track differs: 2. Localities are
    // ignored otherwise (no `failover`).
    let prios: Vec<u32> = out.iter().map(|l| l.priority).collect();
    assert_eq!(prios, vec![1, 0, 2]);
    // `label=value` compares with the value instead of the client's label.
    let p = policy(&format!(
        "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{failoverPriority: [track=stable]}}}}}}"
    ));
    let g = groups(&[
        ("r1/a/", &[("track", "canary")]),
        ("r1/a/", &[("track", "stable")]),
    ]);
    let out = assign(g, &p, Some(&client("r1/a/", &[("track", "canary")])), true);
    assert_eq!(
        out.iter().map(|l| l.priority).collect::<Vec<_>>(),
        vec![1, 0]
    );
    assert!(weighted(&p));
}

#[test]
fn the_client_locality_comes_from_topology_labels_first() {
    let c = client("r1/a/x", &[(ZONE, "b"), (REGION, "r2")]);
    assert_eq!(c.locality, parse("r2/b/"));
    let c = client("r1/a/x", &[(LOCALITY_LABEL, "r3.c.z")]);
    assert_eq!(c.locality, parse("r3/c/z"));
    assert_eq!(c.labels.get(SUBZONE).map(String::as_str), Some("z"));
    let c = client("r1/a/x", &[]);
    assert_eq!(c.locality, parse("r1/a/x"));
}

#[test]
fn dns_clusters_leave_failover_priority_out() {
    let p = policy(&format!(
        "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{failoverPriority: [track]}}}}}}"
    ));
    let g = || {
        groups(&[
            ("r1/a/", &[("track", "stable")]),
            ("r1/b/", &[("track", "canary")]),
        ])
    };
    let c = client("r1/a/", &[("track", "canary")]);
    let prios = |by_labels| -> Vec<u32> {
        assign(g(), &p, Some(&c), by_labels)
            .iter()
            .map(|l| l.priority)
            .collect()
    };
    assert_eq!(prios(true), vec![1, 0]);
    // Without labels, and no `failover`: no locality priorities either.
    assert_eq!(prios(false), vec![0, 0]);
}
