//! TLS handshakes off the request workers.
//!
//! A handshake's public-key steps (X25519, the P-256 signature and the chain checks) run
//! inside one `poll` that does not yield: on the runtime that carries requests, every request
//! queued on that worker waits for it, which is what a new endpoint or a reconnect does to the
//! tail. So on a multi-threaded runtime the connector and the acceptor run the handshake (TCP
//! connect included) on a small runtime of their own, threads named `mesh-tls-handshake`,
//! which the OS preempts when a request worker wakes; the socket is then registered again
//! with the caller's runtime ([`rehome`]), where the connection lives from then on. A
//! current-thread runtime keeps its handshakes: the app asked for one thread.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! // what `MeshConnector` does with its dial
//! let mut tcp = mesh_tls::handshake::offload(tokio::net::TcpStream::connect("10.0.0.7:9080"))
//!     .await?;
//! mesh_tls::handshake::rehome(&mut tcp)?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use tokio::net::TcpStream;
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use crate::sniff::Rewind;

/// Threads of the handshake runtime: one per core (a burst of handshakes runs as fast as
/// on the workers, each preemptible).
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The handshake runtime, started on first use; `None` if its threads cannot start (then
/// handshakes stay where they are).
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads())
                .thread_name("mesh-tls-handshake")
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "no handshake threads: handshakes run on the workers"))
                .ok()
        })
        .as_ref()
}

/// Whether handshakes started from here leave the current runtime: it is multi-threaded
/// (a current-thread runtime, or no runtime, keeps them) and the handshake threads run.
pub fn offloads() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        && runtime().is_some()
}

/// Runs `handshake` on the handshake threads when [`offloads`] says so, else here. Sockets
/// it creates or takes are registered with the runtime that polled them: [`rehome`] each
/// before using it here. Dropping the returned future aborts the handshake.
///
/// # Panics
/// When `handshake` panics (as awaiting it here would).
pub async fn offload<F>(handshake: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(rt) = runtime().filter(|_| offloads()) else {
        return handshake.await;
    };
    let mut task = AbortOnDrop(rt.spawn(handshake));
    match (&mut task.0).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only the handshake runtime's shutdown cancels it, and it is never shut down.
        Err(e) => panic!("handshake task cancelled: {e}"),
    }
}

/// [`offload`] when `offloaded`, else `handshake` here.
pub(crate) async fn offload_if<F>(offloaded: bool, handshake: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if offloaded {
        offload(handshake).await
    } else {
        handshake.await
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers `tcp` with the current runtime (a duplicate of its descriptor is, and the old
/// registration is dropped): the socket's readiness is then seen by the runtime that polls
/// it. Call it from within that runtime.
pub fn rehome(tcp: &mut TcpStream) -> io::Result<()> {
    let dup = std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?);
    let here = TcpStream::from_std(dup)?;
    drop(std::mem::replace(tcp, here));
    Ok(())
}

/// The socket under `io` when it is one the handshake can move with: a `TcpStream`, or
/// the sniffer's `Rewind<TcpStream>`.
pub(crate) fn socket_of(io: &mut dyn Any) -> Option<&mut TcpStream> {
    if io.is::<TcpStream>() {
        return io.downcast_mut::<TcpStream>();
    }
    io.downcast_mut::<Rewind<TcpStream>>()
        .map(Rewind::inner_mut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_multi_threaded_runtime_hands_the_work_to_the_handshake_threads() {
        let name = offload(async { std::thread::current().name().map(str::to_owned) }).await;
        assert_eq!(name.as_deref(), Some("mesh-tls-handshake"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_current_thread_runtime_keeps_its_handshakes() {
        let here = std::thread::current().id();
        assert_eq!(offload(async { std::thread::current().id() }).await, here);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_rehomed_socket_carries_bytes_after_the_handshake_runtime_let_go() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let mut tcp = offload(TcpStream::connect(addr)).await.unwrap();
        rehome(&mut tcp).unwrap();
        tcp.write_all(b"ping").await.unwrap();
        let mut buf = [0; 4];
        tcp.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn dropping_the_wait_aborts_the_handshake() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let wait = offload(async move {
            let _tx = tx; // dropped when the task is aborted
            std::future::pending::<()>().await;
        });
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), wait)
                .await
                .is_err()
        );
        assert!(rx.await.is_err(), "the aborted handshake dropped its state");
    }
}
