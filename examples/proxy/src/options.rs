//! Settings: command-line flags over an optional YAML file whose keys are the flags'
//! names (`--drain-timeout` is `drain_timeout`). All parsing and file reading of the proxy
//! happens here and in `main.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Usage text.
pub const USAGE: &str = "usage: mesh-proxy [--config FILE] [flags]

listeners
  --inbound ADDR          mesh traffic to the local app (default 0.0.0.0:15006; off: none)
  --app ADDR              the local app (default 127.0.0.1:8080)
  --outbound ADDR         plain HTTP from the app, routed by xDS (default 127.0.0.1:15001; off)
  --admin ADDR            admin: /stats/prometheus /config_dump /ready ... (default 127.0.0.1:15000; off)
  --tcp LISTEN=TARGET     TCP passthrough, repeatable (e.g. 127.0.0.1:15432=10.0.0.5:5432)
  --access-log F          off (default), envoy (Envoy's default format) or json; lines go to
                          stderr (log target access_log)
  --mtls MODE             inbound PeerAuthentication: strict | permissive | disable
                          (default: from the xDS inbound listener; strict until it arrives)
  --app-protocol P        http1 (default) or h2c (HTTP/2 without TLS, e.g. a gRPC app)
config source (one of)
  --bootstrap FILE        gRPC xDS bootstrap (A27 JSON); default $GRPC_XDS_BOOTSTRAP
  --xds URI               the control plane over TLS (e.g. https://istiod.istio-system.svc:15012),
                          verified with the identity's mesh root, presenting its certificate;
                          http:// (plaintext) only to loopback unless --xds-insecure true
  --xds-server-name NAME  the name istiod's certificate must carry (default: the URI's host;
                          istiod's is istiod.istio-system.svc)
  --xds-insecure BOOL     allow a plaintext http:// --xds URI to another host (default false)
  --mesh-config DIR       static: Istio YAML in DIR, generated for this node and decoded in
                          process, no xDS server (the directory is watched)
  with --xds or --mesh-config, the node: --name POD --namespace NS --service-account SA
                          [--label k=v]... [--ip IP] [--cluster-id ID]
identity (one of)
  --identity files:DIR    cert-chain.pem, key.pem, root-cert.pem in DIR (reloaded on change)
  --identity istio-ca:URI the Istio CA (e.g. https://istiod.istio-system.svc:15012) with
                          --ca-root FILE [--token FILE] [--ca-server-name NAME]
  --identity ca:DIR       sign our own certificate with the CA in DIR (Istio's ROOT_CA_DIR
                          layout: ca-cert.pem, ca-key.pem, root-cert.pem); tests and demos
runtime
  --workers N             runtime worker threads (default: the number of CPUs; 1 runs
                          everything on one thread)
  --max-connections N     inbound connections served at once; more are closed at once
                          (default 10000)
  --handshake-timeout D   inbound: first bytes (PERMISSIVE sniff) and TLS handshake within D
                          (default 10s)
  --header-read-timeout D inbound: HTTP/1 request headers (and keep-alive idle time) and the
                          first request of a connection within D (default 30s)
  --drain-timeout D       on SIGTERM/SIGINT: stop accepting, finish in-flight requests for at most D
                          (default 5s)
  --config FILE           YAML with the same keys (flags win)
tracing (OpenTelemetry's OTEL_* variables, as the in-process mesh; a flag wins over its variable)
  --otlp-endpoint URL     export spans over OTLP/gRPC to URL (e.g. http://otel-collector:4317);
                          else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT;
                          neither: no export
  --service-name NAME     service.name (else OTEL_SERVICE_NAME, else service.name of
                          OTEL_RESOURCE_ATTRIBUTES, else the app label, else the service account)
  --trace-sampler S       always_on | always_off | traceidratio | parentbased_always_on (default)
                          | parentbased_always_off | parentbased_traceidratio (OTEL_TRACES_SAMPLER)
  --trace-sampler-arg R   the ratio of the *traceidratio samplers, 0..1 (OTEL_TRACES_SAMPLER_ARG)
  also read: OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_PROTOCOL
  (grpc only), OTEL_TRACES_EXPORTER (otlp | none), OTEL_SDK_DISABLED, OTEL_BSP_*";

/// Where the workload's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// PEM files in the istio-agent layout.
    Files(PathBuf),
    /// The Istio CA at this URI.
    IstioCa(String),
    /// A CA directory whose key signs our certificate locally.
    CaDir(PathBuf),
}

impl std::str::FromStr for IdentitySource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(dir) = s.strip_prefix("files:") {
            return Ok(Self::Files(dir.into()));
        }
        if let Some(uri) = s.strip_prefix("istio-ca:") {
            return Ok(Self::IstioCa(uri.into()));
        }
        if let Some(dir) = s.strip_prefix("ca:") {
            return Ok(Self::CaDir(dir.into()));
        }
        Err(format!(
            "identity {s:?}: expected files:DIR, istio-ca:https://HOST:PORT or ca:DIR"
        ))
    }
}

/// The inbound mTLS mode, when fixed by configuration rather than xDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// mTLS only.
    Strict,
    /// mTLS or plaintext (sniffed per connection).
    Permissive,
    /// Plaintext only.
    Disable,
}

impl std::str::FromStr for MtlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(Self::Strict),
            "permissive" => Ok(Self::Permissive),
            "disable" => Ok(Self::Disable),
            _ => Err(format!(
                "mtls {s:?}: expected strict, permissive or disable"
            )),
        }
    }
}

/// How the proxy talks to the local app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AppProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (no TLS), for gRPC apps.
    H2c,
}

impl std::str::FromStr for AppProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http1" => Ok(Self::Http1),
            "h2c" => Ok(Self::H2c),
            _ => Err(format!("app-protocol {s:?}: expected http1 or h2c")),
        }
    }
}

/// A TCP passthrough: connections to `listen` are piped to `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpForward {
    /// Where to accept.
    pub listen: SocketAddr,
    /// Where to connect.
    pub target: SocketAddr,
}

impl std::str::FromStr for TcpForward {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (l, t) = s
            .split_once('=')
            .ok_or_else(|| format!("tcp {s:?}: expected LISTEN=TARGET"))?;
        Ok(Self {
            listen: addr("tcp listen", l)?,
            target: addr("tcp target", t)?,
        })
    }
}

/// The node of an Istio proxyless bootstrap built from flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOptions {
    /// The control plane's URI.
    pub xds: String,
    /// Pod (workload instance) name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Service account.
    pub service_account: String,
    /// Workload labels (`app`, `version`, ...).
    pub labels: BTreeMap<String, String>,
    /// The instance IP (default: the inbound address when specific, else 127.0.0.1).
    pub ip: Option<std::net::IpAddr>,
    /// `CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// The name the control plane's certificate must carry (default: the URI's host).
    pub xds_server_name: Option<String>,
    /// Plaintext to a non-loopback `http://` control plane, asked for explicitly.
    pub xds_insecure: bool,
}

/// Everything the proxy needs to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyOptions {
    /// Inbound listener (`None`: no inbound).
    pub inbound: Option<SocketAddr>,
    /// The local app.
    pub app: SocketAddr,
    /// The local app's protocol.
    pub app_protocol: AppProtocol,
    /// Outbound listener (`None`: no outbound).
    pub outbound: Option<SocketAddr>,
    /// Admin listener (`None`: no admin).
    pub admin: Option<SocketAddr>,
    /// TCP passthroughs.
    pub tcp: Vec<TcpForward>,
    /// Fixed inbound mTLS mode (`None`: from xDS).
    pub mtls: Option<MtlsMode>,
    /// Access log format (`None`: no access log).
    pub access_log: Option<mesh_telemetry::access_log::Format>,
    /// A bootstrap file (`None`: the node flags, else `GRPC_XDS_BOOTSTRAP`).
    pub bootstrap: Option<PathBuf>,
    /// The node described by flags (with `xds` or `mesh_config`).
    pub node: NodeOptions,
    /// Static mode: Istio YAML generated for this node and decoded in process (no xDS server).
    pub mesh_config: Option<PathBuf>,
    /// The identity source.
    pub identity: Option<IdentitySource>,
    /// The Istio CA's root certificate (PEM).
    pub ca_root: Option<PathBuf>,
    /// A bearer token file for the Istio CA.
    pub token: Option<PathBuf>,
    /// The Istio CA's TLS server name.
    pub ca_server_name: String,
    /// Runtime worker threads (`None`: one per CPU).
    pub workers: Option<usize>,
    /// How long in-flight work may take after a stop signal.
    pub drain_timeout: Duration,
    /// Inbound connections served at once.
    pub max_connections: usize,
    /// Inbound: the PERMISSIVE sniff and the TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Inbound: HTTP/1 headers and a connection's first request must arrive within this.
    pub header_read_timeout: Duration,
    /// Span export settings given as flags (over the `OTEL_*` variables).
    pub tracing: TracingFlags,
}

/// The tracing flags: each, when set, wins over the `OTEL_*` variable it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracingFlags {
    /// `--otlp-endpoint` (over `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `..._ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// `--service-name` (over `OTEL_SERVICE_NAME`).
    pub service_name: Option<String>,
    /// `--trace-sampler` (over `OTEL_TRACES_SAMPLER`).
    pub trace_sampler: Option<String>,
    /// `--trace-sampler-arg` (over `OTEL_TRACES_SAMPLER_ARG`).
    pub trace_sampler_arg: Option<String>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            inbound: Some(([0, 0, 0, 0], 15006).into()),
            app: ([127, 0, 0, 1], 8080).into(),
            app_protocol: AppProtocol::Http1,
            outbound: Some(([127, 0, 0, 1], 15001).into()),
            admin: Some(([127, 0, 0, 1], 15000).into()),
            tcp: Vec::new(),
            mtls: None,
            access_log: None,
            bootstrap: None,
            node: NodeOptions::default(),
            mesh_config: None,
            identity: None,
            ca_root: None,
            token: None,
            ca_server_name: "istiod.istio-system.svc".into(),
            workers: None,
            drain_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            tracing: TracingFlags::default(),
        }
    }
}

/// The YAML file: the flags' names as keys, every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    inbound: Option<String>,
    app: Option<String>,
    app_protocol: Option<String>,
    outbound: Option<String>,
    admin: Option<String>,
    #[serde(default)]
    tcp: Vec<String>,
    mtls: Option<String>,
    access_log: Option<String>,
    bootstrap: Option<PathBuf>,
    mesh_config: Option<PathBuf>,
    xds: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    service_account: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    ip: Option<String>,
    cluster_id: Option<String>,
    xds_server_name: Option<String>,
    xds_insecure: Option<bool>,
    identity: Option<String>,
    ca_root: Option<PathBuf>,
    token: Option<PathBuf>,
    ca_server_name: Option<String>,
    workers: Option<usize>,
    drain_timeout: Option<String>,
    max_connections: Option<usize>,
    handshake_timeout: Option<String>,
    header_read_timeout: Option<String>,
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    trace_sampler: Option<String>,
    trace_sampler_arg: Option<String>,
}

fn addr(what: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{what} {v:?}: not an address like 127.0.0.1:8080"))
}

fn optional_addr(what: &str, v: &str) -> Result<Option<SocketAddr>, String> {
    if v == "off" {
        Ok(None)
    } else {
        addr(what, v).map(Some)
    }
}

/// Parses a duration such as `5s`, `500ms`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number with a unit (ms, s, m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("duration {s:?}: {e}"))
}

/// A timeout that must not be zero (a zero timeout would refuse every connection).
fn nonzero(what: &str, v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() {
        return Err(format!("{what} must be more than zero"));
    }
    Ok(d)
}

fn label(v: &str) -> Result<(String, String), String> {
    v.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("label {v:?}: expected key=value"))
}

impl ProxyOptions {
    /// Applies one setting by its flag name (without `--`, `-` or `_` alike).
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key.replace('_', "-").as_str() {
            "inbound" => self.inbound = optional_addr("inbound", v)?,
            "app" => self.app = addr("app", v)?,
            "app-protocol" => self.app_protocol = v.parse()?,
            "mesh-config" => self.mesh_config = Some(v.into()),
            "outbound" => self.outbound = optional_addr("outbound", v)?,
            "admin" => self.admin = optional_addr("admin", v)?,
            "tcp" => self.tcp.push(v.parse()?),
            "mtls" => self.mtls = Some(v.parse()?),
            "access-log" => {
                use mesh_telemetry::access_log::Format;
                self.access_log = match v {
                    "off" => None,
                    "envoy" => Some(Format::Envoy),
                    "json" => Some(Format::Json),
                    _ => return Err(format!("access-log {v:?}: expected off, envoy or json")),
                }
            }
            "bootstrap" => self.bootstrap = Some(v.into()),
            "xds" => self.node.xds = v.into(),
            "xds-server-name" => self.node.xds_server_name = Some(v.into()),
            "xds-insecure" => {
                self.node.xds_insecure = v
                    .parse()
                    .map_err(|_| format!("xds-insecure {v:?}: expected true or false"))?
            }
            "name" => self.node.name = v.into(),
            "namespace" => self.node.namespace = v.into(),
            "service-account" => self.node.service_account = v.into(),
            "label" => {
                let (k, val) = label(v)?;
                self.node.labels.insert(k, val);
            }
            "ip" => {
                self.node.ip = Some(
                    v.parse()
                        .map_err(|_| format!("ip {v:?}: not an IP address"))?,
                )
            }
            "cluster-id" => self.node.cluster_id = Some(v.into()),
            "identity" => self.identity = Some(v.parse()?),
            "ca-root" => self.ca_root = Some(v.into()),
            "token" => self.token = Some(v.into()),
            "ca-server-name" => self.ca_server_name = v.into(),
            "workers" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("workers {v:?}: not a number"))?;
                if n == 0 {
                    return Err("workers must be at least 1".into());
                }
                self.workers = Some(n);
            }
            "drain-timeout" => self.drain_timeout = parse_duration(v)?,
            "max-connections" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("max-connections {v:?}: not a number"))?;
                if n == 0 {
                    return Err("max-connections must be at least 1".into());
                }
                self.max_connections = n;
            }
            "handshake-timeout" => self.handshake_timeout = nonzero("handshake-timeout", v)?,
            "header-read-timeout" => self.header_read_timeout = nonzero("header-read-timeout", v)?,
            "otlp-endpoint" => self.tracing.otlp_endpoint = Some(v.into()),
            "service-name" => self.tracing.service_name = Some(v.into()),
            "trace-sampler" => self.tracing.trace_sampler = Some(v.into()),
            "trace-sampler-arg" => self.tracing.trace_sampler_arg = Some(v.into()),
            other => return Err(format!("unknown option --{other}")),
        }
        Ok(())
    }

    /// Applies a YAML config file's settings (see `docs/proxy.md`).
    pub fn apply_yaml(&mut self, yaml: &str) -> Result<(), String> {
        let f: FileOptions = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let scalars = [
            ("inbound", f.inbound),
            ("app", f.app),
            ("app-protocol", f.app_protocol),
            ("outbound", f.outbound),
            ("admin", f.admin),
            ("mtls", f.mtls),
            ("access-log", f.access_log),
            ("xds", f.xds),
            ("name", f.name),
            ("namespace", f.namespace),
            ("service-account", f.service_account),
            ("ip", f.ip),
            ("cluster-id", f.cluster_id),
            ("xds-server-name", f.xds_server_name),
            ("xds-insecure", f.xds_insecure.map(|b| b.to_string())),
            ("identity", f.identity),
            ("ca-server-name", f.ca_server_name),
            ("drain-timeout", f.drain_timeout),
            ("workers", f.workers.map(|w| w.to_string())),
            ("max-connections", f.max_connections.map(|n| n.to_string())),
            ("handshake-timeout", f.handshake_timeout),
            ("header-read-timeout", f.header_read_timeout),
            ("otlp-endpoint", f.otlp_endpoint),
            ("service-name", f.service_name),
            ("trace-sampler", f.trace_sampler),
            ("trace-sampler-arg", f.trace_sampler_arg),
        ];
        for (k, v) in scalars {
            if let Some(v) = v {
                self.set(k, &v)?;
            }
        }
        for t in f.tcp {
            self.set("tcp", &t)?;
        }
        self.node.labels.extend(f.labels);
        if let Some(p) = f.bootstrap {
            self.bootstrap = Some(p);
        }
        if let Some(p) = f.mesh_config {
            self.mesh_config = Some(p);
        }
        if let Some(p) = f.ca_root {
            self.ca_root = Some(p);
        }
        if let Some(p) = f.token {
            self.token = Some(p);
        }
        Ok(())
    }

    /// Checks that the settings fit together.
    pub fn validate(&self) -> Result<(), String> {
        let sources = [
            self.bootstrap.is_some(),
            !self.node.xds.is_empty(),
            self.mesh_config.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err("give one of --bootstrap, --xds and --mesh-config".into());
        }
        let flag = if self.mesh_config.is_some() {
            "--mesh-config"
        } else {
            "--xds"
        };
        if !self.node.xds.is_empty() || self.mesh_config.is_some() {
            for (need, v) in [
                ("--name", &self.node.name),
                ("--namespace", &self.node.namespace),
                ("--service-account", &self.node.service_account),
            ] {
                if v.is_empty() {
                    return Err(format!("{flag} needs {need}"));
                }
            }
        }
        if self.node.xds.starts_with("http://") && !self.node.xds_insecure {
            let local = self
                .node
                .xds
                .parse::<http::Uri>()
                .is_ok_and(|u| mesh_xds::client::channel::is_loopback(&u));
            if !local {
                return Err(format!(
                    "--xds {}: plaintext xDS to a host other than loopback lets anyone on the path rewrite mTLS and authorization config: use https:// (TLS), or opt in with --xds-insecure true",
                    self.node.xds
                ));
            }
        }
        if matches!(self.identity, Some(IdentitySource::IstioCa(_))) && self.ca_root.is_none() {
            return Err("--identity istio-ca:URI needs --ca-root FILE".into());
        }
        Ok(())
    }
}

/// Parses the command line (without the program name). `read` loads `--config` files.
pub fn parse_args(
    args: &[String],
    read: impl Fn(&std::path::Path) -> Result<String, String>,
) -> Result<ProxyOptions, String> {
    let mut o = ProxyOptions::default();
    // The file first, so flags override it wherever they appear.
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            let path = it.next().ok_or("--config needs a value")?;
            let text = read(std::path::Path::new(path))?;
            o.apply_yaml(&text).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(key) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument {a:?}"));
        };
        let (key, inline) = match key.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (key, None),
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("--{key} needs a value"))?,
        };
        if key != "config" {
            o.set(key, &value)?;
        }
    }
    o.validate()?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_file(_: &std::path::Path) -> Result<String, String> {
        Err("no file".into())
    }

    #[test]
    fn connection_limits_from_flags_and_yaml() {
        let o = parse_args(
            &args("--max-connections 50 --handshake-timeout 2s --header-read-timeout 500ms"),
            no_file,
        )
        .unwrap();
        assert_eq!(o.max_connections, 50);
        assert_eq!(o.handshake_timeout, Duration::from_secs(2));
        assert_eq!(o.header_read_timeout, Duration::from_millis(500));
        let mut o = ProxyOptions::default();
        o.apply_yaml("max_connections: 7\nheader_read_timeout: 3s\n")
            .unwrap();
        assert_eq!(
            (o.max_connections, o.header_read_timeout),
            (7, Duration::from_secs(3))
        );
        for bad in [
            "--max-connections 0",
            "--header-read-timeout 0s",
            "--handshake-timeout 0ms",
        ] {
            let e = parse_args(&args(bad), no_file).unwrap_err();
            assert!(e.contains(&bad[2..bad.find(' ').unwrap()]), "{bad}: {e}");
        }
    }

    #[test]
    fn flags_set_listeners_identity_and_node() {
        let o = parse_args(
            &args(
                "--inbound 127.0.0.1:7000 --app 127.0.0.1:8000 --outbound off \
                 --tcp 127.0.0.1:7001=127.0.0.1:5432 --xds http://127.0.0.1:15010 \
                 --name web-0 --namespace default --service-account web --label app=web \
                 --label version=v1 --identity files:/etc/certs --workers 2 --drain-timeout 500ms \
                 --mtls STRICT --access-log json",
            ),
            no_file,
        )
        .unwrap();
        assert_eq!(o.inbound, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(o.outbound, None);
        assert_eq!(o.tcp[0].target, "127.0.0.1:5432".parse().unwrap());
        assert_eq!(o.node.labels["version"], "v1");
        assert_eq!(o.identity, Some(IdentitySource::Files("/etc/certs".into())));
        assert_eq!(o.workers, Some(2));
        assert_eq!(o.drain_timeout, Duration::from_millis(500));
        assert_eq!(o.mtls, Some(MtlsMode::Strict));
        assert_eq!(o.access_log, Some(mesh_telemetry::access_log::Format::Json));
    }

    #[test]
    fn file_is_applied_and_flags_win() {
        let yaml = "app: 127.0.0.1:9000\nadmin: 127.0.0.1:9901\nlabels: {app: api}\n\
                    tcp: [\"127.0.0.1:1=127.0.0.1:2\"]\ndrain_timeout: 2s\n";
        let o = parse_args(&args("--config proxy.yaml --app 127.0.0.1:9100"), |_| {
            Ok(yaml.into())
        })
        .unwrap();
        assert_eq!(o.app, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(o.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(o.node.labels["app"], "api");
        assert_eq!(o.tcp.len(), 1);
        assert_eq!(o.drain_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bad_input_names_the_rule() {
        let err = |s: &str| parse_args(&args(s), no_file).unwrap_err();
        assert!(err("--app nowhere").contains("not an address"));
        assert!(err("--bogus 1").contains("unknown option --bogus"));
        assert!(err("--workers 0").contains("at least 1"));
        assert!(err("--xds http://x:1").contains("--name"));
        let node = "--name a --namespace ns --service-account sa";
        assert!(
            err(&format!("--xds http://10.0.0.1:15010 {node}")).contains("--xds-insecure true"),
            "plaintext to another host needs the opt-in"
        );
        for ok in [
            format!("--xds http://10.0.0.1:15010 --xds-insecure true {node}"),
            format!("--xds http://127.0.0.1:15010 {node}"),
            format!("--xds https://istiod.istio-system.svc:15012 {node}"),
        ] {
            let o = parse_args(&args(&ok), no_file).unwrap();
            assert!(!o.node.xds.is_empty());
        }
        assert!(err("--identity istio-ca:https://x:1").contains("--ca-root"));
        assert!(err("--identity vault:x").contains("files:DIR"));
        assert!(err("--mesh-config d --xds http://x:1").contains("one of"));
        assert!(err("--mesh-config d").contains("--mesh-config needs --name"));
        assert!(err("--app-protocol h3").contains("http1 or h2c"));
        assert!(err("--access-log xml").contains("off, envoy or json"));
        assert!(err("--tcp 127.0.0.1:1").contains("LISTEN=TARGET"));
        assert!(err("--mtls maybe").contains("strict"));
        assert!(err("--app").contains("needs a value"));
        let unknown_key = parse_args(&args("--config f"), |_| Ok("apps: 1\n".into())).unwrap_err();
        assert!(unknown_key.contains("unknown field"), "{unknown_key}");
    }
}
