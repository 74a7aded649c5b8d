//! `mesh-proxy`: a sidecar for programs that cannot link the mesh, built from the same
//! layers the in-process mesh uses. See `docs/proxy.md`.
//!
//! ```text
//! inbound  (mesh -> app):  mTLS | PERMISSIVE sniff -> Istio metrics (destination) -> RBAC -> app
//! outbound (app -> mesh):  plain HTTP -> mesh::Mesh::client (source metrics, xDS routes,
//!                          resilience per cluster, mTLS h2)
//! tcp      (passthrough):  LISTEN -> TARGET, istio_tcp_*
//! traces:                  inbound server and outbound client spans (Istio's names and tags,
//!                          W3C + B3 propagation), OTLP export by flags or OTEL_* ([`otel`])
//! admin:                   /stats/prometheus /config_dump /clusters /certs /ready /healthz
//! ```
//!
//! [`start`] binds everything and returns a [`Running`] proxy; [`Running::drain`] stops
//! accepting and waits for in-flight work.

mod admin;
mod drain;
mod headers;
#[cfg(feature = "count-allocs")]
mod heap;
mod identity;
mod inbound;
mod node;
pub mod options;
pub mod otel;
mod outbound;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_admin::{IdentityCollector, XdsCollector, XdsStatusCache, XdsStatusSource};
use mesh_authz::AuthzMetrics;
use mesh_control::istio::WatchOptions;
use mesh_control::local::{LocalOptions, LocalSource};
use mesh_core::config::ConfigSource;
use mesh_telemetry::access_log::{AccessLogConfig, AccessLogLayer};
use mesh_telemetry::metrics::IstioMetrics;
use mesh_telemetry::metrics::library::{FnCollector, Kind};
use mesh_tls::config::ServerSettings;
use mesh_tls::server::{ConnectionLimiter, ConnectionLimits, MeshAcceptor};
use mesh_xds::bootstrap::Bootstrap;
use mesh_xds::client::{XdsClient, XdsClientConfig, channel_from_bootstrap_with};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use options::{ProxyOptions, USAGE, parse_args};

/// Why the proxy cannot start.
#[derive(Debug)]
pub struct ProxyError(pub String);

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProxyError {}

impl From<String> for ProxyError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// A started proxy.
pub struct Running {
    /// The bound inbound address.
    pub inbound: Option<SocketAddr>,
    /// The bound outbound address.
    pub outbound: Option<SocketAddr>,
    /// The bound admin address.
    pub admin: Option<SocketAddr>,
    /// The bound passthrough addresses.
    pub tcp: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    /// The config source (the xDS client, or the in-process one in static mode), held
    /// until the proxy stops.
    _source: Arc<dyn ConfigSource>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("inbound", &self.inbound)
            .field("outbound", &self.outbound)
            .field("admin", &self.admin)
            .field("tcp", &self.tcp)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Stops accepting on every listener, lets open connections finish (HTTP connections
    /// are asked to close after their in-flight requests) for at most `timeout`, then stops
    /// the admin port and background tasks. Returns whether everything finished in time.
    pub async fn drain(self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let all = futures_join(self.listeners);
        let finished = tokio::time::timeout(timeout, all).await.is_ok();
        for t in self.background {
            t.abort();
        }
        finished
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ProxyError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| ProxyError(format!("{what}: cannot listen on {addr}: {e}")))?;
    let bound = l
        .local_addr()
        .map_err(|e| ProxyError(format!("{what}: {e}")))?;
    Ok((l, bound))
}

/// Where the proxy's config comes from.
enum Source {
    /// An xDS control plane (`--xds`, `--bootstrap`, `GRPC_XDS_BOOTSTRAP`).
    Xds(XdsClient),
    /// Static mode (`--mesh-config`): the mesh's Istio YAML, generated for our node and
    /// decoded in process by mesh-control (no xDS server, no port).
    Local(LocalSource),
}

/// Starts the proxy on the current runtime: binds every listener (failing on the first
/// that cannot bind), starts the identity source, the config source (the xDS client, or
/// in static mode the in-process one) and the admin port, waits for the first
/// certificate, then serves. `env_bootstrap` is the bootstrap from `GRPC_XDS_BOOTSTRAP`,
/// used when the options name none.
pub async fn start(
    opts: ProxyOptions,
    env_bootstrap: Option<Bootstrap>,
) -> Result<Running, ProxyError> {
    let bootstrap = node::bootstrap(&opts, env_bootstrap)?;
    let inbound = match opts.inbound {
        Some(a) => Some(bind("inbound", a).await?),
        None => None,
    };
    let outbound = match opts.outbound {
        Some(a) => Some(bind("outbound", a).await?),
        None => None,
    };
    let admin_listener = match opts.admin {
        Some(a) => Some(bind("admin", a).await?),
        None => None,
    };
    let mut tcp = Vec::new();
    for f in &opts.tcp {
        tcp.push((bind("tcp", f.listen).await?, f.target));
    }

    let mut background = Vec::new();
    let (store, identity_task) = identity::start(&opts, &bootstrap)?;
    background.push(identity_task);

    let source = match &opts.mesh_config {
        Some(dir) => Source::Local(
            LocalSource::watch_dir(
                dir,
                WatchOptions::default(),
                bootstrap.node_proto(),
                LocalOptions::default(),
            )
            .await
            .map_err(|e| ProxyError(format!("--mesh-config {}: {e}", dir.display())))?,
        ),
        None => {
            let xds_config = XdsClientConfig::from_bootstrap(&bootstrap)
                .map_err(|e| ProxyError(format!("xDS bootstrap: {e}")))?;
            // TLS verified with the mesh root, presenting the workload certificate, unless
            // the bootstrap names its own files or asks for plaintext.
            let channel = channel_from_bootstrap_with(
                &bootstrap,
                mesh_tls::config::default_provider(),
                Some(mesh::control_plane_tls(store.clone())),
            )
            .map_err(|e| ProxyError(format!("xDS bootstrap: {e}")))?;
            Source::Xds(
                XdsClient::try_new(xds_config, channel)
                    .map_err(|e| ProxyError(format!("xDS bootstrap: {e}")))?,
            )
        }
    };

    // The status for /ready, /config_dump, mesh_xds_* and CSDS: the xDS client's, or in
    // static mode what an xDS client holding the same resources would report.
    let watch_status = match &source {
        Source::Local(local) => local.watch_status(),
        Source::Xds(_) => None,
    };
    let (source, xds_status): (Arc<dyn ConfigSource>, Arc<dyn XdsStatusSource>) = match source {
        Source::Xds(xds) => {
            let (status, task) = XdsStatusCache::spawn(xds.clone(), Duration::from_secs(5));
            background.push(task);
            (Arc::new(xds), status)
        }
        Source::Local(local) => (Arc::new(local.clone()), Arc::new(admin::LocalStatus(local))),
    };

    let acceptor = MeshAcceptor::new(
        store.clone(),
        ServerSettings {
            handshake_timeout: opts.handshake_timeout,
            ..ServerSettings::default()
        },
    );
    let limits = ConnectionLimits {
        max_connections: opts.max_connections,
        sniff_timeout: opts.handshake_timeout,
        header_read_timeout: opts.header_read_timeout,
        ..ConnectionLimits::default()
    };
    let inbound_limiter = ConnectionLimiter::new(limits.max_connections);
    let metrics = IstioMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let authz_metrics = {
        let mesh = registry.sub_registry_with_prefix("mesh");
        mesh.register_collector(Box::new(
            IdentityCollector::new(store.clone()).with_verifier("server", acceptor.stats().clone()),
        ));
        mesh.register_collector(Box::new(XdsCollector::new(xds_status.clone())));
        let open = inbound_limiter.clone();
        mesh.register_collector(Box::new(FnCollector::new(
            "inbound_connections",
            "Inbound connections open now",
            Kind::Gauge,
            move || vec![(vec![], open.active() as f64)],
        )));
        let refused = inbound_limiter.clone();
        mesh.register_collector(Box::new(FnCollector::new(
            "inbound_connections_refused",
            "Inbound connections closed at once because --max-connections were open",
            Kind::Counter,
            move || vec![(vec![], refused.refused() as f64)],
        )));
        #[cfg(feature = "count-allocs")]
        for (name, help, pick) in [
            (
                "heap_allocations",
                "Heap allocations (reallocations included) since start (feature count-allocs)",
                (|t: (u64, u64)| t.0) as fn((u64, u64)) -> u64,
            ),
            (
                "heap_allocated_bytes",
                "Bytes requested by heap allocations since start (feature count-allocs)",
                |t| t.1,
            ),
        ] {
            mesh.register_collector(Box::new(FnCollector::new(
                name,
                help,
                Kind::Counter,
                move || vec![(vec![], pick(heap::totals()) as f64)],
            )));
        }
        AuthzMetrics::register(mesh)
    };
    let registry = Arc::new(registry);
    let settings = serde_json::json!({
        "inbound": inbound.as_ref().map(|(_, a)| a.to_string()),
        "app": inbound.as_ref().map(|_| opts.app.to_string()),
        "outbound": outbound.as_ref().map(|(_, a)| a.to_string()),
        "tcp": opts.tcp.iter().map(|f| format!("{}={}", f.listen, f.target)).collect::<Vec<_>>(),
        "mtls": opts.mtls.map(|m| format!("{m:?}")),
        "access_log": opts.access_log.map(|f| format!("{f:?}")),
        "node": bootstrap.node.id,
        "mesh_config": opts.mesh_config.as_ref().map(|d| d.display().to_string()),
    });
    let admin_addr = admin_listener.map(|(l, addr)| {
        let a = admin::admin(
            registry,
            store.clone(),
            source.clone(),
            xds_status.clone(),
            settings,
            watch_status,
        );
        background.push(tokio::spawn(async move {
            if let Err(e) = a.serve(l).await {
                tracing::warn!(error = %e, "admin server ended");
            }
        }));
        addr
    });

    // Metric labels name us by our certificate, so wait for it.
    tracing::info!("waiting for the workload certificate");
    let creds = store.ready().await;
    let local = node::workload_info(&bootstrap, &creds.id);
    tracing::info!(id = %creds.id, workload = %local.workload, "identity ready");

    let (stop, stop_rx) = watch::channel(false);
    let mut listeners = Vec::new();
    let inbound_addr = match inbound {
        Some((listener, addr)) => {
            let policy = match opts.mtls {
                Some(mode) => inbound::policy::fixed(mode),
                None => {
                    let ip = node::instance_ip(&opts, Some(&bootstrap));
                    let name = node::inbound_listener_name(&bootstrap, ip, addr.port());
                    inbound::policy::from_source(source.clone(), name)
                }
            };
            let part = inbound::Inbound {
                acceptor,
                policy,
                metrics: metrics.clone(),
                service: node::local_service(&local),
                local: local.clone(),
                app: opts.app,
                app_protocol: opts.app_protocol,
                access_log: access_log(&opts),
                authz_metrics,
                limits,
                limiter: inbound_limiter.clone(),
            };
            listeners.push(tokio::spawn(part.run(listener, stop_rx.clone())));
            Some(addr)
        }
        None => None,
    };
    let outbound_addr = match outbound {
        Some((listener, addr)) => {
            let mesh = mesh::Mesh::builder()
                .identity_store(store.clone())
                .config_source(source.clone())
                .metrics(metrics.clone())
                .workload(local.clone())
                .build()
                .map_err(|e| ProxyError(format!("outbound client: {e}")))?;
            let part = outbound::Outbound {
                client: mesh.client(),
                access_log: access_log(&opts),
            };
            listeners.push(tokio::spawn(part.run(listener, stop_rx.clone())));
            Some(addr)
        }
        None => None,
    };
    let mut tcp_addrs = Vec::new();
    for ((listener, addr), target) in tcp {
        let part = tcp::Passthrough {
            target,
            metrics: metrics.clone(),
            local: local.clone(),
        };
        listeners.push(tokio::spawn(part.run(listener, stop_rx.clone())));
        tcp_addrs.push(addr);
    }
    tracing::info!(
        inbound = ?inbound_addr, outbound = ?outbound_addr, admin = ?admin_addr, tcp = ?tcp_addrs,
        "proxy serving"
    );
    Ok(Running {
        inbound: inbound_addr,
        outbound: outbound_addr,
        admin: admin_addr,
        tcp: tcp_addrs,
        stop,
        listeners,
        background,
        _source: source,
    })
}

/// The access log layer: disabled unless `--access-log` names a format.
fn access_log(opts: &ProxyOptions) -> AccessLogLayer {
    AccessLogLayer::new(AccessLogConfig {
        enabled: opts.access_log.is_some(),
        format: opts.access_log.unwrap_or_default(),
    })
}
