//! The in-process workload of the cold start (`mesh-bench --cold-start-child XDS CA ROOT`):
//! a process that joins the mesh as docs/getting-started.md shows (its certificate from the
//! Istio CA protocol, renewed by `Rotation`; xDS over ADS from `Bootstrap::istio_proxyless`),
//! sends one routed mTLS request to the bench service and exits. It prints one line, the
//! wall-clock instants of its milestones, which the harness turns into milliseconds since
//! it spawned the process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use mesh::tls::ca::IstioCaClient;
use mesh::tls::rotation::Rotation;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::Error;
use crate::cases::{HOST, PORT};

/// The prefix of the child's report line.
const REPORT: &str = "cold-start-child:";

/// A workload start's milestones, milliseconds after the harness spawned it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Milestones {
    /// `main` entered (exec and the dynamic loader before it).
    pub main: f64,
    /// The workload certificate issued by the CA and installed.
    pub identity: f64,
    /// The first xDS response applied (the listener).
    pub first_xds: f64,
    /// Listener, routes, cluster and endpoints of the target all in (`Mesh::ready`).
    pub routes: f64,
    /// The request handed to the mesh client.
    pub sent: f64,
    /// Its 200 response headers back.
    pub response: f64,
}

impl Milestones {
    /// Names and values, in order.
    pub fn fields(&self) -> [(&'static str, f64); 6] {
        [
            ("main entered", self.main),
            ("identity issued", self.identity),
            ("first xDS response", self.first_xds),
            ("routes ready", self.routes),
            ("request sent", self.sent),
            ("response", self.response),
        ]
    }
}

/// Wall-clock nanoseconds since the epoch: the only clock parent and child share.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Reads the child's report line out of its output, relative to `spawned_ns`.
pub fn parse_report(output: &str, spawned_ns: u128) -> Result<Milestones, Error> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix(REPORT))
        .ok_or("the in-process workload printed no report")?;
    let ms = |key: &str| -> Result<f64, Error> {
        let v: u128 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("no {key} in {line:?}"))?
            .parse()?;
        Ok(v.saturating_sub(spawned_ns) as f64 / 1e6)
    };
    Ok(Milestones {
        main: ms("main")?,
        identity: ms("identity")?,
        first_xds: ms("xds")?,
        routes: ms("routes")?,
        sent: ms("sent")?,
        response: ms("response")?,
    })
}

/// `--cold-start-child XDS_URL CA_URL ROOT_PEM`: the workload, from `main` (at `main_ns`).
pub fn child(main_ns: u128, args: &[String]) -> Result<(), Error> {
    let [xds, ca, root] = args else {
        return Err(format!("--cold-start-child: unexpected arguments {args:?}").into());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let line = runtime.block_on(workload(main_ns, xds, ca, Path::new(root)))?;
    println!("{line}");
    Ok(())
}

async fn workload(main_ns: u128, xds: &str, ca: &str, root: &Path) -> Result<String, Error> {
    let node = IstioNode {
        ip: "127.0.0.1".parse()?,
        pod_name: "bench-client-0".into(),
        namespace: "bench".into(),
        service_account: "bench-client".into(),
        labels: BTreeMap::from([("app".to_owned(), "bench-client".to_owned())]),
        ..Default::default()
    };
    let roots = CertificateDer::pem_file_iter(root)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", root.display()))?;
    // The CA runs open on loopback (the quickstart's `--ca-open`): no token.
    let ca = IstioCaClient::new(ca.to_owned(), node.spiffe_id()?, roots);
    let mesh = mesh::Mesh::builder()
        .identity_source(Rotation::new(ca))
        .bootstrap(Bootstrap::istio_proxyless(node, xds))
        .build()?;

    // Milestones observed beside the documented calls, not in their way.
    let identity_at = Arc::new(Mutex::new(0u128));
    let first_xds_at = Arc::new(Mutex::new(0u128));
    let store = mesh.identity().clone();
    let at = identity_at.clone();
    tokio::spawn(async move {
        store.ready().await;
        *at.lock().unwrap_or_else(|e| e.into_inner()) = now_ns();
    });
    if let Some(client) = mesh.xds() {
        let mut snapshots = client.watch();
        let at = first_xds_at.clone();
        tokio::spawn(async move {
            if snapshots.changed().await.is_ok() {
                *at.lock().unwrap_or_else(|e| e.into_inner()) = now_ns();
            }
        });
    }

    let target = format!("{HOST}:{PORT}");
    mesh.ready(Duration::from_secs(10), &[&target]).await?;
    let routes = now_ns();
    let req = http::Request::get(format!("http://{target}{}", crate::payload::PATH))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let sent = now_ns();
    let resp = mesh.client().oneshot(req).await?;
    let response = now_ns();
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        return Err(format!("{target} answered {status}: {body:?}").into());
    }
    let get = |m: &Mutex<u128>| *m.lock().unwrap_or_else(|e| e.into_inner());
    Ok(format!(
        "{REPORT} main={main_ns} identity={} xds={} routes={routes} sent={sent} \
         response={response}",
        get(&identity_at),
        get(&first_xds_at)
    ))
}
