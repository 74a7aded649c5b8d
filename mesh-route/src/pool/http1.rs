//! The HTTP/1.1 connections of one endpoint, on hyper's `client::conn::http1`.
//!
//! A request takes a connection that is ready (its previous response fully read), or dials a
//! new one when none is; the connection goes back to the idle list as soon as the response
//! headers arrive and becomes ready again once the dispatcher has finished that response's
//! body. So no task is spawned per request (hyper-util's pool spawns one to wait for that
//! moment), and the endpoint is already chosen by the balancer, so there is no pool key to
//! hash.
//!
//! The caller can see the end of a response body a few microseconds before hyper's
//! dispatcher has made the connection ready again, so a request that finds no ready
//! connection but one finishing its response waits for that one, and dials a new
//! connection only if it is still busy after [`DIAL_GRACE`]; whichever is ready first is
//! used (a dial already under way then completes into the idle list, as in hyper-util's
//! pool). Sequential requests therefore reuse one connection.
//!
//! A kept-alive connection that the server closed just before we used it hands the request
//! back unsent; it is then sent on another connection (as hyper-util's pool does). Idle
//! connections close after the cluster's idle timeout, checked by a sweep task per pool.
//!
//! Circuit breaking as Envoy's HTTP/1.1 pool: every connection holds a `max_connections`
//! slot of the cluster's [`CircuitBreaker`] while it is open; a request without a ready
//! connection is pending (a `max_pending_requests` slot) until it has one, waiting for a
//! connection of its endpoint to come back or for a slot to be freed; without a pending
//! slot it fails at once with [`Overflow`] (503 `UO` from the breaker layer). A connection
//! closes after the cluster's `max_requests_per_connection` or `max_connection_duration`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::Parts;
use http::{HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use mesh_resilience::circuit_breaker::{CircuitBreaker, Overflow, Slot};
use mesh_resilience::policy::Priority;
use tokio::sync::Notify;
use tower::{BoxError, ServiceExt};

use super::config::Lifetime;
use super::{ConnectError, RequestBody};

/// A boxed connection attempt: the pool's connector for this endpoint, then the HTTP/1.1
/// handshake.
pub(super) type Dial =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Sender, BoxError>> + Send>> + Send + Sync>;

/// The sending half of one connection, and what the connector said about it (over mTLS
/// the server's `PeerIdentity`, copied into every response as hyper-util's pool does).
pub(super) struct Sender {
    tx: SendRequest<RequestBody>,
    info: Connected,
    /// The connection's `max_connections` slot, given back when it closes.
    slot: Option<Slot>,
    /// Counts it among its endpoint's connections while it is open.
    _open: Option<OpenGuard>,
    /// Requests sent on it.
    served: u32,
    born: Instant,
}

impl Sender {
    fn is_ready(&self) -> bool {
        self.tx.is_ready()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// How long a request waits for a connection that is finishing its previous response
/// before it dials another.
pub(super) const DIAL_GRACE: Duration = Duration::from_millis(1);

/// What the idle list has for a request.
enum Checkout {
    Ready(Sender),
    /// Open, still finishing a response (taken out of the list).
    Busy(Sender),
    Empty,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// One endpoint's HTTP/1.1 connections.
pub(super) struct H1Set {
    dial: Dial,
    idle: Mutex<Vec<Idle>>,
    /// The cluster's breaker (shared by every endpoint of the pool).
    breaker: Arc<CircuitBreaker>,
    /// Woken when a connection is checked in: pending requests take it.
    checked_in: Notify,
    life: Lifetime,
    /// Connections of this endpoint open or being dialed.
    open: Arc<AtomicUsize>,
}

/// One connection counted in its endpoint's `open`, until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        Self(open.clone())
    }

    /// Counts one only if the endpoint has none.
    fn first(open: &Arc<AtomicUsize>) -> Option<Self> {
        open.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self(open.clone()))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for H1Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Set").finish_non_exhaustive()
    }
}

impl H1Set {
    pub(super) fn new(dial: Dial, breaker: Arc<CircuitBreaker>, life: Lifetime) -> Self {
        Self {
            dial,
            idle: Mutex::new(Vec::new()),
            breaker,
            checked_in: Notify::new(),
            life,
            open: Arc::default(),
        }
    }

    /// Sends `req` (absolute URI: its authority becomes `Host` when the request has none).
    pub(super) async fn send(
        self: Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        self.send_on(None, req).await
    }

    /// Like [`H1Set::send`], first on `dialed` when given: a connection just dialed for
    /// this request (see [`H1Set::adopt`]).
    pub(super) async fn send_on(
        self: Arc<Self>,
        mut dialed: Option<Sender>,
        mut req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        prepare(&mut req)?;
        let priority = req
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        loop {
            let (mut sender, reused) = match dialed.take() {
                Some(s) => (s, false),
                None => self.acquire(priority).await?,
            };
            sender.served += 1;
            match sender.tx.try_send_request(req).await {
                Ok(mut resp) => {
                    sender.info.get_extras(resp.extensions_mut());
                    self.checkin(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Closed by the server while idle, before taking the request.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// A connection for one request, and whether it was used before. Without a ready
    /// one the request is pending: it needs a pending slot, then waits for a connection
    /// to come back or a connection slot to dial with.
    async fn acquire(self: &Arc<Self>, p: Priority) -> Result<(Sender, bool), BoxError> {
        let mut pending = None;
        loop {
            // Registered before looking, so a release in between is not missed.
            let released = self.breaker.connection_released(p);
            let checked_in = self.checked_in.notified();
            let checkout = self.checkout();
            if let Checkout::Ready(s) = checkout {
                return Ok((s, true));
            }
            if pending.is_none() {
                pending = Some(
                    self.breaker
                        .try_pending(p)
                        .ok_or(Overflow("max_pending_requests"))?,
                );
            }
            match checkout {
                Checkout::Ready(_) => unreachable!("returned above"),
                Checkout::Busy(s) => {
                    if let Some(got) = self.busy_or_dial(s, p).await? {
                        return Ok(got);
                    }
                }
                Checkout::Empty => {
                    if let Some(slot) = self.breaker.try_connection(p) {
                        let open = OpenGuard::new(&self.open);
                        return Ok((self.dial_with(Some(slot), open).await?, false));
                    }
                    // As Envoy: an endpoint without any connection gets one even at
                    // max_connections (the other endpoints hold them), or its pending
                    // requests could never be served.
                    if let Some(open) = OpenGuard::first(&self.open) {
                        return Ok((self.dial_with(None, open).await?, false));
                    }
                    tokio::select! {
                        () = released => {}
                        () = checked_in => {}
                    }
                }
            }
        }
    }

    async fn dial_with(&self, slot: Option<Slot>, open: OpenGuard) -> Result<Sender, BoxError> {
        let mut sender = (self.dial)().await?;
        sender.slot = slot;
        sender._open = Some(open);
        Ok(sender)
    }

    /// A connection finishing its response: use it once ready, or a new one dialed after
    /// [`DIAL_GRACE`] if a connection slot is free, whichever is first. `None` when the
    /// busy connection broke before a dial started: look again.
    async fn busy_or_dial(
        self: &Arc<Self>,
        mut busy: Sender,
        p: Priority,
    ) -> Result<Option<(Sender, bool)>, BoxError> {
        let started = Arc::new(AtomicBool::new(false));
        let mut dial = {
            let (set, started) = (self.clone(), started.clone());
            Box::pin(async move {
                tokio::time::sleep(DIAL_GRACE).await;
                let slot = set.breaker.try_connection(p);
                started.store(slot.is_some(), Ordering::Relaxed);
                match slot {
                    Some(slot) => set.dial_with(Some(slot), OpenGuard::new(&set.open)).await,
                    // At max_connections: only the busy connection can serve us.
                    None => std::future::pending().await,
                }
            })
        };
        tokio::select! {
            biased;
            ready = busy.tx.ready() => {
                if ready.is_ok() {
                    if started.load(Ordering::Relaxed) {
                        // Keep the socket: the new connection joins the idle list.
                        let set = self.clone();
                        tokio::spawn(async move {
                            if let Ok(s) = dial.await {
                                set.checkin(s);
                            }
                        });
                    }
                    return Ok(Some((busy, true)));
                }
                // The busy connection broke (its slot is given back with it).
                drop(busy);
                if started.load(Ordering::Relaxed) {
                    return Ok(Some((dial.await?, false)));
                }
                Ok(None)
            }
            dialed = &mut dial => {
                self.checkin(busy);
                Ok(Some((dialed?, false)))
            }
        }
    }

    /// A ready connection, else one still finishing a response, dropping closed ones on
    /// the way.
    fn checkout(&self) -> Checkout {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| !c.sender.is_closed() && !self.life.expired(c.sender.born));
        if let Some(i) = idle.iter().position(|c| c.sender.is_ready()) {
            return Checkout::Ready(idle.swap_remove(i).sender);
        }
        match idle.is_empty() {
            // The oldest is the likeliest to be done.
            false => Checkout::Busy(idle.remove(0).sender),
            true => Checkout::Empty,
        }
    }

    /// Counts a connection dialed for this endpoint outside the set (the one that learned
    /// the protocol of an ALPN endpoint, its first) among the set's: it holds a
    /// `max_connections` slot if one is free. `None` (the connection is closed) when no
    /// slot is free and the endpoint has a connection already.
    pub(super) fn adopt(&self, mut sender: Sender) -> Option<Sender> {
        sender.slot = self.breaker.try_connection(Priority::default());
        sender._open = match sender.slot {
            Some(_) => Some(OpenGuard::new(&self.open)),
            None => Some(OpenGuard::first(&self.open)?),
        };
        Some(sender)
    }

    /// Back to the idle list once the response headers are in: ready again when hyper has
    /// finished the body (a connection whose body is dropped unread closes instead).
    fn checkin(&self, sender: Sender) {
        if sender.is_closed() || self.life.spent(sender.served, sender.born) {
            // Dropping the sender closes the connection once its response is done.
            return;
        }
        let since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(Idle { sender, since });
        drop(idle);
        self.checked_in.notify_one();
    }

    /// Closes connections idle for longer than `timeout`, and forgets closed ones.
    pub(super) fn sweep(&self, timeout: Duration, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| {
            let expired = c.sender.is_ready() && now - c.since >= timeout;
            !c.sender.is_closed() && !expired
        });
    }
}

/// Dials with `connect`, handshakes HTTP/1.1 and drives the connection on a task.
pub(super) async fn dial<C, IO>(connect: C) -> Result<Sender, BoxError>
where
    C: tower::Service<Uri, Response = IO>,
    C::Error: Into<BoxError>,
    IO: Read + Write + Connection + Unpin + Send + 'static,
{
    // The connector is fixed to the endpoint: the URI is not used.
    let io = connect
        .oneshot(Uri::default())
        .await
        .map_err(|e| ConnectError(e.into()))?;
    handshake(io).await
}

/// Handshakes HTTP/1.1 on a dialed connection and drives it on a task.
pub(super) async fn handshake<IO>(io: IO) -> Result<Sender, BoxError>
where
    IO: Read + Write + Connection + Unpin + Send + 'static,
{
    let info = io.connected();
    let (tx, conn) = Builder::new()
        .handshake(io)
        .await
        .map_err(|e| ConnectError(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(Sender {
        tx,
        info,
        slot: None,
        _open: None,
        served: 0,
        born: Instant::now(),
    })
}

/// The request as HTTP/1.1 sends it: `Host` from the authority unless set, the target in
/// origin form (authority form for CONNECT), version 1.1 unless it is 1.0.
fn prepare(req: &mut Request<RequestBody>) -> Result<(), BoxError> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Err("upstream request without an authority".into());
    };
    if !req.headers().contains_key(HOST) {
        req.headers_mut()
            .insert(HOST, HeaderValue::from_str(authority.as_str())?);
    }
    let mut parts = Parts::default();
    if req.method() == Method::CONNECT {
        parts.authority = Some(authority);
    } else {
        parts.path_and_query = req.uri().path_and_query().cloned();
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
    }
    *req.uri_mut() = Uri::from_parts(parts)?;
    if req.version() != Version::HTTP_10 {
        *req.version_mut() = Version::HTTP_11;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    fn req(method: Method, uri: &str) -> Request<RequestBody> {
        let mut r = Request::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse().unwrap();
        r
    }

    #[test]
    fn origin_form_with_host_from_the_authority() {
        let mut r = req(Method::GET, "http://reviews:9080/api/v1?x=1");
        *r.version_mut() = Version::HTTP_2;
        prepare(&mut r).unwrap();
        assert_eq!(r.uri(), "/api/v1?x=1");
        assert_eq!(r.headers()[HOST], "reviews:9080");
        assert_eq!(r.version(), Version::HTTP_11);
    }

    #[test]
    fn an_existing_host_is_kept_and_connect_keeps_the_authority() {
        let mut r = req(Method::GET, "http://10.0.0.1:80");
        r.headers_mut()
            .insert(HOST, HeaderValue::from_static("example.com"));
        prepare(&mut r).unwrap();
        assert_eq!(r.uri(), "/");
        assert_eq!(r.headers()[HOST], "example.com");

        let mut r = req(Method::CONNECT, "http://db:5432");
        prepare(&mut r).unwrap();
        assert_eq!(r.uri().to_string(), "db:5432");
    }

    #[test]
    fn a_relative_uri_is_an_error() {
        assert!(prepare(&mut req(Method::GET, "/x")).is_err());
    }
}
