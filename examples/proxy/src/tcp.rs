//! TCP passthrough for ports that are not HTTP: bytes are piped to a fixed target and
//! counted in `istio_tcp_*` (reporter=source, `destination_service_name="PassthroughCluster"`
//! as Envoy names unmodelled destinations).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_telemetry::metrics::tcp::TcpMetrics;
use mesh_telemetry::metrics::{
    IstioMetrics, PeerLabels, Reporter, SecurityPolicy, ServiceInfo, UNKNOWN, WorkloadInfo,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::drain::{Tunnels, next_conn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One passthrough port.
pub(crate) struct Passthrough {
    pub(crate) target: SocketAddr,
    pub(crate) metrics: IstioMetrics,
    pub(crate) local: WorkloadInfo,
}

impl Passthrough {
    /// Accepts on `listener` until `stop`, then waits for open tunnels to close.
    pub(crate) async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let labels = PeerLabels {
            reporter: Reporter::Source,
            source: self.local,
            destination: WorkloadInfo::default(),
            service: ServiceInfo {
                host: self.target.ip().to_string(),
                name: "PassthroughCluster".into(),
                namespace: UNKNOWN.into(),
            },
            security: SecurityPolicy::None,
        };
        let metrics = TcpMetrics::new(&self.metrics, Arc::new(labels));
        let tunnels = Tunnels::new();
        let target = self.target;
        while let Some((client, remote)) = next_conn(&listener, &mut stop).await {
            let guard = tunnels.guard();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let upstream = match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    TcpStream::connect(target),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%remote, %target, error = %e, "passthrough connect failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, %target, "passthrough connect timed out");
                        return;
                    }
                };
                let _ = upstream.set_nodelay(true);
                let mut client = metrics.wrap(client);
                let mut upstream = upstream;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(%remote, %target, error = %e, "passthrough ended");
                }
            });
        }
        tunnels.wait().await;
    }
}
