use super::*;
use tower::BoxError;

fn head(status: u16, grpc: Option<&str>) -> Classification {
    let mut h = HeaderMap::new();
    if let Some(g) = grpc {
        h.insert("grpc-status", g.parse().unwrap());
    }
    FailureClassifier.classify_head(StatusCode::from_u16(status).unwrap(), &h)
}

#[test]
fn http_status_classes() {
    assert!(head(200, None).is_success());
    assert!(
        head(404, None).is_success(),
        "4xx is the caller's fault, not the host's"
    );
    let c = head(500, None);
    assert!(c.is_5xx() && !c.is_gateway_failure() && !c.is_success());
    for s in [502, 503, 504] {
        assert!(head(s, None).is_gateway_failure());
    }
}

#[test]
fn grpc_status_in_headers_and_trailers() {
    assert_eq!(head(200, Some("14")).grpc_status(), Some(14));
    assert!(!head(200, Some("14")).is_success());
    assert!(
        head(200, Some("5")).is_success(),
        "NOT_FOUND is not a server failure"
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "13".parse().unwrap());
    let c = FailureClassifier.classify_trailers(head(200, None), &trailers);
    assert_eq!(c.grpc_status(), Some(13));
    assert_eq!(
        head(200, Some("nope")).grpc_status(),
        None,
        "garbage is ignored"
    );
}

#[derive(Debug)]
struct Wrap(BoxError);
impl std::fmt::Display for Wrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wrapped")
    }
}
impl StdError for Wrap {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

fn kind_of(e: BoxError) -> ErrorKind {
    error_kind(&*e)
}

#[test]
fn errors_by_cause_chain() {
    let io = |k| -> BoxError { Box::new(io::Error::from(k)) };
    assert_eq!(
        kind_of(io(io::ErrorKind::ConnectionRefused)),
        ErrorKind::ConnectFailure
    );
    assert_eq!(
        kind_of(io(io::ErrorKind::ConnectionReset)),
        ErrorKind::Reset
    );
    assert_eq!(
        kind_of(Box::new(Wrap(io(io::ErrorKind::ConnectionReset)))),
        ErrorKind::Reset
    );
    assert_eq!(
        kind_of(Box::new(Wrap(io(io::ErrorKind::TimedOut)))),
        ErrorKind::Timeout
    );
    assert_eq!(
        kind_of(Box::new(ConnectFailed(io(io::ErrorKind::ConnectionReset)))),
        ErrorKind::ConnectFailure,
        "a reset during connect is a connect failure"
    );
    assert_eq!(
        kind_of(Box::new(Wrap(Box::new(mesh_core::ConnectError(io(
            io::ErrorKind::TimedOut
        )))))),
        ErrorKind::ConnectFailure,
        "mesh-core's connect error (mesh-route's pool), wrapped, with a connect timeout"
    );
    assert_eq!(
        kind_of(Box::new(crate::timeout::TimedOut)),
        ErrorKind::Timeout
    );
    #[cfg(feature = "h2")]
    assert_eq!(
        kind_of(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM))),
        ErrorKind::RefusedStream
    );
    assert_eq!(kind_of("something else".into()), ErrorKind::Other);
    assert!(Classification::Error(ErrorKind::Other).is_gateway_failure());
}
