//! `Mesh::builder().bootstrap(..)` reaches the control plane over mTLS made from the
//! workload identity: the mesh root verifies the server (by DNS name, or by SPIFFE ID when
//! the bootstrap's `server_name` is one), the workload certificate authenticates the
//! caller. The server is our xDS server behind the CA port's mTLS acceptor (as istiod's
//! 15012), which also checks that the node is the caller's.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh::Mesh;
use mesh_control::ca::IstioCaServer;
use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;
use mesh_xds::bootstrap::{Bootstrap, CredsConfig, IstioNode};

struct Empty;
impl Generator<()> for Empty {
    fn node_key(&self, _: &Node) -> String {
        String::new()
    }
    fn generate(&self, _: &Node, _: &()) -> Result<Resources, GenerateError> {
        Ok(Resources::default())
    }
}

/// Whether a mesh built from `bootstrap` with `identity` gets its first answer from the
/// server (which the server gives only after its node identity check).
async fn connects(identity: IdentityStore, bootstrap: Bootstrap) -> bool {
    let mesh = Mesh::builder()
        .identity_store(identity)
        .bootstrap(bootstrap)
        .build()
        .unwrap();
    let xds = mesh.xds().unwrap().clone();
    xds.subscribe_target("xds:///svc.example:80").await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), xds.ready())
        .await
        .is_ok()
}

#[tokio::test]
async fn the_default_bootstrap_uses_mtls_from_the_workload_identity() {
    let ca = Arc::new(DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parts = IstioCaServer::new(ca.clone()).into_parts(listener).unwrap();
    let port = parts.local_addr.port();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(()));
    let xds = XdsServer::new(Empty, rx, ServerOptions::default());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(parts.service)
            .add_service(xds.service())
            .serve_with_incoming(parts.incoming),
    );
    let web = SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap();
    let identity = || {
        IdentityStore::from_credentials(ca.issue(&web, Duration::from_secs(3600)).unwrap()).unwrap()
    };
    let node = IstioNode {
        pod_name: "web-1".into(),
        service_account: "web".into(),
        ..Default::default()
    };
    let with_name = |address: &str, name: Option<&str>| {
        let mut b = Bootstrap::istio_proxyless(node.clone(), address);
        if let Some(name) = name {
            b.xds_servers[0].channel_creds = vec![CredsConfig {
                kind: "tls".into(),
                config: Some(serde_json::json!({ "server_name": name })),
            }];
        }
        b
    };

    // The default: TLS, the server's DNS name is the address's host.
    assert!(connects(identity(), with_name(&format!("localhost:{port}"), None)).await);
    assert_eq!(
        xds.status().clients.len(),
        1,
        "the node passed the identity check"
    );
    // The server verified by SPIFFE ID.
    let istiod = "spiffe://cluster.local/ns/istio-system/sa/istiod-service-account";
    let by_id = with_name(&format!("127.0.0.1:{port}"), Some(istiod));
    assert!(connects(identity(), by_id).await);
    // Another SPIFFE ID, or an identity from another CA: no connection.
    let wrong = with_name(
        &format!("127.0.0.1:{port}"),
        Some("spiffe://cluster.local/ns/istio-system/sa/other"),
    );
    assert!(!connects(identity(), wrong).await);
    let other = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let stranger =
        IdentityStore::from_credentials(other.issue(&web, Duration::from_secs(3600)).unwrap())
            .unwrap();
    assert!(!connects(stranger, with_name(&format!("localhost:{port}"), None)).await);
    drop(tx);
}
