//! A stock Envoy 1.40 (`MESH_ENVOY_BIN`), bootstrapped with nothing but our xDS server's
//! address, is the data plane of a mesh described in Istio YAML:
//! - it ACKs every resource (`/config_dump` holds them; every `update_rejected` stat is 0);
//! - it routes as the VirtualService says: 90/10 weighted split over 2,000 requests, a
//!   header match, retries on 503;
//! - over mTLS to backends that require a client certificate from our CA;
//! - an edit of the watched directory reaches Envoy and our own xDS client within a
//!   second; a broken edit is rejected with the precise message and traffic is unaffected.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_xds::client::{Protocol, XdsClient, XdsClientConfig, channel};
use support::*;

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const FLAKY: &str = "flaky.default.svc.cluster.local";

fn services(ports: [u16; 4]) -> String {
    let [v1, v2, v3, flaky] = ports;
    let we = |name: &str, version: &str, port: u16| {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: reviews, version: {version}}}
  serviceAccount: reviews
"#
        )
    };
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{REVIEWS}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
{}{}{}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: flaky, namespace: default}}
spec:
  hosts: [{FLAKY}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {flaky}}}, serviceAccount: flaky}}]
"#,
        we("reviews-v1", "v1", v1),
        we("reviews-v2", "v2", v2),
        we("reviews-v3", "v3", v3),
    )
}

const DESTINATION_RULES: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: default}
spec:
  host: flaky.default.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;

/// reviews: jason -> v2; everyone else `split` (subset, weight) pairs. flaky: 3 retries on 503.
fn routing(split: &[(&str, i32)]) -> String {
    let dests: String = split
        .iter()
        .map(|(subset, weight)| {
            format!(
                "    - destination: {{host: {REVIEWS}, subset: {subset}}}\n      weight: {weight}\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{REVIEWS}]
  http:
  - name: jason
    match:
    - headers: {{end-user: {{exact: jason}}}}
    route:
    - destination: {{host: {REVIEWS}, subset: v2}}
  - name: split
    route:
{dests}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flaky, namespace: default}}
spec:
  hosts: [{FLAKY}]
  http:
  - route:
    - destination: {{host: {FLAKY}}}
    retries: {{attempts: 3, retryOn: "503,connect-failure"}}
"#
    )
}

fn envoy_bootstrap(xds: std::net::SocketAddr, outbound: u16, certs: &Path, delta: bool) -> String {
    let api = if delta { "DELTA_GRPC" } else { "GRPC" };
    format!(
        r#"
node:
  id: sidecar~127.0.0.1~envoy.default~default.svc.cluster.local
  cluster: envoy.default
  metadata:
    OUTBOUND_PORT: "{outbound}"
    TLS_CERT_CHAIN: "{certs}/cert-chain.pem"
    TLS_PRIVATE_KEY: "{certs}/key.pem"
    TLS_ROOT_CERT: "{certs}/root-cert.pem"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  lds_config: {{ads: {{}}, resource_api_version: V3}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}
"#,
        certs = certs.display(),
        xds_port = xds.port(),
    )
}

/// The stats whose name contains `update_rejected`, with their values.
fn rejected_stats(envoy: &Envoy) -> Vec<(String, u64)> {
    envoy
        .get("/stats?filter=update_rejected")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stat(envoy: &Envoy, name: &str) -> u64 {
    let last = name.rsplit('.').next().unwrap_or(name);
    envoy
        .get(&format!("/stats?filter={last}"))
        .lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

struct Mesh {
    _config_dir: tempfile::TempDir,
    config_dir: std::path::PathBuf,
    _envoy_dir: tempfile::TempDir,
    cp: mesh_control::server::ControlPlane,
    envoy: Envoy,
    outbound: std::net::SocketAddr,
    backends: Vec<Backend>,
}

async fn mesh(delta: bool) -> Option<Mesh> {
    let bin = mesh_test_support::peer("MESH_ENVOY_BIN")?;
    let config = tempfile::tempdir().unwrap();
    // Backends first: their ports go into the config.
    let ca = mesh_tls::dev_ca::DevCa::new(mesh_core::TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    ca.save(ca_dir.path()).unwrap();
    let issue = |sa: &str| ca.issue(&id(sa), HOUR).unwrap();
    let backends = vec![
        mtls_backend(issue("reviews"), "v1", false).await,
        mtls_backend(issue("reviews"), "v2", false).await,
        mtls_backend(issue("reviews"), "v3", false).await,
        mtls_backend(issue("flaky"), "flaky", true).await,
    ];
    let ports = [0, 1, 2, 3].map(|i| backends[i].addr.port());
    std::fs::write(config.path().join("services.yaml"), services(ports)).unwrap();
    std::fs::write(
        config.path().join("destination-rules.yaml"),
        DESTINATION_RULES,
    )
    .unwrap();
    std::fs::write(
        config.path().join("routing.yaml"),
        routing(&[("v1", 90), ("v3", 10)]),
    )
    .unwrap();
    // The control plane signs with the same CA (Istio's ROOT_CA_DIR layout).
    let cp = mesh_control::server::ControlPlane::start(mesh_control::server::ControlPlaneOptions {
        config_dir: config.path().to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        ca_addr: Some("127.0.0.1:0".parse().unwrap()),
        debug_addr: Some("127.0.0.1:0".parse().unwrap()),
        ca_dir: Some(ca_dir.path().to_path_buf()),
        watch_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let envoy_dir = tempfile::tempdir().unwrap();
    write_certs(
        envoy_dir.path(),
        &cp.ca().issue(&id("envoy"), HOUR).unwrap(),
    );
    let outbound_port = free_port();
    let envoy = Envoy::start(
        &bin,
        envoy_dir.path(),
        &envoy_bootstrap(cp.xds_addr(), outbound_port, envoy_dir.path(), delta),
    );
    let outbound: std::net::SocketAddr = format!("127.0.0.1:{outbound_port}").parse().unwrap();
    // Envoy is ready when its listener is up and it has ACKed everything.
    tokio::time::timeout(Duration::from_secs(20), cp.xds().synced(1))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "envoy did not ACK: {:#?}\n{}",
                cp.xds().status(),
                envoy.log()
            )
        });
    within(
        Duration::from_secs(20),
        "envoy serves the outbound listener",
        || http_get(outbound, "/", &[("Host", REVIEWS)]).is_some_and(|(s, _)| s == 200),
    )
    .await;
    Some(Mesh {
        config_dir: config.path().to_path_buf(),
        _config_dir: config,
        _envoy_dir: envoy_dir,
        cp,
        envoy,
        outbound,
        backends,
    })
}

fn get(m: &Mesh, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut h = vec![("Host", host)];
    h.extend_from_slice(headers);
    http_get(m.outbound, "/", &h).expect("request through envoy")
}

fn assert_all_acked(m: &Mesh) {
    let rejected = rejected_stats(&m.envoy);
    assert!(
        rejected.iter().any(|(k, _)| k.contains("cds"))
            && rejected.iter().any(|(k, _)| k.contains("lds")),
        "expected CDS/LDS stats: {rejected:?}"
    );
    assert!(
        rejected.iter().all(|(_, v)| *v == 0),
        "{rejected:?}\n{}",
        m.envoy.log()
    );
    assert!(stat(&m.envoy, "cluster_manager.cds.update_success") >= 1);
    assert!(stat(&m.envoy, "listener_manager.lds.update_success") >= 1);
    let status = m.cp.xds().status();
    assert!(status.nacks.is_empty(), "{:?}", status.nacks);
    assert!(status.all_synced(), "{status:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_acks_everything_and_routes_as_the_virtual_service_says() {
    let Some(m) = mesh(false).await else {
        return;
    };
    assert_all_acked(&m);
    // config_dump holds our listener, route configuration, every cluster and endpoints.
    let dump = m.envoy.get("/config_dump?include_eds");
    for name in [
        format!("outbound|9080|v1|{REVIEWS}"),
        format!("outbound|9080|v3|{REVIEWS}"),
        format!("outbound|9080||{FLAKY}"),
        format!("\"name\": \"127.0.0.1_{}\"", m.outbound.port()),
        format!("\"name\": \"{}\"", m.outbound.port()),
    ] {
        assert!(dump.contains(&name), "config_dump lacks {name}");
    }
    let client = m.cp.xds().status();
    let types = &client.clients[0].types;
    assert_eq!(types["CDS"].sent_resources, 5, "4 reviews clusters + flaky");

    // 90/10 over 2,000 requests (mTLS to the backends).
    let (mut v1, mut v3) = (0u32, 0u32);
    for _ in 0..2000 {
        let (status, body) = get(&m, REVIEWS, &[]);
        assert_eq!(status, 200, "{body}");
        match body.as_str() {
            "v1" => v1 += 1,
            "v3" => v3 += 1,
            other => panic!("unexpected backend {other:?}"),
        }
    }
    let share = f64::from(v1) / 2000.0;
    // 2,000 Bernoulli(0.9) draws: sigma = 0.0067; +-0.03 is 4.5 sigma.
    assert!((0.87..=0.93).contains(&share), "v1 {v1}, v3 {v3}");
    assert!(v3 > 0);

    // Header match.
    for _ in 0..20 {
        assert_eq!(
            get(&m, REVIEWS, &[("end-user", "jason")]),
            (200, "v2".into())
        );
    }

    // Retry on 503: every other attempt fails, every request succeeds.
    let before = m.backends[3].hits();
    for _ in 0..20 {
        assert_eq!(get(&m, FLAKY, &[]), (200, "flaky".into()));
    }
    let attempts = m.backends[3].hits() - before;
    assert!(
        attempts >= 30,
        "503s must have been retried: {attempts} attempts"
    );
    assert!(
        stat(
            &m.envoy,
            &format!("cluster.outbound|9080||{FLAKY}.upstream_rq_retry")
        ) >= 10
    );
    // mTLS: the backends saw TLS handshakes with Envoy's certificate.
    assert!(
        stat(
            &m.envoy,
            &format!("cluster.outbound|9080|v1|{REVIEWS}.ssl.handshake")
        ) >= 1
    );

    // Our own xDS client, as a proxyless node, on the same server.
    let node = Node {
        id: "sidecar~127.0.0.1~ours.default~default.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: [(
                "GENERATOR".to_string(),
                Value {
                    kind: Some(Kind::StringValue("grpc".into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    };
    let ours = XdsClient::new(
        XdsClientConfig {
            node,
            protocol: Protocol::Delta,
            ..Default::default()
        },
        channel::insecure(&format!("http://{}", m.cp.xds_addr())).unwrap(),
    );
    ours.subscribe_target(&format!("xds:///{REVIEWS}:9080"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), ours.ready())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), m.cp.xds().synced(2))
        .await
        .unwrap();
    let our_weights = |c: &XdsClient| -> Vec<String> {
        use mesh_core::model::{ClusterSpecifier, RouteAction};
        let snap = c.snapshot();
        let Some(rc) = snap.route_configs.get(format!("{REVIEWS}:9080").as_str()) else {
            return Vec::new();
        };
        match &rc.virtual_hosts[0].routes.last().unwrap().action {
            RouteAction::Forward(f) => match &f.cluster {
                ClusterSpecifier::Cluster(c) => vec![c.to_string()],
                ClusterSpecifier::Weighted(ws) => ws.iter().map(|w| w.name.to_string()).collect(),
                ClusterSpecifier::Header(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    };
    assert_eq!(
        our_weights(&ours).len(),
        2,
        "v1 and v3: {:?}",
        our_weights(&ours)
    );

    // An edit: everyone else goes to v2. Envoy and our client follow within a second.
    let generation = m.cp.xds().generation();
    let edited = Instant::now();
    std::fs::write(m.config_dir.join("routing.yaml"), routing(&[("v2", 100)])).unwrap();
    let acked = within(Duration::from_secs(1), "every client ACKs the edit", || {
        let s = m.cp.xds().status();
        s.generation > generation && s.all_synced() && s.clients.len() == 2
    })
    .await;
    let ours_took = within(Duration::from_secs(1), "our client sees the edit", || {
        our_weights(&ours) == [format!("outbound|9080|v2|{REVIEWS}")]
    })
    .await;
    let envoy_took = {
        let mut n = 0;
        within(Duration::from_secs(1), "envoy routes by the edit", || {
            n += 1;
            get(&m, REVIEWS, &[]).1 == "v2"
        })
        .await
    };
    eprintln!(
        "edit -> all ACKed {acked:?}; our client {ours_took:?}; envoy routing {envoy_took:?} (total {:?})",
        edited.elapsed()
    );
    for _ in 0..50 {
        assert_eq!(get(&m, REVIEWS, &[]), (200, "v2".into()));
    }

    // A broken edit (weights 90 + 20) is rejected with file, resource, field and reason;
    // the previous config keeps routing.
    let mut status = m.cp.watch_status();
    let rejected_before = status.borrow().rejected;
    std::fs::write(
        m.config_dir.join("routing.yaml"),
        routing(&[("v1", 90), ("v3", 20)]),
    )
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        status.wait_for(|s| s.rejected > rejected_before),
    )
    .await
    .unwrap()
    .unwrap();
    let err = status.borrow().last_error.as_ref().unwrap().to_string();
    assert!(err.contains("routing.yaml"), "{err}");
    assert!(err.contains("VirtualService default/reviews"), "{err}");
    assert!(err.contains("weights add up to 110, not 100"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..50 {
        assert_eq!(get(&m, REVIEWS, &[]), (200, "v2".into()));
    }
    assert_all_acked(&m);
    // The debug endpoint shows the rejection.
    let debug = admin_get(m.cp.debug_addr().unwrap(), "/debug/config_status").unwrap();
    assert!(debug.contains("weights add up to 110"), "{debug}");
    let syncz = admin_get(m.cp.debug_addr().unwrap(), "/debug/syncz").unwrap();
    assert!(syncz.contains("sidecar~127.0.0.1~envoy.default"), "{syncz}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_over_delta_xds() {
    let Some(m) = mesh(true).await else {
        return;
    };
    assert_all_acked(&m);
    assert_eq!(
        m.cp.xds().status().clients[0].kind,
        mesh_control::xds_server::StreamKind::Delta
    );
    assert_eq!(
        get(&m, REVIEWS, &[("end-user", "jason")]),
        (200, "v2".into())
    );
    // Removing a service removes its cluster from Envoy (delta removed_resources).
    let text = services([0, 1, 2, 3].map(|i| m.backends[i].addr.port()));
    let without_flaky = text
        .split(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: flaky",
        )
        .next()
        .unwrap();
    std::fs::write(m.config_dir.join("services.yaml"), without_flaky).unwrap();
    std::fs::write(
        m.config_dir.join("destination-rules.yaml"),
        DESTINATION_RULES.split("---").next().unwrap(),
    )
    .unwrap();
    let routing_reviews_only = routing(&[("v1", 90), ("v3", 10)]);
    std::fs::write(
        m.config_dir.join("routing.yaml"),
        routing_reviews_only.split("---").next().unwrap(),
    )
    .unwrap();
    within(
        Duration::from_secs(3),
        "flaky's cluster leaves envoy",
        || !m.envoy.get("/clusters").contains(FLAKY),
    )
    .await;
    assert_eq!(get(&m, FLAKY, &[]).0, 404);
    assert_all_acked(&m);
}

/// A plaintext HTTP/1.1 server answering every request with `body`.
async fn plain_backend(body: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// istiod's auto-mTLS for a sidecar, with no DestinationRule: mTLS to a MESH_INTERNAL
/// service's endpoints that have a mesh identity (`tlsMode: istio` in EDS, selecting the
/// cluster's `tlsMode-istio` transport socket), plaintext to its endpoints without one and
/// to a MESH_EXTERNAL service's, service account or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_uses_mtls_to_mesh_internal_endpoints_and_plaintext_to_external_ones() {
    let Some(bin) = mesh_test_support::peer("MESH_ENVOY_BIN") else {
        return;
    };
    let ca = mesh_tls::dev_ca::DevCa::new(mesh_core::TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    ca.save(ca_dir.path()).unwrap();
    let internal = mtls_backend(ca.issue(&id("internal"), HOUR).unwrap(), "internal", false).await;
    let legacy = plain_backend("legacy").await;
    let external = plain_backend("external").await;
    let se = |name: &str, location: &str, port: u16, sa: &str| {
        let vip = match name {
            "internal" => "240.240.0.1",
            "legacy" => "240.240.0.2",
            _ => "240.240.0.3",
        };
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  addresses: [{vip}]
  location: {location}
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}{sa}}}]
---
"
        )
    };
    let config = tempfile::tempdir().unwrap();
    let yaml = se(
        "internal",
        "MESH_INTERNAL",
        internal.addr.port(),
        ", serviceAccount: internal",
    ) + &se("legacy", "MESH_INTERNAL", legacy.port(), "")
        + &se(
            "external",
            "MESH_EXTERNAL",
            external.port(),
            ", serviceAccount: external",
        );
    std::fs::write(config.path().join("services.yaml"), yaml).unwrap();
    let cp = mesh_control::server::ControlPlane::start(mesh_control::server::ControlPlaneOptions {
        config_dir: config.path().to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        ca_dir: Some(ca_dir.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .unwrap();
    let envoy_dir = tempfile::tempdir().unwrap();
    write_certs(
        envoy_dir.path(),
        &cp.ca().issue(&id("envoy"), HOUR).unwrap(),
    );
    let outbound_port = free_port();
    let envoy = Envoy::start(
        &bin,
        envoy_dir.path(),
        &envoy_bootstrap(cp.xds_addr(), outbound_port, envoy_dir.path(), false),
    );
    let outbound: std::net::SocketAddr = format!("127.0.0.1:{outbound_port}").parse().unwrap();
    tokio::time::timeout(Duration::from_secs(20), cp.xds().synced(1))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "envoy did not ACK: {:#?}\n{}",
                cp.xds().status(),
                envoy.log()
            )
        });
    let get = |name: &str| {
        http_get(
            outbound,
            "/",
            &[("Host", &format!("{name}.default.svc.cluster.local"))],
        )
    };
    within(
        Duration::from_secs(20),
        "envoy serves the outbound listener",
        || get("legacy").is_some_and(|(s, _)| s == 200),
    )
    .await;
    for name in ["internal", "legacy", "external"] {
        assert_eq!(get(name), Some((200, name.to_owned())), "{}", envoy.log());
    }
    assert_eq!(internal.hits(), 1, "the mTLS backend served the request");
    // The services' VIPs are domains of their virtual hosts, as istiod makes them.
    for (vip, name) in [("240.240.0.1", "internal"), ("240.240.0.3:80", "external")] {
        let got = http_get(outbound, "/", &[("Host", vip)]);
        assert_eq!(got, Some((200, name.to_owned())), "Host: {vip}");
    }
    assert_eq!(internal.hits(), 2);
    let tls = "cluster.outbound|80||internal.default.svc.cluster.local.ssl.handshake";
    assert_eq!(
        stat(&envoy, tls),
        1,
        "one TLS handshake to the internal service"
    );
    let plain = "cluster.outbound|80||external.default.svc.cluster.local.ssl.handshake";
    assert_eq!(stat(&envoy, plain), 0, "no TLS to the external service");
}
