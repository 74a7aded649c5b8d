//! Envoy's own vectors (source/common/http/path_utility_test, Istio's pathNormalization
//! tests) and paths whose result was read off Envoy 1.40.

use super::{EscapedSlashesAction, PathNormalization, PathOutcome};

fn base(p: &str) -> String {
    match PathNormalization::BASE.apply(p) {
        PathOutcome::Unchanged => p.to_string(),
        PathOutcome::Forward(p) => p,
        other => panic!("{p:?}: {other:?}"),
    }
}

#[test]
fn envoy_vectors() {
    for (input, want) in [
        ("/xyz", "/xyz"),
        ("/x/y/z", "/x/y/z"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/./c", "/a/b/c"),
        ("/a/b/../../../../c", "/c"),
        ("/a/..\\c", "/c"),
        ("/%c0%af", "/%c0%af"),
        ("/%5c%25", "/%5c%25"),
        ("/a/b/%2E%2E/c", "/a/c"),
        ("/a/b/%2E./c", "/a/c"),
        ("/a/b/%2E/c", "/a/b/c"),
        ("/../a/b", "/a/b"),
        ("/./a/b", "/a/b"),
        ("/A/B/C", "/A/B/C"),
        ("/a/b/%2e%2e/c", "/a/c"),
        ("/a/%2F%2f/c", "/a/%2F%2f/c"),
    ] {
        assert_eq!(base(input), want, "{input}");
    }
    for invalid in [
        "/xyz/.%00../abc",
        "/xyz/%00.%00./abc",
        "/xyz/AAAAA%%0000/abc",
    ] {
        assert_eq!(
            PathNormalization::BASE.apply(invalid),
            PathOutcome::Reject("invalid path"),
            "{invalid}"
        );
    }
}

#[test]
fn read_off_envoy() {
    for (input, want) in [
        ("/x/../admin", "/admin"),
        ("/./admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("//admin", "//admin"),
        ("/%41dmin", "/Admin"),
        ("/a%2e/b", "/a./b"),
        ("/%7e%7E", "/~~"),
        ("/%41%5a%2d%5f", "/AZ-_"),
        ("/a\\b", "/a/b"),
        ("/a\"b", "/a%22b"),
        ("/a<b>", "/a%3Cb%3E"),
        ("/a{b}|^`", "/a%7Bb%7D%7C%5E%60"),
        ("/a[b]:@!$&'()*+,;=", "/a[b]:@!$&'()*+,;="),
        ("/a%zz", "/a%zz"),
        ("/a%", "/a%"),
        ("/a%2", "/a%2"),
        ("/a%%41", "/a%A"),
        ("/a%01b%7f%ff%FE", "/a%01b%7f%ff%FE"),
        ("/a%20%3F%23", "/a%20%3F%23"),
        ("/a?x=/../y", "/a?x=/../y"),
        ("/a/../b?x=%2e", "/b?x=%2e"),
        ("/a/.;/b", "/a/b"),
        ("/a/..;/b", "/b"),
        ("/a/.;x/b", "/a/b"),
        ("/a/..;x/y/b", "/y/b"),
        ("/a/..;\\b", "/"),
        ("/a/.;\\b", "/a/"),
        ("/a/.%2e;/b", "/a/..;/b"),
        ("/a/%2e.;/b", "/a/..;/b"),
        ("/a/%2e;/b", "/a/.;/b"),
        ("/a/;/b", "/a/;/b"),
        ("/a/x.;/b", "/a/x.;/b"),
        ("/a;b/../c", "/c"),
        ("/a/..;?q", "/?q"),
        ("/a/...", "/a/..."),
        ("/a/..../b", "/a/..../b"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/..", "/"),
        ("/%2e%2e", "/"),
        ("/a%2e%2e/b", "/a../b"),
        ("/a/%252e%252e/b", "/a/%252e%252e/b"),
        ("/a//../b", "/a/b"),
        ("/a/\\\\..\\\\b", "/a///b"),
        ("/a%3f/../b", "/b"),
        ("/a/b/..%2f", "/a/b/..%2f"),
        ("/a/%5c../b", "/a/%5c../b"),
        ("/a?", "/a?"),
        ("/a?b?c/../d", "/a?b?c/../d"),
        ("/%%61dmin", "/%25admin"),
        ("/a%%41", "/a%A"),
    ] {
        assert_eq!(base(input), want, "{input}");
    }
    for refused in [
        "/a#frag", "/a?x#y", "a/b", "*", "/a%00b", "/é", "/a b", "/a\x7f",
    ] {
        assert!(
            matches!(
                PathNormalization::BASE.apply(refused),
                PathOutcome::Reject(_)
            ),
            "{refused}"
        );
    }
}

#[test]
fn merge_slashes_as_envoy() {
    let merge = PathNormalization {
        normalize_path: false,
        merge_slashes: true,
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
    };
    for (input, want) in [
        ("/a//b/c/", "/a/b/c/"),
        ("/a", "/a"),
        ("//a/b/c", "/a/b/c"),
        ("/a/b/c//", "/a/b/c/"),
        ("/a////b/c", "/a/b/c"),
        ("/a//b?a=///c", "/a/b?a=///c"),
        ("/a//b?", "/a/b?"),
        ("//a/?b", "/a/?b"),
        ("///", "//"),
        ("/a//../b", "/a/../b"),
    ] {
        let got = match merge.apply(input) {
            PathOutcome::Unchanged => input.to_string(),
            PathOutcome::Forward(p) => p,
            other => panic!("{input}: {other:?}"),
        };
        assert_eq!(got, want, "{input}");
    }
}

#[test]
fn istio_modes() {
    use PathNormalization as N;
    let run = |mode: N, p: &str| match mode.apply(p) {
        PathOutcome::Unchanged => p.to_string(),
        PathOutcome::Forward(p) => p,
        other => panic!("{p}: {other:?}"),
    };
    // Istio's own expectations for MERGE_SLASHES and DECODE_AND_MERGE_SLASHES.
    for (input, merge, decode) in [
        ("/", "/", "/"),
        ("/app/", "/app/", "/app/"),
        ("/app/../admin", "/admin", "/admin"),
        ("/app//", "/app/", "/app/"),
        ("/app/%2f", "/app/%2f", "/app/"),
        ("/app%2f/", "/app%2f/", "/app/"),
        ("/xyz%30..//abc", "/xyz0../abc", "/xyz0../abc"),
        ("/app/%2E./admin", "/admin", "/admin"),
        ("/app\\admin", "/app/admin", "/app/admin"),
        ("/app/\\/\\/\\admin", "/app/admin", "/app/admin"),
        (
            "/%2Fapp%5cadmin%5Cabc",
            "/%2Fapp%5cadmin%5Cabc",
            "/app/admin/abc",
        ),
        (
            "/%5Capp%2f%5c%2F%2e%2e%2fadmin%5c\\abc",
            "/%5Capp%2f%5c%2F..%2fadmin%5c/abc",
            "/app/admin/abc",
        ),
        ("/app//../admin", "/app/admin", "/app/admin"),
        ("/app//../../admin", "/admin", "/admin"),
        ("/%2F%2F", "/%2F%2F", "//"),
    ] {
        assert_eq!(run(N::MERGE_SLASHES, input), merge, "{input}");
        assert_eq!(run(N::DECODE_AND_MERGE_SLASHES, input), decode, "{input}");
    }
    assert_eq!(run(N::NONE, "/a/../b//%2f"), "/a/../b//%2f");
}

#[test]
fn escaped_slash_actions() {
    let with = |escaped_slashes| PathNormalization {
        escaped_slashes,
        ..PathNormalization::MERGE_SLASHES
    };
    let reject = with(EscapedSlashesAction::RejectRequest);
    assert_eq!(
        reject.apply("/a%2Fb"),
        PathOutcome::Reject("escaped slash in path")
    );
    assert_eq!(
        reject.apply("/a%5cb"),
        PathOutcome::Reject("escaped slash in path")
    );
    assert_eq!(reject.apply("/a?x=%2f"), PathOutcome::Unchanged);
    let redirect = with(EscapedSlashesAction::UnescapeAndRedirect);
    assert_eq!(
        redirect.apply("/a%2f%2e%2e%2fadmin?q=1"),
        PathOutcome::Redirect("/admin?q=1".into())
    );
    assert_eq!(
        redirect.apply("/a%2fb?x=%2f"),
        PathOutcome::Redirect("/a/b?x=%2f".into())
    );
    assert_eq!(
        redirect.apply("/a%2F%00b"),
        PathOutcome::Reject("invalid path")
    );
    assert_eq!(redirect.apply("/a//b"), PathOutcome::Forward("/a/b".into()));
    let forward = PathNormalization {
        normalize_path: false,
        ..with(EscapedSlashesAction::UnescapeAndForward)
    };
    assert_eq!(
        forward.apply("/a%5cb"),
        PathOutcome::Forward("/a\\b".into())
    );
    assert_eq!(
        forward.apply("/a%2f%2e%2e%2fadmin"),
        PathOutcome::Forward("/a/%2e%2e/admin".into())
    );
}

mod layer {
    use std::convert::Infallible;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use http::{Method, Request, Response, StatusCode};
    use http_body_util::Either;
    use tower::{ServiceBuilder, ServiceExt};

    use super::super::{EscapedSlashesAction, PathNormalization, PathNormalizationLayer};

    /// The app answers with the request target it received.
    fn send(config: PathNormalization, method: Method, target: &str) -> Response<String> {
        let svc = ServiceBuilder::new()
            .layer(PathNormalizationLayer::new(config))
            .service_fn(|req: Request<()>| async move {
                let pq = req.uri().path_and_query().map(|p| p.to_string());
                Ok::<_, Infallible>(Response::new(pq.unwrap_or_default()))
            });
        let req = Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .unwrap();
        let mut fut = std::pin::pin!(svc.oneshot(req));
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(res)) => res.map(|b| match b {
                Either::Left(s) => s,
                Either::Right(_) => String::new(),
            }),
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn forwards_the_normalized_path() {
        let res = send(PathNormalization::BASE, Method::GET, "/x/../%61dmin?a=/../");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "/admin?a=/../");
        let abs = send(PathNormalization::BASE, Method::GET, "http://h:80/a/./b");
        assert_eq!(abs.body(), "/a/b");
        let none = send(PathNormalization::NONE, Method::GET, "/a/../b");
        assert_eq!(none.body(), "/a/../b");
    }

    #[test]
    fn replies_locally() {
        let res = send(PathNormalization::BASE, Method::GET, "/a%00");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(res.body(), "");
        let redirect = PathNormalization {
            escaped_slashes: EscapedSlashesAction::UnescapeAndRedirect,
            ..PathNormalization::BASE
        };
        let res = send(redirect, Method::GET, "/a%2F..%2Fb?q");
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(res.headers()["location"], "/b?q");
        let opts = send(PathNormalization::BASE, Method::OPTIONS, "*");
        assert_eq!(opts.status(), StatusCode::OK);
    }
}

/// A path that is canonical already (the common case) is lent back, not copied; the others
/// still go through the canonicalizer.
#[test]
fn canonical_paths_are_not_copied() {
    use std::borrow::Cow;
    for p in ["/", "/payload", "/a/b.c/d", "/a../b", "/x-y_z~/q;p"] {
        let c = super::canon::canonicalize(p);
        assert!(matches!(c, Some(Cow::Borrowed(s)) if s == p), "{p}: {c:?}");
    }
    for (p, want) in [
        ("/a/./b", "/a/b"),
        ("/.x", "/.x"),
        ("/%61", "/a"),
        ("/a\\b", "/a/b"),
        ("/a b", "/a%20b"),
    ] {
        let c = super::canon::canonicalize(p);
        assert!(matches!(&c, Some(Cow::Owned(s)) if s == want), "{p}: {c:?}");
    }
}
