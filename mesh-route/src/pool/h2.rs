//! The HTTP/2 connections of one endpoint: a small set, each carrying many streams, grown
//! by the limits the module docs describe.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use h2::Reason;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_resilience::retry::{ReplayBody, RetriedAbove};
use tower::BoxError;

use super::config::Lifetime;
use super::h2_conn::{Conn, Dial, Ready, SendError};
use super::{ConnectError, RequestBody};

/// Streams per connection when the cluster sets no `max_concurrent_streams` and the server
/// allows more (or sets no limit): 100, as ztunnel's pool, the smallest limit RFC 9113
/// recommends servers to allow.
pub(super) const DEFAULT_MAX_STREAMS: usize = 100;

/// Times a request the connection closed before taking it (GOAWAY, or broken while idle)
/// is sent again on another connection.
const UNSENT_RETRIES: usize = 3;

/// When an HTTP/2 endpoint opens another connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Connections opened as soon as every one carries a stream.
    pub(super) spread: usize,
    /// Streams that fill a connection: the cluster's `max_concurrent_streams`, else
    /// [`DEFAULT_MAX_STREAMS`] (lower when the server's SETTINGS say so).
    pub(super) max_streams: usize,
    /// Connections opened at most.
    pub(super) max_connections: usize,
    /// When a connection is replaced (it closes once its streams end).
    pub(super) life: Lifetime,
}

/// One HTTP/2 connection and its load.
#[derive(Debug)]
pub(super) struct H2Conn {
    conn: Conn,
    /// Streams in flight (until their response ends).
    pub(super) streams: AtomicUsize,
    /// Streams sent in its life.
    sent: AtomicU32,
    born: Instant,
    /// `sent` at the previous idle sweep, and sweeps in a row that found it idle.
    swept_sent: AtomicU32,
    idle_sweeps: AtomicU32,
}

impl H2Conn {
    /// Streams that fill it: the cluster's limit or the server's, whichever is lower.
    fn max_streams(&self, limits: Limits, known: &AtomicUsize) -> usize {
        limits
            .max_streams
            .min(self.conn.server_max_streams(known))
            .max(1)
    }
}

/// The HTTP/2 connections of one endpoint.
pub(super) struct H2Set {
    pub(super) limits: Limits,
    dial: Dial,
    /// The server's stream limit as last seen on any of its connections (`usize::MAX`
    /// before any): what a connection not yet up counts with.
    known_max: Arc<AtomicUsize>,
    /// Read lock-free per request; a new connection copies the list once.
    conns: ArcSwap<Vec<Arc<H2Conn>>>,
    grow: Mutex<()>,
}

impl std::fmt::Debug for H2Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Set")
            .field("limits", &self.limits)
            .field("conns", &self.conns.load().len())
            .finish_non_exhaustive()
    }
}

impl H2Set {
    pub(super) fn new(limits: Limits, dial: Dial) -> Self {
        Self {
            limits,
            dial,
            known_max: Arc::new(AtomicUsize::new(usize::MAX)),
            conns: ArcSwap::default(),
            grow: Mutex::new(()),
        }
    }

    /// Sends `req` on `stream`'s connection (see [`H2Set::pick`]); a request the connection
    /// closed before taking goes to another. A stream the server refused unprocessed
    /// ([`unprocessed`]) is sent again once, on another connection when the endpoint has or
    /// may open one, with its body replayed ([`Spare`]), unless a retry layer above owns
    /// the request's replays ([`RetriedAbove`]): then its policy decides (the failure reads
    /// as a refused stream, [`Unprocessed`], which `refused-stream` retries) and the pool
    /// keeps no second copy. The stream is returned with the response: it holds its
    /// place until the response body ends.
    pub(super) async fn send(
        self: Arc<Self>,
        mut stream: Stream,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Stream), BoxError> {
        let (mut req, mut spare) = if retried_by_policy(&req) {
            (req, None)
        } else {
            Spare::of(req)
        };
        let mut retries = 0;
        loop {
            match stream.0.conn.send(&self.dial, &self.known_max, req).await {
                Ok(resp) => return Ok((resp, stream)),
                Err(SendError::Connect(e)) => return Err(e.into()),
                Err(SendError::Send(mut e)) => match e.take_message() {
                    Some(unsent) if retries < UNSENT_RETRIES => {
                        retries += 1;
                        req = unsent;
                        drop(stream);
                        stream = self.pick();
                    }
                    Some(_) => return Err(e.into_error().into()),
                    None => match spare.take() {
                        Some(again) if again.replayable() && unprocessed(e.error()) => {
                            req = again.into_request();
                            let refused = stream.0.clone();
                            drop(stream);
                            stream = self.pick_other(&refused);
                        }
                        _ if unprocessed(e.error()) => {
                            return Err(Unprocessed(e.into_error()).into());
                        }
                        _ => return Err(e.into_error().into()),
                    },
                },
            }
        }
    }

    /// A place for the next stream on a connection, opening one (dialed by the stream that
    /// first sends on it) if the limits say so. The place is taken before it is returned,
    /// so concurrent picks never put more than the limit on one connection.
    pub(super) fn pick(&self) -> Stream {
        self.pick_avoiding(None)
    }

    /// Like [`H2Set::pick`], on another connection than `refused` when there is one with
    /// room or the limits allow opening one; else on `refused` itself.
    fn pick_other(&self, refused: &Arc<H2Conn>) -> Stream {
        self.pick_avoiding(Some(refused))
    }

    fn pick_avoiding(&self, avoid: Option<&Arc<H2Conn>>) -> Stream {
        let mut conn = match choose(&self.conns.load(), self.limits, &self.known_max, avoid) {
            Some(c) => c,
            None => self.grow(avoid),
        };
        if self.limits.life.expired(conn.born) {
            conn.streams.fetch_sub(1, Ordering::Relaxed);
            conn = self.replace(&conn);
            conn.streams.fetch_add(1, Ordering::Relaxed);
        }
        let sent = conn.sent.fetch_add(1, Ordering::Relaxed) + 1;
        if self.limits.life.max_requests == Some(sent) {
            // This stream is its last.
            self.replace(&conn);
        }
        Stream(conn)
    }

    /// Under the lock: a place on a connection, or on a new one. Dead connections (failed,
    /// broken, or closing after GOAWAY) leave the list here.
    fn grow(&self, avoid: Option<&Arc<H2Conn>>) -> Arc<H2Conn> {
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        if let Some(c) = choose(&current, self.limits, &self.known_max, avoid) {
            return c;
        }
        let conn = new_conn();
        conn.streams.fetch_add(1, Ordering::Relaxed);
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().filter(|c| !c.conn.is_dead()).cloned());
        next.push(conn.clone());
        self.conns.store(Arc::new(next));
        conn
    }

    /// Opens a connection now, unless the endpoint has a live one (or one dialing), and
    /// waits until it is up. It carries no stream, so the next pick takes it.
    pub(super) async fn warm(&self) -> Result<(), ConnectError> {
        let conn = {
            let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
            let current = self.conns.load_full();
            if current.iter().any(|c| !c.conn.is_dead()) {
                return Ok(());
            }
            let conn = new_conn();
            self.conns.store(Arc::new(vec![conn.clone()]));
            conn
        };
        conn.conn
            .connect(&self.dial, &self.known_max)
            .await
            .map(|_| ())
    }

    /// Takes a connection dialed outside the set (the one that learned an ALPN endpoint's
    /// protocol) as one of its connections, carrying no stream yet.
    pub(super) fn adopt(&self, ready: Ready) {
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().filter(|c| !c.conn.is_dead()).cloned());
        next.push(conn_of(Conn::up(ready)));
        self.conns.store(Arc::new(next));
    }

    /// The endpoint's last seen server stream limit, for a connection dialed outside the
    /// set.
    pub(super) fn known_max(&self) -> Arc<AtomicUsize> {
        self.known_max.clone()
    }

    /// Swaps a spent connection for a new one, which it returns (streams under way keep
    /// the old one); when another request replaced it first, the connection in its place.
    fn replace(&self, spent: &Arc<H2Conn>) -> Arc<H2Conn> {
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        let Some(i) = current.iter().position(|c| Arc::ptr_eq(c, spent)) else {
            return current
                .iter()
                .find(|c| !self.limits.life.expired(c.born) && !c.conn.is_dead())
                .cloned()
                .unwrap_or_else(|| spent.clone());
        };
        let fresh = new_conn();
        let mut next = (*current).clone();
        next[i] = fresh.clone();
        self.conns.store(Arc::new(next));
        fresh
    }

    /// Closes connections that carried no stream for `timeout` (checked every `period`:
    /// a connection closes between `timeout` and `timeout` + 2 `period`s after its last
    /// stream), and forgets dead ones. Streams under way keep their connection.
    pub(super) fn sweep(&self, timeout: Duration, period: Duration) {
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        let needed = timeout.as_nanos().div_ceil(period.as_nanos().max(1)) as u32;
        let keep: Vec<_> = current
            .iter()
            .filter(|c| {
                let sent = c.sent.load(Ordering::Relaxed);
                let idle = c.streams.load(Ordering::Relaxed) == 0
                    && c.swept_sent.swap(sent, Ordering::Relaxed) == sent;
                let sweeps = match idle {
                    true => c.idle_sweeps.fetch_add(1, Ordering::Relaxed) + 1,
                    false => {
                        c.idle_sweeps.store(0, Ordering::Relaxed);
                        0
                    }
                };
                sweeps < needed.max(1) && !c.conn.is_dead()
            })
            .cloned()
            .collect();
        if keep.len() != current.len() {
            self.conns.store(Arc::new(keep));
        }
    }
}

fn new_conn() -> Arc<H2Conn> {
    conn_of(Conn::default())
}

fn conn_of(conn: Conn) -> Arc<H2Conn> {
    Arc::new(H2Conn {
        conn,
        streams: AtomicUsize::new(0),
        sent: AtomicU32::new(0),
        born: Instant::now(),
        swept_sent: AtomicU32::new(0),
        idle_sweeps: AtomicU32::new(0),
    })
}

/// A place on the least-loaded live connection with room (the first of equals), taken,
/// or `None` when another connection should be opened. Every connection full at
/// `max_connections`: the least-loaded one. `avoid` (a connection that refused a stream)
/// counts as open but is taken only when it is the one live connection at
/// `max_connections`.
fn choose(
    conns: &[Arc<H2Conn>],
    limits: Limits,
    known: &AtomicUsize,
    avoid: Option<&Arc<H2Conn>>,
) -> Option<Arc<H2Conn>> {
    loop {
        let mut open = 0;
        let mut roomy: Option<(&Arc<H2Conn>, usize)> = None;
        let mut any: Option<(&Arc<H2Conn>, usize)> = None;
        let mut avoided = None;
        for c in conns {
            if c.conn.is_dead() {
                continue;
            }
            open += 1;
            let load = c.streams.load(Ordering::Relaxed);
            if avoid.is_some_and(|a| Arc::ptr_eq(a, c)) {
                avoided = Some((c, load));
                continue;
            }
            if any.is_none_or(|(_, l)| load < l) {
                any = Some((c, load));
            }
            if load < c.max_streams(limits, known) && roomy.is_none_or(|(_, l)| load < l) {
                roomy = Some((c, load));
            }
        }
        let (best, load) = match roomy {
            // Spread over `spread` connections before sharing one.
            Some((_, load)) if load > 0 && open < limits.spread => return None,
            Some(r) => r,
            None if open < limits.max_connections => return None,
            None => any.or(avoided)?,
        };
        // Another pick or a finished stream changed the load since: look again.
        let taken =
            best.streams
                .compare_exchange(load, load + 1, Ordering::AcqRel, Ordering::Relaxed);
        if taken.is_ok() {
            return Some(best.clone());
        }
    }
}

/// Whether the server refused a stream without processing it (RFC 9113 §8.7), so that it
/// can be sent again whatever the retry policy (gRFC A6's transparent retry; Envoy and
/// grpc-go do it too): it reset the stream with `REFUSED_STREAM`, or sent a GOAWAY whose
/// last stream id is below it (h2 fails exactly those streams with the remote GOAWAY; a
/// stream at or below the id that breaks later fails with an I/O error).
fn unprocessed(e: &hyper::Error) -> bool {
    let Some(h2e) = std::error::Error::source(e).and_then(|c| c.downcast_ref::<h2::Error>()) else {
        return false;
    };
    h2e.is_remote()
        && (h2e.is_go_away() || (h2e.is_reset() && h2e.reason() == Some(Reason::REFUSED_STREAM)))
}

/// Whether a retry layer above decides about sending the request again (it keeps its own
/// copy of the request for every attempt, and its policy says whether a refused stream is
/// retried).
fn retried_by_policy(req: &Request<RequestBody>) -> bool {
    req.extensions().get::<RetriedAbove>().is_some()
}

/// A stream the server did not process (reset with `REFUSED_STREAM`, or above a GOAWAY's
/// last stream id), failed as a refused stream so that a retry policy's `refused-stream`
/// sends it again whichever way the server refused it.
#[derive(Debug)]
struct Unprocessed(hyper::Error);

impl std::fmt::Display for Unprocessed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upstream did not process the stream: {}", self.0)
    }
}

impl std::error::Error for Unprocessed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        static REFUSED: std::sync::LazyLock<h2::Error> =
            std::sync::LazyLock::new(|| h2::Error::from(Reason::REFUSED_STREAM));
        Some(&*REFUSED)
    }
}

/// Body bytes kept to send a refused stream again (the retry layer's default buffer); a
/// longer body is not sent again.
const REPLAY_CAP: usize = 64 * 1024;

/// What a refused stream is sent again with: the request's head and a replay of its body
/// (`None`: the body was empty).
struct Spare {
    head: http::request::Parts,
    body: Option<ReplayBody<RequestBody>>,
}

impl Spare {
    /// The request to send, recording its body, and its spare (`None` when the body cannot
    /// be kept: its size says it is over [`REPLAY_CAP`]).
    fn of(req: Request<RequestBody>) -> (Request<RequestBody>, Option<Spare>) {
        let (head, body) = req.into_parts();
        if body.is_end_stream() {
            let spare = Spare {
                head: head.clone(),
                body: None,
            };
            return (Request::from_parts(head, body), Some(spare));
        }
        let body = ReplayBody::new(body, REPLAY_CAP);
        let spare = body.try_clone().map(|b| Spare {
            head: head.clone(),
            body: Some(b),
        });
        (Request::from_parts(head, body.boxed_unsync()), spare)
    }

    /// Whether the body is all kept (the first attempt did not read past [`REPLAY_CAP`]).
    fn replayable(&self) -> bool {
        self.body.as_ref().is_none_or(|b| !b.is_capped())
    }

    /// The request again; its body fails if the first attempt read past [`REPLAY_CAP`].
    fn into_request(self) -> Request<RequestBody> {
        let body = match self.body {
            Some(b) => b.boxed_unsync(),
            None => http_body_util::Empty::new()
                .map_err(Into::into)
                .boxed_unsync(),
        };
        Request::from_parts(self.head, body)
    }
}

/// A stream in flight on an HTTP/2 connection, until its response ends (the response
/// body holds it) or the request fails.
#[derive(Debug)]
pub(super) struct Stream(Arc<H2Conn>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}
