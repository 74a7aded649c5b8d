//! Who this proxy is: the xDS bootstrap (from a file or built from node flags) and the
//! workload labels it reports in metrics.

use std::net::{IpAddr, SocketAddr};

use mesh_core::SpiffeId;
use mesh_telemetry::metrics::{ServiceInfo, UNKNOWN, WorkloadInfo};
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use serde_json::Value;

use crate::options::ProxyOptions;

/// The bootstrap for `opts`: its file, else one built from the node flags for `--xds` (or,
/// for `--mesh-config`, one that only describes the node: nothing connects to a server),
/// else `env` (what `main` found in `GRPC_XDS_BOOTSTRAP`).
pub(crate) fn bootstrap(opts: &ProxyOptions, env: Option<Bootstrap>) -> Result<Bootstrap, String> {
    if let Some(path) = &opts.bootstrap {
        return Bootstrap::from_file(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    if !opts.node.xds.is_empty() || opts.mesh_config.is_some() {
        let n = &opts.node;
        let node = IstioNode {
            ip: instance_ip(opts, None),
            pod_name: n.name.clone(),
            namespace: n.namespace.clone(),
            service_account: n.service_account.clone(),
            cluster_id: n.cluster_id.clone(),
            labels: n.labels.clone(),
            workload_name: Some(workload_name(&n.name, &n.labels)),
            xds_server_name: n.xds_server_name.clone(),
            ..Default::default()
        };
        let mut b = Bootstrap::istio_proxyless(node, &n.xds);
        if n.xds_insecure && n.xds.starts_with("http://") {
            // --xds-insecure: the explicit opt-in to plaintext (validated in options).
            b.xds_servers[0].channel_creds = vec![mesh_xds::bootstrap::CredsConfig {
                kind: "insecure".into(),
                config: None,
            }];
        }
        return Ok(b);
    }
    env.ok_or_else(|| {
        "no xDS configuration: give --bootstrap FILE, --xds URI with the node flags, \
         --mesh-config DIR with the node flags, or set GRPC_XDS_BOOTSTRAP"
            .to_string()
    })
}

/// The deployment-like name: `app-version` when labelled, else the pod name.
fn workload_name(pod: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    match (labels.get("app"), labels.get("version")) {
        (Some(a), Some(v)) => format!("{a}-{v}"),
        (Some(a), None) => a.clone(),
        _ => pod.to_owned(),
    }
}

/// The IP the mesh knows this instance by: `--ip`, the bootstrap's `INSTANCE_IPS`, the
/// inbound address when it is specific, else loopback.
pub(crate) fn instance_ip(opts: &ProxyOptions, bootstrap: Option<&Bootstrap>) -> IpAddr {
    if let Some(ip) = opts.node.ip {
        return ip;
    }
    let from_meta = bootstrap
        .and_then(|b| meta_str(b, "INSTANCE_IPS"))
        .and_then(|ips| ips.split(',').next().and_then(|ip| ip.trim().parse().ok()));
    if let Some(ip) = from_meta {
        return ip;
    }
    match opts.inbound {
        Some(a) if !a.ip().is_unspecified() => a.ip(),
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

/// The name of the xDS server listener describing our inbound port.
pub(crate) fn inbound_listener_name(b: &Bootstrap, ip: IpAddr, port: u16) -> String {
    let addr = SocketAddr::new(ip, port);
    b.server_listener_name(&addr)
        .unwrap_or_else(|| format!("xds.istio.io/grpc/lds/inbound/{addr}"))
}

fn meta_str<'a>(b: &'a Bootstrap, key: &str) -> Option<&'a str> {
    b.node.metadata.get(key).and_then(Value::as_str)
}

fn label<'a>(b: &'a Bootstrap, key: &str) -> Option<&'a str> {
    b.node
        .metadata
        .get("LABELS")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The SPIFFE ID the node metadata implies (`NAMESPACE`, `SERVICE_ACCOUNT`), for asking a
/// CA; trust domain `cluster.local` unless `TRUST_DOMAIN` says otherwise.
pub(crate) fn spiffe_id(b: &Bootstrap) -> Result<SpiffeId, String> {
    let ns = meta_str(b, "NAMESPACE").ok_or("the bootstrap node has no NAMESPACE metadata")?;
    let sa = meta_str(b, "SERVICE_ACCOUNT")
        .ok_or("the bootstrap node has no SERVICE_ACCOUNT metadata")?;
    let td = meta_str(b, "TRUST_DOMAIN").unwrap_or("cluster.local");
    format!("spiffe://{td}/ns/{ns}/sa/{sa}")
        .parse()
        .map_err(|e| format!("identity from the node metadata: {e}"))
}

/// This workload's metric labels; `principal` is our SPIFFE ID.
pub(crate) fn workload_info(b: &Bootstrap, principal: &SpiffeId) -> WorkloadInfo {
    let s = |v: Option<&str>| v.unwrap_or(UNKNOWN).to_owned();
    let app = label(b, "app");
    let version = label(b, "version");
    WorkloadInfo {
        workload: s(meta_str(b, "WORKLOAD_NAME")),
        namespace: s(meta_str(b, "NAMESPACE").or(principal.istio_namespace())),
        principal: principal.as_str().to_owned(),
        app: s(app),
        version: s(version),
        canonical_service: s(label(b, "service.istio.io/canonical-name").or(app)),
        canonical_revision: label(b, "service.istio.io/canonical-revision")
            .or(version)
            .unwrap_or("latest")
            .to_owned(),
        cluster: s(meta_str(b, "CLUSTER_ID")),
    }
}

/// The service our inbound port serves, as Istio names it: `<app>.<namespace>.svc.<domain>`.
pub(crate) fn local_service(w: &WorkloadInfo) -> ServiceInfo {
    if w.canonical_service == UNKNOWN || w.namespace == UNKNOWN {
        return ServiceInfo::default();
    }
    ServiceInfo::from_host(&format!(
        "{}.{}.svc.cluster.local",
        w.canonical_service, w.namespace
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ProxyOptions {
        let mut o = ProxyOptions::default();
        o.node.xds = "http://127.0.0.1:15010".into();
        o.node.name = "api-v2-0".into();
        o.node.namespace = "shop".into();
        o.node.service_account = "api".into();
        o.node.labels.insert("app".into(), "api".into());
        o.node.labels.insert("version".into(), "v2".into());
        o.inbound = Some("127.0.0.1:7000".parse().unwrap());
        o
    }

    #[test]
    fn node_flags_give_istio_labels_and_identity() {
        let o = opts();
        let b = bootstrap(&o, None).unwrap();
        let id = spiffe_id(&b).unwrap();
        assert_eq!(id.as_str(), "spiffe://cluster.local/ns/shop/sa/api");
        let w = workload_info(&b, &id);
        assert_eq!(
            (w.workload.as_str(), w.app.as_str(), w.version.as_str()),
            ("api-v2", "api", "v2")
        );
        assert_eq!(w.canonical_revision, "v2");
        assert_eq!(local_service(&w).host, "api.shop.svc.cluster.local");
        let ip = instance_ip(&o, Some(&b));
        assert_eq!(
            inbound_listener_name(&b, ip, 7000),
            "xds.istio.io/grpc/lds/inbound/127.0.0.1:7000"
        );
    }

    #[test]
    fn a_bootstrap_file_names_the_node_and_its_inbound_listener() {
        let mut w = opts();
        w.node.ip = Some("10.1.2.3".parse().unwrap());
        let written = bootstrap(&w, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.json");
        std::fs::write(&path, written.to_json()).unwrap();
        let mut o = ProxyOptions {
            bootstrap: Some(path),
            inbound: Some("0.0.0.0:7000".parse().unwrap()),
            ..Default::default()
        };
        let b = bootstrap(&o, None).unwrap();
        assert_eq!(b.node.id, written.node.id);
        assert_eq!(
            spiffe_id(&b).unwrap().as_str(),
            "spiffe://cluster.local/ns/shop/sa/api"
        );
        // The instance IP comes from INSTANCE_IPS when the inbound address is a wildcard.
        assert_eq!(instance_ip(&o, Some(&b)).to_string(), "10.1.2.3");
        o.bootstrap = Some(dir.path().join("missing.json"));
        let err = bootstrap(&o, None).unwrap_err();
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn static_mode_describes_the_node_without_a_server() {
        let mut o = opts();
        o.node.xds = String::new();
        o.mesh_config = Some("mesh".into());
        let b = bootstrap(&o, None).unwrap();
        assert_eq!(
            b.node.id,
            "sidecar~127.0.0.1~api-v2-0.shop~shop.svc.cluster.local"
        );
        assert_eq!(meta_str(&b, "GENERATOR"), Some("grpc"));
        assert_eq!(b.xds_servers[0].server_uri, "", "nothing to connect to");
    }

    #[test]
    fn without_xds_config_the_error_says_what_to_give() {
        let err = bootstrap(&ProxyOptions::default(), None).unwrap_err();
        assert!(err.contains("--bootstrap"), "{err}");
    }
}
