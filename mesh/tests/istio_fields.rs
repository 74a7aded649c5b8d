//! Istio fields on real traffic (issue #16): each test writes the Istio YAML a user would,
//! serves it with the embedded control plane in process, and sends requests through
//! `mesh.client()` to local servers that say which of them answered. Each test fails when
//! the code applying its field is removed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::Mesh;
use tower::ServiceExt;

/// A server answering every request with `tag`, counting the requests it got.
async fn server(tag: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let (count, tag) = (hits.clone(), tag.to_owned());
    let app = axum::Router::new().fallback(move || {
        count.fetch_add(1, Ordering::SeqCst);
        let tag = tag.clone();
        async move { tag }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

/// A ServiceEntry `name.default.svc.cluster.local` with `ports` and `endpoints` (YAML flow
/// sequences), plaintext (a DestinationRule with `tls: DISABLE` and `extra` (more
/// DestinationRule `spec` lines, indented by two spaces)).
fn service(name: &str, ports: &str, endpoints: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: {ports}
  endpoints: {endpoints}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
{extra}
"#
    )
}

const HTTP_PORT: &str = "[{number: 8080, name: http, protocol: HTTP}]";

/// The mesh of pod `web-0` (namespace `namespace`) configured from the YAML in `dir`.
async fn caller(dir: &std::path::Path, namespace: &str) -> Mesh {
    let mut node = support::xds::node("web");
    node.namespace = namespace.into();
    support::local_mesh(&support::dev_ca(), dir, node).await
}

/// GET `url` through the mesh: the status and body (status 0 when the client failed).
async fn get(m: &Mesh, url: &str) -> (u16, String) {
    let req = http::Request::get(url).body(Empty::<Bytes>::new()).unwrap();
    match m.client().oneshot(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(_) => (0, String::new()),
    }
}

/// The answers of `n` requests to `url`, counted by body (non-200 answers as `status N`).
async fn tally(m: &Mesh, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let (status, body) = get(m, url).await;
        let key = if status == 200 {
            body
        } else {
            format!("status {status}")
        };
        *seen.entry(key).or_default() += 1;
    }
    seen
}

fn write(dir: &std::path::Path, yaml: &str) {
    std::fs::write(dir.join("c.yaml"), yaml).unwrap();
}

/// `ServiceEntry.spec.ports.targetPort`: an endpoint that maps no port is reached on the
/// target port. `ServiceEntry.spec.endpoints.weight` and `WorkloadEntry.spec.weight`: the
/// balancer sends each endpoint its share (round robin over weights, as Envoy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_ports_and_endpoint_weights_act() {
    let (target, _) = server("target").await;
    let (light, _) = server("light").await;
    let (heavy, _) = server("heavy").await;
    let (we_light, _) = server("we-light").await;
    let (we_heavy, _) = server("we-heavy").await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = service(
        "target",
        &format!("[{{number: 8080, name: http, protocol: HTTP, targetPort: {target}}}]"),
        "[{address: 127.0.0.1}]",
        "",
    );
    yaml += &service(
        "weighted",
        HTTP_PORT,
        &format!(
            "[{{address: 127.0.0.1, ports: {{http: {light}}}, weight: 1}}, \
             {{address: 127.0.0.1, ports: {{http: {heavy}}}, weight: 9}}]"
        ),
        "",
    );
    // The same weights on WorkloadEntries a ServiceEntry selects.
    yaml += &service("workloads", HTTP_PORT, "[]", "").replace(
        "  endpoints: []\n",
        "  workloadSelector: {labels: {app: backend}}\n",
    );
    for (name, port, weight) in [("light", we_light, 1), ("heavy", we_heavy, 9)] {
        yaml += &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: backend}}
  weight: {weight}
"#
        );
    }
    write(dir.path(), &yaml);
    let m = caller(dir.path(), "default").await;

    let url = "http://target.default.svc.cluster.local:8080/";
    assert_eq!(get(&m, url).await, (200, "target".into()));

    for (host, light, heavy) in [
        ("weighted", "light", "heavy"),
        ("workloads", "we-light", "we-heavy"),
    ] {
        let url = format!("http://{host}.default.svc.cluster.local:8080/");
        let seen = tally(&m, &url, 100).await;
        // Weights 1:9 over 100 requests: 10 and 90 (unweighted: 50 each).
        let (l, h) = (seen.get(light).copied(), seen.get(heavy).copied());
        assert!(
            matches!((l, h), (Some(5..=15), Some(85..=95))),
            "{host}: {seen:?}"
        );
    }
}

/// `VirtualService.spec.http.route.destination.port(.number)`: a route to another port of
/// the destination service reaches that port's endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_to_another_port_reaches_that_port() {
    let (web, _) = server("web port").await;
    let (admin, _) = server("admin port").await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = service(
        "api",
        "[{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: admin, protocol: HTTP}]",
        &format!("[{{address: 127.0.0.1, ports: {{http: {web}, admin: {admin}}}}}]"),
        "",
    );
    yaml += r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /admin}}]
    route: [{destination: {host: api.default.svc.cluster.local, port: {number: 9090}}}]
  - route: [{destination: {host: api.default.svc.cluster.local, port: {number: 8080}}}]
"#;
    write(dir.path(), &yaml);
    let m = caller(dir.path(), "default").await;
    let base = "http://api.default.svc.cluster.local:8080";
    assert_eq!(get(&m, &format!("{base}/")).await, (200, "web port".into()));
    assert_eq!(
        get(&m, &format!("{base}/admin")).await,
        (200, "admin port".into())
    );
}

type Servers = BTreeMap<&'static str, (u16, Arc<AtomicUsize>)>;

/// The requests `names` of `servers` got.
fn hits(servers: &Servers, names: &[&str]) -> usize {
    names
        .iter()
        .map(|n| servers[n].1.load(Ordering::SeqCst))
        .sum()
}

/// Waits (up to 5 s) until `names` of `servers` got `want` requests.
async fn wait_for(servers: &Servers, names: &[&str], want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits(servers, names) < want {
        assert!(
            Instant::now() < deadline,
            "{names:?} got {}",
            hits(servers, names)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `VirtualService.spec.http.mirror.subset` and `mirror.port(.number)` (required: the shadow
/// has two ports): the copies reach only that subset's endpoints, and only that port's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_reach_their_subset_and_port() {
    let (main, _) = server("main").await;
    // The shadow service: two versions, each on two ports.
    let mut shadow = Servers::new();
    for name in ["v1-http", "v1-alt", "v2-http", "v2-alt"] {
        shadow.insert(name, server(name).await);
    }
    let ep = |v: &str| {
        format!(
            "{{address: 127.0.0.1, ports: {{http: {}, alt: {}}}, labels: {{version: {v}}}}}",
            shadow[format!("{v}-http").as_str()].0,
            shadow[format!("{v}-alt").as_str()].0
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = service(
        "main",
        HTTP_PORT,
        &format!("[{{address: 127.0.0.1, ports: {{http: {main}}}}}]"),
        "",
    );
    yaml += &service(
        "shadow",
        "[{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: alt, protocol: HTTP}]",
        &format!("[{}, {}]", ep("v1"), ep("v2")),
        "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
    );
    yaml += r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: main, namespace: default}
spec:
  hosts: [main.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /subset}}]
    route: [{destination: {host: main.default.svc.cluster.local}}]
    mirror: {host: shadow.default.svc.cluster.local, subset: v2, port: {number: 8080}}
    mirrorPercentage: {value: 100}
  - match: [{uri: {prefix: /port}}]
    route: [{destination: {host: main.default.svc.cluster.local}}]
    mirror: {host: shadow.default.svc.cluster.local, port: {number: 9090}}
    mirrorPercentage: {value: 100}
"#;
    write(dir.path(), &yaml);
    let m = caller(dir.path(), "default").await;
    let base = "http://main.default.svc.cluster.local:8080";
    for _ in 0..20 {
        assert_eq!(
            get(&m, &format!("{base}/subset")).await,
            (200, "main".into())
        );
    }
    wait_for(&shadow, &["v2-http", "v2-alt"], 20).await;
    assert_eq!(
        hits(&shadow, &["v1-http", "v1-alt"]),
        0,
        "a copy reached subset v1"
    );
    for _ in 0..20 {
        assert_eq!(get(&m, &format!("{base}/port")).await, (200, "main".into()));
    }
    wait_for(&shadow, &["v1-alt", "v2-alt"], 20).await;
    // Only the subset copies reached port 8080's endpoints.
    assert_eq!(
        hits(&shadow, &["v1-http", "v2-http"]),
        20,
        "a copy reached port 8080"
    );
}

/// Two versions of `api` with subsets v1 and v2 in `extra` of its DestinationRule.
async fn versions() -> (String, String) {
    let (v1, _) = server("v1").await;
    let (v2, _) = server("v2").await;
    (
        format!(
            "[{{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}, \
             {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}]"
        ),
        "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
            .to_owned(),
    )
}

/// `DestinationRule.spec.exportTo`: a DestinationRule exported to its own namespace shapes
/// the traffic of clients there only; elsewhere its subsets do not exist (as with istiod,
/// a route to one finds no cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_rule_acts_only_where_it_is_exported() {
    let (endpoints, subsets) = versions().await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = service("api", HTTP_PORT, &endpoints, &subsets).replace(
        "  host: api.default.svc.cluster.local\n",
        "  host: api.default.svc.cluster.local\n  exportTo: [\".\"]\n",
    );
    yaml += r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - route: [{destination: {host: api.default.svc.cluster.local, subset: v2}}]
"#;
    write(dir.path(), &yaml);
    let inside = caller(dir.path(), "default").await;
    let outside = caller(dir.path(), "testing").await;
    let url = "http://api.default.svc.cluster.local:8080/";
    let seen = tally(&inside, url, 10).await;
    assert_eq!(seen, BTreeMap::from([("v2".to_owned(), 10)]));
    let seen = tally(&outside, url, 10).await;
    assert!(!seen.contains_key("v2"), "{seen:?}");
}

/// `VirtualService.spec.gateways`: a VirtualService for `mesh` (the sidecars, as here)
/// routes the workload's traffic; one bound to a gateway is refused with an error naming
/// the field, and while the directory holds it the workload keeps its last good routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_mesh_virtual_services_route_sidecar_traffic() {
    let (endpoints, subsets) = versions().await;
    let dir = tempfile::tempdir().unwrap();
    let routed = |gateways: &str, subset: &str| {
        service("api", HTTP_PORT, &endpoints, &subsets)
            + &format!(
                r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.default.svc.cluster.local]
  gateways: {gateways}
  http:
  - route: [{{destination: {{host: api.default.svc.cluster.local, subset: {subset}}}}}]
"#
            )
    };
    let url = "http://api.default.svc.cluster.local:8080/";
    write(dir.path(), &routed("[mesh]", "v2"));
    let m = caller(dir.path(), "default").await;
    assert_eq!(
        tally(&m, url, 10).await,
        BTreeMap::from([("v2".to_owned(), 10)])
    );

    // Bound to a gateway: refused, naming the field.
    let gateway = tempfile::tempdir().unwrap();
    write(gateway.path(), &routed("[default/ingress]", "v1"));
    let Err(err) = mesh_control::local::LocalSource::watch_dir(
        gateway.path(),
        Default::default(),
        support::xds::node("web").node_proto(),
        Default::default(),
    )
    .await
    else {
        panic!("a gateway's VirtualService is refused");
    };
    assert!(err.to_string().contains("spec.gateways[0]"), "{err}");
    // Written over the running config: the workload keeps routing to v2.
    write(dir.path(), &routed("[default/ingress]", "v1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tally(&m, url, 10).await,
        BTreeMap::from([("v2".to_owned(), 10)])
    );
}

/// A server that accepts connections and closes them at once, counting them: every
/// request to it fails locally (a reset before any response).
async fn resetting() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, accepted)
}

/// A server answering 503 to every request, counting them.
async fn unavailable() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    let app = axum::Router::new().fallback(move || {
        count.fetch_add(1, Ordering::SeqCst);
        async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

/// `outlierDetection.splitExternalLocalOriginErrors` and `consecutiveLocalOriginFailures`
/// (at the top and in a subset's `trafficPolicy`): with the split, one local failure
/// (a reset connection) ejects the endpoint though 5xx ejection is off. A subset's
/// `consecutiveGatewayErrors`: one 503 ejects. The other endpoint then serves everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_rules_eject_at_the_top_and_in_subsets() {
    let local = "{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 1, \
                 consecutive5xxErrors: 0, interval: 10s, baseEjectionTime: 60s, \
                 maxEjectionPercent: 100}";
    let gateway = "{consecutiveGatewayErrors: 1, consecutive5xxErrors: 0, interval: 10s, \
                   baseEjectionTime: 60s, maxEjectionPercent: 100}";
    // (outlier detection, at a subset, the failing endpoint resets rather than answers 503)
    for (outlier, at_subset, resets) in [
        (local, false, true),
        (local, true, true),
        (gateway, true, false),
    ] {
        let (good, _) = server("good").await;
        let (bad, failures) = if resets {
            resetting().await
        } else {
            unavailable().await
        };
        let dir = tempfile::tempdir().unwrap();
        let endpoints = format!(
            "[{{address: 127.0.0.1, ports: {{http: {good}}}, labels: {{v: a}}}}, \
             {{address: 127.0.0.1, ports: {{http: {bad}}}, labels: {{v: a}}}}]"
        );
        let yaml = if at_subset {
            service(
                "api",
                HTTP_PORT,
                &endpoints,
                &format!(
                    "  subsets:\n  - {{name: a, labels: {{v: a}}, trafficPolicy: {{outlierDetection: {outlier}}}}}\n"
                ),
            ) + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - route: [{destination: {host: api.default.svc.cluster.local, subset: a}}]
"#
        } else {
            service("api", HTTP_PORT, &endpoints, "").replace(
                "trafficPolicy: {tls: {mode: DISABLE}}",
                &format!("trafficPolicy: {{tls: {{mode: DISABLE}}, outlierDetection: {outlier}}}"),
            )
        };
        write(dir.path(), &yaml);
        let m = caller(dir.path(), "default").await;
        let seen = tally(&m, "http://api.default.svc.cluster.local:8080/", 20).await;
        let failed = failures.load(Ordering::SeqCst);
        // Ejected after its first failure (a retry's second connection may race it).
        let case = format!("{outlier} at subset {at_subset}");
        assert!(failed <= 2, "{case}: {failed} failures, {seen:?}");
        assert!(seen["good"] >= 19, "{case}: {seen:?}");
    }
}

/// `VirtualService.spec.http.fault` on a rule that redirects: Envoy's fault filter runs
/// before the router, so the abort or delay acts there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_act_on_redirects() {
    let (port, _) = server("api").await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = service(
        "api",
        HTTP_PORT,
        &format!("[{{address: 127.0.0.1, ports: {{http: {port}}}}}]"),
        "",
    );
    yaml += r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /moved}}]
    redirect: {authority: new.example}
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
  - match: [{uri: {prefix: /late}}]
    redirect: {authority: new.example}
    fault: {delay: {fixedDelay: 300ms, percentage: {value: 100}}}
  - route: [{destination: {host: api.default.svc.cluster.local}}]
"#;
    write(dir.path(), &yaml);
    let m = caller(dir.path(), "default").await;
    let base = "http://api.default.svc.cluster.local:8080";
    assert_eq!(get(&m, &format!("{base}/moved")).await.0, 418);
    let start = Instant::now();
    assert_eq!(get(&m, &format!("{base}/late")).await.0, 301);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

/// Five endpoints of `cart` (each answers its tag), balanced by `lb` (a `loadBalancer` flow
/// map) at the top of its DestinationRule, or in the `trafficPolicy` of its subset `all`
/// that its VirtualService routes to.
async fn balanced_cart(lb: &str, at_subset: bool) -> String {
    let mut endpoints = Vec::new();
    for i in 0..5 {
        let (port, _) = server(&format!("e{i}")).await;
        endpoints.push(format!(
            "{{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: cart}}}}"
        ));
    }
    cart_balanced_by(&format!("[{}]", endpoints.join(", ")), lb, at_subset)
}

/// `cart` on `endpoints` (a YAML flow list), balanced by `lb` at the top of its
/// DestinationRule, or in the `trafficPolicy` of its subset `all` that its VirtualService
/// routes to.
fn cart_balanced_by(endpoints: &str, lb: &str, at_subset: bool) -> String {
    if !at_subset {
        return service("cart", HTTP_PORT, endpoints, "").replace(
            "trafficPolicy: {tls: {mode: DISABLE}}",
            &format!("trafficPolicy: {{tls: {{mode: DISABLE}}, loadBalancer: {lb}}}"),
        );
    }
    service(
        "cart",
        HTTP_PORT,
        endpoints,
        &format!(
            "  subsets:\n  - {{name: all, labels: {{app: cart}}, trafficPolicy: {{loadBalancer: {lb}}}}}"
        ),
    ) + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: default}
spec:
  hosts: [cart.default.svc.cluster.local]
  http:
  - route: [{destination: {host: cart.default.svc.cluster.local, subset: all}}]
"#
}

const CART: &str = "http://cart.default.svc.cluster.local:8080/cart/items";

/// `consistentHash.httpCookie` with `name`, `path` and `ttl` (at the top and in a subset):
/// a request without the cookie is answered with a new one (`Set-Cookie` as Envoy writes
/// it) and routed by its value; the requests that send it back stay on that endpoint, and
/// different users get different cookies, spread over the endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_cookie_keeps_its_user_on_one_endpoint() {
    let lb = "{consistentHash: {httpCookie: {name: sticky, path: /cart, ttl: 60s}}}";
    for at_subset in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &balanced_cart(lb, at_subset).await);
        let m = caller(dir.path(), "default").await;
        let mut endpoints = BTreeSet::new();
        let mut cookies = BTreeSet::new();
        for user in 0..20 {
            let req = http::Request::get(CART)
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = m.client().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let set = resp
                .headers()
                .get(http::header::SET_COOKIE)
                .unwrap_or_else(|| panic!("subset {at_subset}: no Set-Cookie"))
                .to_str()
                .unwrap()
                .to_owned();
            let first = resp.into_body().collect().await.unwrap().to_bytes();
            // sticky="<16 hex digits>"; Max-Age=60; Path=/cart; HttpOnly
            let value = set
                .strip_prefix("sticky=\"")
                .and_then(|v| v.split_once('"'))
                .map(|(v, rest)| {
                    assert_eq!(rest, "; Max-Age=60; Path=/cart; HttpOnly", "{set}");
                    v.to_owned()
                })
                .unwrap_or_else(|| panic!("{set}"));
            assert_eq!(value.len(), 16, "{set}");
            cookies.insert(value.clone());
            for _ in 0..5 {
                let req = http::Request::get(CART)
                    .header(http::header::COOKIE, format!("other=1; sticky=\"{value}\""))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = m.client().oneshot(req).await.unwrap();
                assert!(resp.headers().get(http::header::SET_COOKIE).is_none());
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, first, "subset {at_subset}: user {user} moved");
            }
            endpoints.insert(first);
        }
        assert_eq!(cookies.len(), 20, "subset {at_subset}");
        assert!(endpoints.len() >= 3, "subset {at_subset}: {endpoints:?}");
    }
}

/// A front server a user's gateway would be: it forwards each request through the mesh
/// client with the caller's address as its `DownstreamAddr`.
async fn front(m: &Mesh) -> std::net::SocketAddr {
    use axum::extract::{ConnectInfo, Request};
    use mesh::core::extensions::DownstreamAddr;
    let client = m.client();
    let app = axum::Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>, req: Request| {
            let client = client.clone();
            async move {
                let (mut parts, _) = req.into_parts();
                parts.uri = CART.parse().unwrap();
                parts.extensions.insert(DownstreamAddr(peer));
                let req = http::Request::from_parts(parts, Empty::<Bytes>::new());
                let resp = client.oneshot(req).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8_lossy(&body).into_owned()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let svc = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, svc).await.unwrap()
    });
    addr
}

/// One HTTP/1.1 request to `front` on a new connection from `source` (any port): the body.
async fn get_from(source: std::net::IpAddr, front: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut conn = socket.connect(front).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: front\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.rsplit("\r\n\r\n").next().unwrap().to_owned()
}

/// `consistentHash.useSourceIp` (at the top and in a subset): requests forwarded for
/// clients on different loopback addresses (each connection from a new port) stay on one
/// endpoint per address, and the addresses spread over the endpoints; a workload's own
/// requests (no downstream) are all one source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_hashing_keeps_each_client_address_on_one_endpoint() {
    for at_subset in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let lb = "{consistentHash: {useSourceIp: true}}";
        write(dir.path(), &balanced_cart(lb, at_subset).await);
        let m = caller(dir.path(), "default").await;
        let front = front(&m).await;
        let mut used = BTreeSet::new();
        for host in 2..22u8 {
            let source = std::net::IpAddr::from([127, 0, 0, host]);
            let mut seen = BTreeSet::new();
            for _ in 0..5 {
                seen.insert(get_from(source, front).await);
            }
            assert_eq!(
                seen.len(),
                1,
                "subset {at_subset}: {source} reached {seen:?}"
            );
            used.extend(seen);
        }
        assert!(used.len() >= 3, "subset {at_subset}: {used:?}");
        let own = tally(&m, CART, 20).await;
        assert_eq!(own.len(), 1, "subset {at_subset}: {own:?}");
    }
}

/// An mTLS server with identity `spiffe://cluster.local/ns/default/sa/api` from `ca`: each
/// request is answered with the SNI of its connection's ClientHello.
async fn tls_server(ca: &mesh::tls::dev_ca::DevCa) -> u16 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use mesh::tls::IdentityStore;
    use mesh::tls::server::MeshAcceptor;
    let id = "spiffe://cluster.local/ns/default/sa/api".parse().unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap();
    let acceptor = MeshAcceptor::new(store, Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let Ok((tls, _peer)) = acceptor.accept(io).await else {
                continue;
            };
            let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
            let svc =
                hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let sni = sni.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from(sni)),
                        ))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

/// `DestinationRule.spec.trafficPolicy.tls.sni` (and a subset's): the server sees that SNI
/// in the ClientHello (else Istio's `outbound_.8080_._.<host>`).
/// `ServiceEntry.spec.subjectAltNames`: the identity it names is accepted from the
/// endpoints, which without it must present the endpoint's (here `sa/default`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_and_subject_alt_names_shape_the_handshake() {
    let ca = support::dev_ca();
    let port = tls_server(&ca).await;
    let api_id = "spiffe://cluster.local/ns/default/sa/api";
    let yaml = |sans: &str, tls: &str, subset_tls: &str| {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  subjectAltNames: {sans}
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{v: a}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec:
  host: api.default.svc.cluster.local
  trafficPolicy: {{tls: {tls}}}
  subsets:
  - {{name: a, labels: {{v: a}}, trafficPolicy: {{tls: {subset_tls}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: default}}
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - match: [{{uri: {{prefix: /subset}}}}]
    route: [{{destination: {{host: api.default.svc.cluster.local, subset: a}}}}]
  - route: [{{destination: {{host: api.default.svc.cluster.local}}}}]
"#
        )
    };
    let base = "http://api.default.svc.cluster.local:8080";
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &yaml(
            &format!("[\"{api_id}\"]"),
            "{mode: ISTIO_MUTUAL, sni: top.example}",
            "{mode: ISTIO_MUTUAL, sni: subset.example}",
        ),
    );
    let m = support::local_mesh(&ca, dir.path(), support::xds::node("web")).await;
    assert_eq!(
        get(&m, &format!("{base}/")).await,
        (200, "top.example".into())
    );
    assert_eq!(
        get(&m, &format!("{base}/subset")).await,
        (200, "subset.example".into())
    );

    // Without `sni`, Istio's; without `subjectAltNames`, the server's identity is refused.
    let dir = tempfile::tempdir().unwrap();
    let plain = "{mode: ISTIO_MUTUAL}";
    write(dir.path(), &yaml(&format!("[\"{api_id}\"]"), plain, plain));
    let m = support::local_mesh(&ca, dir.path(), support::xds::node("web")).await;
    assert_eq!(
        get(&m, &format!("{base}/")).await,
        (
            200,
            "outbound_.8080_._.api.default.svc.cluster.local".into()
        )
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &yaml("[]", plain, plain));
    let m = support::local_mesh(&ca, dir.path(), support::xds::node("web")).await;
    assert_ne!(get(&m, &format!("{base}/")).await.0, 200);
}

/// Twenty endpoints on fixed addresses (127.0.0.2-21, a port above the ephemeral range),
/// so their places on the hash ring are the same on every run.
const RING_PORT: u16 = 61200;

/// Each of the endpoints answers with its address.
async fn ring_endpoints() -> String {
    let mut endpoints = Vec::new();
    for host in 2..22u8 {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, host);
        let listener = tokio::net::TcpListener::bind((ip, RING_PORT))
            .await
            .unwrap_or_else(|e| panic!("{ip}:{RING_PORT}: {e}"));
        let app = axum::Router::new().fallback(move || async move { ip.to_string() });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        endpoints.push(format!(
            "{{address: {ip}, ports: {{http: {RING_PORT}}}, labels: {{app: cart}}}}"
        ));
    }
    format!("[{}]", endpoints.join(", "))
}

/// `consistentHash.ringHash.minimumRingSize` and the older `consistentHash.minimumRingSize`
/// (at the top and in a subset): a ring of one entry per endpoint spreads 1,000 users
/// unevenly (the busiest endpoint gets over twice its share, on these fixed addresses),
/// Envoy's default ring (1,024 entries) evenly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_ring_size_sets_how_evenly_users_spread() {
    let endpoints = ring_endpoints().await;
    let cart = |lb: &str, at_subset: bool| cart_balanced_by(&endpoints, lb, at_subset);
    let busiest = |lb: &'static str, at_subset: bool| {
        let yaml = cart(lb, at_subset);
        async move {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &yaml);
            let m = caller(dir.path(), "default").await;
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for user in 0..1000 {
                let req = http::Request::get(CART)
                    .header("x-user", format!("user-{user}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = m.client().oneshot(req).await.unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                *count
                    .entry(String::from_utf8_lossy(&body).into_owned())
                    .or_default() += 1;
            }
            count.into_values().max().unwrap()
        }
    };
    let even = busiest("{consistentHash: {httpHeaderName: x-user}}", false).await;
    assert!(
        even < 100,
        "the default ring: the busiest endpoint has {even} users"
    );
    for (lb, at_subset) in [
        (
            "{consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 20}}}",
            false,
        ),
        (
            "{consistentHash: {httpHeaderName: x-user, minimumRingSize: 20}}",
            false,
        ),
        (
            "{consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 20}}}",
            true,
        ),
        (
            "{consistentHash: {httpHeaderName: x-user, minimumRingSize: 20}}",
            true,
        ),
    ] {
        let most = busiest(lb, at_subset).await;
        // 20 endpoints: an even share is 50 users.
        assert!(most > 100, "{lb} at subset {at_subset}: busiest has {most}");
    }
}
