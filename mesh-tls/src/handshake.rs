//! TLS handshakes off the request workers.
//!
//! A handshake's public-key steps (X25519, the P-256 signature and the chain checks) run
//! inside one `poll` that does not yield: on the runtime that carries requests, every request
//! queued on that worker waits for it, which is what a new endpoint or a reconnect does to the
//! tail. So on a multi-threaded runtime the connector and the acceptor run the handshake (TCP
//! connect included) on a small runtime of their own, threads named `mesh-tls-handshake`,
//! which the OS preempts when a request worker wakes; the socket is then registered again
//! with the caller's runtime ([`rehome`]), where the connection lives from then on, and is
//! handed back once that runtime has seen it ready. A current-thread runtime keeps its
//! handshakes: the app asked for one thread.
//!
//! ```no_run
//! # async fn run(config: std::sync::Arc<rustls::ClientConfig>) -> std::io::Result<()> {
//! use rustls::pki_types::ServerName;
//! // what `MeshConnector` does with its dial
//! let dial = async move {
//!     let tcp = tokio::net::TcpStream::connect("10.0.0.7:9080").await?;
//!     let name = ServerName::try_from("reviews.default.svc").expect("a DNS name");
//!     tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
//! };
//! // `dial` runs on the handshake threads; the stream is ready to use here.
//! let tls = mesh_tls::handshake::connect(dial, |rehome_failed| rehome_failed).await?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use tokio::io::Interest;
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

/// The handshake runtime when handshakes started from here leave the current runtime: it is
/// multi-threaded (a current-thread runtime, or no runtime, keeps them) and the handshake
/// threads run.
fn target() -> Option<&'static Runtime> {
    Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
        .then(runtime)
        .flatten()
}

/// Whether handshakes started from here leave the current runtime (see [`offload`]).
pub fn offloads() -> bool {
    target().is_some()
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
    run_on(target(), handshake).await
}

async fn run_on<F>(runtime: Option<&'static Runtime>, handshake: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(rt) = runtime else {
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

/// A client's connect and TLS handshake, [`offload`]ed, the socket of the stream it returns
/// [`rehome`]d here; `rehome_failed` turns a failure of that into the caller's error.
pub async fn connect<S, E, F>(
    handshake: F,
    rehome_failed: impl FnOnce(io::Error) -> E,
) -> Result<S, E>
where
    F: Future<Output = Result<S, E>> + Send + 'static,
    S: Handshaken + Send + 'static,
    E: Send + 'static,
{
    let runtime = target();
    let mut stream = run_on(runtime, handshake).await?;
    match stream.socket() {
        Some(tcp) if runtime.is_some() => settle(tcp).await.map_err(rehome_failed)?,
        _ => {}
    }
    Ok(stream)
}

/// A server's TLS handshake on the accepted `io`, [`offload`]ed when `io` is a socket that
/// can move (a `TcpStream`, or the sniffer's `Rewind<TcpStream>`): the socket is registered
/// with the handshake threads for it and back here in the stream it returns. Other I/O is
/// handshaken here.
pub async fn accept<IO, S, F, Fut>(mut io: IO, handshake: F) -> io::Result<S>
where
    IO: Any + Send,
    F: FnOnce(IO) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: Handshaken + Send + 'static,
{
    let runtime = target().filter(|_| socket_of(&mut io).is_some());
    let moved = runtime.is_some();
    let run = async move {
        if moved && let Some(tcp) = socket_of(&mut io) {
            rehome(tcp)?;
        }
        handshake(io).await
    };
    let mut stream = run_on(runtime, run).await?;
    match stream.socket() {
        Some(tcp) if moved => settle(tcp).await?,
        _ => {}
    }
    Ok(stream)
}

/// [`rehome`]s `tcp` here and waits until this runtime has seen its readiness. A new
/// registration has none: until the reactor's next turn, every read and write on it returns
/// `Pending`, which a stream that never left the runtime does not do after its handshake. A
/// TLS writer then keeps the bytes of a write that is not flushed, and a caller that writes,
/// then waits to read, waits forever.
async fn settle(tcp: &mut TcpStream) -> io::Result<()> {
    rehome(tcp)?;
    // A connected socket is writable at once (or readable, or closed: any readiness counts).
    tcp.ready(Interest::READABLE | Interest::WRITABLE).await?;
    Ok(())
}

/// A handshaken stream whose socket [`connect`] and [`accept`] can register again.
pub trait Handshaken {
    /// The socket under the stream, when it is one that can move.
    fn socket(&mut self) -> Option<&mut TcpStream>;
}

/// A plain TCP connection (a connect [`offload`]ed with no TLS on top).
impl Handshaken for TcpStream {
    fn socket(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }
}

impl<IO: Any> Handshaken for tokio_rustls::client::TlsStream<IO> {
    fn socket(&mut self) -> Option<&mut TcpStream> {
        socket_of(self.get_mut().0)
    }
}

impl<IO: Any> Handshaken for tokio_rustls::server::TlsStream<IO> {
    fn socket(&mut self) -> Option<&mut TcpStream> {
        socket_of(self.get_mut().0)
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
fn socket_of(io: &mut dyn Any) -> Option<&mut TcpStream> {
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
    async fn a_stream_comes_back_ready_to_write_like_one_that_never_left() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move { listener.accept().await.unwrap() });
        let tcp = connect(TcpStream::connect(addr), |e| e).await.unwrap();
        // `try_write` does not wait for the reactor: it fails with `WouldBlock` while the
        // runtime has seen no readiness for the socket.
        assert_eq!(tcp.try_write(b"ping").unwrap(), 4);
        let (server, _) = peer.await.unwrap();
        let server = accept(server, |io| async move { Ok::<_, io::Error>(io) })
            .await
            .unwrap();
        assert_eq!(server.try_write(b"pong").unwrap(), 4);
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
