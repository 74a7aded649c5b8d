//! Case 11, ambient mode in process: HTTP/2 inside HBONE tunnels between two in-process
//! workloads (`mesh.hbone_client()` -> `mesh.hbone_server()`: mTLS HTTP/2 `CONNECT`
//! streams pooled at most 100 per connection, as ztunnel pools them), against case 2's
//! direct mTLS (one connection per lane). Each lane is one tunnel with its own inner
//! HTTP/2 connection, as a pooled HTTP client keeps one per endpoint.

use std::net::SocketAddr;

use futures::future::BoxFuture;
use mesh::Mesh;
use mesh::core::config::StaticSource;
use mesh::hbone::{HboneClient, HboneTarget};
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;
use tokio::net::TcpListener;

use super::lanes::{AbortOnDrop, H2Lane};
use super::{Case, CaseId};
use crate::loadgen::Lane;
use crate::{Error, certs, payload};

/// The app's port inside the tunnel.
const APP_PORT: u16 = 9080;

/// Case 11.
pub struct Hbone {
    client: HboneClient,
    target: HboneTarget,
    _server: AbortOnDrop,
}

fn mesh(ca: &DevCa, sa: &str) -> Result<Mesh, Error> {
    Ok(Mesh::builder()
        .identity_store(IdentityStore::from_credentials(certs::issue(ca, sa)?)?)
        .config_source(StaticSource::new(Default::default()))
        .build()?)
}

impl Hbone {
    /// Starts the server workload's HBONE listener (the payload app on `APP_PORT`) and
    /// the client workload's HBONE client.
    pub async fn start(ca: &DevCa) -> Result<Self, Error> {
        let server = mesh(ca, "echo")?
            .hbone_server()
            .http(APP_PORT, tower::service_fn(payload::app))
            .build();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let hbone = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = server.serve(listener, std::future::pending()).await;
        });
        let app = SocketAddr::new(hbone.ip(), APP_PORT);
        let target = HboneTarget::new(app, certs::spiffe_id(ca, "echo")?).via(hbone);
        Ok(Self {
            client: mesh(ca, "bench-client")?.hbone_client(),
            target,
            _server: AbortOnDrop(task),
        })
    }
}

impl Case for Hbone {
    fn id(&self) -> CaseId {
        CaseId::Hbone
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            let tunnel = self.client.connect(&self.target).await?;
            let uri = format!("http://{}{}", self.target.authority, payload::PATH).parse()?;
            let lane = H2Lane::new(tunnel, uri).await?;
            Ok(Box::new(lane) as Box<dyn Lane>)
        })
    }

    fn describe(&self) -> String {
        "`mesh.hbone_client()` -> `mesh.hbone_server()` (TLS 1.3 mTLS, HTTP/2 CONNECT, at most \
         100 tunnels per connection, istio_tcp_* on both sides), hyper HTTP/2 inside each \
         tunnel, one tunnel per lane"
            .into()
    }
}
