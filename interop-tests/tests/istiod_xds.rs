//! Our ADS client as an Istio proxyless workload of a real istiod (`MESH_ISTIOD_BIN`):
//! node metadata `GENERATOR: grpc`, TLS on the 15012-like secure port verified with the
//! istiod root, authenticated by a service-account JWT or by a certificate istiod's own CA
//! issued. The config directory is the project's Bookinfo example
//! (examples/config/bookinfo: ServiceEntries + WorkloadEntries, VirtualServices with a
//! header route and a 90/10 split, DestinationRules with ISTIO_MUTUAL and load balancers,
//! PeerAuthentication STRICT, AuthorizationPolicies), exactly as our embedded control
//! plane loads it.
//!
//! Every resource istiod sends must be ACKed; a NACK prints the rejection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_core::TrustDomain;
use mesh_core::model::{
    ClusterSpecifier, Discovery, EndpointAddress, LbPolicy, ListenerKind, RouteAction, RouteSource,
};
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_interop_tests::xds::{fast_backoff, not_acked, settled};
use mesh_tls::ca::IstioCaClient;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::{CertProvider, Credentials};
use mesh_xds::client::{
    ClientStatus, ConfigSnapshot, Protocol, ResourceState, XdsClient, XdsClientConfig, channel,
};
use mesh_xds::resource::ResourceType;

const WAIT: Duration = Duration::from_secs(30);
const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn bookinfo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo")
}

fn cluster(subset: &str, host: &str) -> String {
    format!("outbound|9080|{subset}|{host}")
}

struct Setup {
    work: tempfile::TempDir,
    issuer: TestIssuer,
    istiod: Istiod,
}

async fn setup() -> Option<Setup> {
    setup_with(|_| bookinfo_dir()).await
}

/// Like [`setup`], with the config directory chosen by `config_dir(work dir)`.
async fn setup_with(config_dir: impl FnOnce(&std::path::Path) -> PathBuf) -> Option<Setup> {
    let bin = mesh_test_support::peer("MESH_ISTIOD_BIN")?;
    let work = tempfile::tempdir().unwrap();
    let config_dir = config_dir(work.path());
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let options = IstiodOptions {
        config_dir: Some(config_dir),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Some(Setup {
        work,
        issuer,
        istiod,
    })
}

/// The node of an Istio proxyless gRPC workload (what istio-agent's grpc bootstrap sends).
fn proxyless_node(name: &str, ns: &str, sa: &str, app: &str) -> Node {
    proxyless_node_at("127.0.0.1", name, ns, sa, app)
}

/// [`proxyless_node`] for a workload at `ip`.
fn proxyless_node_at(ip: &str, name: &str, ns: &str, sa: &str, app: &str) -> Node {
    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.to_owned())),
        }
    }
    let labels = Struct {
        fields: [("app", s(app)), ("version", s("v1"))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    };
    let fields = [
        ("GENERATOR", s("grpc")),
        ("NAMESPACE", s(ns)),
        ("SERVICE_ACCOUNT", s(sa)),
        ("INSTANCE_IPS", s(ip)),
        ("CLUSTER_ID", s("Kubernetes")),
        ("ISTIO_VERSION", s("1.31.0")),
        ("WORKLOAD_NAME", s(name)),
        (
            "LABELS",
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        ),
    ];
    Node {
        id: format!("sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(Struct {
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }),
        ..Default::default()
    }
}

fn config(node: Node, protocol: Protocol, token_file: Option<PathBuf>) -> XdsClientConfig {
    XdsClientConfig {
        node,
        protocol,
        token_file,
        backoff: fast_backoff(),
        resource_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

fn tls_config(
    root: rustls::pki_types::CertificateDer<'static>,
    client_cert: Option<&Credentials>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(mesh_tls::config::default_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client_cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// Waits for readiness, then fails listing every resource not ACKed (with the reason).
async fn ready_and_all_acked(client: &XdsClient, istiod: &Istiod) -> ClientStatus {
    let status = settled(client, WAIT).await.unwrap_or_else(|status| {
        panic!(
            "not ready in {WAIT:?}: {status:#?}\nistiod log:\n{}",
            istiod.log_tail(40)
        )
    });
    let bad = not_acked(&status);
    assert!(bad.is_empty(), "resources not ACKED:\n{}", bad.join("\n"));
    status
}

/// Waits until every reviews cluster names the reviews service account in its SAN
/// matchers: istiod's first push after it starts can come before it has indexed the
/// WorkloadEntries' service accounts (the clusters then arrive with no SANs and a later
/// push adds them), and the model checks below want the settled config.
async fn reviews_sans_known(client: &XdsClient) {
    let known = |snap: &ConfigSnapshot| {
        ["v1", "v2", "v3"].iter().all(|subset| {
            snap.clusters
                .get(cluster(subset, REVIEWS).as_str())
                .and_then(|c| c.tls.as_ref())
                .is_some_and(|tls| {
                    format!("{:?}", tls.validation.san_matchers)
                        .contains("spiffe://cluster.local/ns/default/sa/reviews")
                })
        })
    };
    let settled = tokio::time::timeout(WAIT, async {
        while !known(&client.snapshot()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "the reviews clusters never named the reviews service account"
    );
}

/// The Bookinfo reviews route, clusters and endpoints as istiod's proxyless generator
/// builds them.
fn assert_reviews_model(snap: &ConfigSnapshot) {
    let listener = snap
        .listeners
        .get(&*format!("{REVIEWS}:9080"))
        .expect("the target's listener");
    let ListenerKind::Client(hcm) = &listener.kind else {
        panic!("want a client (API) listener: {listener:?}");
    };
    let RouteSource::Rds(rds) = &hcm.route_source else {
        panic!("want RDS: {:?}", hcm.route_source);
    };
    let routes = snap
        .route_configs
        .get(rds.as_str())
        .expect("the route config");
    let vhost = routes
        .virtual_hosts
        .iter()
        .find(|v| v.domains.iter().any(|d| d.starts_with(REVIEWS)))
        .unwrap_or_else(|| panic!("no virtual host for {REVIEWS}: {routes:#?}"));
    // Rule 1: end-user: jason -> v2. Rule 2: 90/10 v1/v3.
    let forward = |i: usize| match &vhost.routes[i].action {
        RouteAction::Forward(f) => f.cluster.clone(),
        other => panic!("route {i}: want forward, got {other:?}"),
    };
    assert!(vhost.routes.len() >= 2, "{vhost:#?}");
    let jason = &vhost.routes[0];
    assert!(
        jason
            .route_match
            .headers
            .iter()
            .any(|h| h.name == "end-user"),
        "{jason:#?}"
    );
    assert_eq!(
        forward(0),
        ClusterSpecifier::Cluster(cluster("v2", REVIEWS))
    );
    let ClusterSpecifier::Weighted(split) = forward(1) else {
        panic!("route 1: want a weighted split: {:#?}", vhost.routes[1]);
    };
    let split: Vec<(String, u32)> = split.into_iter().map(|w| (w.name, w.weight)).collect();
    assert_eq!(
        split,
        vec![(cluster("v1", REVIEWS), 90), (cluster("v3", REVIEWS), 10)]
    );

    let reviews_id = "spiffe://cluster.local/ns/default/sa/reviews";
    for (subset, port, lb) in [
        ("v1", 19082, "least"),
        ("v2", 19083, "least"),
        ("v3", 19084, "rr"),
    ] {
        let name = cluster(subset, REVIEWS);
        let c = snap
            .clusters
            .get(name.as_str())
            .unwrap_or_else(|| panic!("cluster {name} missing"));
        assert!(matches!(c.discovery, Discovery::Eds { .. }), "{c:#?}");
        match lb {
            "least" => assert!(
                matches!(c.lb_policy, LbPolicy::LeastRequest { .. }),
                "{name}: {:?}",
                c.lb_policy
            ),
            _ => assert_eq!(c.lb_policy, LbPolicy::RoundRobin, "{name}"),
        }
        // ISTIO_MUTUAL: mTLS with the workload certificate, server checked by SAN.
        let tls = c.tls.as_ref().unwrap_or_else(|| panic!("{name}: no TLS"));
        assert!(tls.identity_certificate.is_some(), "{name}: {tls:?}");
        assert!(
            format!("{:?}", tls.validation.san_matchers).contains(reviews_id),
            "{name}: {:?}",
            tls.validation.san_matchers
        );
        let eds = c.discovery.eds_name(&name).unwrap();
        let cla = snap
            .endpoints
            .get(eds)
            .unwrap_or_else(|| panic!("endpoints of {name} ({eds}) missing"));
        let addrs: Vec<&EndpointAddress> = cla
            .localities
            .iter()
            .flat_map(|l| l.endpoints.iter().map(|e| &e.address))
            .collect();
        let want: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(addrs, vec![&EndpointAddress::Socket(want)], "{name}");
    }
}

#[tokio::test]
async fn proxyless_client_with_a_token_gets_the_bookinfo_reviews_config() {
    let Some(s) = setup().await else { return };
    let token = s.work.path().join("productpage.jwt");
    std::fs::write(
        &token,
        s.issuer
            .token("default", "productpage", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let channel = channel::tls(
        &s.istiod.secure_url(),
        tls_config(s.istiod.ca_root(), None),
        Some(ISTIOD_SERVER_NAME),
    )
    .unwrap();
    let node = proxyless_node("productpage-v1", "default", "productpage", "productpage");
    let client = XdsClient::new(
        config(node, Protocol::StateOfTheWorld, Some(token)),
        channel,
    );
    client
        .subscribe_target(&format!("xds:///{REVIEWS}:9080"))
        .await
        .unwrap();
    let status = ready_and_all_acked(&client, &s.istiod).await;
    reviews_sans_known(&client).await;
    for kind in [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
    ] {
        assert!(
            status.resources.iter().any(|r| r.kind == kind),
            "nothing of type {kind:?}: {status:#?}"
        );
    }
    assert_reviews_model(&client.snapshot());
}

#[tokio::test]
async fn proxyless_client_with_istiod_issued_certificate_over_delta() {
    let Some(s) = setup().await else { return };
    // The workload's certificate from istiod's CA (token-authenticated once) ...
    let token = s.work.path().join("productpage.jwt");
    std::fs::write(
        &token,
        s.issuer
            .token("default", "productpage", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let id = mesh_core::SpiffeId::new("spiffe://cluster.local/ns/default/sa/productpage").unwrap();
    let creds = IstioCaClient::new(s.istiod.secure_url(), id, vec![s.istiod.ca_root()])
        .with_server_name(ISTIOD_SERVER_NAME)
        .with_token_file(&token)
        .fetch()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.istiod.log_tail(30)));
    // ... then xDS authenticated by that certificate alone.
    let channel = channel::tls(
        &s.istiod.secure_url(),
        tls_config(s.istiod.ca_root(), Some(&creds)),
        Some(ISTIOD_SERVER_NAME),
    )
    .unwrap();
    let node = proxyless_node("productpage-v1", "default", "productpage", "productpage");
    let client = XdsClient::new(config(node, Protocol::Delta, None), channel);
    for host in [
        REVIEWS,
        "ratings.default.svc.cluster.local",
        "details.default.svc.cluster.local",
    ] {
        client
            .subscribe_target(&format!("xds:///{host}:9080"))
            .await
            .unwrap();
    }
    ready_and_all_acked(&client, &s.istiod).await;
    reviews_sans_known(&client).await;
    let snap = client.snapshot();
    assert_reviews_model(&snap);
    for host in [
        "ratings.default.svc.cluster.local",
        "details.default.svc.cluster.local",
    ] {
        assert!(
            snap.clusters.contains_key(cluster("v1", host).as_str()),
            "{host}: {:?}",
            snap.clusters.keys().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn identity_mismatch_between_node_and_token_is_refused() {
    let Some(s) = setup().await else { return };
    // A token for "reviews" cannot fetch config as "productpage".
    let token = s.work.path().join("reviews.jwt");
    std::fs::write(
        &token,
        s.issuer
            .token("default", "reviews", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let channel = channel::tls(
        &s.istiod.secure_url(),
        tls_config(s.istiod.ca_root(), None),
        Some(ISTIOD_SERVER_NAME),
    )
    .unwrap();
    let node = proxyless_node("productpage-v1", "default", "productpage", "productpage");
    let client = XdsClient::new(
        config(node, Protocol::StateOfTheWorld, Some(token)),
        channel,
    );
    client
        .subscribe_target(&format!("xds:///{REVIEWS}:9080"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!client.is_ready());
    assert!(client.snapshot().listeners.is_empty());
    assert!(
        s.istiod.log_tail(200).contains("Unauthorized XDS"),
        "{}",
        s.istiod.log_tail(40)
    );
}

#[tokio::test]
async fn istiod_restart_keeps_the_last_config_then_resyncs() {
    let Some(mut s) = setup().await else { return };
    let token = s.work.path().join("productpage.jwt");
    std::fs::write(
        &token,
        s.issuer
            .token("default", "productpage", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let channel = channel::tls(
        &s.istiod.secure_url(),
        tls_config(s.istiod.ca_root(), None),
        Some(ISTIOD_SERVER_NAME),
    )
    .unwrap();
    let node = proxyless_node("productpage-v1", "default", "productpage", "productpage");
    let client = XdsClient::new(
        config(node, Protocol::StateOfTheWorld, Some(token)),
        channel,
    );
    client
        .subscribe_target(&format!("xds:///{REVIEWS}:9080"))
        .await
        .unwrap();
    ready_and_all_acked(&client, &s.istiod).await;
    reviews_sans_known(&client).await;
    let versions_before = ready_and_all_acked(&client, &s.istiod).await.type_versions;
    let before = client.snapshot();

    // istiod dies: the stream breaks, the last config stays.
    s.istiod.kill().await;
    let disconnected = tokio::time::timeout(WAIT, async {
        loop {
            if !client.status().await.unwrap().connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(disconnected.is_ok(), "the client never saw istiod go away");
    assert_reviews_model(&client.snapshot());

    // istiod comes back on the same ports, CA and config: the client reconnects and gets
    // (and ACKs) the same config again.
    // istiod's versions are `<RFC 3339 time, seconds>/<push>`: let the clock move on so the
    // restarted istiod's versions differ and a resend is visible.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.istiod.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let reconnected = tokio::time::timeout(WAIT, async {
        loop {
            let status = client.status().await.unwrap();
            if status.connected
                && status
                    .resources
                    .iter()
                    .all(|r| r.state == ResourceState::Acked)
                // istiod's push versions are new after a restart: every type was resent.
                && status.type_versions.len() == 4
                && status
                    .type_versions
                    .iter()
                    .all(|v| !versions_before.contains(v))
            {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let status = match reconnected {
        Ok(status) => status,
        Err(_) => panic!(
            "no resync after the restart; versions before {versions_before:?}, now {:#?}\n\
             istiod log:\n{}",
            client.status().await.unwrap(),
            s.istiod.log_tail(10)
        ),
    };
    assert!(status.resources.len() >= 4, "{status:#?}");
    eprintln!(
        "versions before {versions_before:?}, after {:?}",
        status.type_versions
    );
    reviews_sans_known(&client).await;
    let after = client.snapshot();
    assert_reviews_model(&after);
    assert_eq!(before.clusters.len(), after.clusters.len());
}

/// The server side: istiod's inbound listener for the reviews-v1 workload carries
/// PeerAuthentication STRICT (client certificates required) and the `reviews-viewer`
/// AuthorizationPolicy as RBAC, which our model evaluates.
#[tokio::test]
async fn inbound_listener_carries_strict_mtls_and_the_authorization_policy() {
    use mesh_core::model::{HttpFilterConfig, RbacRequest};
    // istiod tells workloads apart by IP: with every WorkloadEntry on 127.0.0.1 it picks any
    // of them for the node (and its policies). Give each its own loopback address.
    let Some(s) = setup_with(|work| {
        let dir = work.join("bookinfo-distinct-ips");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(bookinfo_dir()).unwrap() {
            let path = entry.unwrap().path();
            let mut text = std::fs::read_to_string(&path).unwrap();
            if path.file_name().is_some_and(|n| n == "workloads.yaml") {
                for (i, port) in (19080..=19085).enumerate() {
                    let from = format!("address: 127.0.0.1\n  ports:\n    http: {port}");
                    let to = format!("address: 127.0.0.{}\n  ports:\n    http: {port}", 11 + i);
                    assert!(text.contains(&from), "workloads.yaml changed shape");
                    text = text.replace(&from, &to);
                }
            }
            std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
        }
        dir
    })
    .await
    else {
        return;
    };
    let token = s.work.path().join("reviews.jwt");
    std::fs::write(
        &token,
        s.issuer
            .token("default", "reviews", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let channel = channel::tls(
        &s.istiod.secure_url(),
        tls_config(s.istiod.ca_root(), None),
        Some(ISTIOD_SERVER_NAME),
    )
    .unwrap();
    let node = proxyless_node_at("127.0.0.13", "reviews-v1", "default", "reviews", "reviews");
    let client = XdsClient::new(
        config(node, Protocol::StateOfTheWorld, Some(token)),
        channel,
    );
    let name = "xds.istio.io/grpc/lds/inbound/127.0.0.13:19082";
    client.subscribe_target(name).await.unwrap();
    ready_and_all_acked(&client, &s.istiod).await;
    let snap = client.snapshot();
    let listener = snap.listeners.get(name).expect("the inbound listener");
    let ListenerKind::Server(server) = &listener.kind else {
        panic!("want a server listener: {listener:#?}");
    };
    assert_eq!(server.address, "127.0.0.13:19082".parse().unwrap());
    let chains: Vec<_> = server
        .filter_chains
        .iter()
        .chain(server.default_filter_chain.iter())
        .collect();
    // STRICT: every chain that accepts connections requires a client certificate.
    assert!(!chains.is_empty(), "{server:#?}");
    for chain in &chains {
        let tls = chain
            .tls
            .as_ref()
            .unwrap_or_else(|| panic!("plaintext chain {} under STRICT", chain.name));
        assert!(tls.require_client_certificate, "{}: {tls:?}", chain.name);
    }
    // reviews-viewer: productpage may GET /reviews/*; nobody else, nothing else.
    let request = |principal: &'static str, method: &'static str, path: &'static str| RbacRequest {
        headers: vec![
            (":method", method),
            (":path", path),
            (":authority", REVIEWS),
        ],
        authenticated: true,
        peer_names: vec![principal],
        peer_ip: Some("127.0.0.1".parse().unwrap()),
        remote_ip: Some("127.0.0.1".parse().unwrap()),
        destination: Some(("127.0.0.1".parse().unwrap(), 19082)),
        server_name: None,
    };
    let productpage = "spiffe://cluster.local/ns/default/sa/productpage";
    let ratings = "spiffe://cluster.local/ns/default/sa/ratings";
    for chain in &chains {
        let rbac: Vec<_> = chain
            .http_connection_manager
            .http_filters
            .iter()
            .filter_map(|f| match &f.config {
                HttpFilterConfig::Rbac(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(!rbac.is_empty(), "{}: no RBAC filter", chain.name);
        let allows = |req: &RbacRequest<'_>| rbac.iter().all(|r| r.allows(req));
        assert!(
            allows(&request(productpage, "GET", "/reviews/1")),
            "{rbac:#?}"
        );
        assert!(!allows(&request(ratings, "GET", "/reviews/1")), "{rbac:#?}");
        assert!(
            !allows(&request(productpage, "POST", "/reviews/1")),
            "{rbac:#?}"
        );
        assert!(
            !allows(&request(productpage, "GET", "/ratings/1")),
            "{rbac:#?}"
        );
    }
}

/// The default proxyless bootstrap (`Bootstrap::istio_proxyless` with nothing but the node
/// and istiod's address, as docs/istio.md has users write it) given to `Mesh::builder()`:
/// the channel is TLS, verified against the workload identity's mesh root and the
/// address's host (istiod's certificate carries `localhost` here, `istiod.istio-system.svc`
/// in a cluster), and istiod authenticates the workload by the certificate it issued. The
/// address is the secure port, which speaks nothing but TLS, so config arriving proves the
/// channel is TLS; the plaintext port is never dialed. The same bootstrap without the
/// mesh root (an identity from another CA) gets nothing.
#[tokio::test]
async fn default_proxyless_bootstrap_reaches_istiod_over_tls() {
    use mesh_tls::IdentityStore;
    use mesh_xds::bootstrap::{Bootstrap, ChannelCredentials, IstioNode};

    let Some(s) = setup().await else { return };
    let token = s.work.path().join("productpage.jwt");
    std::fs::write(
        &token,
        s.issuer
            .token("default", "productpage", Duration::from_secs(3600))
            .unwrap(),
    )
    .unwrap();
    let node = IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: "productpage-v1".into(),
        namespace: "default".into(),
        service_account: "productpage".into(),
        labels: [("app", "productpage"), ("version", "v1")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        istio_version: "1.31.0".into(),
        ..Default::default()
    };
    let creds = IstioCaClient::new(
        s.istiod.secure_url(),
        node.spiffe_id().unwrap(),
        vec![s.istiod.ca_root()],
    )
    .with_server_name(ISTIOD_SERVER_NAME)
    .with_token_file(&token)
    .fetch()
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", s.istiod.log_tail(30)));
    let secure = s.istiod.addrs().secure_grpc;
    let address = format!("localhost:{}", secure.port());
    let bootstrap = Bootstrap::istio_proxyless(node.clone(), &address);
    assert!(
        matches!(
            bootstrap.xds_servers[0].channel_credentials().unwrap(),
            ChannelCredentials::Tls {
                ca_certificate_file: None,
                server_name: None,
                ..
            }
        ),
        "{:?}",
        bootstrap.xds_servers[0]
    );
    assert_ne!(secure, s.istiod.addrs().grpc);

    let mesh = mesh::Mesh::builder()
        .identity_store(IdentityStore::from_credentials(creds).unwrap())
        .bootstrap(bootstrap.clone())
        .build()
        .unwrap();
    let client = mesh.xds().expect("an xDS client").clone();
    client
        .subscribe_target(&format!("xds:///{REVIEWS}:9080"))
        .await
        .unwrap();
    ready_and_all_acked(&client, &s.istiod).await;
    reviews_sans_known(&client).await;
    assert_reviews_model(&client.snapshot());

    // An identity from another CA: istiod's certificate does not chain to its root.
    let other = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let stranger = other
        .issue(&node.spiffe_id().unwrap(), Duration::from_secs(3600))
        .unwrap();
    let mesh = mesh::Mesh::builder()
        .identity_store(IdentityStore::from_credentials(stranger).unwrap())
        .bootstrap(bootstrap)
        .build()
        .unwrap();
    let client = mesh.xds().expect("an xDS client").clone();
    client
        .subscribe_target(&format!("xds:///{REVIEWS}:9080"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!client.is_ready());
    assert!(client.snapshot().listeners.is_empty());
}
