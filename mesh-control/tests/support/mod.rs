//! Shared by the control-plane interop tests: a config directory, mTLS backends with
//! certificates from the control plane's CA, a running Envoy, small HTTP helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::config::ServerSettings;
use mesh_tls::server::{MeshAcceptor, serve};
use mesh_tls::{Credentials, IdentityStore};
use tokio::net::TcpListener;

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&TrustDomain::new("cluster.local").unwrap(), "default", sa).unwrap()
}

#[allow(unused_imports)]
pub use mesh_test_support::free_port;

/// Starts the control plane on free loopback ports, polling `dir` every 100 ms.
pub async fn control_plane(dir: &Path) -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.to_path_buf(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        ca_addr: Some("127.0.0.1:0".parse().unwrap()),
        debug_addr: Some("127.0.0.1:0".parse().unwrap()),
        watch_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A backend answering every request with `body` (and 503 on every other request when
/// `flaky`), counting requests.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
}

impl Backend {
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// Serves `body` over mTLS (STRICT: a client certificate from the mesh CA is required).
pub async fn mtls_backend(creds: Credentials, body: &'static str, flaky: bool) -> Backend {
    let store = IdentityStore::from_credentials(creds).unwrap();
    let acceptor = MeshAcceptor::new(store, ServerSettings::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let service = tower::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let status = if flaky && n.is_multiple_of(2) {
                503
            } else {
                200
            };
            Ok::<_, Infallible>(
                http::Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap(),
            )
        }
    });
    tokio::spawn(serve(listener, acceptor, service));
    Backend { addr, hits }
}

/// A running Envoy, killed on drop (shared with mesh-tls's interop tests).
#[allow(unused_imports)] // not every test binary starts an Envoy
pub use mesh_test_support::EnvoyProcess as Envoy;

/// A blocking HTTP/1.1 GET; the body, if any.
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<String> {
    http_get(addr, path, &[]).map(|(_, b)| b)
}

/// A blocking HTTP/1.1 GET with extra headers; (status, body).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: admin\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some((status, body.to_string()))
}

pub fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// Writes credentials as `cert-chain.pem`, `key.pem`, `root-cert.pem` under `dir`.
pub fn write_certs(dir: &Path, creds: &Credentials) -> (PathBuf, PathBuf, PathBuf) {
    let chain = dir.join("cert-chain.pem");
    let key = dir.join("key.pem");
    let root = dir.join("root-cert.pem");
    std::fs::write(
        &chain,
        creds.chain.iter().map(|c| pem_of(c)).collect::<String>(),
    )
    .unwrap();
    let rustls_pki_types::PrivateKeyDer::Pkcs8(k) = &creds.key else {
        panic!("dev CA keys are PKCS#8")
    };
    std::fs::write(
        &key,
        pem::encode(&pem::Pem::new("PRIVATE KEY", k.secret_pkcs8_der())),
    )
    .unwrap();
    std::fs::write(
        &root,
        creds.roots.iter().map(|c| pem_of(c)).collect::<String>(),
    )
    .unwrap();
    (chain, key, root)
}

/// Polls `f` every 20 ms until it holds; the time it took. Panics after `limit`.
pub async fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}
