//! The bootstrap Istio's agent writes for a proxyless workload, built in code.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use envoy_types::pb::envoy::config::core::v3 as core;

use super::certs::{CertificateProviderConfig, FileWatcherConfig};
use super::{Bootstrap, CredsConfig, LocalityConfig, NodeConfig, XdsServer};

/// Istio's server listener name prefix; the template appends `%s` (the `ip:port`).
pub const ISTIO_SERVER_LISTENER_PREFIX: &str = "xds.istio.io/grpc/lds/inbound/";

impl Bootstrap {
    /// A bootstrap for an Istio proxyless workload talking to `discovery_address` (for example
    /// `istiod.istio-system.svc:15012`, or a local agent's `unix:///etc/istio/proxy/XDS`),
    /// with the node as Istio's agent writes it (pkg/istio-agent/grpcxds/grpc_bootstrap.go).
    ///
    /// The channel is TLS (istiod's 15012), verified against the mesh root (`root-cert.pem`
    /// of [`IstioNode::cert_dir`], else the workload identity's trust bundle) and the name
    /// [`IstioNode::xds_server_name`] (default: the address's host), presenting the workload
    /// certificate. Plaintext (`insecure`) only for a Unix socket or an explicit `http://`
    /// URI to a loopback address; an `http://` URI to any other host keeps TLS, which then
    /// fails to build (opt in by setting `channel_creds` to `insecure` yourself).
    ///
    /// ```
    /// use mesh_xds::bootstrap::{Bootstrap, IstioNode};
    ///
    /// let b = Bootstrap::istio_proxyless(
    ///     IstioNode {
    ///         ip: "10.0.0.1".parse().unwrap(),
    ///         pod_name: "echo-5d9f".into(),
    ///         namespace: "default".into(),
    ///         service_account: "echo".into(),
    ///         ..Default::default()
    ///     },
    ///     "istiod.istio-system.svc:15012",
    /// );
    /// assert_eq!(b.node.id, "sidecar~10.0.0.1~echo-5d9f.default~default.svc.cluster.local");
    /// assert_eq!(b.node.metadata["GENERATOR"], "grpc");
    /// assert_eq!(b.xds_servers[0].channel_creds[0].kind, "tls");
    /// ```
    pub fn istio_proxyless(node: IstioNode, discovery_address: &str) -> Bootstrap {
        let dns_domain = format!("{}.svc.{}", node.namespace, node.cluster_domain());
        let id = format!(
            "sidecar~{}~{}.{}~{dns_domain}",
            node.ip, node.pod_name, node.namespace
        );
        let mut md = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            md.insert(k.to_owned(), v);
        };
        put("GENERATOR", "grpc".into());
        put("NAMESPACE", node.namespace.clone().into());
        put("INSTANCE_IPS", node.ip.to_string().into());
        put("NAME", node.pod_name.clone().into());
        put("SERVICE_ACCOUNT", node.service_account.clone().into());
        put("CLUSTER_ID", node.cluster_id().into());
        put("ISTIO_VERSION", node.istio_version.clone().into());
        put(
            "LABELS",
            serde_json::Value::Object(
                node.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
        );
        if let Some(mesh) = &node.mesh_id {
            put("MESH_ID", mesh.clone().into());
        }
        if let Some(w) = &node.workload_name {
            put("WORKLOAD_NAME", w.clone().into());
        }
        let mut certificate_providers = BTreeMap::new();
        if let Some(dir) = &node.cert_dir {
            let cfg = FileWatcherConfig {
                certificate_file: Some(dir.join("cert-chain.pem")),
                private_key_file: Some(dir.join("key.pem")),
                ca_certificate_file: Some(dir.join("root-cert.pem")),
                refresh_interval: Some("900s".into()),
            };
            certificate_providers.insert(
                "default".to_owned(),
                CertificateProviderConfig {
                    plugin_name: "file_watcher".into(),
                    config: serde_json::to_value(cfg).unwrap_or_default(),
                },
            );
        }
        let call_creds = node
            .token_file
            .iter()
            .map(|p| CredsConfig {
                kind: "jwt_token_file".into(),
                config: Some(serde_json::json!({ "jwt_token_file": p })),
            })
            .collect();
        let channel_creds = if local_plaintext(discovery_address) {
            CredsConfig {
                kind: "insecure".into(),
                config: None,
            }
        } else {
            let mut config = serde_json::Map::new();
            if let Some(dir) = &node.cert_dir {
                let mut file = |k: &str, f: &str| {
                    config.insert(k.into(), dir.join(f).to_string_lossy().into_owned().into());
                };
                file("ca_certificate_file", "root-cert.pem");
                file("certificate_file", "cert-chain.pem");
                file("private_key_file", "key.pem");
            }
            if let Some(name) = &node.xds_server_name {
                config.insert("server_name".into(), name.clone().into());
            }
            CredsConfig {
                kind: "tls".into(),
                config: (!config.is_empty()).then_some(serde_json::Value::Object(config)),
            }
        };
        Bootstrap {
            xds_servers: vec![XdsServer {
                server_uri: discovery_address.to_owned(),
                channel_creds: vec![channel_creds],
                call_creds,
                server_features: vec!["xds_v3".into()],
            }],
            node: NodeConfig {
                id,
                cluster: String::new(),
                metadata: md,
                locality: node.locality.clone(),
            },
            certificate_providers,
            server_listener_resource_name_template: Some(format!(
                "{ISTIO_SERVER_LISTENER_PREFIX}%s"
            )),
            client_default_listener_resource_name_template: None,
            authorities: BTreeMap::new(),
        }
    }
}

/// Whether `address` may be plaintext without asking: a Unix socket (a local agent, as
/// Istio's), or an `http://` URI to a loopback address.
fn local_plaintext(address: &str) -> bool {
    if address.starts_with("unix:") {
        return true;
    }
    address.starts_with("http://")
        && address
            .parse::<http::Uri>()
            .is_ok_and(|u| crate::client::channel::is_loopback(&u))
}

/// What Istio needs to know about a proxyless workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IstioNode {
    /// The pod IP.
    pub ip: IpAddr,
    /// The pod name.
    pub pod_name: String,
    /// The namespace.
    pub namespace: String,
    /// The Kubernetes service account.
    pub service_account: String,
    /// Istio's cluster id (default `Kubernetes`).
    pub cluster_id: Option<String>,
    /// Pod labels (`app`, `version`, ...).
    pub labels: BTreeMap<String, String>,
    /// SPIFFE trust domain (default `cluster.local`).
    pub trust_domain: Option<String>,
    /// Kubernetes cluster DNS domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// Reported `ISTIO_VERSION`.
    pub istio_version: String,
    /// `MESH_ID`.
    pub mesh_id: Option<String>,
    /// `WORKLOAD_NAME` (the deployment).
    pub workload_name: Option<String>,
    /// Node locality.
    pub locality: Option<LocalityConfig>,
    /// Directory with `cert-chain.pem`, `key.pem`, `root-cert.pem`: adds the `default`
    /// file_watcher certificate provider that Istio's TLS contexts reference.
    pub cert_dir: Option<PathBuf>,
    /// Bearer token file for the control plane (e.g. the projected `istio-token`); sent
    /// only over TLS.
    pub token_file: Option<PathBuf>,
    /// The name istiod's certificate must carry, e.g. `istiod.istio-system.svc` (what
    /// istiod's serving certificate has) when the address is an IP; default: the host of
    /// the discovery address (as Istio's agent, whose `ISTIOD_SAN` overrides it).
    pub xds_server_name: Option<String>,
}

impl Default for IstioNode {
    fn default() -> Self {
        Self {
            ip: IpAddr::from([127, 0, 0, 1]),
            pod_name: String::new(),
            namespace: "default".into(),
            service_account: "default".into(),
            cluster_id: None,
            labels: BTreeMap::new(),
            trust_domain: None,
            cluster_domain: None,
            istio_version: env!("CARGO_PKG_VERSION").into(),
            mesh_id: None,
            workload_name: None,
            locality: None,
            cert_dir: None,
            token_file: None,
            xds_server_name: None,
        }
    }
}

impl IstioNode {
    fn cluster_domain(&self) -> &str {
        self.cluster_domain.as_deref().unwrap_or("cluster.local")
    }
    fn cluster_id(&self) -> String {
        self.cluster_id
            .clone()
            .unwrap_or_else(|| "Kubernetes".into())
    }
    /// The node this workload presents to a control plane: the `node` of
    /// [`Bootstrap::istio_proxyless`] as the protobuf an xDS client sends (and an in-process
    /// config source generates for).
    ///
    /// ```
    /// use mesh_xds::bootstrap::IstioNode;
    ///
    /// let node = IstioNode { pod_name: "echo-5d9f".into(), ..Default::default() }.node_proto();
    /// assert_eq!(node.id, "sidecar~127.0.0.1~echo-5d9f.default~default.svc.cluster.local");
    /// ```
    pub fn node_proto(&self) -> core::Node {
        Bootstrap::istio_proxyless(self.clone(), "").node_proto()
    }

    /// The workload's SPIFFE ID, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn spiffe_id(&self) -> Result<mesh_core::SpiffeId, mesh_core::IdentityError> {
        let td = self.trust_domain.as_deref().unwrap_or("cluster.local");
        format!(
            "spiffe://{td}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
        .parse()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::google::protobuf::value::Kind;

    use super::*;
    use crate::bootstrap::ChannelCredentials;

    #[test]
    fn istio_proxyless_builder() {
        let node = IstioNode {
            ip: "10.1.2.3".parse().unwrap(),
            pod_name: "reviews-v1-abc".into(),
            namespace: "bookinfo".into(),
            service_account: "reviews".into(),
            cluster_id: Some("c1".into()),
            labels: [
                ("app".to_string(), "reviews".to_string()),
                ("version".to_string(), "v1".to_string()),
            ]
            .into(),
            trust_domain: Some("example.org".into()),
            istio_version: "1.28.0".into(),
            mesh_id: Some("mesh1".into()),
            cert_dir: Some("/var/lib/istio/data".into()),
            token_file: Some("/var/run/secrets/tokens/istio-token".into()),
            locality: Some(LocalityConfig {
                region: "r".into(),
                zone: "z".into(),
                sub_zone: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(
            node.spiffe_id().unwrap().to_string(),
            "spiffe://example.org/ns/bookinfo/sa/reviews"
        );
        let b = Bootstrap::istio_proxyless(node, "istiod.istio-system.svc:15012");
        b.validate().unwrap();
        assert_eq!(
            b.node.id,
            "sidecar~10.1.2.3~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local"
        );
        let md = &b.node.metadata;
        assert_eq!(md["GENERATOR"], "grpc");
        assert_eq!(md["NAMESPACE"], "bookinfo");
        assert_eq!(md["INSTANCE_IPS"], "10.1.2.3");
        assert_eq!(md["SERVICE_ACCOUNT"], "reviews");
        assert_eq!(md["CLUSTER_ID"], "c1");
        assert_eq!(md["ISTIO_VERSION"], "1.28.0");
        assert_eq!(md["MESH_ID"], "mesh1");
        assert_eq!(md["LABELS"]["version"], "v1");
        let s = &b.xds_servers[0];
        assert_eq!(s.server_uri, "istiod.istio-system.svc:15012");
        // TLS, verified with the mesh root, presenting the workload certificate.
        assert_eq!(
            s.channel_credentials().unwrap(),
            ChannelCredentials::Tls {
                ca_certificate_file: Some("/var/lib/istio/data/root-cert.pem".into()),
                certificate_file: Some("/var/lib/istio/data/cert-chain.pem".into()),
                private_key_file: Some("/var/lib/istio/data/key.pem".into()),
                server_name: None,
            }
        );
        assert_eq!(
            b.token_file(),
            Some(PathBuf::from("/var/run/secrets/tokens/istio-token"))
        );
        let cfg = b.xds_client_config();
        assert_eq!(cfg.node.id, b.node.id);
        assert_eq!(cfg.token_file, b.token_file());
        let fw = b.certificate_providers["default"].file_watcher().unwrap();
        assert_eq!(
            fw.certificate_file,
            Some("/var/lib/istio/data/cert-chain.pem".into())
        );
        assert_eq!(fw.refresh().unwrap(), Duration::from_secs(900));
        assert_eq!(
            b.server_listener_resource_name_template.as_deref(),
            Some("xds.istio.io/grpc/lds/inbound/%s")
        );
        // What the agent writes, we read back unchanged.
        assert_eq!(Bootstrap::from_json(&b.to_json()).unwrap(), b);
        let proto = b.node_proto();
        let Some(Kind::StructValue(labels)) = &proto.metadata.unwrap().fields["LABELS"].kind else {
            panic!()
        };
        assert_eq!(
            labels.fields["app"].kind,
            Some(Kind::StringValue("reviews".into()))
        );
    }

    #[test]
    fn plaintext_only_to_a_local_agent_or_loopback() {
        let creds = |addr: &str| {
            Bootstrap::istio_proxyless(IstioNode::default(), addr).xds_servers[0]
                .channel_credentials()
                .unwrap()
        };
        assert_eq!(
            creds("unix:///etc/istio/proxy/XDS"),
            ChannelCredentials::Insecure
        );
        assert_eq!(
            creds("http://127.0.0.1:15010"),
            ChannelCredentials::Insecure
        );
        assert_eq!(
            creds("http://localhost:15010"),
            ChannelCredentials::Insecure
        );
        for addr in [
            "istiod.istio-system.svc:15012",
            "https://127.0.0.1:15012",
            "http://istiod.istio-system.svc:15010",
            "http://10.0.0.1:15010",
        ] {
            assert!(
                matches!(creds(addr), ChannelCredentials::Tls { .. }),
                "{addr}"
            );
        }
        let named = Bootstrap::istio_proxyless(
            IstioNode {
                xds_server_name: Some("istiod.istio-system.svc".into()),
                ..Default::default()
            },
            "10.0.0.1:15012",
        );
        let ChannelCredentials::Tls { server_name, .. } =
            named.xds_servers[0].channel_credentials().unwrap()
        else {
            panic!("tls")
        };
        assert_eq!(server_name.as_deref(), Some("istiod.istio-system.svc"));
    }
}
