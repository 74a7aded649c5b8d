use std::time::Duration;

use super::*;

#[test]
fn listener_name_is_host_and_port() {
    let req = Request::get("http://reviews:9080/x").body(()).unwrap();
    assert_eq!(
        listener_name(req.uri(), req.headers()).as_deref(),
        Some("reviews:9080")
    );
    let req = Request::get("http://reviews/x").body(()).unwrap();
    assert_eq!(
        listener_name(req.uri(), req.headers()).as_deref(),
        Some("reviews:80")
    );
    let req = Request::get("/x")
        .header("host", "ratings:9080")
        .body(())
        .unwrap();
    assert_eq!(
        listener_name(req.uri(), req.headers()).as_deref(),
        Some("ratings:9080")
    );
    let req = Request::get("/x").body(()).unwrap();
    assert_eq!(listener_name(req.uri(), req.headers()), None);
}

#[test]
fn route_timeout_defaults_and_zero_disables() {
    let d = Duration::from_secs(15);
    let mut p = RoutePolicy::default();
    assert_eq!(route_timeout(&p, d), Some(d));
    p.timeout = Some(Duration::ZERO);
    assert_eq!(route_timeout(&p, d), None);
    p.timeout = Some(Duration::from_secs(2));
    assert_eq!(route_timeout(&p, d), Some(Duration::from_secs(2)));
}

#[test]
fn upstream_uri_keeps_the_authority_and_applies_rewrites() {
    let forward = |host: Option<HostRewriteDecision>, path: Option<&str>| crate::Forward {
        cluster: "c".into(),
        path: path.map(str::to_owned),
        host,
        mirrors: vec![],
        policy: Arc::default(),
    };
    let uri: Uri = "http://reviews:9080/reviews/1?x=1".parse().unwrap();
    let u = upstream_uri(&uri, "reviews:9080", &forward(None, None)).unwrap();
    assert_eq!(u.to_string(), "http://reviews:9080/reviews/1?x=1");
    // Origin-form request: the authority comes from Host.
    let origin: Uri = "/a".parse().unwrap();
    let u = upstream_uri(&origin, "ratings:9080", &forward(None, None)).unwrap();
    assert_eq!(u.to_string(), "http://ratings:9080/a");
    let set = Some(HostRewriteDecision::Set("new.host".into()));
    let u = upstream_uri(&uri, "reviews:9080", &forward(set, Some("/v2/1"))).unwrap();
    assert_eq!(u.to_string(), "http://new.host/v2/1");
    assert!(upstream_uri(&uri, "reviews:9080", &forward(None, Some("no slash"))).is_err());
}

#[test]
fn expected_peers_from_san_matchers() {
    use mesh_core::model::{SanMatcher, SanType, StringMatcher, UpstreamTls};
    let exact = |v: &str| SanMatcher {
        san_type: SanType::Uri,
        matcher: StringMatcher::Exact {
            value: v.into(),
            ignore_case: false,
        },
    };
    let mut tls = UpstreamTls::default();
    tls.validation.san_matchers = vec![exact("spiffe://cluster.local/ns/default/sa/reviews")];
    let p = crate::cluster::expected_peers(&tls).unwrap();
    assert_eq!(p.identities.len(), 1);
    // Other matchers are checked on the certificate's SANs (mesh-tls).
    let prefix = SanMatcher {
        san_type: SanType::Uri,
        matcher: StringMatcher::Prefix {
            value: "spiffe://cluster.local/".into(),
            ignore_case: false,
        },
    };
    tls.validation.san_matchers = vec![prefix.clone(), exact("not-a-spiffe-id")];
    let p = crate::cluster::expected_peers(&tls).unwrap();
    assert!(p.identities.is_empty());
    assert_eq!(p.san_matchers.len(), 2);
    assert_eq!(p.san_matchers[0], prefix);
    // A malformed SPIFFE ID is refused, naming it.
    tls.validation.san_matchers = vec![exact("spiffe://")];
    assert!(crate::cluster::expected_peers(&tls).is_err());
}

#[test]
fn paths_are_normalized_before_routing() {
    // No listener in the snapshot: Istio's default (BASE).
    let built = Built::default();
    let (mut parts, ()) = Request::get("http://reviews:9080/x/../%61dmin?q=/../")
        .body(())
        .unwrap()
        .into_parts();
    assert!(normalize_path(&built, "reviews:9080", &mut parts).is_none());
    assert_eq!(parts.uri.to_string(), "http://reviews:9080/admin?q=/../");
    let (mut parts, ()) = Request::get("/a%00").body(()).unwrap().into_parts();
    let resp = normalize_path(&built, "x:80", &mut parts).expect("refused");
    assert_eq!(resp.status(), 400);
}
