//! Properties of the PERMISSIVE-mode sniffer on arbitrary first bytes delivered in
//! arbitrary read sizes: it decides as `classify` does on the bytes it needed (a
//! connection closed before a decision is plaintext), calls TLS only a handshake record
//! header, and the rewound stream replays the input byte for byte. The fuzz target
//! `fuzz/fuzz_targets/sniff.rs` checks the same with coverage guidance.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use mesh_tls::sniff::{SNIFF_LEN, Sniffed, classify, sniff};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Reads `data` in the given chunk sizes (then whatever is left), then EOF.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunks: Vec<usize>,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = if self.chunks.is_empty() {
            usize::MAX
        } else {
            self.chunks.remove(0)
        };
        let n = size.min(self.data.len() - self.pos).min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// First bytes biased towards TLS record headers, so both outcomes are common.
fn first_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![Just(0x16u8), Just(0x03), 0u8..6, any::<u8>()];
    prop::collection::vec(byte, 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sniff_decides_like_classify_and_replays_everything(
        data in first_bytes(),
        chunks in prop::collection::vec(1usize..4, 0..6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let io = Chunked { data: data.clone(), pos: 0, chunks };
        let (kind, replay) = rt.block_on(async {
            let (kind, mut rewound) = sniff(io).await.unwrap();
            let mut replay = Vec::new();
            rewound.read_to_end(&mut replay).await.unwrap();
            (kind, replay)
        });
        let head = &data[..data.len().min(SNIFF_LEN)];
        prop_assert_eq!(kind, classify(head).unwrap_or(Sniffed::Plaintext));
        if kind == Sniffed::Tls {
            prop_assert!(data[0] == 0x16 && data[1] == 0x03 && data[2] <= 0x04);
        }
        prop_assert_eq!(replay, data);
    }
}
