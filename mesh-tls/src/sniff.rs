//! Tells a TLS ClientHello from plaintext by its first bytes, so one port can serve both
//! (Istio's PERMISSIVE mode).
//!
//! A TLS connection opens with a handshake record: content type `0x16`, then the record
//! version `0x03 0x00..=0x04`. Anything else (an HTTP/1 method, the HTTP/2 preface) is
//! plaintext. The bytes read to decide are replayed by [`Rewind`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS handshake record.
    Tls,
    /// Anything else.
    Plaintext,
}

/// Bytes needed for a decision.
pub const SNIFF_LEN: usize = 3;

/// Classifies a connection's first bytes; `None` when more bytes are needed.
///
/// ```
/// use mesh_tls::sniff::{Sniffed, classify};
/// assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Plaintext));
/// assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Some(Sniffed::Tls));
/// assert_eq!(classify(&[0x16]), None);
/// ```
pub fn classify(prefix: &[u8]) -> Option<Sniffed> {
    match prefix {
        [] => None,
        [0x16] | [0x16, 0x03] => None,
        [0x16, 0x03, minor, ..] if *minor <= 0x04 => Some(Sniffed::Tls),
        _ => Some(Sniffed::Plaintext),
    }
}

/// Reads until [`classify`] decides (at most [`SNIFF_LEN`] bytes) and returns the
/// decision with a stream that replays what was read. A connection closed before a
/// decision is plaintext (the HTTP server will see the short input and the close).
pub async fn sniff<IO>(mut io: IO) -> io::Result<(Sniffed, Rewind<IO>)>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = [0u8; SNIFF_LEN];
    let mut len = 0;
    let kind = loop {
        if let Some(kind) = classify(&buf[..len]) {
            break kind;
        }
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            break Sniffed::Plaintext;
        }
        len += n;
    };
    Ok((
        kind,
        Rewind {
            prefix: buf,
            start: 0,
            end: len,
            inner: io,
        },
    ))
}

/// [`sniff`] within `timeout`: a client that does not send the deciding bytes in time
/// gets an error of kind `TimedOut` (the caller closes the connection).
pub async fn sniff_within<IO>(
    timeout: std::time::Duration,
    io: IO,
) -> io::Result<(Sniffed, Rewind<IO>)>
where
    IO: AsyncRead + Unpin,
{
    tokio::time::timeout(timeout, sniff(io))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS or plaintext bytes within {timeout:?}"),
            )
        })?
}

/// A stream that first yields the sniffed bytes, then reads from the inner stream.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: [u8; SNIFF_LEN],
    start: usize,
    end: usize,
    inner: IO,
}

impl<IO> Rewind<IO> {
    /// The wrapped I/O.
    pub(crate) fn inner_mut(&mut self) -> &mut IO {
        &mut self.inner
    }

    /// `inner` with nothing to replay (a connection that was not sniffed).
    pub fn unsniffed(inner: IO) -> Self {
        Self {
            prefix: [0; SNIFF_LEN],
            start: 0,
            end: 0,
            inner,
        }
    }

    /// The inner stream (for socket addresses).
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.start < self.end {
            let n = (self.end - self.start).min(buf.remaining());
            let start = self.start;
            buf.put_slice(&self.prefix[start..start + n]);
            self.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let cases: &[(&[u8], Option<Sniffed>)] = &[
            (b"", None),
            (&[0x16], None),
            (&[0x16, 0x03], None),
            (&[0x16, 0x03, 0x00], Some(Sniffed::Tls)),
            (&[0x16, 0x03, 0x01], Some(Sniffed::Tls)),
            (&[0x16, 0x03, 0x03, 0x00], Some(Sniffed::Tls)),
            (&[0x16, 0x03, 0x05], Some(Sniffed::Plaintext)),
            (&[0x16, 0x02, 0x01], Some(Sniffed::Plaintext)),
            (&[0x17, 0x03, 0x03], Some(Sniffed::Plaintext)),
            (b"GET / HTTP/1.1", Some(Sniffed::Plaintext)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Some(Sniffed::Plaintext),
            ),
            (b"G", Some(Sniffed::Plaintext)),
        ];
        for (input, want) in cases {
            assert_eq!(classify(input), *want, "{input:?}");
        }
    }

    #[tokio::test]
    async fn sniff_replays_what_it_read_even_split_across_reads() {
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(&[0x16]).await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(&[0x03, 0x01, 0xAA, 0xBB]).await.unwrap();
        });
        let (kind, mut rewound) = sniff(server).await.unwrap();
        task.await.unwrap();
        assert_eq!(kind, Sniffed::Tls);
        let mut got = [0u8; 5];
        rewound.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0x16, 0x03, 0x01, 0xAA, 0xBB]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (_client, server) = tokio::io::duplex(64);
        let err = sniff_within(std::time::Duration::from_secs(1), server)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn early_close_is_plaintext() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let (kind, _) = sniff(server).await.unwrap();
        assert_eq!(kind, Sniffed::Plaintext);
    }
}
