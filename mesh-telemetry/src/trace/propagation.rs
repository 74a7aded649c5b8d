//! W3C Trace Context (`traceparent`) and B3 (single `b3` header and multi `X-B3-*`)
//! propagation.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use rand::Rng;

/// Which header formats to extract and inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    /// W3C `traceparent` only.
    W3c,
    /// B3 multi-header (`X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`).
    B3,
    /// Both (Istio's Envoy sidecars forward both); extraction prefers `traceparent`.
    #[default]
    Both,
}

/// The trace position of one span: its trace, its id and its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id (never all zero).
    pub trace_id: [u8; 16],
    /// 8-byte span id of this span (never all zero).
    pub span_id: [u8; 8],
    /// The parent span (absent for a root span).
    pub parent_span_id: Option<[u8; 8]>,
    /// Whether the trace is sampled.
    pub sampled: bool,
}

fn nonzero<const N: usize>(rng: &mut impl Rng) -> [u8; N] {
    loop {
        let b: [u8; N] = rng.random();
        if b.iter().any(|x| *x != 0) {
            return b;
        }
    }
}

/// Lowercase hex, two digits a byte (ids are formatted on every traced call: no `fmt`).
fn hex(bytes: &[u8]) -> String {
    let mut buf = [0u8; 32];
    let out = hex_into(bytes, &mut buf);
    // Only ASCII digits were written.
    String::from_utf8_lossy(out).into_owned()
}

/// Writes `bytes` as lowercase hex into `buf` (twice their length, at most 32 bytes) and
/// returns the written part: header values are built from it without a `String`.
fn hex_into<'a>(bytes: &[u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len().min(16);
    for (i, b) in bytes[..n].iter().enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    &buf[..2 * n]
}

/// The propagation headers [`TraceContext::inject`] replaces.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    out.iter().any(|b| *b != 0).then_some(out)
}

impl TraceContext {
    /// A new root span of a new sampled trace.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: nonzero(&mut rng),
            span_id: nonzero(&mut rng),
            parent_span_id: None,
            sampled: true,
        }
    }

    /// A child span: same trace, new span id, this span as parent.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: nonzero(&mut rand::rng()),
            parent_span_id: Some(self.span_id),
            sampled: self.sampled,
        }
    }

    /// The trace id in lowercase hex (32 characters).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in lowercase hex (16 characters).
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The `traceparent` value, e.g. `00-<trace>-<span>-01`.
    pub fn traceparent(&self) -> String {
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// `traceparent` as ASCII bytes on the stack: `00-` 32 hex `-` 16 hex `-01`.
    fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = [0u8; 55];
        let mut buf = [0u8; 32];
        out[..3].copy_from_slice(b"00-");
        out[3..35].copy_from_slice(hex_into(&self.trace_id, &mut buf));
        out[35] = b'-';
        out[36..52].copy_from_slice(hex_into(&self.span_id, &mut buf));
        out[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        out
    }

    /// Parses a W3C `traceparent` (version 00; later versions are read as 00 per the
    /// spec). The parsed span is the *caller's*: call [`child`](Self::child) for ours.
    ///
    /// ```
    /// use mesh_telemetry::trace::TraceContext;
    /// let c = TraceContext::from_traceparent(
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
    /// assert!(TraceContext::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
    /// ```
    pub fn from_traceparent(v: &str) -> Option<Self> {
        let mut parts = v.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let flags = unhex::<1>(flags)
            .map(|f| f[0])
            .or_else(|| (flags == "00").then_some(0))?;
        Some(Self {
            trace_id: unhex(trace)?,
            span_id: unhex(span)?,
            parent_span_id: None,
            sampled: flags & 1 == 1,
        })
    }

    /// Reads the caller's context: `traceparent`, then `b3`, then `X-B3-*` (as allowed
    /// by `propagation`). Malformed headers are ignored (a new trace starts).
    pub fn extract(headers: &HeaderMap, propagation: Propagation) -> Option<Self> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if propagation != Propagation::B3
            && let Some(c) = get("traceparent").and_then(Self::from_traceparent)
        {
            return Some(c);
        }
        if propagation == Propagation::W3c {
            return None;
        }
        if let Some(b3) = get("b3") {
            // {trace}-{span}[-{sampled}[-{parent}]]; 64-bit trace ids are left-padded.
            let mut p = b3.split('-');
            let (trace, span) = (p.next()?, p.next()?);
            let sampled = p.next().is_none_or(|s| s == "1" || s == "d");
            return Some(Self {
                trace_id: b3_trace(trace)?,
                span_id: unhex(span)?,
                parent_span_id: None,
                sampled,
            });
        }
        let trace = b3_trace(get("x-b3-traceid")?)?;
        let span = unhex(get("x-b3-spanid")?)?;
        let sampled = get("x-b3-sampled").is_none_or(|s| s == "1" || s == "true")
            || get("x-b3-flags") == Some("1");
        Some(Self {
            trace_id: trace,
            span_id: span,
            parent_span_id: None,
            sampled,
        })
    }

    /// Writes this span as the parent of the next hop (replacing any propagation
    /// headers already present).
    pub fn inject(&self, headers: &mut HeaderMap, propagation: Propagation) {
        // Injected on every traced call: static names, values built on the stack.
        for h in [
            TRACEPARENT,
            B3,
            B3_TRACE_ID,
            B3_SPAN_ID,
            B3_PARENT_SPAN_ID,
            B3_SAMPLED,
            B3_FLAGS,
        ] {
            headers.remove(h);
        }
        // Room for these and the few a router adds after them (attempt count, expected
        // timeout): the map grows once, not at every few inserts (each growth reallocates
        // its two tables).
        headers.reserve(8);
        let mut put = |name: HeaderName, v: Option<HeaderValue>| {
            if let Some(v) = v {
                headers.insert(name, v);
            }
        };
        // Every value is a slice of one buffer: the traceparent holds the hex trace and span
        // ids B3 sends, the parent's follows it. One allocation (the buffer, owned by the
        // `Bytes` with its reference count) instead of one per header.
        let mut buf = [0u8; 71];
        buf[..55].copy_from_slice(&self.traceparent_bytes());
        let mut len = 55;
        if propagation != Propagation::W3c
            && let Some(p) = self.parent_span_id
        {
            let mut hex = [0u8; 32];
            buf[55..71].copy_from_slice(hex_into(&p, &mut hex));
            len = 71;
        }
        let all = bytes::Bytes::from_owner(buf);
        // Validated (visible ASCII), not copied.
        let value =
            |range: std::ops::Range<usize>| HeaderValue::from_maybe_shared(all.slice(range)).ok();
        if propagation == Propagation::W3c {
            put(TRACEPARENT, value(0..55));
            return;
        }
        if propagation != Propagation::B3 {
            put(TRACEPARENT, value(0..55));
        }
        put(B3_TRACE_ID, value(3..35));
        put(B3_SPAN_ID, value(36..52));
        if len == 71 {
            put(B3_PARENT_SPAN_ID, value(55..71));
        }
        let sampled = if self.sampled { "1" } else { "0" };
        put(B3_SAMPLED, Some(HeaderValue::from_static(sampled)));
    }
}

fn b3_trace(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => unhex(s),
        16 => {
            let low: [u8; 8] = unhex(s)?;
            let mut out = [0u8; 16];
            out[8..].copy_from_slice(&low);
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejections() {
        let c = TraceContext::new_root();
        assert_eq!(TraceContext::from_traceparent(&c.traceparent()), Some(c));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn b3_single_and_multi() {
        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
                .parse()
                .unwrap(),
        );
        let c = TraceContext::extract(&h, Propagation::Both).unwrap();
        assert_eq!(c.trace_id_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(c.span_id_hex(), "e457b5a2e4d86bd1");
        assert!(TraceContext::extract(&h, Propagation::W3c).is_none());

        let mut h = HeaderMap::new();
        c.child().inject(&mut h, Propagation::B3);
        assert!(h.get("traceparent").is_none());
        let back = TraceContext::extract(&h, Propagation::B3).unwrap();
        assert_eq!(back.trace_id, c.trace_id);
        assert_eq!(h["x-b3-parentspanid"], "e457b5a2e4d86bd1");

        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", "64fe8b2a57d3eff7".parse().unwrap());
        h.insert("x-b3-spanid", "e457b5a2e4d86bd1".parse().unwrap());
        let c = TraceContext::extract(&h, Propagation::Both).unwrap();
        assert_eq!(c.trace_id_hex(), "000000000000000064fe8b2a57d3eff7");
    }

    #[test]
    fn inject_writes_every_header_exactly() {
        let c = TraceContext {
            trace_id: *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36",
            span_id: *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7",
            parent_span_id: Some(*b"\xe4\x57\xb5\xa2\xe4\xd8\x6b\xd1"),
            sampled: true,
        };
        let mut h = HeaderMap::new();
        h.insert("b3", "stale".parse().unwrap());
        h.insert("x-b3-flags", "1".parse().unwrap());
        c.inject(&mut h, Propagation::Both);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-spanid"], "00f067aa0ba902b7");
        assert_eq!(h["x-b3-parentspanid"], "e457b5a2e4d86bd1");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(h.get("b3").is_none() && h.get("x-b3-flags").is_none());
        assert_eq!(h.len(), 5);

        let quiet = TraceContext {
            sampled: false,
            parent_span_id: None,
            ..c
        };
        quiet.inject(&mut h, Propagation::W3c);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(h.len(), 1);
        assert_eq!(quiet.traceparent(), h["traceparent"]);
    }

    #[test]
    fn traceparent_wins_over_b3() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        let mut h = HeaderMap::new();
        b.inject(&mut h, Propagation::B3);
        h.insert("traceparent", a.traceparent().parse().unwrap());
        assert_eq!(
            TraceContext::extract(&h, Propagation::Both)
                .unwrap()
                .trace_id,
            a.trace_id
        );
        assert_eq!(
            TraceContext::extract(&h, Propagation::B3).unwrap().trace_id,
            b.trace_id
        );
    }
}
