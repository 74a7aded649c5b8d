//! Protocol rules of the state machine and both wire formats, with a fake decoder: a
//! resource is the text `name;T:dep,T:dep` (T = L/R/C/E), or `!name;reason` to be rejected,
//! or `!;reason` to be rejected without a name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as WireResource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::time::Instant;

use super::state::{Codec, Decoded, State, Verdict};
use super::{ResourceState, delta, sotw};
use crate::resource::{Rejection, ResourceType};

use ResourceType::{
    Cluster as C, ClusterLoadAssignment as E, Listener as L, RouteConfiguration as R,
};

#[derive(Default)]
struct Fake {
    /// As the real codec: a subscribed cluster's endpoints that do not exist are published
    /// as an empty set (the text `absent`), not left out.
    absent_endpoints: bool,
}

type FakeSnapshot = BTreeMap<(ResourceType, String), Arc<str>>;

impl Codec for Fake {
    type Value = Arc<str>;
    type Snapshot = FakeSnapshot;

    fn decode(&self, ty: ResourceType, raw: &Any) -> Result<Decoded<Arc<str>>, Rejection> {
        if raw.type_url != ty.type_url() {
            return Err(Rejection {
                name: None,
                reason: "wrong type".into(),
            });
        }
        let text = String::from_utf8(raw.value.clone()).map_err(|_| Rejection {
            name: None,
            reason: "not utf-8".into(),
        })?;
        if let Some(bad) = text.strip_prefix('!') {
            let (name, reason) = bad.split_once(';').unwrap_or((bad, "bad"));
            return Err(Rejection {
                name: (!name.is_empty()).then(|| name.to_owned()),
                reason: reason.to_owned(),
            });
        }
        let (name, deps) = text.split_once(';').unwrap_or((&text, ""));
        let dependencies = deps
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| {
                let (t, n) = d.split_once(':').unwrap_or(("E", d));
                let t = match t {
                    "L" => L,
                    "R" => R,
                    "C" => C,
                    _ => E,
                };
                (t, n.to_owned())
            })
            .collect();
        Ok(Decoded {
            name: name.to_owned(),
            value: Arc::from(text.as_str()),
            dependencies,
            fetch_timeouts: Vec::new(),
        })
    }

    fn publish(
        &self,
        snapshot: &mut FakeSnapshot,
        ty: ResourceType,
        name: &Arc<str>,
        value: Option<&Arc<str>>,
    ) {
        match value {
            Some(v) => snapshot.insert((ty, name.to_string()), v.clone()),
            None => snapshot.remove(&(ty, name.to_string())),
        };
    }

    fn absent(&self, ty: ResourceType, _name: &Arc<str>) -> Option<Arc<str>> {
        (self.absent_endpoints && ty == E).then(|| Arc::from("absent"))
    }
}

fn any(ty: ResourceType, text: &str) -> Any {
    Any {
        type_url: ty.type_url().into(),
        value: text.as_bytes().to_vec(),
    }
}

fn sotw_response(
    ty: ResourceType,
    version: &str,
    nonce: &str,
    items: &[&str],
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources: items.iter().map(|t| any(ty, t)).collect(),
        type_url: ty.type_url().into(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn delta_response(
    ty: ResourceType,
    nonce: &str,
    items: &[(&str, &str)],
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: format!("sys-{nonce}"),
        resources: items
            .iter()
            .map(|(version, text)| WireResource {
                name: text.split(';').next().unwrap_or_default().into(),
                version: (*version).into(),
                resource: Some(any(ty, text)),
                ..Default::default()
            })
            .collect(),
        type_url: ty.type_url().into(),
        removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        nonce: nonce.into(),
        ..Default::default()
    }
}

fn state() -> State<Fake> {
    State::new(Fake::default(), false, false, Duration::from_secs(15))
}

fn node() -> Node {
    Node {
        id: "test-node".into(),
        ..Default::default()
    }
}

/// Runs a SotW state: returns the requests owed now.
fn sotw_out(s: &mut State<Fake>, node_sent: &mut bool) -> Vec<DiscoveryRequest> {
    sotw::requests(s, &node(), node_sent)
}

fn delta_out(s: &mut State<Fake>, node_sent: &mut bool) -> Vec<DeltaDiscoveryRequest> {
    delta::requests(s, &node(), node_sent)
}

fn short(reqs: &[DiscoveryRequest]) -> Vec<(ResourceType, String, String, Vec<String>)> {
    reqs.iter()
        .map(|r| {
            (
                ResourceType::from_type_url(&r.type_url).unwrap(),
                r.version_info.clone(),
                r.response_nonce.clone(),
                r.resource_names.clone(),
            )
        })
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn has(s: &State<Fake>, ty: ResourceType, name: &str) -> Option<Arc<str>> {
    s.snapshot().get(&(ty, name.to_string())).cloned()
}

fn publish(s: &mut State<Fake>) {
    let _ = s.take_snapshot();
}

/// Drives a SotW state through L -> R -> C -> E for target `l1`.
fn sotw_chain(s: &mut State<Fake>, sent: &mut bool, now: Instant) {
    s.add_target("l1", now);
    s.on_stream_start(now);
    let _ = sotw_out(s, sent);
    sotw::apply(s, &sotw_response(L, "1", "n1", &["l1;R:rc1"]), now);
    sotw::apply(s, &sotw_response(R, "1", "n2", &["rc1;C:c1,C:c2"]), now);
    sotw::apply(
        s,
        &sotw_response(C, "1", "n3", &["c1;E:c1", "c2;E:c2"]),
        now,
    );
    sotw::apply(s, &sotw_response(E, "1", "n4", &["c1", "c2"]), now);
    let _ = sotw_out(s, sent);
    publish(s);
}

#[tokio::test(start_paused = true)]
async fn sotw_first_request_then_ack_and_dependent_subscriptions() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    s.add_target("l1", now);
    s.on_stream_start(now);
    let first = sotw_out(&mut s, &mut sent);
    assert_eq!(
        short(&first),
        vec![(L, "".into(), "".into(), names(&["l1"]))]
    );
    assert_eq!(
        first[0].node.as_ref().map(|n| n.id.as_str()),
        Some("test-node")
    );
    assert!(!s.ready());

    let v = sotw::apply(&mut s, &sotw_response(L, "7", "a", &["l1;R:rc1"]), now);
    assert_eq!(v, Some((L, Verdict::Ack)));
    let out = sotw_out(&mut s, &mut sent);
    // ACK = accepted version + response nonce; then the route config is subscribed.
    assert_eq!(
        short(&out),
        vec![
            (L, "7".into(), "a".into(), names(&["l1"])),
            (R, "".into(), "".into(), names(&["rc1"])),
        ]
    );
    assert!(
        out.iter().all(|r| r.node.is_none()),
        "node only on the first request"
    );
    assert!(!s.ready(), "RDS is subscribed and unanswered");

    sotw::apply(&mut s, &sotw_response(R, "3", "b", &["rc1;C:c1"]), now);
    sotw::apply(&mut s, &sotw_response(C, "4", "c", &["c1;E:c1e"]), now);
    let out = sotw_out(&mut s, &mut sent);
    assert_eq!(
        short(&out),
        vec![
            (R, "3".into(), "b".into(), names(&["rc1"])),
            (C, "4".into(), "c".into(), names(&["c1"])),
            (E, "".into(), "".into(), names(&["c1e"])),
        ]
    );
    assert!(!s.ready());
    sotw::apply(&mut s, &sotw_response(E, "5", "d", &["c1e"]), now);
    assert!(s.ready());
    publish(&mut s);
    assert!(has(&s, E, "c1e").is_some());
    assert!(has(&s, L, "l1").is_some());
}

#[tokio::test(start_paused = true)]
async fn sotw_nack_names_every_rejected_resource_and_applies_the_valid_ones() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    let old_c1 = has(&s, C, "c1").unwrap();

    // Version 2: c1 is bad, c2 changes, c3 is bad and unknown, one is unnamed garbage.
    let v = sotw::apply(
        &mut s,
        &sotw_response(
            C,
            "2",
            "n5",
            &[
                "!c1;lb_policy MAGLEV is not supported",
                "c2;E:c2x",
                "!c3;no type",
            ],
        ),
        now,
    );
    let Some((C, Verdict::Nack(status))) = v else {
        panic!("expected a CDS NACK, got {v:?}");
    };
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    let lines: Vec<&str> = status.message.lines().collect();
    assert_eq!(lines.len(), 3, "{}", status.message);
    assert!(
        lines[1].contains("\"c1\"") && lines[1].contains("MAGLEV"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"c3\"") && lines[2].contains("no type"),
        "{}",
        lines[2]
    );

    let out = sotw_out(&mut s, &mut sent);
    let cds: Vec<_> = out.iter().filter(|r| r.type_url == C.type_url()).collect();
    assert_eq!(cds.len(), 1);
    assert_eq!(
        cds[0].version_info, "1",
        "NACK carries the previous good version"
    );
    assert_eq!(cds[0].response_nonce, "n5");
    assert_eq!(cds[0].error_detail.as_ref(), Some(&status));
    // The valid resource applied (and its new EDS name is subscribed)...
    let eds: Vec<_> = out.iter().filter(|r| r.type_url == E.type_url()).collect();
    assert_eq!(eds[0].resource_names, names(&["c1", "c2x"]));
    publish(&mut s);
    assert_eq!(&*has(&s, C, "c2").unwrap(), "c2;E:c2x");
    // ...the rejected one keeps serving its last good version (fail-static).
    assert!(Arc::ptr_eq(&has(&s, C, "c1").unwrap(), &old_c1));
    let st = s.status();
    let c1 = st.get(C, "c1").unwrap();
    assert_eq!(c1.state, ResourceState::Nacked);
    assert!(c1.last_error.as_deref().unwrap().contains("MAGLEV"));
    assert!(c1.has_value);
    assert_eq!(st.get(C, "c2").unwrap().state, ResourceState::Acked);

    // A later good version clears the NACK.
    sotw::apply(
        &mut s,
        &sotw_response(C, "3", "n6", &["c1;E:c1", "c2;E:c2x"]),
        now,
    );
    let out = sotw_out(&mut s, &mut sent);
    let cds = out.iter().find(|r| r.type_url == C.type_url()).unwrap();
    assert_eq!(
        (cds.version_info.as_str(), cds.error_detail.is_none()),
        ("3", true)
    );
    assert_eq!(s.status().get(C, "c1").unwrap().state, ResourceState::Acked);
}

#[tokio::test(start_paused = true)]
async fn sotw_omission_removes_lds_cds_but_not_rds_eds() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);

    // EDS omission: nothing removed.
    sotw::apply(&mut s, &sotw_response(E, "2", "e2", &["c1"]), now);
    publish(&mut s);
    assert!(has(&s, E, "c2").is_some());
    // RDS: an empty response does not remove rc1.
    sotw::apply(&mut s, &sotw_response(R, "2", "r2", &[]), now);
    publish(&mut s);
    assert!(has(&s, R, "rc1").is_some());

    // CDS omission of c2: deleted, its endpoints unsubscribed.
    sotw::apply(&mut s, &sotw_response(C, "2", "c2", &["c1;E:c1"]), now);
    publish(&mut s);
    assert!(has(&s, C, "c2").is_none());
    assert_eq!(
        s.status().get(C, "c2").unwrap().state,
        ResourceState::DoesNotExist
    );
    // Still referenced by rc1, so it stays subscribed (and would come back).
    let out = sotw_out(&mut s, &mut sent);
    let eds = out.iter().find(|r| r.type_url == E.type_url()).unwrap();
    assert_eq!(eds.resource_names, names(&["c1"]));
    assert!(
        has(&s, E, "c2").is_none(),
        "unsubscribed endpoints leave the snapshot"
    );

    // LDS omission: the listener is gone, and everything below with it.
    sotw::apply(&mut s, &sotw_response(L, "2", "l2", &[]), now);
    publish(&mut s);
    assert!(has(&s, L, "l1").is_none());
    assert!(has(&s, R, "rc1").is_none() && has(&s, C, "c1").is_none());
    assert_eq!(
        s.status().get(L, "l1").unwrap().state,
        ResourceState::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn a_nameless_rejection_blocks_omission_deletes() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    let v = sotw::apply(
        &mut s,
        &sotw_response(C, "2", "x", &["c1;E:c1", "!;garbled"]),
        now,
    );
    assert!(
        matches!(v, Some((C, Verdict::Nack(ref st))) if st.message.contains("resource #1: garbled"))
    );
    publish(&mut s);
    assert!(
        has(&s, C, "c2").is_some(),
        "c2 might be the garbled one: keep it"
    );
}

#[tokio::test(start_paused = true)]
async fn unreferenced_resources_are_unsubscribed() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    sotw::apply(
        &mut s,
        &sotw_response(R, "2", "r2", &["rc1;C:c2,C:c3"]),
        now,
    );
    let out = sotw_out(&mut s, &mut sent);
    let cds = out.iter().find(|r| r.type_url == C.type_url()).unwrap();
    assert_eq!(cds.resource_names, names(&["c2", "c3"]));
    let eds = out.iter().find(|r| r.type_url == E.type_url()).unwrap();
    assert_eq!(eds.resource_names, names(&["c2"]));
    publish(&mut s);
    assert!(has(&s, C, "c1").is_none() && has(&s, E, "c1").is_none());
    assert!(has(&s, C, "c2").is_some());

    // Removing the target drops everything.
    s.remove_target("l1", now);
    publish(&mut s);
    assert!(s.snapshot().is_empty(), "{:?}", s.snapshot());
    assert!(!s.wants_anything());
}

#[tokio::test(start_paused = true)]
async fn identical_resends_share_arcs_and_publish_nothing() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    let before = s.snapshot().clone();
    sotw::apply(&mut s, &sotw_response(E, "2", "e2", &["c1", "c2"]), now);
    assert!(s.take_snapshot().is_none(), "nothing changed");
    sotw::apply(&mut s, &sotw_response(E, "3", "e3", &["c1", "c2;x"]), now);
    let after = s.take_snapshot().unwrap();
    let key = |n: &str| (E, n.to_string());
    assert!(Arc::ptr_eq(&before[&key("c1")], &after[&key("c1")]));
    assert!(!Arc::ptr_eq(&before[&key("c2")], &after[&key("c2")]));
    assert_eq!(s.status().get(E, "c1").unwrap().version, "3");
}

#[tokio::test(start_paused = true)]
async fn duplicate_names_in_one_response_are_rejected() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    let v = sotw::apply(&mut s, &sotw_response(E, "2", "e2", &["c1;a", "c1;b"]), now);
    assert!(matches!(v, Some((E, Verdict::Nack(ref st))) if st.message.contains("duplicate")));
}

#[tokio::test(start_paused = true)]
async fn does_not_exist_after_the_timeout_only_while_connected() {
    let mut s = state();
    let mut sent = false;
    s.add_target("missing", Instant::now());
    assert_eq!(s.next_deadline(), None, "no timer before a stream is open");
    s.on_stream_start(Instant::now());
    let _ = sotw_out(&mut s, &mut sent);
    let deadline = s.next_deadline().unwrap();
    assert_eq!(deadline - Instant::now(), Duration::from_secs(15));
    tokio::time::advance(Duration::from_secs(14)).await;
    s.on_timer(Instant::now());
    assert_eq!(
        s.status().get(L, "missing").unwrap().state,
        ResourceState::Requested
    );
    // Disconnect: timers stop; reconnect restarts them from zero.
    s.on_stream_end();
    assert_eq!(s.next_deadline(), None);
    tokio::time::advance(Duration::from_secs(30)).await;
    s.on_stream_start(Instant::now());
    tokio::time::advance(Duration::from_secs(10)).await;
    s.on_timer(Instant::now());
    assert!(!s.ready());
    tokio::time::advance(Duration::from_secs(5)).await;
    s.on_timer(Instant::now());
    assert_eq!(
        s.status().get(L, "missing").unwrap().state,
        ResourceState::DoesNotExist
    );
    assert!(s.ready(), "DOES_NOT_EXIST counts as an answer");
}

#[tokio::test(start_paused = true)]
async fn a_sotw_omission_leaves_a_never_received_resource_to_its_timer() {
    // The response to `[l1]` arrives after the client asked for `[l1, late]`: `late` is
    // still on its way, not gone.
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    s.add_target("late", now);
    let _ = sotw_out(&mut s, &mut sent);
    sotw::apply(&mut s, &sotw_response(L, "2", "l2", &["l1;R:rc1"]), now);
    publish(&mut s);
    assert_eq!(
        s.status().get(L, "late").unwrap().state,
        ResourceState::Requested
    );
    assert!(has(&s, L, "l1").is_some());
}

#[tokio::test(start_paused = true)]
async fn sotw_reconnect_requests_everything_again() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    s.on_stream_end();
    s.on_stream_start(now);
    let mut sent = false;
    let out = sotw_out(&mut s, &mut sent);
    assert_eq!(
        short(&out),
        vec![
            (L, "".into(), "".into(), names(&["l1"])),
            (R, "".into(), "".into(), names(&["rc1"])),
            (C, "".into(), "".into(), names(&["c1", "c2"])),
            (E, "".into(), "".into(), names(&["c1", "c2"])),
        ]
    );
    assert!(out[0].node.is_some());
    publish(&mut s);
    assert!(has(&s, E, "c2").is_some(), "fail-static while reconnecting");
}

#[tokio::test(start_paused = true)]
async fn sotw_wildcard_cds_sends_no_names_and_follows_every_cluster() {
    let now = Instant::now();
    let mut s = State::new(Fake::default(), false, true, Duration::from_secs(15));
    let mut sent = false;
    assert!(s.wants_anything());
    s.on_stream_start(now);
    let out = sotw_out(&mut s, &mut sent);
    assert_eq!(short(&out), vec![(C, "".into(), "".into(), vec![])]);
    sotw::apply(
        &mut s,
        &sotw_response(C, "1", "a", &["x;E:x", "y;E:y"]),
        now,
    );
    let out = sotw_out(&mut s, &mut sent);
    assert_eq!(
        short(&out)[1],
        (E, "".into(), "".into(), names(&["x", "y"]))
    );
    sotw::apply(&mut s, &sotw_response(C, "2", "b", &["y;E:y"]), now);
    publish(&mut s);
    assert!(has(&s, C, "x").is_none());
    assert!(
        s.status().get(C, "x").is_none(),
        "only wildcard-received: forgotten"
    );
}

#[tokio::test(start_paused = true)]
async fn delta_subscribe_ack_and_removal() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    s.add_target("l1", now);
    s.on_stream_start(now);
    let out = delta_out(&mut s, &mut sent);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resource_names_subscribe, names(&["l1"]));
    assert!(out[0].initial_resource_versions.is_empty());
    assert!(out[0].node.is_some());

    delta::apply(
        &mut s,
        &delta_response(L, "a", &[("v1", "l1;R:rc1")], &[]),
        now,
    );
    let out = delta_out(&mut s, &mut sent);
    // ACK (nonce only), then the new RDS subscription as its own request.
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].type_url.as_str(), out[0].response_nonce.as_str()),
        (L.type_url(), "a")
    );
    assert!(out[0].resource_names_subscribe.is_empty() && out[0].error_detail.is_none());
    assert_eq!(out[1].type_url, R.type_url());
    assert_eq!(out[1].resource_names_subscribe, names(&["rc1"]));
    assert!(out[1].response_nonce.is_empty());

    delta::apply(
        &mut s,
        &delta_response(R, "b", &[("r1", "rc1;C:c1,C:c2")], &[]),
        now,
    );
    delta::apply(
        &mut s,
        &delta_response(C, "c", &[("c1v", "c1;E:c1"), ("c2v", "c2;E:c2")], &[]),
        now,
    );
    delta::apply(
        &mut s,
        &delta_response(E, "d", &[("e1", "c1"), ("e2", "c2")], &[]),
        now,
    );
    let _ = delta_out(&mut s, &mut sent);
    assert!(s.ready());
    publish(&mut s);

    // One endpoint changes: one resource in, nothing else touched.
    let before = s.snapshot().clone();
    delta::apply(
        &mut s,
        &delta_response(E, "e", &[("e2b", "c2;new")], &[]),
        now,
    );
    let after = s.take_snapshot().unwrap();
    assert!(Arc::ptr_eq(
        &before[&(E, "c1".into())],
        &after[&(E, "c1".into())]
    ));
    assert_eq!(&*after[&(E, "c2".into())], "c2;new");

    // Removal: c2 goes (it stays subscribed as rc1 still names it).
    delta::apply(&mut s, &delta_response(C, "f", &[], &["c2"]), now);
    publish(&mut s);
    assert!(has(&s, C, "c2").is_none());
    assert_eq!(
        s.status().get(C, "c2").unwrap().state,
        ResourceState::DoesNotExist
    );
    let out = delta_out(&mut s, &mut sent);
    let eds_unsub: Vec<_> = out
        .iter()
        .filter(|r| r.type_url == E.type_url())
        .flat_map(|r| r.resource_names_unsubscribe.clone())
        .collect();
    assert_eq!(
        eds_unsub,
        names(&["c2"]),
        "c2's endpoints are no longer referenced"
    );

    // Reconnect: initial_resource_versions carries what is held.
    s.on_stream_end();
    s.on_stream_start(now);
    let mut sent = false;
    let out = delta_out(&mut s, &mut sent);
    let cds = out.iter().find(|r| r.type_url == C.type_url()).unwrap();
    assert_eq!(cds.resource_names_subscribe, names(&["c1", "c2"]));
    assert_eq!(cds.initial_resource_versions.len(), 1);
    assert_eq!(cds.initial_resource_versions["c1"], "c1v");
    let lds = out.iter().find(|r| r.type_url == L.type_url()).unwrap();
    assert_eq!(lds.initial_resource_versions["l1"], "v1");
}

/// go-control-plane's order when a route moves from c1 to c2 and c1 leaves the snapshot:
/// c1's endpoints are removed first (published as an empty set: c1 still names them), then
/// c1, then the route. Unsubscribed, the empty set must leave the snapshot too.
#[tokio::test(start_paused = true)]
async fn endpoints_published_as_absent_leave_the_snapshot_once_unsubscribed() {
    let now = Instant::now();
    let mut s = State::new(
        Fake {
            absent_endpoints: true,
        },
        false,
        false,
        Duration::from_secs(15),
    );
    let mut sent = false;
    s.add_target("l1", now);
    s.on_stream_start(now);
    let _ = delta_out(&mut s, &mut sent);
    let apply = |s: &mut State<Fake>, steps: &[(ResourceType, &str, &str, &str)]| {
        // (type, nonce, resource text or "", name removed or "")
        for &(ty, nonce, item, removed) in steps {
            let items: &[(&str, &str)] = if item.is_empty() { &[] } else { &[("1", item)] };
            let removed: &[&str] = if removed.is_empty() { &[] } else { &[removed] };
            delta::apply(s, &delta_response(ty, nonce, items, removed), now);
        }
        publish(s);
    };
    apply(
        &mut s,
        &[
            (L, "a", "l1;R:rc1", ""),
            (R, "b", "rc1;C:c1", ""),
            (C, "c", "c1;E:c1", ""),
            (E, "d", "c1", ""),
        ],
    );
    assert_eq!(has(&s, E, "c1").as_deref(), Some("c1"));

    apply(&mut s, &[(E, "e", "", "c1")]);
    assert_eq!(has(&s, E, "c1").as_deref(), Some("absent"));
    apply(
        &mut s,
        &[
            (C, "f", "", "c1"),
            (R, "g", "rc1;C:c2", ""),
            (C, "h", "c2;E:c2", ""),
            (E, "i", "c2", ""),
        ],
    );
    assert!(has(&s, C, "c1").is_none());
    assert_eq!(
        has(&s, E, "c1"),
        None,
        "unsubscribed endpoints stay in the snapshot: {:?}",
        s.snapshot()
    );
    assert_eq!(has(&s, E, "c2").as_deref(), Some("c2"));
}

#[tokio::test(start_paused = true)]
async fn delta_nack_keeps_versions_of_good_resources_and_names_the_bad() {
    let now = Instant::now();
    let mut s = state();
    let mut sent = false;
    s.add_target("l1", now);
    s.on_stream_start(now);
    let _ = delta_out(&mut s, &mut sent);
    let v = delta::apply(
        &mut s,
        &delta_response(L, "a", &[("v1", "!l1;route_config_name is empty")], &[]),
        now,
    );
    assert!(matches!(v, Some((L, Verdict::Nack(_)))));
    let out = delta_out(&mut s, &mut sent);
    assert_eq!(out[0].response_nonce, "a");
    let detail = out[0].error_detail.as_ref().unwrap();
    assert!(
        detail
            .message
            .contains("LDS \"l1\": route_config_name is empty"),
        "{}",
        detail.message
    );
    assert_eq!(
        s.status().get(L, "l1").unwrap().state,
        ResourceState::Nacked
    );
    assert!(s.ready(), "a NACKed resource is an answer too");
}

#[tokio::test(start_paused = true)]
async fn delta_wildcard_subscribes_star_and_name_mismatch_is_rejected() {
    let now = Instant::now();
    let mut s = State::new(Fake::default(), true, false, Duration::from_secs(15));
    let mut sent = false;
    s.on_stream_start(now);
    let out = delta_out(&mut s, &mut sent);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].resource_names_subscribe, names(&["*"]));
    let mut response = delta_response(L, "a", &[("1", "a;R:ra"), ("1", "b")], &[]);
    response.resources[1].name = "not-b".into();
    let v = delta::apply(&mut s, &response, now);
    let Some((L, Verdict::Nack(st))) = v else {
        panic!("{v:?}")
    };
    assert!(st.message.contains("\"not-b\"") && st.message.contains("does not match"));
    publish(&mut s);
    assert!(has(&s, L, "a").is_some());
    let out = delta_out(&mut s, &mut sent);
    assert!(
        out.iter()
            .any(|r| r.type_url == R.type_url() && r.resource_names_subscribe == names(&["ra"]))
    );
}

#[tokio::test(start_paused = true)]
async fn ignore_resource_deletion_keeps_omitted_resources() {
    let now = Instant::now();
    let mut s = state();
    s.set_ignore_resource_deletion(true);
    let mut sent = false;
    sotw_chain(&mut s, &mut sent, now);
    // A CDS response omits c2 while rc1 still names it.
    sotw::apply(&mut s, &sotw_response(C, "2", "c2", &["c1;E:c1"]), now);
    publish(&mut s);
    assert!(has(&s, C, "c2").is_some(), "kept despite the omission");
    assert_eq!(s.status().get(C, "c2").unwrap().state, ResourceState::Acked);
    // Delta's explicit removal still removes.
    delta::apply(&mut s, &delta_response(C, "d", &[], &["c2"]), now);
    publish(&mut s);
    assert!(has(&s, C, "c2").is_none());
}

#[tokio::test(start_paused = true)]
async fn an_unrepresentable_timeout_never_expires() {
    let mut s = State::new(Fake::default(), false, false, Duration::MAX);
    s.add_target("l1", Instant::now());
    s.on_stream_start(Instant::now());
    assert_eq!(s.next_deadline(), None);
}
