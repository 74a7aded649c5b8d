//! Differential test of the embedded control plane against a real istiod
//! (`MESH_ISTIOD_BIN`) on the same config directory: what a client holds after decoding each
//! control plane's resources (listeners, route configurations, clusters, endpoints), field
//! for field (interop-tests/src/model_diff.rs).
//!
//! Two comparisons, for Bookinfo's productpage and the fidelity corpus's frontend workload:
//! - **proxyless**: our generator against istiod's proxyless generator (`GENERATOR: grpc`),
//!   every listener, route configuration, cluster and endpoint assignment;
//! - **sidecar clusters**: our clusters and endpoints against what istiod sends an Envoy
//!   sidecar (the semantics our generator targets: outlier detection, circuit breakers,
//!   connection pool settings that istiod's proxyless generator drops).
//!
//! Each difference must be one of [`PROXYLESS`] / [`SIDECAR`] (or of a corpus's own list),
//! which docs/istio.md lists
//! with the same reasons; an entry that explains no difference fails the test too, so the
//! list stays true. The corpora: examples/config/bookinfo and interop-tests/corpus/fidelity
//! (a directory that sets the applied fields of the "Istio fields" table).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_control::istio::WatchOptions;
use mesh_control::local::{LocalOptions, LocalSource};
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_core::model::{ListenerKind, RouteSource};
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_interop_tests::model_diff::{Difference, Expected, diff, flatten};
use mesh_interop_tests::xds::{fast_backoff, not_acked, settled};
use mesh_tls::dev_ca::DevCa;
use mesh_xds::bootstrap::IstioNode;
use mesh_xds::client::{
    ClientStatus, Protocol, ResourceState, XdsClient, XdsClientConfig, channel,
};

const WAIT: Duration = Duration::from_secs(30);

/// Differences between our proxyless model and istiod's proxyless model, with the reason
/// (docs/istio.md lists the same).
const PROXYLESS: &[Expected] = &[
    Expected {
        kind: "LDS",
        resource: "",
        path: "kind.route_source",
        reason: "istiod names a client listener's route configuration after its default \
                 cluster (outbound|9080||host), ours after the listener (host:9080); the \
                 route configurations are compared by listener",
    },
    Expected {
        kind: "RDS",
        resource: "",
        path: "name",
        reason: "as kind.route_source",
    },
    Expected {
        kind: "RDS",
        resource: "",
        path: "*retriable_status_codes*",
        reason: "istiod's proxyless routes drop the status codes of the default retry policy \
                 (gRPC retries on gRPC codes); ours keep the sidecar's 503",
    },
    Expected {
        kind: "RDS",
        resource: "",
        path: "*.max_stream_duration.max_stream_duration",
        reason: "istiod copies a route's timeout into max_stream_duration for gRPC libraries, \
                 which read only that; our routes carry the timeout itself, which our data \
                 plane applies to every call",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "circuit_breakers.*",
        reason: "istiod's proxyless clusters have Envoy's default thresholds (but no retry \
                 limit: the proxyless dialect); ours have the sidecar's (DestinationRule \
                 connectionPool, else unlimited)",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "outlier_detection*",
        reason: "istiod's proxyless generator drops outlier detection; ours is the sidecar's",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "common_lb.healthy_panic_threshold",
        reason: "the sidecar's clusters turn panic mode off (0%) unless outlierDetection's \
                 minHealthPercent says otherwise; istiod's proxyless ones leave Envoy's 50%",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "connect_timeout",
        reason: "istiod's proxyless clusters say 5 s whatever the DestinationRule says; ours \
                 are the sidecar's (connectionPool.tcp.connectTimeout, else MeshConfig's 10 s)",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "http_protocol.*",
        reason: "istiod's proxyless clusters carry no HTTP protocol options (a gRPC library \
                 speaks HTTP/2 anyway); ours are the sidecar's (h2UpgradePolicy, port protocol, \
                 idle timeouts, ...)",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "tls.sni",
        reason: "istiod's proxyless clusters set no SNI; the sidecar's, and ours, \
                 outbound_.<port>_.<subset>_.<host>",
    },
];

/// Proxyless differences of the fidelity corpus only.
const FIDELITY_PROXYLESS: &[Expected] = &[
    Expected {
        kind: "CDS",
        resource: "frontend",
        path: "lb_policy",
        reason: "istiod's proxyless clusters balance by round robin whatever the \
                 DestinationRule's simple loadBalancer says; ours follow it (as the sidecar's)",
    },
    Expected {
        kind: "LDS",
        resource: "inbound",
        path: "*.config.rules.policies[*].name",
        reason: "policy names: istiod's `<ns>-<policy>-<rule>` can read two ways when names \
                 contain dashes; ours say `ns[..]-policy[..]-rule[..]` (docs/security.md)",
    },
];

/// Sidecar differences of the fidelity corpus only.
const FIDELITY_SIDECAR: &[Expected] = &[Expected {
    kind: "CDS",
    resource: "catalog",
    path: "tls*",
    reason: "auto mTLS: without a DestinationRule's tls a sidecar speaks mTLS to endpoints \
             labelled `tlsMode: istio` (transport_socket_matches); our clusters, as istiod's \
             proxyless ones, carry no TLS then",
}];

/// Differences between our clusters/endpoints and what istiod sends a sidecar.
const SIDECAR: &[Expected] = &[
    Expected {
        kind: "CDS",
        resource: "",
        path: "lb_policy*",
        reason: "without a DestinationRule's loadBalancer, a sidecar balances by least request, \
                 ours (as istiod's proxyless clients) by round robin: gRPC libraries, which \
                 share our generator, reject LEAST_REQUEST in lb_policy",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "tls.alpn_protocols*",
        reason: "a sidecar offers ALPN istio-peer-exchange/istio (and h2) so that an Envoy \
                 inbound in PERMISSIVE mode recognises Istio mTLS; our clients offer h2 or \
                 http/1.1 by the cluster's protocol",
    },
    Expected {
        kind: "CDS",
        resource: "",
        path: "tls.params*",
        reason: "a sidecar's upstream TLS pins TLS 1.2-1.3 (istiod's \
                 defaultUpstreamCommonTLSContext: Envoy's client default stops at 1.2); our \
                 proxyless clusters, as istiod's proxyless ones, set no tls_params: our client's \
                 default range is the same TLS 1.2-1.3 (our Envoy-sidecar output sets it)",
    },
];

fn corpus(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match name {
        "bookinfo" => root.join("../examples/config/bookinfo"),
        other => root.join("corpus").join(other),
    }
}

/// The workload whose view is compared: Bookinfo's productpage, the fidelity corpus's
/// frontend.
fn workload(corpus: &str) -> IstioNode {
    let (app, ip) = match corpus {
        "bookinfo" => ("productpage", [127, 0, 0, 1]),
        _ => ("frontend", [127, 0, 1, 1]),
    };
    IstioNode {
        ip: ip.into(),
        pod_name: format!("{app}-v1"),
        namespace: "default".into(),
        service_account: app.into(),
        labels: [("app", app), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        istio_version: "1.31.0".into(),
        workload_name: Some(format!("{app}-v1")),
        ..Default::default()
    }
}

/// The same node as an Envoy sidecar (no `GENERATOR: grpc`).
fn as_sidecar(mut node: Node) -> Node {
    if let Some(md) = node.metadata.as_mut() {
        md.fields.remove("GENERATOR");
    }
    node
}

/// What our embedded control plane gives `node` for `dir`: the `listeners` and what they
/// refer to, as a proxyless client subscribed to them holds; every resource (as a wildcard
/// client) without listeners.
async fn ours(dir: &Path, node: Node, listeners: &[String]) -> Arc<ConfigSnapshot> {
    let source = LocalSource::watch_dir(
        dir,
        WatchOptions::default(),
        node,
        LocalOptions {
            wildcard: listeners.is_empty(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for l in listeners {
        source.demand(l);
    }
    let mut ready = source.readiness();
    tokio::time::timeout(WAIT, ready.wait_for(|r| *r))
        .await
        .expect("our control plane ready")
        .unwrap();
    let status = source.status();
    let bad = not_acked(&status);
    assert!(
        bad.is_empty(),
        "our own resources not ACKED:\n{}",
        bad.join("\n")
    );
    source.snapshots().borrow().clone()
}

struct Peer {
    _work: tempfile::TempDir,
    issuer: TestIssuer,
    istiod: Istiod,
    token_dir: PathBuf,
}

async fn istiod(dir: &Path) -> Option<Peer> {
    let bin = mesh_test_support::peer("MESH_ISTIOD_BIN")?;
    let work = tempfile::tempdir().unwrap();
    let ca =
        DevCa::with_intermediate(mesh_core::TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let options = IstiodOptions {
        config_dir: Some(dir.to_path_buf()),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let token_dir = work.path().to_path_buf();
    Some(Peer {
        _work: work,
        issuer,
        istiod,
        token_dir,
    })
}

/// What istiod gives `node` subscribed to the `listeners` (as a proxyless client), and the
/// status of every resource (NACKs included: a NACK is a difference too).
async fn theirs(
    peer: &Peer,
    node: Node,
    listeners: &[String],
) -> (Arc<ConfigSnapshot>, ClientStatus) {
    let account = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get("SERVICE_ACCOUNT"))
        .and_then(|v| match &v.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .expect("the node names its service account");
    let token = peer.token_dir.join(format!("{account}.jwt"));
    std::fs::write(
        &token,
        peer.issuer
            .token("default", &account, Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(peer.istiod.ca_root()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(mesh_tls::config::default_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let channel = channel::tls(
        &peer.istiod.secure_url(),
        Arc::new(tls),
        Some(ISTIOD_SERVER_NAME),
    )
    .unwrap();
    let client = XdsClient::new(
        XdsClientConfig {
            node,
            protocol: Protocol::StateOfTheWorld,
            token_file: Some(token),
            backoff: fast_backoff(),
            resource_timeout: Duration::from_secs(10),
            ..Default::default()
        },
        channel,
    );
    for l in listeners {
        client.subscribe_target(l).await.unwrap();
    }
    let status = settled(&client, WAIT).await.unwrap_or_else(|status| {
        panic!(
            "istiod: not ready in {WAIT:?}: {status:#?}\n{}",
            peer.istiod.log_tail(40)
        )
    });
    (client.snapshot(), status)
}

/// The outbound clusters and endpoints istiod sends `node` as an Envoy sidecar (wildcard
/// CDS, then EDS), decoded by our translation after removing what only a sidecar has:
/// - `filters`: the upstream `istio.metadata_exchange` filter (a sidecar's peer metadata
///   for telemetry; our workloads exchange it as headers);
/// - `transport_socket_matches`: auto-mTLS picks the `tlsMode-istio` socket for endpoints
///   labelled `tlsMode: istio`, which every workload of the corpora is: that socket
///   becomes the cluster's;
/// - SDS secrets: a sidecar gets its certificate and root from Istio's agent over SDS
///   (`default`, `ROOTCA`); a proxyless client names the same two through the bootstrap's
///   certificate provider instance `default` (what our generator and istiod's proxyless
///   one emit).
///
/// Decoded in the proxyless dialect, as our client decodes our generator's clusters for a
/// proxyless node: the comparison is of the generators, not of the defaults each dialect
/// fills in (a HIGH-priority `max_retries` neither generator sets).
async fn sidecar_clusters(peer: &Peer, node: Node) -> Arc<ConfigSnapshot> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use mesh_xds::resource::{Resource, ResourceType, decode, decode_as};
    use mesh_xds::translate::Dialect;
    use prost::Message;
    use tokio_stream::StreamExt;

    let mut client = AggregatedDiscoveryServiceClient::connect(peer.istiod.plaintext_url())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let request = |ty: ResourceType, names: Vec<String>| DiscoveryRequest {
        node: Some(node.clone()),
        type_url: ty.type_url().into(),
        resource_names: names,
        ..Default::default()
    };
    // The first request goes in before the call: a Go gRPC server sends its response
    // headers only with the first response.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(request(ResourceType::Cluster, Vec::new()))
        .await
        .unwrap();
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(WAIT, responses.next())
            .await
            .expect("istiod answers")
            .expect("stream open")
            .expect("no stream error")
            .resources
    };
    let mut snapshot = ConfigSnapshot::default();
    let mut eds_names = Vec::new();
    for raw in next().await {
        let mut c = Cluster::decode(raw.value.as_slice()).unwrap();
        if !c.name.starts_with("outbound|") {
            continue;
        }
        c.filters.clear();
        if let Some(m) = c
            .transport_socket_matches
            .iter()
            .find(|m| m.name == "tlsMode-istio")
        {
            c.transport_socket = m.transport_socket.clone();
        }
        c.transport_socket_matches.clear();
        if let Some(socket) = c.transport_socket.as_mut() {
            sds_to_provider_instances(socket);
        }
        let name = c.name.clone();
        match decode_as(
            ResourceType::Cluster,
            &envoy_types::util::pack_any(c),
            Dialect::IstioProxyless,
        ) {
            Ok(Resource::Cluster(model)) => {
                if let Some(eds) = model.discovery.eds_name(&model.name) {
                    eds_names.push(eds.to_string());
                }
                snapshot.insert_cluster((*model).clone());
            }
            Ok(_) => unreachable!("a cluster decodes to a cluster"),
            Err(e) => panic!("sidecar cluster {name} NACKed: {}", e.reason),
        }
    }
    tx.send(request(ResourceType::ClusterLoadAssignment, eds_names))
        .await
        .unwrap();
    for raw in next().await {
        match decode(ResourceType::ClusterLoadAssignment, &raw) {
            Ok(Resource::ClusterLoadAssignment(model)) => {
                snapshot.insert_endpoints((*model).clone());
            }
            Ok(_) => unreachable!("endpoints decode to endpoints"),
            Err(e) => panic!("sidecar endpoints NACKed: {}", e.reason),
        }
    }
    Arc::new(snapshot)
}

/// Rewrites an `UpstreamTlsContext`'s SDS secrets `default` and `ROOTCA` as the certificate
/// provider instances a proxyless client knows them by (the deprecated fields, which
/// istiod's proxyless generator and ours emit).
#[allow(deprecated)]
fn sds_to_provider_instances(
    socket: &mut envoy_types::pb::envoy::config::core::v3::TransportSocket,
) {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        UpstreamTlsContext,
        common_tls_context::{CertificateProviderInstance as Instance, ValidationContextType},
    };
    use prost::Message;

    let Some(ConfigType::TypedConfig(any)) = socket.config_type.as_mut() else {
        return;
    };
    let Ok(mut tls) = UpstreamTlsContext::decode(any.value.as_slice()) else {
        return;
    };
    let Some(common) = tls.common_tls_context.as_mut() else {
        return;
    };
    let instance = |name: &str| Instance {
        instance_name: "default".into(),
        certificate_name: name.into(),
    };
    if common
        .tls_certificate_sds_secret_configs
        .iter()
        .any(|s| s.name == "default")
    {
        common.tls_certificate_sds_secret_configs.clear();
        common.tls_certificate_certificate_provider_instance = Some(instance("default"));
    }
    if let Some(ValidationContextType::CombinedValidationContext(combined)) =
        common.validation_context_type.as_mut()
        && combined
            .validation_context_sds_secret_config
            .as_ref()
            .is_some_and(|s| s.name == "ROOTCA")
    {
        combined.validation_context_sds_secret_config = None;
        combined.validation_context_certificate_provider_instance = Some(instance("ROOTCA"));
    }
    *any = envoy_types::util::pack_any(tls);
}

/// Every field difference between two snapshots; `kinds` limits the comparison (e.g. only
/// CDS and EDS for the sidecar).
fn compare(
    ours: &ConfigSnapshot,
    theirs: &ConfigSnapshot,
    theirs_status: &ClientStatus,
    kinds: &[&'static str],
) -> Vec<Difference> {
    let mut out = Vec::new();
    macro_rules! each {
        ($kind:literal, $field:ident, $filter:expr) => {
            if kinds.contains(&$kind) {
                let names: BTreeSet<&str> = ours
                    .$field
                    .keys()
                    .chain(theirs.$field.keys())
                    .map(|k| &**k)
                    .filter($filter)
                    .collect();
                for name in names {
                    match (ours.$field.get(name), theirs.$field.get(name)) {
                        (Some(a), Some(b)) => {
                            out.extend(diff($kind, name, &flatten(&**a), &flatten(&**b)))
                        }
                        (a, b) => {
                            // Absent on their side: NACKed by our translation, or not sent.
                            let nack = theirs_status
                                .resources
                                .iter()
                                .find(|r| r.name == name && r.state != ResourceState::Acked)
                                .map(|r| format!("{}: {:?}", r.state, r.last_error));
                            out.push(Difference {
                                kind: $kind,
                                resource: name.to_string(),
                                path: String::new(),
                                ours: a.map(|_| "present".to_string()),
                                theirs: b.map(|_| "present".to_string()).or(nack),
                            })
                        }
                    }
                }
            }
        };
    }
    // A sidecar also gets inbound and passthrough clusters: compare outbound ones only.
    let outbound = |n: &&str| kinds.contains(&"LDS") || n.starts_with("outbound|");
    each!("LDS", listeners, |_| true);
    if kinds.contains(&"RDS") {
        // Route configurations by the listener that refers to them (the two name them
        // differently).
        for (listener, _) in ours.listeners.iter() {
            match (
                ours.route_config_of(listener),
                theirs.route_config_of(listener),
            ) {
                (Some(a), Some(b)) => {
                    out.extend(diff("RDS", listener, &flatten(&*a), &flatten(&*b)))
                }
                (None, None) => {}
                (a, b) => out.push(Difference {
                    kind: "RDS",
                    resource: listener.to_string(),
                    path: String::new(),
                    ours: a.map(|_| "present".to_string()),
                    theirs: b.map(|_| "present".to_string()).or_else(|| {
                        // The route configuration their listener names: NACKed by our
                        // translation, or never sent?
                        let name = match &theirs.listeners.get(&**listener)?.kind {
                            ListenerKind::Client(hcm) => match &hcm.route_source {
                                RouteSource::Rds(name) => name.clone(),
                                RouteSource::Inline(_) => return None,
                            },
                            ListenerKind::Server(_) => return None,
                        };
                        let status = theirs_status.resources.iter().find(|r| r.name == name);
                        Some(match status {
                            Some(r) => format!("{name} {}: {:?}", r.state, r.last_error),
                            None => format!("{name} never sent"),
                        })
                    }),
                }),
            }
        }
    }
    each!("CDS", clusters, outbound);
    each!("EDS", endpoints, outbound);
    out
}

/// Every difference no entry explains and every entry that explains nothing, as a report
/// (`None`: only expected differences).
fn unexpected(what: &str, found: &[Difference], expected: &[Expected]) -> Option<String> {
    let unexplained: Vec<String> = found
        .iter()
        .filter(|d| !expected.iter().any(|e| e.explains(d)))
        .map(|d| d.to_string())
        .collect();
    let stale: Vec<String> = expected
        .iter()
        .filter(|e| !found.iter().any(|d| e.explains(d)))
        .map(|e| format!("{e:?}"))
        .collect();
    (!unexplained.is_empty() || !stale.is_empty()).then(|| {
        format!(
            "{what}: {} unexplained differences:\n{}\n\n{} expected differences not seen:\n{}\n",
            unexplained.len(),
            unexplained.join("\n"),
            stale.len(),
            stale.join("\n")
        )
    })
}

async fn differential(corpus_name: &str) {
    let dir = corpus(corpus_name);
    let Some(peer) = istiod(&dir).await else {
        return;
    };
    let node = workload(corpus_name).node_proto();
    let all = ours(&dir, node.clone(), &[]).await;
    assert!(!all.clusters.is_empty(), "{corpus_name}: no clusters");

    // Bookinfo's workloads all live at 127.0.0.1, and istiod takes a node's labels from
    // whichever WorkloadEntry at the node's IP it finds first: which policies reach the
    // inbound listener is istiod's choice of the moment there, so only the fidelity corpus
    // (one address per workload) compares inbound listeners.
    let listeners: Vec<String> = all
        .listeners
        .keys()
        .filter(|k| corpus_name != "bookinfo" || !k.starts_with("xds.istio.io/grpc/lds/inbound/"))
        .map(|k| k.to_string())
        .collect();
    let subscribed = ours(&dir, node.clone(), &listeners).await;
    let (proxyless, status) = theirs(&peer, node.clone(), &listeners).await;
    let found = compare(
        &subscribed,
        &proxyless,
        &status,
        &["LDS", "RDS", "CDS", "EDS"],
    );
    let (proxyless_only, sidecar_only) = match corpus_name {
        "bookinfo" => (&[][..], &[][..]),
        _ => (FIDELITY_PROXYLESS, FIDELITY_SIDECAR),
    };
    let expected: Vec<Expected> = PROXYLESS.iter().chain(proxyless_only).copied().collect();
    let a = unexpected(&format!("{corpus_name}, proxyless"), &found, &expected);

    let sidecar = sidecar_clusters(&peer, as_sidecar(node)).await;
    let found = compare(&all, &sidecar, &ClientStatus::default(), &["CDS", "EDS"]);
    let expected: Vec<Expected> = SIDECAR.iter().chain(sidecar_only).copied().collect();
    let b = unexpected(&format!("{corpus_name}, sidecar"), &found, &expected);
    let report: String = a.into_iter().chain(b).collect();
    assert!(report.is_empty(), "{report}");
}

#[tokio::test]
async fn bookinfo_gives_the_same_model_as_istiod() {
    differential("bookinfo").await;
}

#[tokio::test]
async fn the_fidelity_corpus_gives_the_same_model_as_istiod() {
    differential("fidelity").await;
}
