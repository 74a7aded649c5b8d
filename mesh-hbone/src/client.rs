//! The HBONE client: `CONNECT` streams over pooled mTLS HTTP/2 connections.
//!
//! Connections are pooled per (source identity, destination identity, HBONE address), as
//! ztunnel pools them; a connection carries at most
//! [`HboneClientSettings::max_streams_per_connection`] tunnels at once (100, ztunnel's
//! limit), then another connection is dialled. Dialling is serialized per key, so a burst
//! of N tunnels opens N/100 connections, not N. The server must present exactly the
//! destination's SPIFFE identity.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use mesh_core::SpiffeId;
use mesh_tls::verify::{VerifyStats, handshake_error};
use mesh_tls::{IdentityStore, TlsError, handshake};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::observe::{Baggage, Observer, TunnelIo, TunnelObserver};
use crate::server::HBONE_PORT;
use crate::stream::{H2Stream, keepalive};
use crate::tls::ClientTls;

/// Where a tunnel goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HboneTarget {
    /// The address the mTLS connection is made to (the destination's IP, port 15008).
    pub hbone_addr: SocketAddr,
    /// The `CONNECT` authority: the destination's `<ip>:<port>`.
    pub authority: SocketAddr,
    /// The SPIFFE identity the server must present.
    pub identity: SpiffeId,
    /// The service the caller means, sent as `forwarded: host=..` (as ztunnel sends it) for
    /// the server's `destination_service` label.
    pub service: Option<String>,
}

impl HboneTarget {
    /// A tunnel to `destination` through its own HBONE port (`<ip>:15008`), as Istio
    /// reaches a workload labelled `networking.istio.io/tunnel: http`.
    pub fn new(destination: SocketAddr, identity: SpiffeId) -> Self {
        Self {
            hbone_addr: SocketAddr::new(destination.ip(), HBONE_PORT),
            authority: destination,
            identity,
            service: None,
        }
    }

    /// Names the service the tunnel is for (`forwarded: host=<service>`).
    pub fn service(mut self, host: impl Into<String>) -> Self {
        self.service = Some(host.into());
        self
    }

    /// Sends the tunnel through `hbone_addr` instead (another port, a node proxy).
    pub fn via(mut self, hbone_addr: SocketAddr) -> Self {
        self.hbone_addr = hbone_addr;
        self
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    /// No credentials, a failed handshake, or the server's identity was not the expected one.
    #[error("HBONE TLS to {addr}: {source}")]
    Tls {
        /// The HBONE address.
        addr: SocketAddr,
        /// The cause.
        source: TlsError,
    },
    /// TCP connect failed.
    #[error("HBONE connect to {addr}: {source}")]
    Connect {
        /// The HBONE address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// The connection was not ready within the connect timeout.
    #[error("HBONE connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The server did not negotiate `h2`.
    #[error("HBONE server {0} did not negotiate h2")]
    NoH2(SocketAddr),
    /// HTTP/2 failed (connection lost, stream reset).
    #[error("HBONE HTTP/2: {0}")]
    Http(#[from] h2::Error),
    /// The server answered the `CONNECT` with a status other than 200.
    #[error("HBONE CONNECT {authority} refused: {status}")]
    Refused {
        /// The tunnel's authority.
        authority: SocketAddr,
        /// The server's answer (400, 401, 503, ...).
        status: StatusCode,
    },
    /// A URI the connector cannot tunnel to (the host must be an IP address).
    #[error("HBONE: {0}")]
    BadUri(String),
}

/// Client settings; the defaults are ztunnel's.
#[derive(Clone, Debug)]
pub struct HboneClientSettings {
    /// Tunnels carried at once by one connection (default 100).
    pub max_streams_per_connection: usize,
    /// TCP connect plus TLS handshake plus HTTP/2 handshake (default 10 s).
    pub connect_timeout: Duration,
    /// HTTP/2 stream window (default 4 MiB).
    pub stream_window: u32,
    /// HTTP/2 connection window (default 16 MiB).
    pub connection_window: u32,
    /// HTTP/2 max frame size (default 1 MiB).
    pub max_frame_size: u32,
    /// A connection that carried no tunnel for this long is closed (default 5 minutes,
    /// ztunnel's pool idle timeout).
    pub idle_timeout: Duration,
    /// Sent as the `baggage` header of every `CONNECT` (ztunnel's source description, which
    /// the server turns into source labels); `None` sends none.
    pub baggage: Option<Baggage>,
}

impl Default for HboneClientSettings {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 100,
            connect_timeout: Duration::from_secs(10),
            stream_window: 4 << 20,
            connection_window: 16 << 20,
            max_frame_size: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            baggage: None,
        }
    }
}

/// ztunnel's client keepalive: a PING every 30 s, idle or not, answered within 20 s.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    source: SpiffeId,
    destination: SpiffeId,
    addr: SocketAddr,
}

#[derive(Clone)]
struct Pooled {
    send: SendRequest<Bytes>,
    use_: Arc<Use>,
}

/// How busy one pooled connection is: open tunnels, and when the last one ended.
struct Use {
    id: u64,
    streams: AtomicUsize,
    idle_since: Mutex<Instant>,
    /// Set when the connection has ended: it takes no more tunnels.
    closed: Arc<AtomicBool>,
}

type Slots = Arc<tokio::sync::Mutex<Vec<Pooled>>>;

struct ClientInner {
    tls: ClientTls,
    settings: HboneClientSettings,
    pools: Mutex<HashMap<PoolKey, Slots>>,
    dialled: AtomicU64,
    observer: Observer<HboneTarget>,
}

/// Opens HBONE tunnels; see the crate docs. Cheap to clone; clones share the pool.
///
/// As a tower `Service<HboneTarget>` it yields an [`HboneStream`]; [`HboneClient::connector`]
/// gives a `Service<Uri>` for hyper-util's client and tonic.
#[derive(Clone)]
pub struct HboneClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for HboneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneClient")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl HboneClient {
    /// A client presenting the SVID in `store`, with ztunnel's settings.
    pub fn new(store: IdentityStore) -> Self {
        Self::with_settings(store, HboneClientSettings::default())
    }

    /// A client with explicit settings.
    pub fn with_settings(store: IdentityStore, settings: HboneClientSettings) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                tls: ClientTls::new(store),
                settings: HboneClientSettings {
                    max_streams_per_connection: settings.max_streams_per_connection.max(1),
                    ..settings
                },
                pools: Mutex::new(HashMap::new()),
                dialled: AtomicU64::new(0),
                observer: None,
            }),
        }
    }

    /// This client (same credentials and settings, a pool of its own) telling `observer`
    /// about every tunnel it opens; its meter counts the tunnel's bytes (the `mesh`
    /// facade's `hbone_client()` reports Istio's `istio_tcp_*` through it).
    pub fn observe(self, observer: impl TunnelObserver<HboneTarget>) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                tls: ClientTls::new(self.inner.tls.store().clone()),
                settings: self.inner.settings.clone(),
                pools: Mutex::new(HashMap::new()),
                dialled: AtomicU64::new(0),
                observer: Some(Arc::new(observer)),
            }),
        }
    }

    /// mTLS connections dialled so far.
    pub fn connections_dialled(&self) -> u64 {
        self.inner.dialled.load(Ordering::Relaxed)
    }

    /// Server certificate verification counters.
    pub fn verify_stats(&self) -> &Arc<VerifyStats> {
        self.inner.tls.stats()
    }

    /// A `Service<Uri>` connector: `http://<ip>:<port>/` is tunnelled to `<ip>:<port>`
    /// through `<ip>:15008`, the server verified as `identity`.
    pub fn connector(&self, identity: SpiffeId) -> HboneConnector {
        HboneConnector {
            client: self.clone(),
            identity,
            hbone_port: HBONE_PORT,
            service: None,
        }
    }

    /// Opens one tunnel to `target`.
    pub async fn connect(&self, target: &HboneTarget) -> Result<HboneStream, HboneError> {
        let (send, slot) = self.checkout(target).await?;
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(target.authority.to_string());
        if let Some(b) = self
            .inner
            .settings
            .baggage
            .as_ref()
            .and_then(Baggage::header_value)
        {
            req = req.header("baggage", b);
        }
        if let Some(host) = &target.service {
            req = req.header(http::header::FORWARDED, format!("host={host}"));
        }
        let req = req
            .body(())
            .map_err(|e| HboneError::BadUri(e.to_string()))?;
        let (resp, send) = send.ready().await?.send_request(req, false)?;
        let resp = resp.await?;
        if resp.status() != StatusCode::OK {
            return Err(HboneError::Refused {
                authority: target.authority,
                status: resp.status(),
            });
        }
        let meter = self.inner.observer.as_ref().map(|o| o.opened(target));
        Ok(HboneStream {
            io: TunnelIo::new(H2Stream::new(send, resp.into_body()), meter),
            _slot: Slot(slot),
            peer: target.identity.clone(),
        })
    }

    /// A stream slot on a pooled connection, dialling one when all are full or closed.
    async fn checkout(
        &self,
        target: &HboneTarget,
    ) -> Result<(SendRequest<Bytes>, Arc<Use>), HboneError> {
        let tls_err = |source| HboneError::Tls {
            addr: target.hbone_addr,
            source,
        };
        let source = self
            .inner
            .tls
            .store()
            .require()
            .map_err(tls_err)?
            .id
            .clone();
        let key = PoolKey {
            source,
            destination: target.identity.clone(),
            addr: target.hbone_addr,
        };
        let slots = {
            let mut pools = self.inner.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.entry(key).or_default().clone()
        };
        // Held while dialling: concurrent callers wait for this connection, not dial more.
        let mut conns = slots.lock().await;
        conns.retain(|c| !c.use_.closed.load(Ordering::Acquire));
        let max = self.inner.settings.max_streams_per_connection;
        if let Some(c) = conns
            .iter()
            .find(|c| c.use_.streams.load(Ordering::Acquire) < max)
        {
            c.use_.streams.fetch_add(1, Ordering::AcqRel);
            return Ok((c.send.clone(), c.use_.clone()));
        }
        let c = self.dial(target).await?;
        c.use_.streams.fetch_add(1, Ordering::AcqRel);
        conns.push(c.clone());
        reap_when_idle(&slots, c.use_.clone(), self.inner.settings.idle_timeout);
        Ok((c.send, c.use_))
    }

    async fn dial(&self, target: &HboneTarget) -> Result<Pooled, HboneError> {
        let addr = target.hbone_addr;
        let config = self
            .inner
            .tls
            .config(&target.identity)
            .map_err(|source| HboneError::Tls { addr, source })?;
        let settings = &self.inner.settings;
        let dial = async {
            // Connect and handshake off the request workers (mesh_tls::handshake).
            let connect = async move {
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|source| HboneError::Connect { addr, source })?;
                let _ = tcp.set_nodelay(true);
                // No SNI is sent (ServerTls picks by destination); the name only fills the API.
                let name = ServerName::IpAddress(addr.ip().into());
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| HboneError::Tls {
                        addr,
                        source: handshake_error(e),
                    })
            };
            let tls =
                handshake::connect(connect, |source| HboneError::Connect { addr, source }).await?;
            if tls.get_ref().1.alpn_protocol() != Some(mesh_tls::config::ALPN_H2) {
                return Err(HboneError::NoH2(addr));
            }
            let mut builder = h2::client::Builder::new();
            builder
                .initial_window_size(settings.stream_window)
                .initial_connection_window_size(settings.connection_window)
                .max_frame_size(settings.max_frame_size);
            let (send, mut conn) = builder.handshake(tls).await?;
            let closed = Arc::new(AtomicBool::new(false));
            let ended = closed.clone();
            // ztunnel's keepalive: a PING every 30 s, idle or not.
            let keepalive = keepalive(conn.ping_pong(), Some(KEEPALIVE), KEEPALIVE_TIMEOUT);
            tokio::spawn(async move {
                tokio::select! {
                    result = conn => if let Err(e) = result {
                        tracing::debug!(%addr, error = %e, "HBONE connection ended");
                    },
                    () = keepalive => {}
                }
                ended.store(true, Ordering::Release);
            });
            Ok((send, closed))
        };
        let (send, closed) = tokio::time::timeout(settings.connect_timeout, dial)
            .await
            .map_err(|_| HboneError::Timeout(addr))??;
        let id = self.inner.dialled.fetch_add(1, Ordering::Relaxed);
        Ok(Pooled {
            send,
            use_: Arc::new(Use {
                id,
                streams: AtomicUsize::new(0),
                idle_since: Mutex::new(Instant::now()),
                closed,
            }),
        })
    }
}

/// Drops the connection of `use_` from `slots` once it has carried no tunnel for `idle`:
/// with its last `SendRequest` gone, h2 closes it (GOAWAY, then the socket).
fn reap_when_idle(slots: &Slots, use_: Arc<Use>, idle: Duration) {
    let slots = Arc::downgrade(slots);
    tokio::spawn(async move {
        loop {
            let since = *use_.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            tokio::time::sleep_until((since + idle).into()).await;
            let Some(slots) = slots.upgrade() else { return };
            let mut conns = slots.lock().await;
            let Some(i) = conns.iter().position(|c| c.use_.id == use_.id) else {
                return; // closed and already dropped
            };
            let since = *use_.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            if use_.streams.load(Ordering::Acquire) == 0 && since.elapsed() >= idle {
                tracing::debug!(id = use_.id, ?idle, "HBONE connection idle: closing");
                conns.swap_remove(i);
                return;
            }
            // Busy: look again `idle` after the last tunnel ends (at the earliest, now).
            if use_.streams.load(Ordering::Acquire) > 0 {
                *use_.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
        }
    });
}

impl tower_service::Service<HboneTarget> for HboneClient {
    type Response = HboneStream;
    type Error = HboneError;
    type Future = Pin<Box<dyn Future<Output = Result<HboneStream, HboneError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HboneError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: HboneTarget) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&target).await })
    }
}

/// Frees a connection's stream slot when the tunnel ends.
struct Slot(Arc<Use>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// One open tunnel: a byte stream (tokio `AsyncRead + AsyncWrite`). Wrap it in `TokioIo`
/// for hyper.
pub struct HboneStream {
    io: TunnelIo,
    _slot: Slot,
    peer: SpiffeId,
}

impl HboneStream {
    /// The server's verified identity.
    pub fn peer(&self) -> &SpiffeId {
        &self.peer
    }
}

impl std::fmt::Debug for HboneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HboneStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for HboneStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for HboneStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for HboneStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A `tower::Service<Uri>` that tunnels to the URI's `<ip>:<port>` (default port 80)
/// through `<ip>:15008`; for `hyper_util::client::legacy::Client` and tonic.
#[derive(Clone, Debug)]
pub struct HboneConnector {
    client: HboneClient,
    identity: SpiffeId,
    hbone_port: u16,
    service: Option<String>,
}

impl HboneConnector {
    /// Dials HBONE on `port` instead of 15008.
    pub fn hbone_port(mut self, port: u16) -> Self {
        self.hbone_port = port;
        self
    }

    /// Names the service its tunnels are for: [`HboneTarget::service`] of each (the
    /// `forwarded: host=..` header, the `destination_service` of their metrics).
    pub fn service(mut self, host: impl Into<String>) -> Self {
        self.service = Some(host.into());
        self
    }

    fn target(&self, uri: &Uri) -> Result<HboneTarget, HboneError> {
        let host = uri
            .host()
            .ok_or_else(|| HboneError::BadUri(format!("{uri} has no host")))?;
        let ip: IpAddr = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| HboneError::BadUri(format!("{uri}: the host must be an IP")))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(HboneTarget {
            hbone_addr: SocketAddr::new(ip, self.hbone_port),
            authority: SocketAddr::new(ip, port),
            identity: self.identity.clone(),
            service: self.service.clone(),
        })
    }
}

impl tower_service::Service<Uri> for HboneConnector {
    type Response = TokioIo<HboneStream>;
    type Error = HboneError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, HboneError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HboneError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = self.target(&uri);
        let client = self.client.clone();
        Box::pin(async move { Ok(TokioIo::new(client.connect(&target?).await?)) })
    }
}
