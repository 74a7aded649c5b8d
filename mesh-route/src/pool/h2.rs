//! The HTTP/2 connections of one endpoint: a small set, each carrying many streams, grown
//! by the limits the module docs describe.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::Uri;

use super::config::Lifetime;
use super::connector::EndpointClient;

/// Streams per connection when the cluster sets no `max_concurrent_streams`. The server's
/// own `SETTINGS_MAX_CONCURRENT_STREAMS` is not visible through hyper-util's pooled client
/// (only hyper's connection-level `SendRequest` reports it), so 100, as ztunnel's pool:
/// the smallest limit RFC 9113 recommends servers to allow, so with a server that follows
/// it no stream waits behind others for a place on a full connection.
pub(super) const DEFAULT_MAX_STREAMS: usize = 100;

/// When an HTTP/2 endpoint opens another connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Connections opened as soon as every one carries a stream.
    pub(super) spread: usize,
    /// Streams that fill a connection: the cluster's `max_concurrent_streams`, else
    /// [`DEFAULT_MAX_STREAMS`].
    pub(super) max_streams: usize,
    /// Connections opened at most.
    pub(super) max_connections: usize,
    /// When a connection is replaced (it closes once its streams end).
    pub(super) life: Lifetime,
}

/// One HTTP/2 connection: a client whose pool holds a single multiplexed connection
/// (`http2_only`), reconnecting when it breaks or idles out.
#[derive(Debug)]
pub(super) struct H2Conn {
    pub(super) client: EndpointClient,
    /// Streams sent and not yet answered with response headers.
    pub(super) streams: AtomicUsize,
    /// Streams sent in its life.
    sent: AtomicU32,
    born: Instant,
}

/// The HTTP/2 connections of one endpoint.
#[derive(Debug)]
pub(super) struct H2Set {
    pub(super) target: Uri,
    pub(super) limits: Limits,
    /// Read lock-free per request; a new connection copies the list once.
    pub(super) conns: ArcSwap<Vec<Arc<H2Conn>>>,
    pub(super) grow: Mutex<()>,
}

impl H2Set {
    /// A place for the next stream on a connection, opening one (its client from `open`,
    /// given the endpoint's URI) if the limits say so. The place is taken before it is
    /// returned, so concurrent picks never put more than the limit on one connection.
    pub(super) fn pick(&self, open: impl Fn(Uri) -> EndpointClient) -> Stream {
        let mut conn = match choose(&self.conns.load(), self.limits) {
            Some(c) => c,
            None => self.grow(&open),
        };
        if self.limits.life.expired(conn.born) {
            conn.streams.fetch_sub(1, Ordering::Relaxed);
            conn = self.replace(&conn, &open);
            conn.streams.fetch_add(1, Ordering::Relaxed);
        }
        let sent = conn.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if self.limits.life.max_requests == Some(sent) {
            // This stream is its last.
            self.replace(&conn, &open);
        }
        Stream(conn)
    }

    /// Under the lock: a place on a connection, or on a new one.
    fn grow(&self, open: &impl Fn(Uri) -> EndpointClient) -> Arc<H2Conn> {
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        if let Some(c) = choose(&current, self.limits) {
            return c;
        }
        let conn = self.new_conn(open);
        conn.streams.fetch_add(1, Ordering::Relaxed);
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(conn.clone());
        self.conns.store(Arc::new(next));
        conn
    }

    /// Swaps a spent connection for a new one, which it returns (streams under way keep
    /// the old one); when another request replaced it first, the connection in its place.
    fn replace(&self, spent: &Arc<H2Conn>, open: &impl Fn(Uri) -> EndpointClient) -> Arc<H2Conn> {
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        let Some(i) = current.iter().position(|c| Arc::ptr_eq(c, spent)) else {
            return current
                .iter()
                .find(|c| !self.limits.life.expired(c.born))
                .cloned()
                .unwrap_or_else(|| spent.clone());
        };
        let fresh = self.new_conn(open);
        let mut next = (*current).clone();
        next[i] = fresh.clone();
        self.conns.store(Arc::new(next));
        fresh
    }

    fn new_conn(&self, open: &impl Fn(Uri) -> EndpointClient) -> Arc<H2Conn> {
        Arc::new(H2Conn {
            client: open(self.target.clone()),
            streams: AtomicUsize::new(0),
            sent: AtomicU32::new(0),
            born: Instant::now(),
        })
    }
}

/// A place on the least-loaded connection (the first of equals), taken, or `None` when
/// another connection should be opened.
fn choose(conns: &[Arc<H2Conn>], limits: Limits) -> Option<Arc<H2Conn>> {
    loop {
        let (best, load) = conns
            .iter()
            .map(|c| (c, c.streams.load(Ordering::Relaxed)))
            .min_by_key(|(_, load)| *load)?;
        let open = conns.len();
        let grow = load > 0
            && (open < limits.spread
                || (open < limits.max_connections && load >= limits.max_streams));
        if grow {
            return None;
        }
        // Another pick or a finished stream changed the load since: look again.
        let taken =
            best.streams
                .compare_exchange(load, load + 1, Ordering::AcqRel, Ordering::Relaxed);
        if taken.is_ok() {
            return Some(best.clone());
        }
    }
}

/// A stream in flight on an HTTP/2 connection, until its response ends (the response
/// body holds it) or the request fails.
#[derive(Debug)]
pub(super) struct Stream(pub(super) Arc<H2Conn>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}
