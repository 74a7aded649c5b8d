//! Our workloads serving and calling each other under a real istiod (`MESH_ISTIOD_BIN`),
//! and the same config through our embedded control plane.
//!
//! The config is `interop/istio/config`: frontend -> reviews v1 | v2 | v3 -> ratings, each
//! workload its own process-like unit on its own loopback address (127.0.0.11..15), with a
//! header route (`end-user: jason` -> v2), a 70/30 v1/v3 split, ISTIO_MUTUAL with load
//! balancers, PeerAuthentication STRICT and AuthorizationPolicies (ALLOW by namespace, by
//! principal, method and path; DENY by path).
//!
//! Every workload bootstraps as an Istio proxyless client ([`Workload::start`]): certificate
//! from the control plane's CA (istiod: over its TLS port, authenticated with a
//! service-account JWT, renewals with the certificate), xDS with `GENERATOR: grpc` (istiod:
//! over TLS with the token), MeshClient for calls, and an mTLS server enforcing the RBAC of
//! its xDS inbound listener (`mesh::inbound::InboundServer`).
//!
//! The servers listen on fixed addresses from the config, so the tests of this file run one
//! at a time (`SERIAL`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mesh_control::server::{CaAuth, ControlPlane, ControlPlaneOptions};
use mesh_core::TrustDomain;
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_interop_tests::workload::{ControlPlaneAccess, Workload, WorkloadSpec, call};
use mesh_route::client::MeshClient;
use mesh_tls::dev_ca::DevCa;
use mesh_xds::client::ResourceState;
use tokio::sync::Mutex;

const FRONTEND: &str = "http://frontend.default.svc.cluster.local:8080";
const REVIEWS: &str = "http://reviews.default.svc.cluster.local:8080";
const RATINGS: &str = "http://ratings.default.svc.cluster.local:8080";
const WAIT: Duration = Duration::from_secs(30);

/// The servers bind fixed addresses: one mesh at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/istio/config")
}

/// A copy of the config (for tests that edit it).
fn copy_config(to: &Path) -> PathBuf {
    let dir = to.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(config_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// The workloads of `interop/istio/config/workloads.yaml`.
fn server_specs() -> Vec<WorkloadSpec> {
    vec![
        WorkloadSpec::new("ratings", "v1", "ratings", [127, 0, 0, 15]).serving(18084),
        WorkloadSpec::new("reviews", "v1", "reviews", [127, 0, 0, 12]).serving(18081),
        WorkloadSpec::new("reviews", "v2", "reviews", [127, 0, 0, 13])
            .serving(18082)
            .calling(&format!("{RATINGS}/ratings/1")),
        WorkloadSpec::new("reviews", "v3", "reviews", [127, 0, 0, 14])
            .serving(18083)
            .calling(&format!("{RATINGS}/ratings/1")),
        WorkloadSpec::new("frontend", "v1", "frontend", [127, 0, 0, 11])
            .serving(18080)
            .calling(&format!("{REVIEWS}/reviews/1")),
    ]
}

/// The control plane under test, and what workloads need to reach it.
enum Plane {
    Istiod {
        istiod: Box<Istiod>,
        _issuer: Arc<TestIssuer>,
    },
    Embedded(#[allow(dead_code)] Box<ControlPlane>),
}

struct Env {
    plane: Plane,
    access: ControlPlaneAccess,
    work: tempfile::TempDir,
}

impl Env {
    fn istiod(&mut self) -> &mut Istiod {
        match &mut self.plane {
            Plane::Istiod { istiod, .. } => istiod,
            Plane::Embedded(_) => panic!("not istiod"),
        }
    }

    fn log_tail(&self) -> String {
        match &self.plane {
            Plane::Istiod { istiod, .. } => istiod.log_tail(30),
            Plane::Embedded(_) => String::new(),
        }
    }
}

/// istiod on `config`, workloads authenticating with tokens; `None` without the peer.
async fn istiod_env(config: Option<PathBuf>, cert_ttl: Duration) -> Option<Env> {
    let bin = mesh_test_support::peer("MESH_ISTIOD_BIN")?;
    let work = tempfile::tempdir().unwrap();
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = Arc::new(TestIssuer::start().await.unwrap());
    let options = IstiodOptions {
        config_dir: Some(config.unwrap_or_else(config_dir)),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let access = ControlPlaneAccess {
        ca_url: istiod.secure_url(),
        root: istiod.ca_root(),
        server_name: Some(ISTIOD_SERVER_NAME.into()),
        xds_url: istiod.secure_url(),
        tokens: Some(issuer.clone()),
        token_dir: work.path().into(),
        cert_ttl,
    };
    Some(Env {
        plane: Plane::Istiod {
            istiod: Box::new(istiod),
            _issuer: issuer,
        },
        access,
        work,
    })
}

/// Our embedded control plane on the same config: xDS (plaintext, as its 15010) and its
/// Istio CA over TLS (signing for loopback callers: it has no JWT issuer).
async fn embedded_env() -> Env {
    let work = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: config_dir(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: Some(([127, 0, 0, 1], 0).into()),
        debug_addr: None,
        ca_auth: CaAuth {
            open: true,
            ..Default::default()
        },
        watch_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let access = ControlPlaneAccess {
        ca_url: format!("https://{}", cp.ca_addr().unwrap()),
        root: cp.ca().root_der(),
        server_name: Some(ISTIOD_SERVER_NAME.into()),
        xds_url: format!("http://{}", cp.xds_addr()),
        tokens: None,
        token_dir: work.path().into(),
        cert_ttl: Duration::from_secs(3600),
    };
    Env {
        plane: Plane::Embedded(Box::new(cp)),
        access,
        work,
    }
}

/// The running workloads, and two callers without a server: `loadgen` (namespace
/// default) and `outsider` (namespace other).
struct Mesh {
    servers: Vec<Workload>,
    loadgen: Workload,
    outsider: Workload,
}

impl Mesh {
    async fn start(env: &Env) -> Mesh {
        let mut servers = Vec::new();
        for spec in server_specs() {
            let name = spec.name();
            let w = Workload::start(&env.access, spec)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", env.log_tail()));
            servers.push(w);
        }
        let loadgen = Workload::start(
            &env.access,
            WorkloadSpec::new("loadgen", "v1", "loadgen", [127, 0, 0, 20]),
        )
        .await
        .unwrap_or_else(|e| panic!("loadgen: {e}"));
        let outsider = Workload::start(
            &env.access,
            WorkloadSpec::new("outsider", "v1", "outsider", [127, 0, 0, 21]).in_namespace("other"),
        )
        .await
        .unwrap_or_else(|e| panic!("outsider: {e}"));
        Mesh {
            servers,
            loadgen,
            outsider,
        }
    }

    fn server(&self, name: &str) -> &Workload {
        self.servers
            .iter()
            .find(|w| w.spec.name() == name)
            .unwrap_or_else(|| panic!("no workload {name}"))
    }

    /// Every workload with a server and the two callers.
    fn all(&self) -> impl Iterator<Item = &Workload> {
        self.servers.iter().chain([&self.loadgen, &self.outsider])
    }
}

/// What a control plane's config makes the mesh do: compared across control planes.
#[derive(Debug, PartialEq)]
struct Observed {
    /// `(case, status)` of the authorization matrix.
    authz: Vec<(&'static str, u16)>,
    /// Bodies of requests with `end-user: jason`, counted.
    jason: BTreeMap<String, u32>,
    /// Bodies of the other requests, counted.
    split: BTreeMap<String, u32>,
}

const SPLIT_REQUESTS: u32 = 400;
const JASON_REQUESTS: u32 = 30;
const V1_CHAIN: &str = "frontend-v1 -> reviews-v1";
const V2_CHAIN: &str = "frontend-v1 -> reviews-v2 -> ratings-v1";
const V3_CHAIN: &str = "frontend-v1 -> reviews-v3 -> ratings-v1";

/// Drives the mesh: the authorization matrix, then the header route and the split.
async fn observe(m: &Mesh) -> Observed {
    let reviews = m.server("reviews-v1");
    let frontend = m.server("frontend-v1");
    let cases: Vec<(&'static str, &Workload, &str, String)> = vec![
        (
            "loadgen GET frontend",
            &m.loadgen,
            "GET",
            format!("{FRONTEND}/productpage"),
        ),
        (
            "loadgen POST frontend",
            &m.loadgen,
            "POST",
            format!("{FRONTEND}/productpage"),
        ),
        (
            "loadgen GET frontend /admin (DENY)",
            &m.loadgen,
            "GET",
            format!("{FRONTEND}/admin/users"),
        ),
        (
            "outsider GET frontend",
            &m.outsider,
            "GET",
            format!("{FRONTEND}/productpage"),
        ),
        (
            "loadgen GET reviews",
            &m.loadgen,
            "GET",
            format!("{REVIEWS}/reviews/1"),
        ),
        (
            "frontend GET reviews",
            frontend,
            "GET",
            format!("{REVIEWS}/reviews/1"),
        ),
        (
            "frontend POST reviews",
            frontend,
            "POST",
            format!("{REVIEWS}/reviews/1"),
        ),
        (
            "frontend GET reviews /other",
            frontend,
            "GET",
            format!("{REVIEWS}/other"),
        ),
        (
            "frontend GET ratings",
            frontend,
            "GET",
            format!("{RATINGS}/ratings/1"),
        ),
        (
            "reviews GET ratings",
            reviews,
            "GET",
            format!("{RATINGS}/ratings/1"),
        ),
        (
            "reviews GET ratings /other",
            reviews,
            "GET",
            format!("{RATINGS}/other"),
        ),
    ];
    let mut authz = Vec::new();
    for (case, caller, method, url) in cases {
        let (status, body) = caller
            .call(method, &url, &[])
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        if status.as_u16() == 403 {
            assert_eq!(body, "RBAC: access denied", "{case}");
        }
        authz.push((case, status.as_u16()));
    }
    let mut jason = BTreeMap::new();
    for _ in 0..JASON_REQUESTS {
        let body = ok_body(&m.loadgen.client, &[("end-user", "jason")]).await;
        *jason.entry(body).or_default() += 1;
    }
    let mut split = BTreeMap::new();
    for _ in 0..SPLIT_REQUESTS {
        let body = ok_body(&m.loadgen.client, &[]).await;
        *split.entry(body).or_default() += 1;
    }
    Observed {
        authz,
        jason,
        split,
    }
}

async fn ok_body(client: &MeshClient, headers: &[(&str, &str)]) -> String {
    let (status, body) = call(client, "GET", &format!("{FRONTEND}/productpage"), headers)
        .await
        .unwrap_or_else(|e| panic!("GET frontend: {e}"));
    assert_eq!(status, 200, "{body}");
    body
}

/// The expected outcome of the authorization matrix (security.yaml).
const EXPECTED_AUTHZ: &[(&str, u16)] = &[
    ("loadgen GET frontend", 200),
    ("loadgen POST frontend", 403),
    ("loadgen GET frontend /admin (DENY)", 403),
    ("outsider GET frontend", 403),
    ("loadgen GET reviews", 403),
    ("frontend GET reviews", 200),
    ("frontend POST reviews", 403),
    ("frontend GET reviews /other", 403),
    ("frontend GET ratings", 403),
    ("reviews GET ratings", 200),
    ("reviews GET ratings /other", 403),
];

fn v1_share(o: &Observed) -> f64 {
    f64::from(o.split.get(V1_CHAIN).copied().unwrap_or(0)) / f64::from(SPLIT_REQUESTS)
}

/// The config's behaviour, whichever control plane delivered it.
fn assert_config_behaviour(o: &Observed, plane: &str) {
    assert_eq!(o.authz, EXPECTED_AUTHZ, "{plane}: authorization");
    assert_eq!(
        o.jason,
        BTreeMap::from([(V2_CHAIN.to_owned(), JASON_REQUESTS)]),
        "{plane}: header route"
    );
    let keys: Vec<&str> = o.split.keys().map(String::as_str).collect();
    assert_eq!(keys, vec![V1_CHAIN, V3_CHAIN], "{plane}: split targets");
    // 70/30: the binomial sd at n = 400 is 2.3 points; 10 points is over 4 sd.
    let share = v1_share(o);
    assert!((0.60..=0.80).contains(&share), "{plane}: v1 share {share}");
}

/// STRICT: the inbound listener of every server requires client certificates, and a
/// plaintext request gets no HTTP answer.
async fn assert_strict(m: &Mesh, plane: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for w in &m.servers {
        assert!(
            w.inbound_is_strict(),
            "{plane}: {} inbound not STRICT",
            w.spec.name()
        );
    }
    let frontend = m.server("frontend-v1");
    let addr = (frontend.spec.ip, frontend.spec.port.unwrap());
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /productpage HTTP/1.1\r\nhost: frontend\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).starts_with("HTTP/"),
        "{plane}: plaintext answered: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_serve_and_call_each_other_under_istiod() {
    let _serial = SERIAL.lock().await;
    let Some(env) = istiod_env(None, Duration::from_secs(3600)).await else {
        return;
    };
    let mesh = Mesh::start(&env).await;
    // Identities are istiod's, as authenticated.
    for w in mesh.all() {
        let creds = w.identity.current().expect("a certificate");
        assert_eq!(creds.id, w.id, "{}", w.spec.name());
    }
    let observed = observe(&mesh).await;
    eprintln!("istiod: {observed:#?}");
    assert_config_behaviour(&observed, "istiod");
    assert_strict(&mesh, "istiod").await;
    // The policies came from istiod's inbound listeners (RBAC), per workload.
    let names = |w: &str| mesh.server(w).inbound_policy_names();
    assert!(
        names("reviews-v2")
            .iter()
            .any(|n| n.contains("reviews-viewer")),
        "{:?}",
        names("reviews-v2")
    );
    assert!(
        names("frontend-v1")
            .iter()
            .any(|n| n.contains("frontend-admin")),
        "{:?}",
        names("frontend-v1")
    );
    drop(env.work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_control_plane_behaves_like_istiod_on_the_same_config() {
    let _serial = SERIAL.lock().await;
    let Some(env) = istiod_env(None, Duration::from_secs(3600)).await else {
        return;
    };
    let with_istiod = {
        let mesh = Mesh::start(&env).await;
        observe(&mesh).await
    };
    drop(env);
    let env = embedded_env().await;
    let mesh = Mesh::start(&env).await;
    let with_ours = observe(&mesh).await;
    assert_strict(&mesh, "embedded").await;
    eprintln!("istiod: {with_istiod:#?}\nembedded: {with_ours:#?}");
    assert_config_behaviour(&with_istiod, "istiod");
    assert_config_behaviour(&with_ours, "embedded");
    // The same requests succeed or are denied, and the same split within tolerance.
    assert_eq!(with_istiod.authz, with_ours.authz);
    assert_eq!(with_istiod.jason, with_ours.jason);
    let (a, b) = (v1_share(&with_istiod), v1_share(&with_ours));
    // The sd of the difference is 3.2 points; 14 points is over 4 sd.
    assert!((a - b).abs() <= 0.14, "v1 share: istiod {a}, embedded {b}");
}

/// Requests sent in a loop until stopped: successes, failures (with the last error).
#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    bodies: std::sync::Mutex<BTreeMap<String, u64>>,
    stop: AtomicBool,
}

impl Traffic {
    /// Sends `GET frontend` through `client` (and, every 10th request, through a fresh
    /// MeshClient sharing its xDS client and identity, so new connections and handshakes
    /// keep happening) until [`Traffic::stop`] is set.
    fn start(self: &Arc<Self>, w: &Workload) -> tokio::task::JoinHandle<()> {
        let t = self.clone();
        let client = w.client.clone();
        let (xds, identity) = (w.xds.clone(), w.identity.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !t.stop.load(Ordering::Relaxed) {
                i += 1;
                let c = if i.is_multiple_of(10) {
                    MeshClient::new(xds.clone(), identity.clone(), Default::default())
                } else {
                    client.clone()
                };
                match call(&c, "GET", &format!("{FRONTEND}/productpage"), &[]).await {
                    Ok((status, body)) if status == 200 => {
                        t.ok.fetch_add(1, Ordering::Relaxed);
                        *t.bodies.lock().unwrap().entry(body).or_default() += 1;
                    }
                    Ok((status, body)) => t.fail(format!("{status} {body}")),
                    Err(e) => t.fail(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap() = Some(why);
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn take_bodies(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.bodies.lock().unwrap())
    }

    fn assert_no_failures(&self, when: &str) {
        let (ok, failed) = self.counts();
        assert_eq!(
            failed,
            0,
            "{when}: {failed} of {} requests failed; last: {:?}",
            ok + failed,
            self.last_error.lock().unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_from_istiod_under_traffic_fails_no_request() {
    let _serial = SERIAL.lock().await;
    // A 4 s lifetime: every workload renews about every 2 s.
    let Some(env) = istiod_env(None, Duration::from_secs(4)).await else {
        return;
    };
    let mesh = Mesh::start(&env).await;
    let generations: Vec<u64> = mesh.all().map(|w| w.identity.stats().rotations).collect();
    // Connections (each one a handshake with the certificates of that moment).
    let handshakes = |m: &Mesh| m.server("frontend-v1").connections_seen();
    let handshakes_before = handshakes(&mesh);
    let traffic = Arc::new(Traffic::default());
    let task = traffic.start(&mesh.loadgen);
    tokio::time::sleep(Duration::from_secs(9)).await;
    traffic.stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let (ok, _) = traffic.counts();
    eprintln!(
        "rotation: {ok} requests, {} frontend handshakes",
        handshakes(&mesh) - handshakes_before
    );
    traffic.assert_no_failures("rotation");
    assert!(ok >= 100, "too little traffic: {ok}");
    // Every workload renewed at least three times during the traffic, none failed.
    for (w, before) in mesh.all().zip(generations) {
        let stats = w.identity.stats();
        assert!(
            stats.rotations >= before + 3,
            "{}: {} renewals ({stats:?})",
            w.spec.name(),
            stats.rotations - before
        );
        assert_eq!(stats.failures, 0, "{}: {stats:?}", w.spec.name());
    }
    // New connections kept being made with the renewed certificates.
    assert!(handshakes(&mesh) - handshakes_before >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_restart_under_traffic_keeps_the_last_config_then_resyncs() {
    let _serial = SERIAL.lock().await;
    let work = tempfile::tempdir().unwrap();
    let config = copy_config(work.path());
    let Some(mut env) = istiod_env(Some(config.clone()), Duration::from_secs(3600)).await else {
        return;
    };
    let mesh = Mesh::start(&env).await;
    let traffic = Arc::new(Traffic::default());
    let task = traffic.start(&mesh.loadgen);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // istiod dies: every xDS stream breaks; traffic goes on with the last config.
    let mut versions_before = Vec::new();
    for w in mesh.all() {
        versions_before.push(w.xds.status().await.unwrap().type_versions);
    }
    env.istiod().kill().await;
    tokio::time::timeout(WAIT, async {
        loop {
            let mut any_connected = false;
            for w in mesh.all() {
                any_connected |= w.xds.status().await.unwrap().connected;
            }
            if !any_connected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the workloads never saw istiod go away");
    traffic.take_bodies();
    let (ok_before, _) = traffic.counts();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok_during, _) = traffic.counts();
    traffic.assert_no_failures("istiod down");
    assert!(
        ok_during - ok_before >= 20,
        "traffic stalled while istiod was down"
    );
    let during = traffic.take_bodies();
    assert!(
        during.contains_key(V1_CHAIN),
        "the 70/30 split stopped: {during:?}"
    );

    // While it is down the config changes: every request of the split now goes to v3.
    let routing = config.join("routing.yaml");
    let text = std::fs::read_to_string(&routing).unwrap();
    let edited = text
        .replace("weight: 70", "weight: 0")
        .replace("weight: 30", "weight: 100");
    assert_ne!(text, edited);
    std::fs::write(&routing, edited).unwrap();
    // istiod's versions are `<RFC 3339 time, seconds>/<push>`: a new second, new versions.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.istiod()
        .restart()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Every workload reconnects and ACKs new versions of every type; then traffic follows
    // the new config.
    let resynced = tokio::time::timeout(WAIT, async {
        loop {
            let mut all = true;
            for (w, before) in mesh.all().zip(&versions_before) {
                let s = w.xds.status().await.unwrap();
                // (A workload that subscribed to nothing has no stream; types that were
                // never sent have no version.)
                all &= s.resources.is_empty()
                    || (s.connected
                        && s.resources.iter().all(|r| r.state == ResourceState::Acked)
                        && before
                            .iter()
                            .filter(|(_, v)| !v.is_empty())
                            .all(|b| !s.type_versions.contains(b)));
            }
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if resynced.is_err() {
        let mut why = String::new();
        for (w, before) in mesh.all().zip(&versions_before) {
            let s = w.xds.status().await.unwrap();
            let states: Vec<String> = s
                .resources
                .iter()
                .map(|r| format!("{} {} {}", r.kind.short_name(), r.name, r.state))
                .collect();
            why += &format!(
                "{}: connected {}, versions before {before:?} now {:?}, {states:?}\n",
                w.spec.name(),
                s.connected,
                s.type_versions
            );
        }
        panic!("no resync:\n{why}\nistiod:\n{}", env.log_tail());
    }
    // Requests routed before the last ACK may still be in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    traffic.take_bodies();
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic.stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let after = traffic.take_bodies();
    traffic.assert_no_failures("istiod restarted");
    assert_eq!(
        after.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![V3_CHAIN],
        "after the resync the split follows the new config"
    );
}
