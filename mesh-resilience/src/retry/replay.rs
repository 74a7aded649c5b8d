//! [`ReplayBody`]: a request body that can be sent again, buffered up to a byte cap while
//! it streams (the idea of linkerd2-proxy's `ReplayBody`).
//!
//! The first attempt streams the original body and records each data frame. A retry
//! clones the body: the clone replays the recorded frames, then continues with the
//! original body where the earlier attempt left it. Once more than `cap` bytes have been
//! seen, recording stops and the buffer is freed: [`ReplayBody::is_capped`] turns true and
//! the request is not retried. Recording also stops when the reader has no clone left
//! (nothing can replay it any more), so a long stream keeps no buffer after its attempt
//! is decided.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tower::BoxError;

/// The error a replay gets when the body went past the cap (the retry layer checks
/// [`ReplayBody::is_capped`] first, so a retried request never sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLargeToReplay;

impl std::fmt::Display for BodyTooLargeToReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body is larger than the retry buffer and cannot be replayed")
    }
}

impl std::error::Error for BodyTooLargeToReplay {}

struct Shared<B> {
    inner: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    buffered: usize,
    cap: usize,
    capped: bool,
    trailers: Option<HeaderMap>,
    ended: bool,
}

/// A request body that can be replayed for retries (see the module docs).
pub struct ReplayBody<B> {
    state: State<B>,
}

enum State<B> {
    /// The body had ended before the first attempt (a GET's): nothing to record, box or
    /// share. `replayable` is false for [`ReplayBody::direct`].
    Empty { replayable: bool },
    /// No retry possible: the body is passed through untouched.
    Direct(Pin<Box<B>>),
    Shared {
        shared: Arc<Mutex<Shared<B>>>,
        /// Next recorded chunk to replay.
        pos: usize,
        /// This reader went past the cap and now reads the original body directly.
        live: bool,
        trailers_sent: bool,
    },
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field(
                "replayable",
                &matches!(
                    self.state,
                    State::Shared { .. } | State::Empty { replayable: true }
                ),
            )
            .field("capped", &self.is_capped())
            .finish()
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, recording up to `cap` bytes. A body whose size hint already says it is
    /// larger than `cap` is passed through and never replayed.
    pub fn new(body: B, cap: usize) -> Self {
        if body.is_end_stream() {
            return Self {
                state: State::Empty { replayable: true },
            };
        }
        if body.size_hint().lower() > cap as u64 {
            return Self::direct(body);
        }
        Self {
            state: State::Shared {
                shared: Arc::new(Mutex::new(Shared {
                    inner: Some(Box::pin(body)),
                    chunks: Vec::new(),
                    buffered: 0,
                    cap,
                    capped: false,
                    trailers: None,
                    ended: false,
                })),
                pos: 0,
                live: false,
                trailers_sent: false,
            },
        }
    }

    /// Wraps `body` without recording it (no retry will be made).
    pub fn direct(body: B) -> Self {
        let state = if body.is_end_stream() {
            State::Empty { replayable: false }
        } else {
            State::Direct(Box::pin(body))
        };
        Self { state }
    }
}

impl<B> ReplayBody<B> {
    /// A body for another attempt, starting from the beginning; `None` when the body
    /// cannot be replayed (it was never recorded, or it went past the cap).
    pub fn try_clone(&self) -> Option<Self> {
        match &self.state {
            State::Empty { replayable: true } => Some(Self {
                state: State::Empty { replayable: true },
            }),
            State::Empty { .. } | State::Direct(_) => None,
            State::Shared { shared, .. } => {
                if lock(shared).capped {
                    return None;
                }
                Some(Self {
                    state: State::Shared {
                        shared: shared.clone(),
                        pos: 0,
                        live: false,
                        trailers_sent: false,
                    },
                })
            }
        }
    }

    /// Whether the body went past the cap (or was never recorded): no replay is possible.
    pub fn is_capped(&self) -> bool {
        match &self.state {
            State::Empty { replayable } => !replayable,
            State::Direct(_) => true,
            State::Shared { shared, .. } => lock(shared).capped,
        }
    }
}

fn lock<B>(m: &Mutex<Shared<B>>) -> std::sync::MutexGuard<'_, Shared<B>> {
    // A panic while holding the lock cannot leave the buffer half-written (pushes are
    // single operations), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (shared, pos, live, trailers_sent) = match &mut this.state {
            State::Empty { .. } => return Poll::Ready(None),
            State::Direct(b) => return b.as_mut().poll_frame(cx).map_err(Into::into),
            State::Shared {
                shared,
                pos,
                live,
                trailers_sent,
            } => (shared, pos, live, trailers_sent),
        };
        let mut s = lock(shared);
        if !*live {
            if s.capped {
                return Poll::Ready(Some(Err(BodyTooLargeToReplay.into())));
            }
            if let Some(chunk) = s.chunks.get(*pos) {
                *pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
        }
        if s.ended {
            if !*trailers_sent {
                *trailers_sent = true;
                if let Some(t) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(inner) = s.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match inner.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match frame {
            None => {
                s.ended = true;
                s.inner = None;
                *trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    // A reader without other clones can never be replayed: it stops
                    // recording (a long stream keeps no buffer once its spare is dropped).
                    let replayable = Arc::strong_count(shared) > 1;
                    if replayable && !s.capped && s.buffered + data.len() <= s.cap {
                        s.buffered += data.len();
                        s.chunks.push(data.clone());
                        *pos += 1;
                    } else {
                        // Past the cap (or alone): free the recording; this reader goes on
                        // alone.
                        s.capped = true;
                        s.chunks = Vec::new();
                        s.buffered = 0;
                        *live = true;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(t) => {
                        s.ended = true;
                        s.inner = None;
                        s.trailers = Some(t.clone());
                        *trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(t))))
                    }
                    Err(_) => Poll::Ready(None),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Empty { .. } => true,
            State::Direct(b) => b.is_end_stream(),
            State::Shared {
                shared,
                pos,
                live,
                trailers_sent,
            } => {
                let s = lock(shared);
                if !*live && *pos < s.chunks.len() {
                    return false;
                }
                if s.ended {
                    return *trailers_sent || s.trailers.is_none();
                }
                s.inner.as_ref().is_some_and(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Empty { .. } => SizeHint::with_exact(0),
            State::Direct(b) => b.size_hint(),
            State::Shared { shared, .. } => {
                let s = lock(shared);
                let recorded: u64 = s.chunks.iter().map(|c| c.len() as u64).sum();
                match &s.inner {
                    None if !s.capped => SizeHint::with_exact(recorded),
                    None => SizeHint::default(),
                    Some(b) => {
                        let h = b.size_hint();
                        let mut out = SizeHint::new();
                        out.set_lower(h.lower() + recorded);
                        if let Some(u) = h.upper() {
                            out.set_upper(u + recorded);
                        }
                        out
                    }
                }
            }
        }
    }
}
