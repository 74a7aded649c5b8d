//! VirtualService routes as istiod generates them, on real traffic through workloads
//! configured by the embedded control plane in process: matches on the caller
//! (`sourceLabels`, `sourceNamespace`) give each workload its own routes, so a canary caller
//! and a stable caller of the same service reach different subsets; redirects derive their
//! port as istiod does.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::Mesh;
use mesh::xds::bootstrap::IstioNode;
use tower::ServiceExt;

const HOST: &str = "api.default.svc.cluster.local";

fn config(v1: u16, v2: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{sourceLabels: {{track: canary}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - match: [{{sourceNamespace: testing}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - match: [{{uri: {{prefix: /old}}}}]
    redirect: {{authority: new.example, derivePort: FROM_REQUEST_PORT}}
  - match: [{{uri: {{prefix: /moved}}}}]
    redirect: {{authority: new.example, uri: /here, derivePort: FROM_PROTOCOL_DEFAULT}}
  - match: [{{uri: {{prefix: /web}}}}]
    redirect: {{authority: new.example, port: 80}}
  - route: [{{destination: {{host: {HOST}, subset: v1}}}}]
"#
    )
}

/// One plaintext endpoint of `api` on `port` (mTLS off) and a VirtualService whose `http:`
/// list is `http` (YAML lines indented by two spaces).
fn plain_api(port: u16, http: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
{http}"#
    )
}

async fn answer(text: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || async move { text });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn caller(dir: &std::path::Path, namespace: &str, track: &str) -> Mesh {
    let node = IstioNode {
        pod_name: format!("web-{track}"),
        namespace: namespace.into(),
        service_account: "web".into(),
        labels: BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("track".to_owned(), track.to_owned()),
        ]),
        ..Default::default()
    };
    support::local_mesh(&support::dev_ca(), dir, node).await
}

async fn call(m: &Mesh) -> String {
    let req = http::Request::get(format!("http://{HOST}:8080/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = m.client().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_gets_the_routes_that_match_it() {
    let (v1, v2) = (answer("v1").await, answer("v2").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), config(v1, v2)).unwrap();
    let stable = caller(dir.path(), "default", "stable").await;
    let canary = caller(dir.path(), "default", "canary").await;
    let tester = caller(dir.path(), "testing", "stable").await;
    for _ in 0..10 {
        assert_eq!(call(&stable).await, "v1");
        assert_eq!(call(&canary).await, "v2", "sourceLabels");
        assert_eq!(call(&tester).await, "v2", "sourceNamespace");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_derive_their_port_as_istiod() {
    let (v1, v2) = (answer("v1").await, answer("v2").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), config(v1, v2)).unwrap();
    let m = caller(dir.path(), "default", "stable").await;
    for (path, location) in [
        // The request's port (the service port the routes were generated for).
        ("/old/a", "http://new.example:8080/old/a"),
        // The scheme's default port: none in the location.
        ("/moved", "http://new.example/here"),
        ("/web", "http://new.example/web"),
    ] {
        let req = http::Request::get(format!("http://{HOST}:8080{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = m.client().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 301, "{path}");
        assert_eq!(resp.headers()["location"], location, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_service_entries_resolve_their_endpoints_and_hosts() {
    let (a, b) = (answer("a").await, answer("b").await);
    let dir = tempfile::tempdir().unwrap();
    // `DNS` (STRICT_DNS: every address of every name) and `DNS_ROUND_ROBIN` (LOGICAL_DNS:
    // the first endpoint), both with a named endpoint.
    std::fs::write(
        dir.path().join("c.yaml"),
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext, namespace: default}}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: localhost, ports: {{http: {a}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: rr, namespace: default}}
spec:
  hosts: [rr.example.com]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: localhost, ports: {{http: {b}}}}}
"#
        ),
    )
    .unwrap();
    let m = caller(dir.path(), "default", "stable").await;
    for (url, want) in [
        ("http://ext.example.com/".to_string(), "a"),
        ("http://rr.example.com/".to_string(), "b"),
    ] {
        for _ in 0..3 {
            let req = http::Request::get(&url)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = m.client().oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(status, 200, "{url}: {body:?}");
            assert_eq!(body, want, "{url}");
        }
    }
}

/// A server answering with the request's `x-dest` header.
async fn echo_dest() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        headers
            .get("x-dest")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_destination_header_edits_act() {
    let port = echo_dest().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{uri: {{prefix: /one}}}}]
    route:
    - destination: {{host: {HOST}, subset: v1}}
      headers:
        request: {{set: {{x-dest: single}}}}
        response: {{add: {{x-from: single}}}}
  - route:
    - destination: {{host: {HOST}, subset: v1}}
      weight: 100
      headers: {{request: {{set: {{x-dest: weighted}}}}}}
    - destination: {{host: {HOST}}}
      weight: 0
"#
        ),
    )
    .unwrap();
    let m = caller(dir.path(), "default", "stable").await;
    for (path, dest, from) in [
        ("/one", "single", Some("single")),
        ("/two", "weighted", None),
    ] {
        let req = http::Request::get(format!("http://{HOST}:8080{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = m.client().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(
            resp.headers().get("x-from").map(|v| v.to_str().unwrap()),
            from,
            "{path}"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, dest, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_to_limits_what_each_namespace_sees() {
    let (v1, v2) = (answer("v1").await, answer("v2").await);
    let dir = tempfile::tempdir().unwrap();
    // The VirtualService (all to v2) and a second service are for namespace `default` only.
    let text = config(v1, v2)
        .replace(
            "kind: VirtualService\nmetadata: {name: api, namespace: default}\nspec:\n",
            "kind: VirtualService\nmetadata: {name: api, namespace: default}\nspec:\n  exportTo: [\".\"]\n",
        )
        .replace(
            "  - route: [{destination: {host: api.default.svc.cluster.local, subset: v1}}]",
            "  - route: [{destination: {host: api.default.svc.cluster.local, subset: v2}}]",
        );
    let hidden = format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: hidden, namespace: default}}
spec:
  hosts: [hidden.default.svc.cluster.local]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {v1}}}}}]
"#
    );
    std::fs::write(dir.path().join("c.yaml"), format!("{text}{hidden}")).unwrap();
    let inside = caller(dir.path(), "default", "stable").await;
    let outside = caller(dir.path(), "testing", "stable").await;
    // Inside: the VirtualService applies (always v2).
    for _ in 0..10 {
        assert_eq!(call(&inside).await, "v2");
    }
    // Outside (sourceNamespace `testing` would pick v2 too, but the VirtualService is not
    // exported there): the default route spreads over both versions.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let req = http::Request::get(format!("http://{HOST}:8080/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = outside.client().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        seen.insert(String::from_utf8_lossy(&body).into_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The hidden service: reachable inside only.
    let hidden = |m: &Mesh| {
        let req = http::Request::get("http://hidden.default.svc.cluster.local:8080/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        m.client().oneshot(req)
    };
    assert_eq!(hidden(&inside).await.unwrap().status(), 200);
    assert_ne!(
        hidden(&outside)
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
}

/// Envoy's `x-envoy-attempt-count` (the control plane sets `include_request_attempt_count`
/// on every virtual host, as istiod does): each attempt of a retried request carries its
/// number, from 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_carries_its_number_upstream() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = seen.clone();
    // Fails the first two attempts of each request (503), answers the third.
    let app = axum::Router::new().fallback(move |headers: http::HeaderMap| {
        let log = log.clone();
        async move {
            let n = headers
                .get("x-envoy-attempt-count")
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_default();
            let status = if n == "3" { 200 } else { 503 };
            log.lock().unwrap().push(n);
            http::StatusCode::from_u16(status).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        plain_api(
            port,
            &format!(
                "  - route: [{{destination: {{host: {HOST}}}}}]\n    retries: {{attempts: 2, retryOn: 5xx}}\n"
            ),
        ),
    )
    .unwrap();
    let m = caller(dir.path(), "default", "stable").await;
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{HOST}:8080/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = m.client().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(*seen.lock().unwrap(), ["1", "2", "3", "1", "2", "3"]);
}

/// A server answering `<x-route>|<path and query>|<host>`.
async fn echo_route() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|uri: http::Uri, headers: http::HeaderMap| async move {
        let h = |n: &str| {
            headers
                .get(n)
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_default()
        };
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
        format!("{}|{path}|{}", h("x-route"), h("host"))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// VirtualService match, rewrite and redirect fields on real traffic, one route per field
/// (each names itself in `x-route`), as users write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_matches_rewrites_and_redirects_act() {
    let port = echo_route().await;
    let dir = tempfile::tempdir().unwrap();
    let to = |name: &str| {
        format!(
            "route: [{{destination: {{host: {HOST}}}, headers: {{request: {{set: {{x-route: {name}}}}}}}}}]"
        )
    };
    let routes = [
        ("{uri: {exact: /exact}}", "exact", ""),
        (r#"{uri: {regex: "/re/[0-9]+"}}"#, "regex", ""),
        ("{uri: {prefix: /m}, method: {exact: POST}}", "method", ""),
        (
            "{uri: {prefix: /auth}, authority: {prefix: api.default}}",
            "authority",
            "",
        ),
        ("{headers: {x-h: {prefix: ab}}}", "header-prefix", ""),
        (r#"{headers: {x-h: {regex: "z+"}}}"#, "header-regex", ""),
        ("{queryParams: {q: {exact: \"1\"}}}", "query", ""),
        (
            "{uri: {prefix: /case}, ignoreUriCase: true}",
            "ignore-case",
            "",
        ),
        (
            "{uri: {prefix: /without}, withoutHeaders: {x-skip: {exact: \"1\"}}}",
            "without",
            "",
        ),
        (
            "{uri: {prefix: /rw/}}",
            "rewrite-uri",
            "rewrite: {uri: /new/}",
        ),
        (
            "{uri: {prefix: /ra}}",
            "rewrite-authority",
            "rewrite: {authority: other.example}",
        ),
        (
            r#"{uri: {prefix: /rr/}}"#,
            "rewrite-regex",
            r#"rewrite: {uriRegexRewrite: {match: "^/rr/(.*)$", rewrite: "/x/\\1"}}"#,
        ),
    ];
    // Matchers that must not match come first under the same prefix: a matcher that
    // stopped acting would then answer instead of the one after it.
    let authority_exact =
        format!("{{uri: {{prefix: /ae}}, authority: {{exact: \"{HOST}:8080\"}}}}");
    let more: [(&str, &str); 17] = [
        (
            "{uri: {prefix: /mp}, method: {prefix: PU}}",
            "method-prefix",
        ),
        (
            r#"{uri: {prefix: /mr}, method: {regex: "DEL.*"}}"#,
            "method-regex",
        ),
        (
            "{uri: {prefix: /ae}, authority: {exact: other.example}}",
            "wrong-authority",
        ),
        (&authority_exact, "authority-exact"),
        (
            r#"{uri: {prefix: /ar}, authority: {regex: "nomatch.*"}}"#,
            "wrong-authority",
        ),
        (
            r#"{uri: {prefix: /ar}, authority: {regex: ".*:8080"}}"#,
            "authority-regex",
        ),
        (
            "{uri: {prefix: /qp}, queryParams: {q: {prefix: ab}}}",
            "query-prefix",
        ),
        (
            r#"{uri: {prefix: /qr}, queryParams: {q: {regex: "[0-9]+"}}}"#,
            "query-regex",
        ),
        (
            "{uri: {prefix: /wp}, withoutHeaders: {x-skip: {prefix: ab}}}",
            "without-prefix",
        ),
        (
            r#"{uri: {prefix: /wr}, withoutHeaders: {x-skip: {regex: "z+"}}}"#,
            "without-regex",
        ),
        (
            "{uri: {prefix: /se}, scheme: {exact: https}}",
            "wrong-scheme",
        ),
        (
            "{uri: {prefix: /se}, scheme: {exact: http}}",
            "scheme-exact",
        ),
        (
            "{uri: {prefix: /sp}, scheme: {prefix: ftp}}",
            "wrong-scheme",
        ),
        (
            "{uri: {prefix: /sp}, scheme: {prefix: ht}}",
            "scheme-prefix",
        ),
        (
            r#"{uri: {prefix: /sr}, scheme: {regex: "https"}}"#,
            "wrong-scheme",
        ),
        (
            r#"{uri: {prefix: /sr}, scheme: {regex: "h.tp"}}"#,
            "scheme-regex",
        ),
        ("{uri: {prefix: /po}, port: 9999}", "wrong-port"),
    ];
    let mut rules = String::new();
    for (m, name, extra) in routes {
        rules.push_str(&format!("  - match: [{m}]\n    {}\n", to(name)));
        if !extra.is_empty() {
            rules.push_str(&format!("    {extra}\n"));
        }
    }
    for (m, name) in more
        .iter()
        .copied()
        .chain([("{uri: {prefix: /po}, port: 8080}", "port")])
    {
        rules.push_str(&format!("  - match: [{m}]\n    {}\n", to(name)));
    }
    rules.push_str(
        "  - match: [{uri: {prefix: /redir}}]\n    redirect: {uri: /there, scheme: https, redirectCode: 302}\n",
    );
    rules.push_str(&format!("  - {}\n", to("default")));
    std::fs::write(dir.path().join("c.yaml"), plain_api(port, &rules)).unwrap();
    let m = caller(dir.path(), "default", "stable").await;
    let authority = format!("{HOST}:8080");
    // (method, path, headers, the route that must answer, the path it must see, its host)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: &[Case<'_>] = &[
        ("GET", "/exact", &[], "exact", "/exact", &authority),
        ("GET", "/exact/no", &[], "default", "/exact/no", &authority),
        ("GET", "/re/42", &[], "regex", "/re/42", &authority),
        ("GET", "/re/x", &[], "default", "/re/x", &authority),
        ("POST", "/m", &[], "method", "/m", &authority),
        ("GET", "/m", &[], "default", "/m", &authority),
        ("GET", "/auth", &[], "authority", "/auth", &authority),
        (
            "GET",
            "/h",
            &[("x-h", "abc")],
            "header-prefix",
            "/h",
            &authority,
        ),
        (
            "GET",
            "/h",
            &[("x-h", "zzz")],
            "header-regex",
            "/h",
            &authority,
        ),
        ("GET", "/h", &[("x-h", "q")], "default", "/h", &authority),
        ("GET", "/p?q=1", &[], "query", "/p?q=1", &authority),
        ("GET", "/p?q=2", &[], "default", "/p?q=2", &authority),
        ("GET", "/CASE/x", &[], "ignore-case", "/CASE/x", &authority),
        ("GET", "/without", &[], "without", "/without", &authority),
        (
            "GET",
            "/without",
            &[("x-skip", "1")],
            "default",
            "/without",
            &authority,
        ),
        ("GET", "/rw/a", &[], "rewrite-uri", "/new/a", &authority),
        (
            "GET",
            "/ra",
            &[],
            "rewrite-authority",
            "/ra",
            "other.example",
        ),
        ("GET", "/rr/a/b", &[], "rewrite-regex", "/x/a/b", &authority),
        ("PUT", "/mp", &[], "method-prefix", "/mp", &authority),
        ("GET", "/mp", &[], "default", "/mp", &authority),
        ("DELETE", "/mr", &[], "method-regex", "/mr", &authority),
        ("GET", "/mr", &[], "default", "/mr", &authority),
        ("GET", "/ae", &[], "authority-exact", "/ae", &authority),
        ("GET", "/ar", &[], "authority-regex", "/ar", &authority),
        (
            "GET",
            "/qp?q=abc",
            &[],
            "query-prefix",
            "/qp?q=abc",
            &authority,
        ),
        ("GET", "/qp?q=xab", &[], "default", "/qp?q=xab", &authority),
        (
            "GET",
            "/qr?q=42",
            &[],
            "query-regex",
            "/qr?q=42",
            &authority,
        ),
        ("GET", "/qr?q=4a", &[], "default", "/qr?q=4a", &authority),
        ("GET", "/wp", &[], "without-prefix", "/wp", &authority),
        (
            "GET",
            "/wp",
            &[("x-skip", "abc")],
            "default",
            "/wp",
            &authority,
        ),
        ("GET", "/wr", &[], "without-regex", "/wr", &authority),
        (
            "GET",
            "/wr",
            &[("x-skip", "zz")],
            "default",
            "/wr",
            &authority,
        ),
        ("GET", "/se", &[], "scheme-exact", "/se", &authority),
        ("GET", "/sp", &[], "scheme-prefix", "/sp", &authority),
        ("GET", "/sr", &[], "scheme-regex", "/sr", &authority),
        ("GET", "/po", &[], "port", "/po", &authority),
    ];
    let mut failures = Vec::new();
    for (method, path, headers, route, seen_path, host) in cases {
        let mut req = http::Request::builder()
            .method(*method)
            .uri(format!("http://{HOST}:8080{path}"));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let resp = m
            .client()
            .oneshot(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let want = format!("{route}|{seen_path}|{host}");
        if status != 200 || body != want.as_bytes() {
            failures.push(format!(
                "{method} {path} {headers:?}: {status} {body:?}, want {want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // redirect.scheme and redirect.redirectCode.
    let req = http::Request::get(format!("http://{HOST}:8080/redir"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = m.client().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("https://{HOST}")) && location.ends_with("/there"),
        "{location}"
    );
}

/// A server answering with the request's `x-set`, `x-add`, `x-drop` and `x-keep` headers
/// (`name=value` lines, sorted, one per value) and three response headers the route's
/// `headers.response` edits.
async fn echo_headers() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        let mut lines: Vec<String> = headers
            .iter()
            .filter(|(k, _)| ["x-set", "x-add", "x-drop", "x-keep"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
            .collect();
        lines.sort();
        (
            [
                ("x-resp-keep", "1"),
                ("x-resp-drop", "1"),
                ("x-resp-set", "old"),
            ],
            lines.join("\n"),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// VirtualService `headers` (request and response set/add/remove) and `fault` (delay with
/// its percentage, gRPC abort) on real traffic, as users write them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_headers_and_faults_act() {
    let port = echo_headers().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("route: [{{destination: {{host: {HOST}}}}}]");
    let rules = format!(
        "  - match: [{{uri: {{prefix: /h}}}}]\n    {dest}\n    headers: {{request: {{set: {{x-set: new}}, add: {{x-add: two}}, remove: [x-drop]}}, response: {{set: {{x-resp-set: new}}, add: {{x-resp-add: a}}, remove: [x-resp-drop]}}}}\n\
         \x20 - match: [{{uri: {{prefix: /delay}}}}]\n    {dest}\n    fault: {{delay: {{fixedDelay: 400ms, percentage: {{value: 100}}}}}}\n\
         \x20 - match: [{{uri: {{prefix: /never}}}}]\n    {dest}\n    fault: {{delay: {{fixedDelay: 400ms, percentage: {{value: 0}}}}}}\n\
         \x20 - match: [{{uri: {{prefix: /grpc}}}}]\n    {dest}\n    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}\n\
         \x20 - {dest}\n"
    );
    std::fs::write(dir.path().join("c.yaml"), plain_api(port, &rules)).unwrap();
    let m = caller(dir.path(), "default", "stable").await;
    let send = |path: &str, headers: &[(&str, &str)]| {
        let mut req = http::Request::get(format!("http://{HOST}:8080{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        m.client().oneshot(req.body(Empty::<Bytes>::new()).unwrap())
    };
    // headers.request.set replaces, .add appends, .remove drops; headers.response likewise
    // on the answer, leaving what it does not name.
    let resp = send(
        "/h",
        &[
            ("x-set", "old"),
            ("x-add", "one"),
            ("x-drop", "1"),
            ("x-keep", "1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let h = |n: &str| {
        resp.headers()
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(h("x-resp-set"), ["new"]);
    assert_eq!(h("x-resp-add"), ["a"]);
    assert!(h("x-resp-drop").is_empty());
    assert_eq!(h("x-resp-keep"), ["1"]);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "x-add=one\nx-add=two\nx-keep=1\nx-set=new"
    );
    // fault.delay.fixedDelay at percentage 100 delays every request; at 0, none.
    let timed = |path: &'static str| {
        let send = &send;
        async move {
            let started = std::time::Instant::now();
            let status = send(path, &[]).await.unwrap().status();
            (status, started.elapsed())
        }
    };
    let (status, took) = timed("/delay").await;
    assert_eq!(status, 200);
    assert!(took >= std::time::Duration::from_millis(400), "{took:?}");
    let (status, took) = timed("/never").await;
    assert_eq!(status, 200);
    assert!(took < std::time::Duration::from_millis(400), "{took:?}");
    // fault.abort.grpcStatus: a gRPC request is answered UNAVAILABLE (14) without reaching
    // the server.
    let resp = send("/grpc", &[("content-type", "application/grpc")])
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("14"),
        "{:?}",
        resp.headers()
    );
}
