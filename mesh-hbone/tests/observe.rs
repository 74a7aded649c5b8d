//! Per-tunnel hooks and the client's idle timeout, over real sockets: both sides' meters
//! count a tunnel's bytes and its close, the server reads the client's `baggage` and
//! `forwarded` headers, and an idle client connection is closed.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_hbone::{Baggage, HboneClient, HboneClientSettings, HboneTarget, TunnelInfo, TunnelMeter};
use mesh_tls::dev_ca::DevCa;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

struct Meter(Arc<Counts>);

impl TunnelMeter for Meter {
    fn received(&self, bytes: u64) {
        self.0.received.fetch_add(bytes, Ordering::Relaxed);
    }
    fn sent(&self, bytes: u64) {
        self.0.sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::Relaxed);
    }
}

fn meter(c: &Arc<Counts>) -> Box<dyn TunnelMeter> {
    c.opened.fetch_add(1, Ordering::Relaxed);
    Box::new(Meter(c.clone()))
}

fn snapshot(c: &Counts) -> [u64; 4] {
    [&c.opened, &c.closed, &c.sent, &c.received].map(|a| a.load(Ordering::Relaxed))
}

fn target(hbone: SocketAddr) -> HboneTarget {
    HboneTarget::new(SocketAddr::new(hbone.ip(), TCP_PORT), id("reviews")).via(hbone)
}

#[tokio::test]
async fn both_sides_meter_each_tunnel_and_the_server_reads_its_source_headers() {
    let ca = DevCa::new(td()).unwrap();
    let (server_counts, client_counts) = (Arc::<Counts>::default(), Arc::<Counts>::default());
    let seen = Arc::new(Mutex::new(None::<TunnelInfo>));
    let (c, s) = (server_counts.clone(), seen.clone());
    let server = builder(store(&ca, "reviews"))
        .observe(move |info: &TunnelInfo| {
            *s.lock().unwrap() = Some(info.clone());
            meter(&c)
        })
        .build();
    let hbone = spawn(server).await;
    let settings = HboneClientSettings {
        baggage: Some(Baggage {
            namespace: Some("default".into()),
            workload: Some("productpage-v1".into()),
            service: Some("productpage".into()),
            version: Some("v1".into()),
            cluster: Some("Kubernetes".into()),
        }),
        ..Default::default()
    };
    let c = client_counts.clone();
    let client = HboneClient::with_settings(store(&ca, "productpage"), settings)
        .observe(move |_: &HboneTarget| meter(&c));

    let target = target(hbone).service("reviews.default.svc.cluster.local");
    let mut stream = client.connect(&target).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    drop(stream);

    eventually("both tunnels closed", || {
        snapshot(&server_counts)[1] == 1 && snapshot(&client_counts)[1] == 1
    })
    .await;
    assert_eq!(snapshot(&client_counts), [1, 1, 5, 5]);
    assert_eq!(snapshot(&server_counts), [1, 1, 5, 5]);
    let info = seen.lock().unwrap().clone().unwrap();
    assert_eq!(info.baggage.workload.as_deref(), Some("productpage-v1"));
    assert_eq!(info.baggage.service.as_deref(), Some("productpage"));
    assert_eq!(info.baggage.version.as_deref(), Some("v1"));
    assert_eq!(info.baggage.namespace.as_deref(), Some("default"));
    assert_eq!(info.baggage.cluster.as_deref(), Some("Kubernetes"));
    assert_eq!(
        info.service_host.as_deref(),
        Some("reviews.default.svc.cluster.local")
    );
}

#[tokio::test]
async fn an_idle_client_connection_is_closed() {
    let ca = DevCa::new(td()).unwrap();
    let hbone = spawn(builder(store(&ca, "reviews")).build()).await;
    // A TCP relay in front of the server, counting the connections that end.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let ended = Arc::new(AtomicU64::new(0));
    let e = ended.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = relay.accept().await {
            let e = e.clone();
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(hbone).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                e.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    let settings = HboneClientSettings {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let client = HboneClient::with_settings(store(&ca, "productpage"), settings);
    let target =
        HboneTarget::new(SocketAddr::new(hbone.ip(), TCP_PORT), id("reviews")).via(relay_addr);

    let mut stream = client.connect(&target).await.unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).await.unwrap();
    // Busy past the idle time: a connection carrying a tunnel stays open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ended.load(Ordering::Relaxed), 0, "closed while in use");
    stream.write_all(b"y").await.unwrap();
    stream.read_exact(&mut buf).await.unwrap();
    drop(stream);

    eventually("the idle connection closed", || {
        ended.load(Ordering::Relaxed) == 1
    })
    .await;
    // The next tunnel dials a new connection.
    let _stream = client.connect(&target).await.unwrap();
    assert_eq!(client.connections_dialled(), 2);
}
