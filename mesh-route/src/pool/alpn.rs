//! The connections of one endpoint of a cluster that negotiates the protocol by ALPN (TLS
//! offering `h2` and `http/1.1`): an HTTP/1.1 set and an HTTP/2 set, the same as those of
//! HTTP/1.1 and HTTP/2 clusters (same limits and breakers).
//!
//! The endpoint's first request dials a connection and reads what the server chose; the
//! connection joins that protocol's set and the choice is remembered, so later requests
//! go straight to that set, whose new connections offer both protocols again. Requests
//! that arrive while the first connection is dialed wait for it and share its error. A
//! server that later chooses the other protocol fails that connection attempt and makes
//! the endpoint learn again on its next request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::Connection;
use tower::{BoxError, ServiceExt};

use super::h2::{H2Set, Stream};
use super::h2_conn::{self, Ready, SharedCause};
use super::http1::{self, H1Set, Sender};
use super::{ConnectError, RequestBody};

/// A connection dialed and handshaken in the protocol the server chose.
pub(super) enum Negotiated {
    H1(Sender),
    H2(Ready),
}

/// A boxed connection attempt: the endpoint's TLS connector, then the handshake of the
/// protocol negotiated (HTTP/2 told the endpoint's last seen stream limit).
pub(super) type Dial = Arc<
    dyn Fn(Arc<AtomicUsize>) -> Pin<Box<dyn Future<Output = Result<Negotiated, BoxError>> + Send>>
        + Send
        + Sync,
>;

/// Dials with `connect` and handshakes what ALPN negotiated (HTTP/1.1 without ALPN).
pub(super) async fn dial<C, IO>(connect: C, known: Arc<AtomicUsize>) -> Result<Negotiated, BoxError>
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
    if io.connected().is_negotiated_h2() {
        let ready = h2_conn::handshake(io, known).await.map_err(ConnectError)?;
        Ok(Negotiated::H2(ready))
    } else {
        http1::handshake(io).await.map(Negotiated::H1)
    }
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// The protocol the endpoint's server chose, as [`UNKNOWN`], [`HTTP1`] or [`HTTP2`].
#[derive(Debug, Default)]
pub(super) struct Chosen(AtomicU8);

impl Chosen {
    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, p: u8) {
        self.0.store(p, Ordering::Release);
    }
}

/// The HTTP/1.1 set's dialer: a connection on which the server chose HTTP/2 is closed
/// and the endpoint learns again.
pub(super) fn h1_dial(dial: Dial, chosen: Arc<Chosen>) -> http1::Dial {
    Box::new(move || {
        let (dial, chosen) = (dial.clone(), chosen.clone());
        Box::pin(async move {
            match dial(Arc::default()).await? {
                Negotiated::H1(s) => Ok(s),
                Negotiated::H2(_) => {
                    chosen.set(UNKNOWN);
                    Err(
                        ConnectError("the server chose h2 where it had chosen http/1.1".into())
                            .into(),
                    )
                }
            }
        })
    })
}

/// The HTTP/2 set's dialer, as [`h1_dial`].
pub(super) fn h2_dial(dial: Dial, chosen: Arc<Chosen>) -> h2_conn::Dial {
    Box::new(move |known| {
        let (dial, chosen) = (dial.clone(), chosen.clone());
        Box::pin(async move {
            match dial(known).await? {
                Negotiated::H2(r) => Ok(r),
                Negotiated::H1(_) => {
                    chosen.set(UNKNOWN);
                    Err("the server chose http/1.1 where it had chosen h2".into())
                }
            }
        })
    })
}

/// One endpoint's connections of both protocols.
pub(super) struct AlpnSet {
    pub(super) h1: Arc<H1Set>,
    pub(super) h2: Arc<H2Set>,
    chosen: Arc<Chosen>,
    dial: Dial,
    /// Held while a first connection is dialed.
    learning: tokio::sync::Mutex<Option<Arc<BoxError>>>,
    /// Failed first connections, so that requests that waited for one share its error.
    failures: AtomicU64,
}

impl std::fmt::Debug for AlpnSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpnSet")
            .field("chosen", &self.chosen)
            .finish_non_exhaustive()
    }
}

/// Where a request to an ALPN endpoint goes.
pub(super) enum Route {
    H1(Arc<H1Set>),
    H2(Arc<H2Set>),
}

impl AlpnSet {
    /// `h1` and `h2` dial with [`h1_dial`] and [`h2_dial`] over `dial`, sharing `chosen`.
    pub(super) fn new(h1: H1Set, h2: H2Set, chosen: Arc<Chosen>, dial: Dial) -> Self {
        Self {
            h1: Arc::new(h1),
            h2: Arc::new(h2),
            chosen,
            dial,
            learning: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
        }
    }

    /// The set requests go to, once the server's choice is known.
    pub(super) fn route(&self) -> Option<Route> {
        match self.chosen.get() {
            HTTP1 => Some(Route::H1(self.h1.clone())),
            HTTP2 => Some(Route::H2(self.h2.clone())),
            _ => None,
        }
    }

    /// Sends `req` once the server's choice is known, dialing the first connection if no
    /// request is: it joins its protocol's set, and carries this request.
    pub(super) async fn send(
        self: Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Stream>), BoxError> {
        let (route, dialed) = match self.route() {
            Some(r) => (r, None),
            None => self.learn().await?,
        };
        match route {
            Route::H1(set) => set.send_on(dialed, req).await.map(|r| (r, None)),
            Route::H2(set) => {
                let stream = set.pick();
                let (resp, stream) = set.send(stream, req).await?;
                Ok((resp, Some(stream)))
            }
        }
    }

    /// Dials a connection and keeps it in the set of the protocol the server chose; an
    /// HTTP/1.1 one is returned for the request that dialed it.
    async fn learn(&self) -> Result<(Route, Option<Sender>), BoxError> {
        let failures = self.failures.load(Ordering::Acquire);
        let mut last = self.learning.lock().await;
        if let Some(route) = self.route() {
            return Ok((route, None));
        }
        if let Some(e) = last
            .as_ref()
            .filter(|_| self.failures.load(Ordering::Acquire) != failures)
        {
            // The attempt this request waited for failed.
            return Err(ConnectError(Box::new(SharedCause(e.clone()))).into());
        }
        match (self.dial)(self.h2.known_max()).await {
            Ok(Negotiated::H1(s)) => {
                self.chosen.set(HTTP1);
                Ok((Route::H1(self.h1.clone()), self.h1.adopt(s)))
            }
            Ok(Negotiated::H2(r)) => {
                self.h2.adopt(r);
                self.chosen.set(HTTP2);
                Ok((Route::H2(self.h2.clone()), None))
            }
            Err(e) => {
                let e = Arc::new(e);
                *last = Some(e.clone());
                self.failures.fetch_add(1, Ordering::AcqRel);
                Err(ConnectError(Box::new(SharedCause(e))).into())
            }
        }
    }
}
