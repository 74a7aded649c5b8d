//! Graceful drain: listeners stop accepting when the stop signal flips, then wait for the
//! connections they accepted (HTTP connections are told to finish: HTTP/2 GOAWAY, HTTP/1
//! `connection: close` after the in-flight response, idle ones close at once).

use std::net::SocketAddr;
use std::time::Duration;

use mesh_tls::server::{ConnectionPermit, LimitedListener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The next accepted connection, or `None` once `stop` is set (or its sender is gone).
pub(crate) async fn next_conn(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            () = stopped(stop) => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, remote));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The next connection admitted under `listener`'s cap (see `LimitedListener::accept`),
/// or `None` once `stop` is set (or its sender is gone).
pub(crate) async fn next_limited(
    listener: &mut LimitedListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, ConnectionPermit)> {
    tokio::select! {
        biased;
        () = stopped(stop) => None,
        accepted = listener.accept() => Some(accepted),
    }
}

/// Completes when `stop` is set or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Counts live tunnels (connections that cannot be told to finish, like TCP
/// passthroughs) so a drain can wait for them.
#[derive(Debug)]
pub(crate) struct Tunnels {
    tx: watch::Sender<()>,
}

/// Held by one live tunnel.
#[derive(Debug)]
pub(crate) struct TunnelGuard {
    _rx: watch::Receiver<()>,
}

impl Tunnels {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::channel(()).0,
        }
    }

    /// Registers a tunnel; it is live until the guard drops.
    pub(crate) fn guard(&self) -> TunnelGuard {
        TunnelGuard {
            _rx: self.tx.subscribe(),
        }
    }

    /// Waits until every guard has dropped.
    pub(crate) async fn wait(self) {
        self.tx.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        assert!(next_conn(&listener, &mut rx).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn tunnels_wait_for_every_guard() {
        let tunnels = Tunnels::new();
        let g = tunnels.guard();
        let wait = tokio::spawn(tunnels.wait());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!wait.is_finished());
        drop(g);
        tokio::time::timeout(Duration::from_secs(1), wait)
            .await
            .unwrap()
            .unwrap();
    }
}
