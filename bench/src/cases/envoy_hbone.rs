//! Case 12, ambient mode through Envoy: two Envoy 1.40 sidecars (`--concurrency 1` each)
//! carrying case 11's traffic over HBONE as istiod configures a sidecar talking to an
//! ambient workload (interop-tests/tests/envoy_hbone.rs checks the same shapes against
//! our HBONE peers).
//!
//! Load generator -> (HTTP/2) client Envoy: HCM -> `outbound` cluster whose endpoint is
//! the `connect_originate` internal listener -> TCP proxy with `tunneling_config` ->
//! `connect_originate` cluster (mTLS, TLS 1.3, ALPN h2, `allow_connect`, URI SAN checked)
//! -> server Envoy's `connect_terminate` listener (CONNECT upgrade, 100 streams) ->
//! `main_internal` internal listener: HCM -> (HTTP/2) the app in the harness process.
//! Envoy's HTTP/2 pool (one worker) multiplexes every lane onto one connection to the
//! internal listener, so all requests share one tunnel, as a sidecar's do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tls::dev_ca::DevCa;
use tokio::net::{TcpListener, TcpStream};

use super::lanes::{AbortOnDrop, H2Lane, free_port};
use super::process::{ChildProcess, wait_until};
use super::{Case, CaseId, envoy, envoy_pair};
use crate::certs::{self, PemFiles};
use crate::loadgen::Lane;
use crate::{Error, payload};

/// Case 12.
pub struct EnvoyHbone {
    entry: SocketAddr,
    client: ChildProcess,
    server: ChildProcess,
    _app: AbortOnDrop,
    _dir: tempfile::TempDir,
}

/// Envoy's internal listeners (istiod adds this bootstrap extension for HBONE).
const INTERNAL_LISTENER: &str = r#"bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
"#;

/// An HTTP connection manager routing everything to `cluster` (no retries: the tunnel
/// carries the request once, as case 11's does).
fn hcm(stat_prefix: &str, cluster: &str) -> String {
    format!(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: {cluster}, timeout: 10s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// A cluster speaking HTTP/2 to its upstream.
const H2: &str = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"#;

/// A cluster `name` whose one endpoint is the internal listener `listener`.
fn internal_cluster(name: &str, listener: &str, h2: bool) -> String {
    format!(
        r#"  - name: {name}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{envoy_internal_address: {{server_listener_name: {listener}}}}}}}
{h2}    transport_socket:
      name: internal_upstream
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport
        transport_socket:
          name: raw_buffer
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
"#,
        h2 = if h2 { H2 } else { "" },
    )
}

/// istiod's HBONE `common_tls_context` (`buildCommonConnectTLSContext`): ALPN h2, TLS 1.3
/// only, the peer's URI SAN matched; indented by `pad` columns.
fn tls(files: &PemFiles, peer: &str, pad: usize) -> String {
    let body = envoy_pair::tls_context(files, peer)
        + "  tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}\n";
    envoy_pair::indent(&body, pad)
}

/// The client sidecar: `port` in, tunnelled to `authority` through `hbone`.
fn client_config(port: u16, hbone: u16, authority: SocketAddr, tls: String) -> String {
    format!(
        r#"{INTERNAL_LISTENER}static_resources:
  listeners:
  - name: outbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
{hcm}  - name: connect_originate
    internal_listener: {{}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: connect_originate
          cluster: connect_originate
          tunneling_config: {{hostname: "{authority}"}}
  clusters:
{outbound}  - name: connect_originate
    type: STATIC
    connect_timeout: 10s
    load_assignment:
      cluster_name: connect_originate
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {hbone}}}}}}}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{idle_timeout: 3600s}}
        explicit_http_config:
          http2_protocol_options:
            allow_connect: true
            initial_stream_window_size: 4194304
            initial_connection_window_size: 16777216
    transport_socket:
      name: tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{tls}"#,
        hcm = hcm("outbound", "outbound_hbone"),
        outbound = internal_cluster("outbound_hbone", "connect_originate", true),
    )
}

/// The server sidecar: `connect_terminate` on `port`, the app on `app`.
fn server_config(port: u16, app: u16, tls: String) -> String {
    format!(
        r#"{INTERNAL_LISTENER}static_resources:
  listeners:
  - name: connect_terminate
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
{tls}      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: connect_terminate
          stream_idle_timeout: 0s
          upgrade_configs: [{{upgrade_type: CONNECT}}]
          http2_protocol_options: {{allow_connect: true, max_concurrent_streams: 100}}
          route_config:
            virtual_hosts:
            - name: default
              domains: ["*"]
              routes:
              - match: {{connect_matcher: {{}}}}
                route:
                  cluster: main_internal
                  upgrade_configs: [{{upgrade_type: CONNECT, connect_config: {{}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  - name: main_internal
    internal_listener: {{}}
    filter_chains:
    - filters:
{hcm}  clusters:
{main_internal}  - name: inbound_app
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: inbound_app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}
{H2}"#,
        hcm = hcm("inbound", "inbound_app"),
        main_internal = internal_cluster("main_internal", "main_internal", false),
    )
}

/// Serves the payload app over HTTP/2 (prior knowledge) on `listener`.
fn serve_h2(listener: TcpListener) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(payload::app))
                    .await;
            });
        }
    }))
}

impl EnvoyHbone {
    /// Writes certificates and configs, starts the app and both Envoys, and waits until a
    /// request passes through the tunnel.
    pub async fn start(bin: &Path, ca: &DevCa) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let client_files =
            certs::write_pem(dir.path(), "client", &certs::issue(ca, "bench-client")?)?;
        let server_files = certs::write_pem(dir.path(), "server", &certs::issue(ca, "echo")?)?;
        let client_id = certs::spiffe_id(ca, "bench-client")?.to_string();
        let server_id = certs::spiffe_id(ca, "echo")?.to_string();

        let app_listener = TcpListener::bind("127.0.0.1:0").await?;
        let app = app_listener.local_addr()?;
        let app_task = serve_h2(app_listener);
        let (entry_port, hbone_port) = (free_port()?, free_port()?);
        let write = |name: &str, body: String| -> Result<PathBuf, Error> {
            let p = dir.path().join(name);
            std::fs::write(&p, body)?;
            Ok(p)
        };
        let server_yaml = write(
            "server-envoy.yaml",
            server_config(hbone_port, app.port(), tls(&server_files, &client_id, 10)),
        )?;
        let client_yaml = write(
            "client-envoy.yaml",
            client_config(
                entry_port,
                hbone_port,
                app,
                tls(&client_files, &server_id, 8),
            ),
        )?;
        let server_log = dir.path().join("server-envoy.log");
        let client_log = dir.path().join("client-envoy.log");
        let server = ChildProcess::spawn(
            "server Envoy (HBONE)",
            envoy(bin, &server_yaml),
            &server_log,
        )?;
        let client = ChildProcess::spawn(
            "client Envoy (HBONE)",
            envoy(bin, &client_yaml),
            &client_log,
        )?;
        let mut pair = Self {
            entry: ([127, 0, 0, 1], entry_port).into(),
            client,
            server,
            _app: app_task,
            _dir: dir,
        };
        let entry = pair.entry;
        let probe = wait_until(Duration::from_secs(20), || async move {
            let mut lane = lane(entry).await?;
            lane.send().await
        })
        .await;
        if let Err(e) = probe {
            pair.server.check_running(&server_log)?;
            pair.client.check_running(&client_log)?;
            return Err(format!("Envoy HBONE pair: {e}").into());
        }
        Ok(pair)
    }
}

async fn lane(entry: SocketAddr) -> Result<H2Lane, Error> {
    let tcp = TcpStream::connect(entry).await?;
    tcp.set_nodelay(true)?;
    let uri = format!("http://{}{}", certs::SERVER_DNS, payload::PATH).parse()?;
    H2Lane::new(tcp, uri).await
}

impl Case for EnvoyHbone {
    fn id(&self) -> CaseId {
        CaseId::EnvoyHbone
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move { Ok(Box::new(lane(self.entry).await?) as Box<dyn Lane>) })
    }

    fn processes(&self) -> Vec<(String, u32)> {
        vec![
            (self.client.name.clone(), self.client.pid()),
            (self.server.name.clone(), self.server.pid()),
        ]
    }

    fn describe(&self) -> String {
        "hyper HTTP/2 client -> client Envoy 1.40 (`--concurrency 1`, HCM -> `connect_originate` \
         internal listener, TCP proxy tunnelling) -> HBONE: HTTP/2 CONNECT over TLS 1.3 mTLS \
         (SPIFFE URI SAN match) -> server Envoy 1.40 (`--concurrency 1`, `connect_terminate` -> \
         `main_internal` internal listener, HCM) -> HTTP/2 -> the hyper app in the harness \
         process; one lane = one downstream connection, all lanes in one tunnel (Envoy's pool)"
            .into()
    }
}
