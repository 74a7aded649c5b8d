//! Case 5: an Envoy 1.40 pair, `--concurrency 1` each. Load generator -> (HTTP/1.1) client
//! Envoy -> (mTLS, HTTP/2, client certificate, SPIFFE URI SAN checked) server Envoy ->
//! (HTTP/1.1) the app, which runs in the harness process. Same dev-CA certificates as the
//! other cases; the route has the same timeout and retry policy as the mesh's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_tls::dev_ca::DevCa;
use tokio::net::{TcpListener, TcpStream};

use super::lanes::{AbortOnDrop, H1Lane, free_port, serve_h1};
use super::process::{ChildProcess, wait_until};
use super::{Case, CaseId};
use crate::Error;
use crate::certs::{self, PemFiles};
use crate::loadgen::Lane;

/// Case 5.
pub struct EnvoyPair {
    entry: SocketAddr,
    client: ChildProcess,
    server: ChildProcess,
    _app: AbortOnDrop,
    _dir: tempfile::TempDir,
}

fn hcm(stat_prefix: &str, cluster: &str, retries: bool) -> String {
    let retry = if retries {
        ", retry_policy: {retry_on: \"5xx,reset,connect-failure\", num_retries: 2, per_try_timeout: 5s}"
    } else {
        ""
    };
    format!(
        r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: echo
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: {cluster}, timeout: 10s{retry}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// A `common_tls_context` with the workload's files, ALPN h2 and the peer's URI SAN matched.
pub(super) fn tls_context(files: &PemFiles, peer: &str) -> String {
    format!(
        r#"common_tls_context:
  alpn_protocols: [h2]
  tls_certificates:
  - certificate_chain: {{filename: "{cert}"}}
    private_key: {{filename: "{key}"}}
  validation_context:
    trusted_ca: {{filename: "{root}"}}
    match_typed_subject_alt_names:
    - san_type: URI
      matcher: {{exact: "{peer}"}}
"#,
        cert = files.cert.display(),
        key = files.key.display(),
        root = files.root.display(),
    )
}

pub(crate) fn client_config(port: u16, upstream: u16, files: &PemFiles, server_id: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: outbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
{hcm}  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {sni}
{tls}"#,
        hcm = hcm("outbound", "echo", true),
        sni = certs::SERVER_DNS,
        tls = indent(&tls_context(files, server_id), 8),
    )
}

fn server_config(port: u16, app: u16, files: &PemFiles, client_id: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - name: inbound
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
{tls}      filters:
{hcm}  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}
"#,
        tls = indent(&tls_context(files, client_id), 10),
        hcm = hcm("inbound", "app", false),
    )
}

/// `s` with every line indented by `n` columns.
pub(super) fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// Envoy on `config`, one worker, as both cases and the cold start run it.
pub(crate) fn envoy(bin: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(config).args([
        "--concurrency",
        "1",
        "--use-dynamic-base-id",
        "-l",
        "warning",
    ]);
    cmd
}

impl EnvoyPair {
    /// Writes the certificates and configs, starts the app and both Envoys, and waits until
    /// a request passes through them.
    pub async fn start(bin: &Path, ca: &DevCa) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let client_files =
            certs::write_pem(dir.path(), "client", &certs::issue(ca, "bench-client")?)?;
        let server_files = certs::write_pem(dir.path(), "server", &certs::issue(ca, "echo")?)?;
        let client_id = certs::spiffe_id(ca, "bench-client")?.to_string();
        let server_id = certs::spiffe_id(ca, "echo")?.to_string();

        let app_listener = TcpListener::bind("127.0.0.1:0").await?;
        let app_port = app_listener.local_addr()?.port();
        let app = serve_h1(app_listener);
        let (entry_port, mid_port) = (free_port()?, free_port()?);
        let write = |name: &str, body: String| -> Result<PathBuf, Error> {
            let p = dir.path().join(name);
            std::fs::write(&p, body)?;
            Ok(p)
        };
        let server_yaml = write(
            "server-envoy.yaml",
            server_config(mid_port, app_port, &server_files, &client_id),
        )?;
        let client_yaml = write(
            "client-envoy.yaml",
            client_config(entry_port, mid_port, &client_files, &server_id),
        )?;
        let server_log = dir.path().join("server-envoy.log");
        let client_log = dir.path().join("client-envoy.log");
        let server = ChildProcess::spawn("server Envoy", envoy(bin, &server_yaml), &server_log)?;
        let client = ChildProcess::spawn("client Envoy", envoy(bin, &client_yaml), &client_log)?;
        let mut pair = Self {
            entry: ([127, 0, 0, 1], entry_port).into(),
            client,
            server,
            _app: app,
            _dir: dir,
        };
        let entry = pair.entry;
        let probe = wait_until(Duration::from_secs(20), || async move {
            let tcp = TcpStream::connect(entry).await?;
            let mut lane = H1Lane::new(tcp, certs::SERVER_DNS).await?;
            lane.send().await
        })
        .await;
        if let Err(e) = probe {
            pair.server.check_running(&server_log)?;
            pair.client.check_running(&client_log)?;
            return Err(format!("Envoy pair: {e}").into());
        }
        Ok(pair)
    }
}

impl Case for EnvoyPair {
    fn id(&self) -> CaseId {
        CaseId::EnvoyPair
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.entry).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(H1Lane::new(tcp, certs::SERVER_DNS).await?) as Box<dyn Lane>)
        })
    }

    fn processes(&self) -> Vec<(String, u32)> {
        vec![
            (self.client.name.clone(), self.client.pid()),
            (self.server.name.clone(), self.server.pid()),
        ]
    }

    fn describe(&self) -> String {
        "hyper HTTP/1.1 client -> client Envoy 1.40 (`--concurrency 1`, route with the same \
         timeout and retry policy, least request) -> mTLS HTTP/2 with client certificate and \
         SPIFFE URI SAN match -> server Envoy 1.40 (`--concurrency 1`) -> HTTP/1.1 -> the hyper \
         app in the harness process"
            .into()
    }
}
