//! What every clone of an [`UpstreamPool`](super::UpstreamPool) shares: the transport, the
//! HTTP/2 limits, the endpoints' connections and the connection counters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;

use super::alpn::{self, AlpnSet};
use super::connector::Transport;
use super::counted::Counters;
use super::fixed::Fixed;
use super::h2::{H2Set, Limits};
use super::h2_conn;
use super::http1::{self, H1Set};

/// One endpoint's clients.
#[derive(Clone, Debug)]
pub(super) enum Endpoint {
    /// HTTP/1.1 connections (HTTP/1.1 clusters).
    H1(Arc<H1Set>),
    /// HTTP/1.1 and HTTP/2 connections, as the server chooses by ALPN.
    Alpn(Arc<AlpnSet>),
    /// HTTP/2 connections (HTTP/2 clusters).
    H2(Arc<H2Set>),
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) transport: Transport,
    /// `Some` for HTTP/2 clusters.
    pub(super) h2: Option<Limits>,
    /// `Some` for clusters that negotiate the protocol by ALPN: the limits of their HTTP/2
    /// connections.
    pub(super) alpn: Option<Limits>,
    pub(super) idle_timeout: Duration,
    /// Whether the idle-connection sweep task runs.
    pub(super) sweeping: std::sync::atomic::AtomicBool,
    /// Read lock-free per request; a new endpoint copies the map once.
    pub(super) endpoints: ArcSwap<HashMap<Arc<str>, Endpoint>>,
    pub(super) writer: Mutex<()>,
    pub(super) counters: Arc<Counters>,
    /// The cluster's circuit breaker (connection and pending-request slots).
    pub(super) breaker: Arc<mesh_resilience::circuit_breaker::CircuitBreaker>,
    /// When an HTTP/1.1 connection retires.
    pub(super) life: super::config::Lifetime,
}

impl Shared {
    /// The dialer of one endpoint's HTTP/1.1 connections.
    pub(super) fn dial_h1(&self, target: Uri) -> http1::Dial {
        match &self.transport {
            Transport::Tls(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move || Box::pin(http1::dial(connect.clone())))
            }
            Transport::Plain(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move || Box::pin(http1::dial(connect.clone())))
            }
            Transport::Hbone(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move || Box::pin(http1::dial(connect.clone())))
            }
        }
    }

    /// The dialer of one endpoint's HTTP/2 connections.
    pub(super) fn dial_h2(&self, target: Uri) -> h2_conn::Dial {
        match &self.transport {
            Transport::Tls(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move |known| Box::pin(h2_conn::dial(connect.clone(), known)))
            }
            Transport::Plain(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move |known| Box::pin(h2_conn::dial(connect.clone(), known)))
            }
            Transport::Hbone(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move |known| Box::pin(h2_conn::dial(connect.clone(), known)))
            }
        }
    }

    /// Starts, once per pool, the task that closes HTTP/1.1 and HTTP/2 connections idle for longer
    /// than the idle timeout (a quarter of it between sweeps); it ends with the pool.
    pub(super) fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Relaxed);
            return;
        };
        let pool = Arc::downgrade(self);
        let period = (self.idle_timeout / 4).max(Duration::from_millis(50));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = pool.upgrade() else { return };
                let now = std::time::Instant::now();
                for ep in shared.endpoints.load().values() {
                    match ep {
                        Endpoint::H1(set) => set.sweep(shared.idle_timeout, now),
                        Endpoint::H2(set) => set.sweep(shared.idle_timeout, period),
                        Endpoint::Alpn(set) => {
                            set.h1.sweep(shared.idle_timeout, now);
                            set.h2.sweep(shared.idle_timeout, period);
                        }
                    }
                }
            }
        });
    }

    /// One ALPN endpoint's connections (TLS only: ALPN needs it).
    pub(super) fn alpn_set(&self, target: Uri, limits: Limits) -> Option<AlpnSet> {
        let Transport::Tls(c) = &self.transport else {
            return None;
        };
        let connect = Fixed::new(c.clone(), target, self.counters.clone());
        let dial: alpn::Dial = Arc::new(move |known| Box::pin(alpn::dial(connect.clone(), known)));
        let chosen = Arc::<alpn::Chosen>::default();
        let h1 = H1Set::new(
            alpn::h1_dial(dial.clone(), chosen.clone()),
            self.breaker.clone(),
            self.life,
        );
        let h2 = H2Set::new(limits, alpn::h2_dial(dial.clone(), chosen.clone()));
        Some(AlpnSet::new(h1, h2, chosen, dial))
    }
}
