//! W3C Trace Context (`traceparent`) and B3 (single `b3` header and multi `X-B3-*`)
//! propagation.

use http::HeaderMap;
use http::header::HeaderValue;
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
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

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
        format!(
            "00-{}-{}-{}",
            self.trace_id_hex(),
            self.span_id_hex(),
            if self.sampled { "01" } else { "00" }
        )
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
        for h in [
            "traceparent",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "x-b3-flags",
        ] {
            headers.remove(h);
        }
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(name, v);
            }
        };
        if propagation != Propagation::B3 {
            put("traceparent", self.traceparent());
        }
        if propagation != Propagation::W3c {
            put("x-b3-traceid", self.trace_id_hex());
            put("x-b3-spanid", self.span_id_hex());
            if let Some(p) = self.parent_span_id {
                put("x-b3-parentspanid", hex(&p));
            }
            put("x-b3-sampled", if self.sampled { "1" } else { "0" }.into());
        }
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
