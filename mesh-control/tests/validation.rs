//! Table tests: one case per validation rule, each asserting the exact error list.

use mesh_control::istio::{ConfigError, LoadReport, SourceFile};

/// A small valid mesh the cases add to: `reviews` (one port, v1 and v2 WorkloadEntries,
/// subsets v1/v2) and `ratings` (two ports, inline endpoints).
const BASE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: reviews-v1, namespace: default }
spec:
  address: 127.0.0.1
  ports: { http: 19082 }
  labels: { app: reviews, version: v1 }
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: { name: reviews-v2, namespace: default }
spec:
  address: 127.0.0.1
  ports: { http: 19083 }
  labels: { app: reviews, version: v2 }
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: { name: ratings, namespace: default }
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: 9080, name: http, protocol: HTTP }
  - { number: 9090, name: grpc, protocol: GRPC }
  endpoints:
  - { address: 127.0.0.1, ports: { http: 19085, grpc: 19086 }, labels: { version: v1 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: default }
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
"#;

fn errors_of(extra: &str) -> Vec<String> {
    let files = [
        SourceFile {
            path: "base.yaml".into(),
            text: BASE.into(),
        },
        SourceFile {
            path: "case.yaml".into(),
            text: extra.into(),
        },
    ];
    LoadReport::from_files(&files)
        .errors
        .iter()
        .map(without_origin)
        .collect()
}

/// `resource: field: reason`, the part of the message that doesn't depend on line numbers.
fn without_origin(e: &ConfigError) -> String {
    let mut s = String::new();
    if let Some(r) = &e.resource {
        s.push_str(&format!("{r}: "));
    }
    if !e.field.is_empty() {
        s.push_str(&format!("{}: ", e.field));
    }
    s + &e.reason
}

fn vs(name: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  hosts: [reviews.default.svc.cluster.local]\n  http:\n{http}"
    )
}

fn ap(rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: p, namespace: default }}\nspec:\n{rules}"
    )
}

#[test]
fn base_is_valid() {
    assert_eq!(errors_of(""), Vec::<String>::new());
}

#[test]
fn each_rule_reports_its_error() {
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown host in a VirtualService",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: { name: x, namespace: default }\n\
             spec:\n  hosts: [nosuch.default.svc.cluster.local]\n  http:\n  - route:\n    \
             - destination: { host: nosuch }\n"
                .into(),
            vec![
                "VirtualService default/x: spec.hosts[0]: unknown host `nosuch.default.svc.cluster.local`: no ServiceEntry defines it",
                "VirtualService default/x: spec.http[0].route[0].destination.host: unknown host `nosuch.default.svc.cluster.local`: no ServiceEntry defines it",
            ],
        ),
        (
            "a pool following the caller's protocol with connection limits (accepted), a subset selecting nothing",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: r, namespace: default }\nspec:\n  host: ratings.default.svc.cluster.local\n  \
             trafficPolicy:\n    connectionPool: { tcp: { maxConnections: 2 }, http: { useClientProtocol: true } }\n  \
             subsets:\n  - name: v1\n    labels: { version: v1 }\n    \
             trafficPolicy: { connectionPool: { http: { useClientProtocol: false } } }\n  \
             - name: v2\n    labels: { version: v2 }\n    \
             trafficPolicy: { connectionPool: { http: { http1MaxPendingRequests: 3 } } }\n"
                .into(),
            vec![
                "DestinationRule default/r: spec.subsets[1]: subset `v2` selects no workload of `ratings.default.svc.cluster.local` (labels {version=v2})",
            ],
        ),
        (
            "unknown host in a DestinationRule",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: d, namespace: default }\nspec:\n  host: details.default.svc.cluster.local\n"
                .into(),
            vec!["DestinationRule default/d: spec.host: unknown host `details.default.svc.cluster.local`: no ServiceEntry defines it"],
        ),
        (
            "host not exported to the namespace",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: { name: private, namespace: other }\nspec:\n  hosts: [private.other.svc.cluster.local]\n  \
             resolution: DNS\n  exportTo: [\".\"]\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n\
             ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: d, namespace: default }\nspec:\n  host: private.other.svc.cluster.local\n"
                .into(),
            vec!["DestinationRule default/d: spec.host: unknown host `private.other.svc.cluster.local`: ServiceEntry other/private does not export it to namespace `default`"],
        ),
        (
            "bad regex",
            vs("x", "  - match:\n    - uri: { regex: \"/a(b\" }\n    route:\n    - destination: { host: reviews }\n"),
            vec!["VirtualService default/x: spec.http[0].match[0].uri.regex: invalid regex `/a(b`: unclosed group"],
        ),
        (
            "bad regex in a header match",
            vs("x", "  - match:\n    - headers: { end-user: { regex: \"[z-a]\" } }\n    route:\n    - destination: { host: reviews }\n"),
            vec!["VirtualService default/x: spec.http[0].match[0].headers.end-user.regex: invalid regex `[z-a]`: invalid character class range, the start must be <= the end"],
        ),
        (
            "string match with two kinds",
            vs("x", "  - match:\n    - uri: { exact: /a, prefix: /b }\n    route:\n    - destination: { host: reviews }\n"),
            vec!["VirtualService default/x: spec.http[0].match[0].uri: exactly one of exact, prefix or regex must be set"],
        ),
        (
            "weights that do not add up to 100",
            vs("x", "  - route:\n    - { destination: { host: reviews, subset: v1 }, weight: 80 }\n    - { destination: { host: reviews, subset: v2 }, weight: 30 }\n"),
            vec!["VirtualService default/x: spec.http[0].route: weights add up to 110, not 100"],
        ),
        (
            "several destinations without weights",
            vs("x", "  - route:\n    - destination: { host: reviews, subset: v1 }\n    - destination: { host: reviews, subset: v2 }\n"),
            vec!["VirtualService default/x: spec.http[0].route: weights add up to 0, not 100"],
        ),
        (
            "negative weight",
            vs("x", "  - route:\n    - { destination: { host: reviews, subset: v1 }, weight: 110 }\n    - { destination: { host: reviews, subset: v2 }, weight: -10 }\n"),
            vec!["VirtualService default/x: spec.http[0].route[1].weight: weight -10 is negative"],
        ),
        (
            "subset referenced but not defined",
            vs("x", "  - route:\n    - destination: { host: reviews, subset: v3 }\n"),
            vec!["VirtualService default/x: spec.http[0].route[0].destination.subset: subset `v3` is not defined by a DestinationRule for `reviews.default.svc.cluster.local`"],
        ),
        (
            "subset that selects no workload",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: ratings, namespace: default }\nspec:\n  host: ratings.default.svc.cluster.local\n  \
             subsets:\n  - { name: v9, labels: { version: v9 } }\n"
                .into(),
            vec!["DestinationRule default/ratings: spec.subsets[0]: subset `v9` selects no workload of `ratings.default.svc.cluster.local` (labels {version=v9})"],
        ),
        (
            "duplicate names",
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: { name: reviews-v1, namespace: default }\nspec:\n  address: 127.0.0.2\n  labels: { app: other }\n"
                .into(),
            vec!["WorkloadEntry default/reviews-v1: metadata.name: duplicate name: WorkloadEntry default/reviews-v1 is also defined at base.yaml:12"],
        ),
        (
            "a second DestinationRule for one host",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: reviews-2, namespace: default }\nspec:\n  host: reviews\n"
                .into(),
            vec!["DestinationRule default/reviews-2: spec.host: host `reviews.default.svc.cluster.local` already has a DestinationRule (DestinationRule default/reviews)"],
        ),
        (
            "a host defined by two ServiceEntries",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: { name: reviews-copy, namespace: default }\nspec:\n  hosts: [reviews]\n  \
             resolution: DNS\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n"
                .into(),
            vec!["ServiceEntry default/reviews-copy: spec.hosts[0]: host `reviews.default.svc.cluster.local` is already defined by ServiceEntry default/reviews"],
        ),
        (
            "two workloads on the same address and port",
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: { name: reviews-v3, namespace: default }\nspec:\n  address: 127.0.0.1\n  \
             ports: { http: 19082 }\n  labels: { app: reviews, version: v3 }\n"
                .into(),
            vec!["ServiceEntry default/reviews: spec.ports[name=http]: workloads default/reviews-v1 and default/reviews-v3 both serve 127.0.0.1:19082"],
        ),
        (
            "bad durations",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    timeout: 10\n"),
            vec!["VirtualService default/x: spec.http[0].timeout: invalid type: integer `10`, expected a duration with a unit, such as \"1s\" or \"100ms\""],
        ),
        (
            "bad duration units and sub-millisecond durations",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    timeout: 10x\n    retries: { attempts: 2, perTryTimeout: 500us }\n    fault: { delay: { fixedDelay: \"-1s\" } }\n"),
            vec![
                "VirtualService default/x: spec.http[0].timeout: invalid duration `10x`: unknown unit `x`",
                "VirtualService default/x: spec.http[0].retries.perTryTimeout: duration `500us` must be at least 1ms",
                "VirtualService default/x: spec.http[0].fault.delay.fixedDelay: negative duration `-1s`",
            ],
        ),
        (
            "bad percentages",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    fault:\n      abort: { httpStatus: 503, percentage: { value: 120 } }\n      delay: { fixedDelay: 1s, percentage: { value: -1 } }\n    mirror: { host: reviews }\n    mirrorPercentage: { value: 100.5 }\n"),
            vec![
                "VirtualService default/x: spec.http[0].fault.delay.percentage.value: percentage -1 is out of range 0..=100",
                "VirtualService default/x: spec.http[0].fault.abort.percentage.value: percentage 120 is out of range 0..=100",
                "VirtualService default/x: spec.http[0].mirrorPercentage.value: percentage 100.5 is out of range 0..=100",
            ],
        ),
        (
            "bad abort status and retry condition",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    retries: { attempts: 1, retryOn: \"5xx,sometimes\" }\n    fault: { abort: { httpStatus: 700 } }\n"),
            vec![
                "VirtualService default/x: spec.http[0].retries.retryOn: unknown retry condition `sometimes`",
                "VirtualService default/x: spec.http[0].fault.abort.httpStatus: HTTP status 700 is out of range 200..=599",
            ],
        ),
        (
            "invalid principals and namespaces",
            ap("  rules:\n  - from:\n    - source:\n        principals: [\"spiffe://cluster.local/ns/a/sa/b\", \"cluster.local/ns/*/sa/b\", \"cluster.local/foo\"]\n        namespaces: [\"Bad_NS\", \"prod-*\"]\n"),
            vec![
                "AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[0]: invalid principal `spiffe://cluster.local/ns/a/sa/b`: write it without `spiffe://` (like `cluster.local/ns/default/sa/productpage`)",
                "AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[1]: invalid principal `cluster.local/ns/*/sa/b`: `*` is only allowed as a prefix or suffix",
                "AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[2]: invalid principal `cluster.local/foo`: expected <trust domain>/ns/<namespace>/sa/<account>",
                "AuthorizationPolicy default/p: spec.rules[0].from[0].source.namespaces[0]: invalid namespace `Bad_NS`",
            ],
        ),
        (
            "invalid operation and condition",
            ap("  action: DENY\n  rules:\n  - to:\n    - operation: { methods: [get], paths: [reviews], ports: [\"99999\"] }\n    when:\n    - { key: \"request.auth.claims[iss]\", values: [x] }\n    - { key: source.ip, values: [10.0.0.0/33] }\n"),
            vec![
                "AuthorizationPolicy default/p: spec.rules[0].to[0].operation.ports[0]: invalid port `99999` (a number in 1..=65535)",
                "AuthorizationPolicy default/p: spec.rules[0].to[0].operation.methods[0]: invalid method `get` (an upper-case HTTP method such as GET)",
                "AuthorizationPolicy default/p: spec.rules[0].to[0].operation.paths[0]: invalid path `reviews` (starts with `/`; `*` only as a prefix or suffix)",
                "AuthorizationPolicy default/p: spec.rules[0].when[0].key: condition key `request.auth.claims[iss]` is not supported (use request.headers[<name>], source.ip, source.namespace, source.principal, destination.ip, destination.port)",
                "AuthorizationPolicy default/p: spec.rules[0].when[1].values[0]: `10.0.0.0/33` is not an IP address or CIDR",
            ],
        ),
        (
            "CUSTOM action",
            ap("  action: CUSTOM\n  provider: { name: ext-authz }\n"),
            vec![
                "AuthorizationPolicy default/p: spec.provider: not supported by this data plane (see docs/istio-config.md for the subset)",
                "AuthorizationPolicy default/p: spec.action: action CUSTOM (external authorization) is not supported: use ALLOW, DENY or AUDIT",
            ],
        ),
        (
            "empty source",
            ap("  rules:\n  - from:\n    - source: {}\n"),
            vec!["AuthorizationPolicy default/p: spec.rules[0].from[0].source: a source must set at least one field"],
        ),
        (
            "ports missing on a ServiceEntry",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: { name: details, namespace: default }\nspec:\n  hosts: [details]\n  resolution: DNS\n"
                .into(),
            vec!["ServiceEntry default/details: spec.ports: ports missing: at least one port is required"],
        ),
        (
            "destination port missing on a multi-port service",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: { name: r, namespace: default }\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    \
             - destination: { host: ratings }\n  - route:\n    - destination: { host: ratings, port: { number: 9999 } }\n"
                .into(),
            vec![
                "VirtualService default/r: spec.http[0].route[0].destination.port: port missing: `ratings.default.svc.cluster.local` has 2 ports, say which one",
                "VirtualService default/r: spec.http[1].route[0].destination.port.number: `ratings.default.svc.cluster.local` has no port 9999",
            ],
        ),
        (
            "bad ServiceEntry ports, protocol and resolution",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: { name: details, namespace: default }\nspec:\n  hosts: [\"*.example.com\"]\n  \
             ports:\n  - { number: 0, name: http, protocol: HTTP }\n  - { number: 443, name: http, protocol: HTTPS }\n"
                .into(),
            vec![
                "ServiceEntry default/details: spec.hosts[0]: wildcard host `*.example.com` is not supported",
                "ServiceEntry default/details: spec.ports[0].number: port 0 is out of range 1..=65535",
                "ServiceEntry default/details: spec.ports[1].name: duplicate port name `http`",
                "ServiceEntry default/details: spec.ports[1].protocol: protocol `HTTPS` is not supported (use HTTP, HTTP2, GRPC or TCP)",
                "ServiceEntry default/details: spec.resolution: resolution NONE (pass-through) is not supported: use STATIC or DNS",
            ],
        ),
        (
            "STATIC endpoint that is not an IP",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: { name: details, namespace: default }\nspec:\n  hosts: [details]\n  resolution: STATIC\n  \
             ports: [{ number: 9080, name: http, protocol: HTTP }]\n  endpoints: [{ address: localhost, ports: { web: 1 } }]\n"
                .into(),
            vec![
                "ServiceEntry default/details: spec.endpoints[0].address: `localhost` is not an IP address (required for STATIC resolution)",
                "ServiceEntry default/details: spec.endpoints[0].ports.web: no service port is named `web`",
            ],
        ),
        (
            "a CIDR range of addresses (single addresses only, /32 being one)",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: { name: details, namespace: default }\nspec:\n  hosts: [details]\n  \
             addresses: [10.0.0.0/16, 10.1.0.1/32, 240.240.0.10]\n  resolution: STATIC\n  \
             ports: [{ number: 9080, name: http, protocol: HTTP }]\n  endpoints: [{ address: 127.0.0.1 }]\n"
                .into(),
            vec![
                "ServiceEntry default/details: spec.addresses[0]: CIDR range `10.0.0.0/16` is not supported: istiod matches ranges only on TCP listeners by destination IP, and requests here are routed by their authority; list single addresses",
            ],
        ),
        (
            "field outside the supported subset",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    corsPolicy: { allowOrigins: [{ exact: \"*\" }] }\n"),
            vec!["VirtualService default/x: spec.http[0].corsPolicy: not supported by this data plane (see docs/istio-config.md for the subset)"],
        ),
        (
            "newer Istio fields outside the subset",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: ratings, namespace: default }\nspec:\n  host: ratings\n  trafficPolicy:\n    \
             loadBalancer: { zoneAwareLbSetting: { enabled: true } }\n    \
             outlierDetection: { outlierDetectionHttpErrorCodes: [500] }\n"
                .into(),
            vec![
                "DestinationRule default/ratings: spec.trafficPolicy.loadBalancer.zoneAwareLbSetting: not supported by this data plane (see docs/istio-config.md for the subset)",
                "DestinationRule default/ratings: spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes: not supported by this data plane (see docs/istio-config.md for the subset)",
            ],
        ),
        (
            "retry settings with retries disabled",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    retries: { attempts: 0, retryOn: 5xx }\n"),
            vec!["VirtualService default/x: spec.http[0].retries.attempts: perTryTimeout or retryOn set while attempts is 0 (retries disabled)"],
        ),
        (
            "unknown field (typo)",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    retrys: { attempts: 2 }\n"),
            vec!["VirtualService default/x: spec.http[0].retrys: unknown field (not in Istio's API: check the spelling)"],
        ),
        (
            "unknown enum value",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: { name: default, namespace: default }\nspec:\n  mtls: { mode: STRICTEST }\n"
                .into(),
            vec!["PeerAuthentication default/default: spec.mtls.mode: unknown variant `STRICTEST`, expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`"],
        ),
        (
            "portLevelMtls without a selector, and two namespace-wide policies",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: { name: a, namespace: default }\nspec:\n  mtls: { mode: STRICT }\n  portLevelMtls:\n    8080: { mode: DISABLE }\n\
             ---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\n\
             metadata: { name: b, namespace: default }\nspec:\n  mtls: { mode: PERMISSIVE }\n"
                .into(),
            vec![
                "PeerAuthentication default/a: spec.portLevelMtls: portLevelMtls needs a workload selector",
                "PeerAuthentication default/b: spec.selector: namespace `default` already has a namespace-wide PeerAuthentication (PeerAuthentication default/a)",
            ],
        ),
        (
            "TLS modes and load balancer outside the subset",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: ratings, namespace: default }\nspec:\n  host: ratings\n  trafficPolicy:\n    \
             loadBalancer: { simple: PASSTHROUGH }\n    tls: { mode: SIMPLE, caCertificates: /etc/ca.pem }\n    \
             outlierDetection: { maxEjectionPercent: 101 }\n    connectionPool: { tcp: { maxConnections: -1 } }\n"
                .into(),
            vec![
                "DestinationRule default/ratings: spec.trafficPolicy.loadBalancer.simple: PASSTHROUGH is not supported",
                "DestinationRule default/ratings: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 must not be negative",
                "DestinationRule default/ratings: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 101 is out of range 0..=100",
                "DestinationRule default/ratings: spec.trafficPolicy.tls.mode: mode SIMPLE is not supported: use ISTIO_MUTUAL (mesh certificates) or DISABLE",
                "DestinationRule default/ratings: spec.trafficPolicy.tls.caCertificates: not supported by this data plane (see docs/istio-config.md for the subset)",
            ],
        ),
        (
            "consistent hash with two keys",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: { name: ratings, namespace: default }\nspec:\n  host: ratings\n  trafficPolicy:\n    \
             loadBalancer: { consistentHash: { httpHeaderName: x-user, useSourceIp: true } }\n"
                .into(),
            vec!["DestinationRule default/ratings: spec.trafficPolicy.loadBalancer.consistentHash: exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName must be set"],
        ),
        (
            "route and redirect together, redirect code",
            vs("x", "  - route:\n    - destination: { host: reviews }\n    redirect: { uri: /new, redirectCode: 200 }\n"),
            vec![
                "VirtualService default/x: spec.http[0].redirect: `route` and `redirect` are mutually exclusive",
                "VirtualService default/x: spec.http[0].redirect.redirectCode: 200 is not a redirect code (301, 302, 303, 307 or 308)",
            ],
        ),
        (
            "gateways and tcp routes",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
             metadata: { name: x, namespace: default }\nspec:\n  hosts: [reviews]\n  gateways: [istio-system/ingress]\n  \
             tcp: [{ route: [{ destination: { host: reviews } }] }]\n"
                .into(),
            vec![
                "VirtualService default/x: spec.gateways[0]: gateway `istio-system/ingress` is not supported (only `mesh`)",
                "VirtualService default/x: spec.tcp: not supported by this data plane (see docs/istio-config.md for the subset)",
                "VirtualService default/x: spec.http: at least one http route is required",
            ],
        ),
        (
            "bad header names",
            vs("x", "  - match:\n    - headers: { \"X-User\": { exact: a } }\n    route:\n    - destination: { host: reviews }\n    headers: { request: { set: { \"bad header\": v } } }\n"),
            vec![
                "VirtualService default/x: spec.http[0].match[0].headers.X-User: header name `X-User` must be lowercase",
                "VirtualService default/x: spec.http[0].headers.request.set.bad header: `bad header` is not a valid header name",
            ],
        ),
        (
            "bad names",
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
             metadata: { name: Reviews_V9, namespace: Default }\nspec:\n  address: 127.0.0.9\n"
                .into(),
            vec![
                "WorkloadEntry Default/Reviews_V9: metadata.name: `Reviews_V9` is not a valid name (lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit)",
                "WorkloadEntry Default/Reviews_V9: metadata.namespace: `Default` is not a valid namespace (an RFC 1123 label)",
            ],
        ),
        (
            "Istio kind outside the subset",
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: s }\nspec: {}\n".into(),
            vec!["kind: Sidecar (networking.istio.io) is not supported by this control plane (supported: ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy)"],
        ),
        (
            "unsupported apiVersion",
            "apiVersion: security.istio.io/v1alpha1\nkind: PeerAuthentication\nmetadata: { name: a }\nspec: {}\n".into(),
            vec!["PeerAuthentication default/a: apiVersion: unsupported apiVersion `security.istio.io/v1alpha1` (use security.istio.io/v1, security.istio.io/v1beta1)"],
        ),
        (
            "invalid YAML",
            "apiVersion: networking.istio.io/v1\nkind: [\n".into(),
            vec!["invalid YAML at line 3: did not find expected node content"],
        ),
        (
            "missing metadata name",
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { namespace: default }\nspec: {}\n".into(),
            vec!["metadata.name: a name (string) is required"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, yaml, expected) in &cases {
        let got = errors_of(yaml);
        if got != *expected {
            failures.push(format!(
                "case `{name}`:\n  expected: {expected:#?}\n  got:      {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_are_collected_across_files_and_resources() {
    let bad = format!(
        "{}\n---\n{}",
        vs(
            "a",
            "  - route:\n    - destination: { host: reviews }\n    timeout: 1x\n"
        ),
        vs(
            "b",
            "  - route:\n    - destination: { host: reviews, subset: v7 }\n"
        )
    );
    let got = errors_of(&bad);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(got[0].contains("spec.http[0].timeout"));
    assert!(got[1].contains("already has a VirtualService"));
    assert!(got[2].contains("subset `v7`"));
}

#[test]
fn every_structural_error_of_a_document_is_reported() {
    let got = errors_of(&vs(
        "x",
        "  - route:\n    - destination: { host: reviews, subset: v9 }\n    timeout: 10\n    \
         retrys: { attempts: 2 }\n    fault: { abort: { httpStatus: \"503\" } }\n",
    ));
    assert_eq!(
        got,
        [
            "VirtualService default/x: spec.http[0].timeout: invalid type: integer `10`, expected a duration with a unit, such as \"1s\" or \"100ms\"",
            "VirtualService default/x: spec.http[0].fault.abort.httpStatus: invalid type: string \"503\", expected u32",
            "VirtualService default/x: spec.http[0].retrys: unknown field (not in Istio's API: check the spelling)",
            "VirtualService default/x: spec.http[0].fault.abort: httpStatus or grpcStatus is required",
            "VirtualService default/x: spec.http[0].route[0].destination.subset: subset `v9` is not defined by a DestinationRule for `reviews.default.svc.cluster.local`",
        ]
    );
}

/// The line is the field's (the document starts at line 3; `timeout` is on line 11).
#[test]
fn errors_name_file_and_line() {
    let files = [SourceFile {
        path: "dir/routes.yaml".into(),
        text: format!(
            "# comment\n---\n{}",
            vs(
                "x",
                "  - route:\n    - destination: { host: reviews }\n    timeout: 1q\n"
            )
        ),
    }];
    let errors = LoadReport::from_files(&files).errors;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(
            &"dir/routes.yaml:11: VirtualService default/x: spec.http[0].timeout: invalid duration `1q`: unknown unit `q`"
                .to_string()
        ),
        "{shown:#?}"
    );
}

/// Every field of Istio's API that this data plane refuses, as `Kind.spec.path` with `[]`
/// after a repeated field, and the value the case sets it to. `scripts/config-fields --check`
/// reads this list: a field marked `refused` in docs/configuration.md's "Istio fields" table
/// must be here (or below a field that is).
const REFUSED_FIELDS: &[(&str, &str)] = &[
    ("ServiceEntry.spec.endpoints[].network", "{}"),
    ("WorkloadEntry.spec.network", "{}"),
    ("VirtualService.spec.http[].match[].gateways[]", "{}"),
    ("VirtualService.spec.http[].match[].statPrefix", "{}"),
    ("VirtualService.spec.http[].redirect.prefixRewrite", "{}"),
    ("VirtualService.spec.http[].directResponse", "{}"),
    ("VirtualService.spec.http[].delegate", "{}"),
    (
        "VirtualService.spec.http[].retries.retryRemoteLocalities",
        "{}",
    ),
    (
        "VirtualService.spec.http[].retries.retryIgnorePreviousHosts",
        "{}",
    ),
    ("VirtualService.spec.http[].retries.backoff", "{}"),
    ("VirtualService.spec.http[].fault.delay.percent", "{}"),
    (
        "VirtualService.spec.http[].fault.delay.exponentialDelay",
        "{}",
    ),
    ("VirtualService.spec.http[].fault.abort.http2Error", "{}"),
    ("VirtualService.spec.http[].mirrors[]", "{}"),
    ("VirtualService.spec.http[].mirrorPercent", "{}"),
    ("VirtualService.spec.http[].corsPolicy", "{}"),
    ("VirtualService.spec.tls[]", "{}"),
    ("VirtualService.spec.tcp[]", "{}"),
    (
        "DestinationRule.spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[]",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.loadBalancer.warmup",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.connectionPool.tcp.tcpKeepalive",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.connectionPool.http.http2KeepAlive",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[]",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.tls.clientCertificate",
        "{}",
    ),
    ("DestinationRule.spec.trafficPolicy.tls.privateKey", "{}"),
    (
        "DestinationRule.spec.trafficPolicy.tls.caCertificates",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.tls.credentialName",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.tls.subjectAltNames[]",
        "{}",
    ),
    (
        "DestinationRule.spec.trafficPolicy.tls.insecureSkipVerify",
        "{}",
    ),
    ("DestinationRule.spec.trafficPolicy.tls.caCrl", "{}"),
    (
        "DestinationRule.spec.trafficPolicy.portLevelSettings[]",
        "{}",
    ),
    ("DestinationRule.spec.trafficPolicy.tunnel", "{}"),
    ("DestinationRule.spec.trafficPolicy.proxyProtocol", "{}"),
    ("DestinationRule.spec.trafficPolicy.retryBudget", "{}"),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[]",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.loadBalancer.zoneAwareLbSetting",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.loadBalancer.warmupDurationSecs",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.loadBalancer.warmup",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.connectionPool.tcp.tcpKeepalive",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.connectionPool.http.http2KeepAlive",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.outlierDetection.consecutiveErrors",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[]",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.clientCertificate",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.privateKey",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.caCertificates",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.credentialName",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.subjectAltNames[]",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.insecureSkipVerify",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.tls.caCrl",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.portLevelSettings[]",
        "{}",
    ),
    ("DestinationRule.spec.subsets[].trafficPolicy.tunnel", "{}"),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.proxyProtocol",
        "{}",
    ),
    (
        "DestinationRule.spec.subsets[].trafficPolicy.retryBudget",
        "{}",
    ),
    ("DestinationRule.spec.workloadSelector", "{}"),
    ("AuthorizationPolicy.spec.targetRef", "{}"),
    ("AuthorizationPolicy.spec.targetRefs[]", "{}"),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.requestPrincipals[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.notRequestPrincipals[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.serviceAccounts[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.notServiceAccounts[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.remoteIpBlocks[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.notRemoteIpBlocks[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.trustDomains[]",
        "{}",
    ),
    (
        "AuthorizationPolicy.spec.rules[].from[].source.notTrustDomains[]",
        "{}",
    ),
    ("AuthorizationPolicy.spec.provider", "{}"),
];

/// A valid resource of each kind that the refused field is added to (so the refusal, not a
/// missing field, is what fails), next to [`BASE`].
fn refusal_base(kind: &str) -> &'static str {
    match kind {
        "ServiceEntry" => {
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: case, namespace: default }\nspec:\n  hosts: [case.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{ number: 80, name: http, protocol: HTTP }]\n  endpoints: [{ address: 127.0.0.1, ports: { http: 18080 } }]\n"
        }
        "WorkloadEntry" => {
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: case, namespace: default }\nspec:\n  address: 127.0.0.1\n  labels: { app: case }\n"
        }
        "VirtualService" => {
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: case, namespace: default }\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n  http:\n  - match: [{ uri: { prefix: / } }]\n    route: [{ destination: { host: reviews.default.svc.cluster.local } }]\n    retries: { attempts: 1 }\n    fault:\n      delay: { fixedDelay: 1s, percentage: { value: 0 } }\n      abort: { httpStatus: 503, percentage: { value: 0 } }\n    redirect: { uri: /x }\n"
        }
        "DestinationRule" => {
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: case, namespace: default }\nspec:\n  host: ratings.default.svc.cluster.local\n  trafficPolicy: &p\n    loadBalancer: { consistentHash: { httpCookie: { name: c, ttl: 1s } } }\n    connectionPool: { tcp: { maxConnections: 1 }, http: { maxRetries: 1 } }\n    outlierDetection: { consecutive5xxErrors: 1 }\n    tls: { mode: ISTIO_MUTUAL }\n  subsets:\n  - name: v1\n    labels: { version: v1 }\n    trafficPolicy: *p\n"
        }
        "PeerAuthentication" => {
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: case, namespace: default }\nspec:\n  mtls: { mode: STRICT }\n"
        }
        "AuthorizationPolicy" => {
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: case, namespace: default }\nspec:\n  rules:\n  - from: [{ source: { principals: [cluster.local/ns/default/sa/a] } }]\n    to: [{ operation: { methods: [GET] } }]\n    when: [{ key: source.ip, values: [127.0.0.1] }]\n"
        }
        other => panic!("no refusal base for kind {other}"),
    }
}

/// Sets `segments` (the path below the resource, `[]` marking a list whose first item is
/// meant) to `leaf` in `node`, creating the mappings and one-item lists on the way.
fn set_path(node: &mut serde_yaml_ng::Value, segments: &[&str], leaf: serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    let (first, rest) = segments.split_first().expect("a path has a field");
    let (name, list) = match first.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*first, false),
    };
    let map = node
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("`{name}`'s parent is not a mapping"));
    let key = Value::String(name.to_owned());
    if rest.is_empty() {
        map.insert(key, leaf);
        return;
    }
    if !map.contains_key(&key) {
        let empty = Value::Mapping(Default::default());
        map.insert(
            key.clone(),
            if list {
                Value::Sequence(vec![empty])
            } else {
                empty
            },
        );
    }
    let child = map.get_mut(&key).unwrap();
    let child = if list {
        let items = child.as_sequence_mut().expect("a list");
        if items.is_empty() {
            items.push(Value::Mapping(Default::default()));
        }
        &mut items[0]
    } else {
        child
    };
    set_path(child, rest, leaf)
}

/// `spec.http[0].match[1].gateways` -> `spec.http.match.gateways`.
fn without_indices(field: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn every_refused_field_is_refused() {
    let mut failures = Vec::new();
    for (path, value) in REFUSED_FIELDS {
        let (kind, below) = path.split_once('.').unwrap();
        let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(refusal_base(kind)).unwrap();
        let segments: Vec<&str> = below.split('.').collect();
        set_path(&mut doc, &segments, serde_yaml_ng::from_str(value).unwrap());
        let yaml = serde_yaml_ng::to_string(&doc).unwrap();
        let files = [
            SourceFile {
                path: "base.yaml".into(),
                text: BASE.into(),
            },
            SourceFile {
                path: "case.yaml".into(),
                text: yaml.clone(),
            },
        ];
        let errors = LoadReport::from_files(&files).errors;
        let want = below.replace("[]", "");
        let named = errors.iter().any(|e| {
            e.resource
                .as_ref()
                .is_some_and(|r| r.to_string().starts_with(&format!("{kind} ")))
                && without_indices(&e.field) == want
                && e.reason.contains("not supported")
        });
        if !named {
            let got: Vec<String> = errors.iter().map(without_origin).collect();
            failures.push(format!(
                "{path}: no error says `{want}` is not supported\n{yaml}  got: {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The refusal bases load clean: an error in a case comes from the field it adds.
#[test]
fn refusal_bases_are_valid() {
    for kind in [
        "ServiceEntry",
        "WorkloadEntry",
        "VirtualService",
        "DestinationRule",
        "PeerAuthentication",
        "AuthorizationPolicy",
    ] {
        let got = errors_of(refusal_base(kind));
        // The VirtualService base sets both route and redirect, so the cases can add
        // fields under either; that conflict is its only error.
        let allowed = |e: &String| kind == "VirtualService" && e.contains("spec.http[0].redirect");
        let unexpected: Vec<&String> = got.iter().filter(|e| !allowed(e)).collect();
        assert!(unexpected.is_empty(), "{kind}: {unexpected:#?}");
    }
}
