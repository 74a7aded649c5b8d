//! Limits against slow and many connections, shared by every server of the mesh: a cap on
//! concurrent connections per listener (excess connections are accepted and closed at
//! once, and counted), timeouts for the sniff, the HTTP/1 headers and the first request,
//! HTTP/2 keepalive, and backoff when accepting fails (EMFILE and the like).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-listener limits. The defaults suit a sidecar's inbound port; tests and small
/// servers set shorter timeouts or a lower cap.
///
/// ```
/// use std::time::Duration;
/// use mesh_tls::server::ConnectionLimits;
/// let limits = ConnectionLimits {
///     max_connections: 1_000,
///     header_read_timeout: Duration::from_secs(5),
///     ..ConnectionLimits::default()
/// };
/// assert_eq!(limits.sniff_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once on one listener; more are accepted and closed at once,
    /// and counted in [`ConnectionLimiter::refused`] (default 10,000).
    pub max_connections: usize,
    /// A PERMISSIVE connection must send the bytes that tell TLS from plaintext within
    /// this time (default 10 s). The TLS handshake has its own timeout
    /// (`ServerSettings::handshake_timeout`).
    pub sniff_timeout: Duration,
    /// An HTTP/1 request's headers must arrive within this time, counted from when the
    /// server starts reading them: an idle keep-alive connection is closed after it too.
    /// An HTTP/2 connection must start its first request within it (default 30 s, hyper's
    /// own default once a timer is set).
    pub header_read_timeout: Duration,
    /// HTTP/2 PING interval, to find dead peers (default 30 s; `None`: no pings).
    pub http2_keepalive_interval: Option<Duration>,
    /// An unanswered HTTP/2 keepalive PING closes the connection after this (default 20 s).
    pub http2_keepalive_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            sniff_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// Counts one listener's connections against its cap. Cheap to clone; clones share the
/// counts (read them for metrics or in tests).
#[derive(Clone, Debug)]
pub struct ConnectionLimiter {
    inner: Arc<LimiterInner>,
}

#[derive(Debug)]
struct LimiterInner {
    slots: Arc<Semaphore>,
    max: usize,
    refused: AtomicU64,
}

/// One admitted connection; its slot is freed when this drops.
#[derive(Debug)]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionLimiter {
    /// A limiter admitting `max` connections at once (at most `Semaphore::MAX_PERMITS`).
    pub fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(LimiterInner {
                slots: Arc::new(Semaphore::new(max)),
                max,
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// A slot for a new connection, or `None` (counted as refused) when all are taken.
    pub fn try_admit(&self) -> Option<ConnectionPermit> {
        match self.inner.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(ConnectionPermit { _permit: permit }),
            Err(_) => {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.inner.max - self.inner.slots.available_permits()
    }

    /// Connections refused because the cap was reached, since this limiter was made.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.inner.max
    }
}

/// Exponential backoff for failing `accept` calls: a process out of file descriptors
/// gets the same error at once on every call, and retrying at once spins a core.
#[derive(Clone, Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    /// The first wait.
    pub const MIN: Duration = Duration::from_millis(5);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(1);

    /// A backoff at its shortest wait.
    pub fn new() -> Self {
        Self { next: Self::MIN }
    }

    /// The wait after one more failure (doubling up to [`Self::MAX`]).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    /// Back to the shortest wait (after a successful accept).
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener that admits connections under a [`ConnectionLimiter`] and backs off on
/// accept errors: what every accept loop of the mesh calls.
#[derive(Debug)]
pub struct LimitedListener {
    listener: TcpListener,
    limiter: ConnectionLimiter,
    backoff: AcceptBackoff,
}

impl LimitedListener {
    /// Wraps `listener`; `limiter` may be shared with whoever reads its counts.
    pub fn new(listener: TcpListener, limiter: ConnectionLimiter) -> Self {
        Self {
            listener,
            limiter,
            backoff: AcceptBackoff::new(),
        }
    }

    /// The next admitted connection (`TCP_NODELAY` set). Connections over the cap are
    /// closed at once and counted; accept errors are logged and retried after a growing
    /// wait. Cancel-safe: dropping the future loses no admitted connection.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, ConnectionPermit) {
        loop {
            match self.listener.accept().await {
                Ok((tcp, remote)) => {
                    self.backoff.reset();
                    let Some(permit) = self.limiter.try_admit() else {
                        tracing::debug!(%remote, max = self.limiter.max(), "connection limit reached: closing");
                        drop(tcp);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    return (tcp, remote, permit);
                }
                Err(e) => {
                    let wait = self.backoff.next_delay();
                    tracing::warn!(error = %e, ?wait, "accept failed; backing off");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The limiter (its counts).
    pub fn limiter(&self) -> &ConnectionLimiter {
        &self.limiter
    }

    /// The listener's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = AcceptBackoff::new();
        let waits: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert_eq!(waits[0], AcceptBackoff::MIN);
        assert_eq!(waits[1], AcceptBackoff::MIN * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), AcceptBackoff::MAX);
        b.reset();
        assert_eq!(b.next_delay(), AcceptBackoff::MIN);
    }

    #[test]
    fn limiter_counts_admitted_and_refused() {
        let l = ConnectionLimiter::new(2);
        let a = l.try_admit().unwrap();
        let _b = l.try_admit().unwrap();
        assert_eq!(l.active(), 2);
        assert!(l.try_admit().is_none());
        assert_eq!(l.refused(), 1);
        drop(a);
        assert_eq!(l.active(), 1);
        assert!(l.try_admit().is_some());
    }

    #[tokio::test]
    async fn excess_connections_are_closed_at_once() {
        use tokio::io::AsyncReadExt;
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = LimitedListener::new(tcp, ConnectionLimiter::new(1));
        let limiter = listener.limiter().clone();
        let held = tokio::spawn(async move {
            let (tcp, _, permit) = listener.accept().await;
            // Keep accepting (and refusing) while the first one is held.
            tokio::select! {
                _ = listener.accept() => unreachable!("over the cap"),
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            drop((tcp, permit));
        });
        let _first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
            .await
            .expect("closed quickly")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(limiter.refused(), 1);
        assert_eq!(limiter.active(), 1);
        held.abort();
    }
}
