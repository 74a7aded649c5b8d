//! The PERMISSIVE-mode ClientHello sniffer on arbitrary first bytes, delivered in
//! arbitrary read sizes: `sniff` must not panic, must decide exactly as `classify` does on
//! the bytes it needed, and the rewound stream must replay the input byte for byte.

#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mesh_tls::sniff::{SNIFF_LEN, Sniffed, classify, sniff};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    /// Bytes handed out per read (0 is read as 1).
    chunks: Vec<u8>,
}

/// Reads `data` in the given chunk sizes, then EOF.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunks: Vec<u8>,
    next: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = self
            .chunks
            .get(self.next)
            .map_or(usize::MAX, |&c| usize::from(c.max(1)));
        self.next += 1;
        let n = size.min(self.data.len() - self.pos).min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|input: Input| {
    let Input { data, chunks } = input;
    let io = Chunked {
        data: data.clone(),
        pos: 0,
        chunks,
        next: 0,
    };
    runtime().block_on(async {
        let (kind, mut rewound) = sniff(io).await.expect("reads from memory do not fail");
        let head = &data[..data.len().min(SNIFF_LEN)];
        let want = classify(head).unwrap_or(Sniffed::Plaintext);
        assert_eq!(kind, want, "sniff disagrees with classify on {head:?}");
        if kind == Sniffed::Tls {
            assert!(data[0] == 0x16 && data[1] == 0x03 && data[2] <= 0x04);
        }
        let mut replay = Vec::new();
        rewound
            .read_to_end(&mut replay)
            .await
            .expect("reads from memory do not fail");
        assert_eq!(replay, data, "the rewound stream must replay the input");
    });
});
