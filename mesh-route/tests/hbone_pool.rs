//! Endpoints the control plane marks HBONE (`TlsMode::Hbone`, from istiod's `tunnel: http`
//! metadata) are reached through an HBONE tunnel: `CONNECT <ip>:<port>` over mTLS to the
//! endpoint's IP port 15008, served here by a real mesh-hbone server. The same endpoint
//! unmarked is dialled directly.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use mesh_core::extensions::{ConnectionAddrs, PeerIdentity};
use mesh_core::model::{
    Cluster, ClusterLoadAssignment, CommonLbConfig, Discovery, EndpointAddress,
    HttpProtocolOptions, LbPolicy, TlsMode, UpstreamProtocol, UpstreamTls,
};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_hbone::{HBONE_PORT, HboneServer, Refusal};
use mesh_route::pool::{PoolConfig, UpstreamPool};
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::verify::PeerPolicy;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&TrustDomain::new("cluster.local").unwrap(), "default", sa).unwrap()
}

fn store(ca: &DevCa, sa: &str) -> IdentityStore {
    IdentityStore::from_credentials(ca.issue(&id(sa), Duration::from_secs(3600)).unwrap()).unwrap()
}

fn mtls_cluster() -> Cluster {
    Cluster {
        name: "reviews".into(),
        discovery: Discovery::Static(Arc::new(ClusterLoadAssignment::default())),
        lb_policy: LbPolicy::RoundRobin,
        common_lb: CommonLbConfig::default(),
        connect_timeout: Duration::from_secs(5),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        // mTLS: an identity instance means the workload certificate is presented.
        tls: Some(UpstreamTls {
            identity_certificate: Some(Default::default()),
            ..Default::default()
        }),
        http_protocol: HttpProtocolOptions {
            protocol: UpstreamProtocol::Auto,
            ..Default::default()
        },
    }
}

fn get() -> http::Request<mesh_route::pool::RequestBody> {
    http::Request::get("http://reviews.default.svc.cluster.local:9080/")
        .body(Empty::<Bytes>::new().map_err(Into::into).boxed_unsync())
        .unwrap()
}

#[tokio::test]
async fn hbone_endpoints_are_reached_through_the_tunnel() {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    // The workload's own loopback IP, so its :15008 is free whatever else runs here.
    let ip: IpAddr = [127, 0, 18, 7].into();
    let app = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        let peer = req
            .extensions()
            .get::<PeerIdentity>()
            .map(|p| p.to_string());
        let local = req.extensions().get::<ConnectionAddrs>().map(|a| a.local);
        let body = format!("{} {}", peer.unwrap_or_default(), local.unwrap());
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
    });
    let server = HboneServer::builder(store(&ca, "reviews"))
        .http(9080, app)
        .build();
    let metrics = server.metrics().clone();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, HBONE_PORT))
        .await
        .unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));

    let pool = UpstreamPool::with_config(
        &mtls_cluster(),
        &store(&ca, "productpage"),
        PeerPolicy::identities([id("reviews")]),
        PoolConfig::default(),
    );
    let endpoint = SocketAddr::new(ip, 9080);
    let key: Arc<str> = endpoint.to_string().into();
    let address = EndpointAddress::Socket(endpoint);

    let resp = pool
        .send_with(&key, &address, TlsMode::Hbone, get())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body, "spiffe://cluster.local/ns/default/sa/productpage 127.0.18.7:9080",
        "the server saw our identity and a CONNECT to the endpoint's ip:port"
    );
    assert_eq!(metrics.tunnels(), 1);

    // Unmarked, the same endpoint is dialled directly: nothing listens on :9080.
    let direct = pool.send_with(&key, &address, TlsMode::Istio, get()).await;
    assert!(direct.is_err(), "{direct:?}");
    assert_eq!(metrics.tunnels(), 1);
}

#[tokio::test]
async fn the_tunnel_verifies_the_cluster_identity() {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let ip: IpAddr = [127, 0, 18, 8].into();
    let app = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async move {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("wrong"))))
    });
    // The server is ratings, the cluster expects reviews.
    let server = HboneServer::builder(store(&ca, "ratings"))
        .http(9080, app)
        .build();
    let metrics = server.metrics().clone();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, HBONE_PORT))
        .await
        .unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    let pool = UpstreamPool::with_config(
        &mtls_cluster(),
        &store(&ca, "productpage"),
        PeerPolicy::identities([id("reviews")]),
        PoolConfig::default(),
    );
    let endpoint = SocketAddr::new(ip, 9080);
    let key: Arc<str> = endpoint.to_string().into();
    let sent = pool
        .send_with(
            &key,
            &EndpointAddress::Socket(endpoint),
            TlsMode::Hbone,
            get(),
        )
        .await;
    assert!(sent.is_err(), "a server with another identity was accepted");
    // The refusal happened in the tunnel's handshake (not by dialling :9080 directly).
    for _ in 0..100 {
        if metrics.refused(Refusal::tls_handshake) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.refused(Refusal::tls_handshake), 1);
    assert_eq!(metrics.tunnels(), 0);
}
