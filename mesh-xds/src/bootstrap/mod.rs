//! The xDS bootstrap: gRPC's A27 JSON (`xds_servers`, `node`, `certificate_providers`,
//! `server_listener_resource_name_template`, ...), loaded from `GRPC_XDS_BOOTSTRAP` (a file)
//! or `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON), or built in code, e.g. for Istio proxyless.
//!
//! This is the one place in the library that reads environment variables and files, and only
//! when asked to ([`Bootstrap::from_env`], [`Bootstrap::from_file`]).
//!
//! ```
//! use mesh_xds::bootstrap::{Bootstrap, ChannelCredentials};
//!
//! let b = Bootstrap::from_json(r#"{
//!   "xds_servers": [{"server_uri": "localhost:15010",
//!                    "channel_creds": [{"type": "insecure"}],
//!                    "server_features": ["xds_v3"]}],
//!   "node": {"id": "sidecar~10.0.0.1~foo.default~default.svc.cluster.local",
//!            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}}
//! }"#).unwrap();
//! assert_eq!(b.xds_servers[0].channel_credentials().unwrap(), ChannelCredentials::Insecure);
//! assert_eq!(b.node_proto().id, "sidecar~10.0.0.1~foo.default~default.svc.cluster.local");
//! ```

mod certs;
mod error;
mod istio;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use serde::{Deserialize, Serialize};

pub use certs::{CertificateProviderConfig, FileWatcherConfig};
pub use error::{BOOTSTRAP_CONFIG_ENV, BOOTSTRAP_FILE_ENV, BootstrapError};
pub use istio::{ISTIO_SERVER_LISTENER_PREFIX, IstioNode};

/// A bootstrap, as gRPC A27 (plus A29 certificate providers, A47 authorities and A97 call
/// credentials) defines its JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Management servers, in order of preference (gRPC uses the first).
    pub xds_servers: Vec<XdsServer>,
    /// The node identity sent to the server.
    #[serde(default)]
    pub node: NodeConfig,
    /// Certificate-provider instances, by instance name (referenced from xDS TLS contexts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificate_providers: BTreeMap<String, CertificateProviderConfig>,
    /// Template of the listener name an xDS-enabled server subscribes to; `%s` is replaced by
    /// the listening `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_listener_resource_name_template: Option<String>,
    /// Template of a client's listener name for `xds:///<target>`; `%s` is the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_default_listener_resource_name_template: Option<String>,
    /// xDS federation authorities (A47); kept for completeness.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorities: BTreeMap<String, Authority>,
}

/// One management server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct XdsServer {
    /// Target URI, e.g. `istiod.istio-system.svc:15012` or `unix:///etc/istio/XDS`.
    pub server_uri: String,
    /// Channel credentials in order of preference; the first supported one is used. Empty
    /// means `tls` (secure by default).
    #[serde(default)]
    pub channel_creds: Vec<CredsConfig>,
    /// Call credentials (gRPC A97), e.g. `{"type": "jwt_token_file", "config":
    /// {"jwt_token_file": "/var/run/secrets/tokens/istio-token"}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call_creds: Vec<CredsConfig>,
    /// Features such as `xds_v3` and `ignore_resource_deletion`.
    #[serde(default)]
    pub server_features: Vec<String>,
}

/// A `{"type": ..., "config": ...}` credentials entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CredsConfig {
    /// `insecure`, `tls`, `google_default`, `jwt_token_file`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Type-specific config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// The channel credentials this library supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelCredentials {
    /// Plaintext (h2c).
    Insecure,
    /// TLS; the optional files come from the `tls` type's config (gRPC A65):
    /// `ca_certificate_file`, `certificate_file`, `private_key_file`, and our
    /// `server_name`.
    Tls {
        /// Roots to verify the server; `None` means the caller supplies them (the mesh
        /// root of the workload's identity, for `mesh`).
        ca_certificate_file: Option<PathBuf>,
        /// Client certificate chain for mTLS.
        certificate_file: Option<PathBuf>,
        /// Client private key for mTLS.
        private_key_file: Option<PathBuf>,
        /// The DNS name the server's certificate must carry (and the SNI), e.g.
        /// `istiod.istio-system.svc` when dialing an IP, or its SPIFFE ID
        /// (`spiffe://...`, checked with the workload identity's roots); default: the host
        /// of `server_uri`.
        server_name: Option<String>,
    },
}

impl XdsServer {
    /// The first supported channel credentials (gRPC A27: skip unknown types, fail if none
    /// is supported). No `channel_creds` at all means TLS: plaintext must be asked for
    /// (`{"type": "insecure"}`).
    pub fn channel_credentials(&self) -> Result<ChannelCredentials, BootstrapError> {
        if self.channel_creds.is_empty() {
            return Ok(ChannelCredentials::Tls {
                ca_certificate_file: None,
                certificate_file: None,
                private_key_file: None,
                server_name: None,
            });
        }
        for c in &self.channel_creds {
            match c.kind.as_str() {
                "insecure" => return Ok(ChannelCredentials::Insecure),
                "tls" => {
                    let f = |k: &str| {
                        c.config
                            .as_ref()
                            .and_then(|v| v.get(k))
                            .and_then(|v| v.as_str())
                            .map(PathBuf::from)
                    };
                    let (cert, key) = (f("certificate_file"), f("private_key_file"));
                    if cert.is_some() != key.is_some() {
                        return Err(BootstrapError::Invalid(format!(
                            "xds server {:?}: tls channel_creds need both certificate_file and private_key_file, or neither",
                            self.server_uri
                        )));
                    }
                    let server_name = c
                        .config
                        .as_ref()
                        .and_then(|v| v.get("server_name"))
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                    if let Some(id) = server_name
                        .as_deref()
                        .filter(|n| n.starts_with("spiffe://"))
                        && let Err(e) = mesh_core::SpiffeId::new(id)
                    {
                        return Err(BootstrapError::Invalid(format!(
                            "xds server {:?}: tls server_name {id:?}: {e}",
                            self.server_uri
                        )));
                    }
                    return Ok(ChannelCredentials::Tls {
                        ca_certificate_file: f("ca_certificate_file"),
                        certificate_file: cert,
                        private_key_file: key,
                        server_name,
                    });
                }
                _ => continue,
            }
        }
        let kinds: Vec<&str> = self.channel_creds.iter().map(|c| c.kind.as_str()).collect();
        Err(BootstrapError::Invalid(format!(
            "xds server {:?}: no supported channel_creds in {kinds:?} (supported: insecure, tls)",
            self.server_uri
        )))
    }

    /// The bearer-token file from `call_creds` of type `jwt_token_file`, if any.
    pub fn token_file(&self) -> Option<PathBuf> {
        self.call_creds
            .iter()
            .filter(|c| c.kind == "jwt_token_file")
            .find_map(|c| c.config.as_ref()?.get("jwt_token_file")?.as_str())
            .map(PathBuf::from)
    }

    /// Whether the server listed `feature` in `server_features`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.server_features.iter().any(|f| f == feature)
    }

    /// `ignore_resource_deletion` (gRPC A53): keep resources the server stops sending.
    pub fn ignore_resource_deletion(&self) -> bool {
        self.has_feature("ignore_resource_deletion")
    }
}

/// The `node` object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Node id (Istio: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    #[serde(default)]
    pub id: String,
    /// Node cluster.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Free-form metadata (Istio: `GENERATOR`, `NAMESPACE`, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Where the node runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityConfig>,
}

/// A node locality.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalityConfig {
    /// Region.
    #[serde(default)]
    pub region: String,
    /// Zone.
    #[serde(default)]
    pub zone: String,
    /// Sub-zone.
    #[serde(default)]
    pub sub_zone: String,
}

/// An authority (gRPC A47).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Authority {
    /// Listener name template for this authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_listener_resource_name_template: Option<String>,
    /// Servers for this authority (the top-level ones when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xds_servers: Vec<XdsServer>,
}
impl Bootstrap {
    /// Parses and validates bootstrap JSON. Errors name the field path.
    pub fn from_json(json: &str) -> Result<Self, BootstrapError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let b: Bootstrap = serde_path_to_error::deserialize(de).map_err(|e| {
            // A syntax error before any field is reported at the document itself.
            let path = match e.path().to_string() {
                p if p == "?" || p == "." => "(document)".to_owned(),
                p => p,
            };
            BootstrapError::Json {
                path,
                message: e.inner().to_string(),
            }
        })?;
        b.validate()?;
        Ok(b)
    }

    /// Reads a bootstrap file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BootstrapError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| BootstrapError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&json)
    }

    /// Loads from `GRPC_XDS_BOOTSTRAP` (a file path, checked first, as gRPC does) or
    /// `GRPC_XDS_BOOTSTRAP_CONFIG` (inline JSON).
    pub fn from_env() -> Result<Self, BootstrapError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`Bootstrap::from_env`] with a custom variable lookup (for tests and embedders).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BootstrapError> {
        if let Some(path) = lookup(BOOTSTRAP_FILE_ENV).filter(|p| !p.is_empty()) {
            return Self::from_file(path);
        }
        if let Some(json) = lookup(BOOTSTRAP_CONFIG_ENV).filter(|j| !j.is_empty()) {
            return Self::from_json(&json);
        }
        Err(BootstrapError::NotConfigured)
    }

    /// Checks the rules of gRPC A27 that JSON types alone do not express.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        if self.xds_servers.is_empty() {
            return Err(BootstrapError::Invalid(
                "xds_servers must not be empty".into(),
            ));
        }
        for (i, s) in self.xds_servers.iter().enumerate() {
            if s.server_uri.is_empty() {
                return Err(BootstrapError::Invalid(format!(
                    "xds_servers[{i}].server_uri must not be empty"
                )));
            }
            let creds = s.channel_credentials()?;
            if creds == ChannelCredentials::Insecure && s.token_file().is_some() {
                return Err(BootstrapError::Invalid(format!(
                    "xds_servers[{i}]: jwt_token_file call_creds with insecure channel_creds: gRFC A97 allows call credentials only on secure channels (use tls channel_creds)"
                )));
            }
        }
        for (name, p) in &self.certificate_providers {
            // Unknown plugins are kept (gRPC fails only when one is used); file_watcher
            // configs are checked now so a typo fails at startup.
            if p.plugin_name == "file_watcher" {
                p.file_watcher().map_err(|e| match e {
                    BootstrapError::Json { path, message } => BootstrapError::Json {
                        path: format!("certificate_providers.{name}.{path}"),
                        message,
                    },
                    BootstrapError::Invalid(m) => {
                        BootstrapError::Invalid(format!("certificate_providers.{name}: {m}"))
                    }
                    other => other,
                })?;
            }
        }
        if let Some(t) = &self.server_listener_resource_name_template
            && t.is_empty()
        {
            return Err(BootstrapError::Invalid(
                "server_listener_resource_name_template must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// The JSON form (for writing a bootstrap file for another process).
    pub fn to_json(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The node as the protobuf sent on the ADS stream (metadata as a `Struct`).
    pub fn node_proto(&self) -> core::Node {
        core::Node {
            id: self.node.id.clone(),
            cluster: self.node.cluster.clone(),
            metadata: (!self.node.metadata.is_empty()).then(|| json_struct(&self.node.metadata)),
            locality: self.node.locality.as_ref().map(|l| core::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
            user_agent_name: "mesh-xds".into(),
            ..Default::default()
        }
    }

    /// A client config carrying this bootstrap's node and the first server's token file; the
    /// other settings keep their defaults. Build the channel from
    /// [`XdsServer::channel_credentials`] of `xds_servers[0]`.
    pub fn xds_client_config(&self) -> crate::client::XdsClientConfig {
        crate::client::XdsClientConfig {
            node: self.node_proto(),
            token_file: self.token_file(),
            ..Default::default()
        }
    }

    /// The server listener name for `addr` (`ip:port`), from the template.
    pub fn server_listener_name(&self, addr: &std::net::SocketAddr) -> Option<String> {
        self.server_listener_resource_name_template
            .as_ref()
            .map(|t| t.replace("%s", &addr.to_string()))
    }

    /// The first server's bearer-token file, if its `call_creds` name one.
    pub fn token_file(&self) -> Option<PathBuf> {
        self.xds_servers.first().and_then(XdsServer::token_file)
    }
}

fn json_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    }
}

fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The example of gRPC A27, with A29 certificate providers.
    const A27: &str = r#"{
      "xds_servers": [
        {
          "server_uri": "xds.example.com:443",
          "channel_creds": [{"type": "google_default"}, {"type": "tls", "config": {"ca_certificate_file": "/etc/ca.pem"}}],
          "server_features": ["xds_v3", "ignore_resource_deletion"]
        }
      ],
      "node": {
        "id": "projects/1234/networks/default/nodes/abcd",
        "cluster": "cluster",
        "metadata": {"TRAFFICDIRECTOR_GCP_PROJECT_NUMBER": "1234", "nested": {"a": [1, true, null]}},
        "locality": {"zone": "us-central1-a"}
      },
      "certificate_providers": {
        "default": {
          "plugin_name": "file_watcher",
          "config": {
            "certificate_file": "/var/run/gke-spiffe/certs/certificates.pem",
            "private_key_file": "/var/run/gke-spiffe/certs/private_key.pem",
            "ca_certificate_file": "/var/run/gke-spiffe/certs/ca_certificates.pem",
            "refresh_interval": "600s"
          }
        }
      },
      "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s"
    }"#;

    /// Istio's agent output (pkg/istio-agent/grpcxds, pilot grpcgen testdata).
    const ISTIO: &str = r#"{
      "xds_servers": [
        {"server_uri": "unix:///etc/istio/proxy/XDS", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
      ],
      "node": {
        "id": "sidecar~10.0.0.1~foo.default~default.svc.cluster.local",
        "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default", "INSTANCE_IPS": "10.0.0.1",
                     "LABELS": {"app": "foo"}, "ISTIO_VERSION": "1.28.0"},
        "locality": {},
        "UserAgentVersionType": null
      },
      "certificate_providers": {
        "default": {"plugin_name": "file_watcher", "config": {
          "certificate_file": "/var/lib/istio/data/cert-chain.pem",
          "private_key_file": "/var/lib/istio/data/key.pem",
          "ca_certificate_file": "/var/lib/istio/data/root-cert.pem",
          "refresh_interval": "900s"}}
      },
      "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
    }"#;

    #[test]
    fn a27_example() {
        let b = Bootstrap::from_json(A27).unwrap();
        let s = &b.xds_servers[0];
        assert_eq!(s.server_uri, "xds.example.com:443");
        // google_default is skipped: the first supported type wins.
        assert_eq!(
            s.channel_credentials().unwrap(),
            ChannelCredentials::Tls {
                ca_certificate_file: Some("/etc/ca.pem".into()),
                certificate_file: None,
                private_key_file: None,
                server_name: None,
            }
        );
        assert!(s.has_feature("xds_v3"));
        assert!(s.ignore_resource_deletion());
        assert_eq!(b.node.cluster, "cluster");
        assert_eq!(b.node.locality.as_ref().unwrap().zone, "us-central1-a");
        let fw = b.certificate_providers["default"].file_watcher().unwrap();
        assert_eq!(fw.refresh().unwrap(), Duration::from_secs(600));
        assert_eq!(
            fw.ca_certificate_file.as_deref(),
            Some(Path::new("/var/run/gke-spiffe/certs/ca_certificates.pem"))
        );
        let addr = "[::]:8080".parse().unwrap();
        assert_eq!(
            b.server_listener_name(&addr).unwrap(),
            "grpc/server?xds.resource.listening_address=[::]:8080"
        );
        let node = b.node_proto();
        let md = node.metadata.unwrap();
        let Some(Kind::StructValue(nested)) = &md.fields["nested"].kind else {
            panic!("nested metadata is a Struct")
        };
        let Some(Kind::ListValue(list)) = &nested.fields["a"].kind else {
            panic!()
        };
        assert_eq!(list.values[0].kind, Some(Kind::NumberValue(1.0)));
        assert_eq!(list.values[1].kind, Some(Kind::BoolValue(true)));
        assert_eq!(list.values[2].kind, Some(Kind::NullValue(0)));
        assert_eq!(node.locality.unwrap().zone, "us-central1-a");
    }

    #[test]
    fn istio_agent_bootstrap() {
        let b = Bootstrap::from_json(ISTIO).unwrap();
        assert_eq!(
            b.xds_servers[0].channel_credentials().unwrap(),
            ChannelCredentials::Insecure
        );
        assert_eq!(b.node.metadata["GENERATOR"], "grpc");
        let addr = "10.0.0.1:7070".parse().unwrap();
        assert_eq!(
            b.server_listener_name(&addr).unwrap(),
            "xds.istio.io/grpc/lds/inbound/10.0.0.1:7070"
        );
        // Round trip through our own JSON.
        assert_eq!(Bootstrap::from_json(&b.to_json()).unwrap(), b);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"xds_servers": "x"}"#,
                "invalid xDS bootstrap JSON at `xds_servers`: invalid type: string \"x\", expected a sequence at line 1 column 19",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "a", "channel_creds": [{"typ": "insecure"}]}]}"#,
                "invalid xDS bootstrap JSON at `xds_servers[0].channel_creds[0]`: missing field `type` at line 1 column 74",
            ),
            (
                r#"{"xds_servers": []}"#,
                "invalid xDS bootstrap: xds_servers must not be empty",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "", "channel_creds": [{"type": "insecure"}]}]}"#,
                "invalid xDS bootstrap: xds_servers[0].server_uri must not be empty",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "a", "channel_creds": [{"type": "google_default"}]}]}"#,
                "invalid xDS bootstrap: xds server \"a\": no supported channel_creds in [\"google_default\"] (supported: insecure, tls)",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "a", "channel_creds": [{"type": "insecure"}]}],
                    "certificate_providers": {"p": {"plugin_name": "file_watcher", "config": {"certificate_file": "c"}}}}"#,
                "invalid xDS bootstrap: certificate_providers.p: file_watcher: certificate_file and private_key_file must be set together",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "a", "channel_creds": [{"type": "insecure"}]}],
                    "certificate_providers": {"p": {"plugin_name": "file_watcher", "config": {"ca_certificate_file": 7}}}}"#,
                "invalid xDS bootstrap JSON at `certificate_providers.p.config.ca_certificate_file`: invalid type: integer `7`, expected path string",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "a", "channel_creds": [{"type": "insecure"}]}],
                    "certificate_providers": {"p": {"plugin_name": "file_watcher", "config": {"ca_certificate_file": "c", "refresh_interval": "10m"}}}}"#,
                "invalid xDS bootstrap: certificate_providers.p: refresh_interval \"10m\" is not a protobuf JSON duration like \"600s\"",
            ),
            (
                "{",
                "invalid xDS bootstrap JSON at `(document)`: EOF while parsing an object at line 1 column 1",
            ),
            (
                r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "insecure"}],
                    "call_creds": [{"type": "jwt_token_file", "config": {"jwt_token_file": "/t"}}]}]}"#,
                "invalid xDS bootstrap: xds_servers[0]: jwt_token_file call_creds with insecure channel_creds: gRFC A97 allows call credentials only on secure channels (use tls channel_creds)",
            ),
        ];
        for (json, want) in cases {
            let got = Bootstrap::from_json(json).unwrap_err().to_string();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn tls_is_the_default_and_insecure_must_be_asked_for() {
        let b =
            Bootstrap::from_json(r#"{"xds_servers": [{"server_uri": "istiod:15012"}]}"#).unwrap();
        assert_eq!(
            b.xds_servers[0].channel_credentials().unwrap(),
            ChannelCredentials::Tls {
                ca_certificate_file: None,
                certificate_file: None,
                private_key_file: None,
                server_name: None,
            }
        );
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "10.0.0.9:15012", "channel_creds": [{"type": "tls",
                 "config": {"server_name": "istiod.istio-system.svc"}}]}]}"#,
        )
        .unwrap();
        let ChannelCredentials::Tls { server_name, .. } =
            b.xds_servers[0].channel_credentials().unwrap()
        else {
            panic!("tls")
        };
        assert_eq!(server_name.as_deref(), Some("istiod.istio-system.svc"));
    }

    #[test]
    fn env_lookup_prefers_the_file_variable() {
        let dir = std::env::temp_dir().join(format!("mesh-xds-bootstrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bootstrap.json");
        std::fs::write(&file, ISTIO).unwrap();
        let path = file.to_string_lossy().into_owned();
        let both = |k: &str| match k {
            BOOTSTRAP_FILE_ENV => Some(path.clone()),
            BOOTSTRAP_CONFIG_ENV => Some(A27.to_string()),
            _ => None,
        };
        assert_eq!(
            Bootstrap::from_lookup(both).unwrap().xds_servers[0].server_uri,
            "unix:///etc/istio/proxy/XDS"
        );
        let inline = |k: &str| (k == BOOTSTRAP_CONFIG_ENV).then(|| A27.to_string());
        assert_eq!(
            Bootstrap::from_lookup(inline).unwrap().xds_servers[0].server_uri,
            "xds.example.com:443"
        );
        assert!(matches!(
            Bootstrap::from_lookup(|_| None),
            Err(BootstrapError::NotConfigured)
        ));
        let missing =
            |k: &str| (k == BOOTSTRAP_FILE_ENV).then(|| "/nonexistent/bootstrap.json".to_string());
        let err = Bootstrap::from_lookup(missing).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read the xDS bootstrap file /nonexistent/bootstrap.json:"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
