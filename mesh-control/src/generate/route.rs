//! Routes of a service port from its VirtualService (Istio's `BuildHTTPRoutesForVirtualService`
//! in miniature): one Envoy route per match, weighted splits to subset clusters, redirects,
//! rewrites, timeouts, retries, fault injection, mirroring and header operations.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use envoy_types::util::pack_any;

use super::names::cluster_name;
use super::pb;
use crate::istio::MeshConfig;
use crate::istio::api::{
    DerivePort, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRoute, ServicePort,
};
use crate::istio::{Service, duration};

/// Name of the fault filter, and key of its per-route config.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// Istio's default retry policy for routes without `retries`.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The workload the routes are generated for, for VirtualService matches on
/// `sourceLabels` and `sourceNamespace` (Istio generates each proxy its own routes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) labels: &'a BTreeMap<String, String>,
}

impl Caller<'_> {
    fn matches(&self, m: &HttpMatchRequest) -> bool {
        m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns == self.namespace)
            && m.source_labels
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The virtual host of one service port, answering to `domains`, for `caller` (`None`:
/// routes that match on the caller are left out).
pub(crate) fn virtual_host(
    config: &MeshConfig,
    svc: &Service,
    port: &ServicePort,
    domains: Vec<String>,
    caller: Option<Caller<'_>>,
) -> rds::VirtualHost {
    rds::VirtualHost {
        name: super::names::host_port(&svc.host, port.number),
        domains,
        routes: routes(config, svc, port, caller),
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// The routes of a service port: its VirtualService's, else one default route.
pub(crate) fn routes(
    config: &MeshConfig,
    svc: &Service,
    port: &ServicePort,
    caller: Option<Caller<'_>>,
) -> Vec<rds::Route> {
    let Some(vs) = config.virtual_service_for(&svc.host) else {
        return vec![default_route(config, svc, port)];
    };
    let mut out = Vec::new();
    for http in &vs.spec.http {
        if http.matches.is_empty() {
            out.push(route(config, http, None, svc, port));
            continue;
        }
        for m in &http.matches {
            if m.port.is_some_and(|p| p != port.number) {
                continue;
            }
            // Source-dependent matches apply to the callers they name only.
            if has_source_match(m) && !caller.is_some_and(|c| c.matches(m)) {
                continue;
            }
            out.push(route(config, http, Some(m), svc, port));
        }
    }
    out
}

/// The redirect's port as istiod's `ApplyRedirect` sets it: `derivePort:
/// FROM_REQUEST_PORT` is the port the routes are generated for (Envoy cannot derive it),
/// `FROM_PROTOCOL_DEFAULT` none; an explicit or derived 80 (http) or 443 (https) is left
/// out of the location.
fn redirect_port(redirect: &HttpRedirect, listen_port: u32) -> u32 {
    let port = match (redirect.port, redirect.derive_port) {
        (Some(p), _) => p,
        (None, Some(DerivePort::FromRequestPort)) => listen_port,
        (None, Some(DerivePort::FromProtocolDefault) | None) => 0,
    };
    match (port, redirect.scheme.as_deref().unwrap_or("http")) {
        (80, "http") | (443, "https") => 0,
        _ => port,
    }
}

/// Whether a match depends on the calling workload.
pub(crate) fn has_source_match(m: &HttpMatchRequest) -> bool {
    !m.source_labels.is_empty() || m.source_namespace.is_some()
}

fn default_route(config: &MeshConfig, svc: &Service, port: &ServicePort) -> rds::Route {
    let mut action = rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(cluster_name(
            port.number,
            "",
            &svc.host,
        ))),
        timeout: Some(pb::duration(std::time::Duration::ZERO)),
        // istiod's default route: no limit, and a caller's grpc-timeout honoured.
        max_stream_duration: Some(rds::route_action::MaxStreamDuration {
            max_stream_duration: Some(pb::duration(std::time::Duration::ZERO)),
            grpc_timeout_header_max: Some(pb::duration(std::time::Duration::ZERO)),
            ..Default::default()
        }),
        retry_policy: Some(retry_policy(&HttpRetry {
            attempts: 2,
            ..Default::default()
        })),
        hash_policy: hash_policy(config, &svc.host, "").into_iter().collect(),
        ..Default::default()
    };
    sticky_retries(&mut action);
    rds::Route {
        name: "default".into(),
        r#match: Some(prefix_match("/")),
        action: Some(rds::route::Action::Route(action)),
        ..Default::default()
    }
}

/// istiod's retries to one consistently hashed destination: a retry may go back to the
/// hashed host (no `previous_hosts` predicate), since every other host is the wrong one.
/// (istiod keeps the predicate on weighted routes.)
fn sticky_retries(action: &mut rds::RouteAction) {
    let single = matches!(
        action.cluster_specifier,
        Some(rds::route_action::ClusterSpecifier::Cluster(_))
    );
    if let Some(r) = action.retry_policy.as_mut()
        && single
        && !action.hash_policy.is_empty()
    {
        r.retry_host_predicate.clear();
    }
}

/// The route hash policy for a destination whose DestinationRule sets `consistentHash`
/// (istiod's `HashForHTTPDestination` and `ConsistentHashToHashPolicy`): the subset's hash
/// key, else the rule's. Without it the cluster's ring hash or Maglev would hash nothing.
fn hash_policy(
    config: &MeshConfig,
    host: &str,
    subset: &str,
) -> Option<rds::route_action::HashPolicy> {
    use rds::route_action::hash_policy::{self as hp, PolicySpecifier as P};
    let dr = config.destination_rule_for(host)?;
    let hash_of = |tp: Option<&crate::istio::api::TrafficPolicy>| {
        tp.and_then(|t| t.load_balancer.as_ref())
            .and_then(|lb| lb.consistent_hash.clone())
    };
    let subset_hash = dr
        .spec
        .subsets
        .iter()
        .find(|s| !subset.is_empty() && s.name == subset)
        .and_then(|s| hash_of(s.traffic_policy.as_ref()));
    let ch = subset_hash.or_else(|| hash_of(dr.spec.traffic_policy.as_ref()))?;
    let specifier = if let Some(name) = ch.http_header_name {
        P::Header(hp::Header {
            header_name: name,
            ..Default::default()
        })
    } else if let Some(c) = ch.http_cookie {
        P::Cookie(hp::Cookie {
            name: c.name,
            ttl: c.ttl.as_ref().and_then(|d| d.get()).map(pb::duration),
            path: c.path.unwrap_or_default(),
            ..Default::default()
        })
    } else if ch.use_source_ip == Some(true) {
        P::ConnectionProperties(hp::ConnectionProperties { source_ip: true })
    } else if let Some(name) = ch.http_query_parameter_name {
        P::QueryParameter(hp::QueryParameter { name })
    } else {
        return None;
    };
    Some(rds::route_action::HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    })
}

fn prefix_match(prefix: &str) -> rds::RouteMatch {
    rds::RouteMatch {
        path_specifier: Some(rds::route_match::PathSpecifier::Prefix(prefix.into())),
        ..Default::default()
    }
}

fn route(
    config: &MeshConfig,
    http: &HttpRoute,
    m: Option<&HttpMatchRequest>,
    svc: &Service,
    port: &ServicePort,
) -> rds::Route {
    let name = match (http.name.as_str(), m.map(|m| m.name.as_str())) {
        ("", Some(n)) | (n, None | Some("")) => n.to_owned(),
        (r, Some(n)) => format!("{r}.{n}"),
    };
    let mut out = rds::Route {
        name,
        r#match: Some(m.map(route_match).unwrap_or_else(|| prefix_match("/"))),
        ..Default::default()
    };
    if let Some(redirect) = &http.redirect {
        let code = match redirect.redirect_code.unwrap_or(301) {
            302 => rds::redirect_action::RedirectResponseCode::Found,
            303 => rds::redirect_action::RedirectResponseCode::SeeOther,
            307 => rds::redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => rds::redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => rds::redirect_action::RedirectResponseCode::MovedPermanently,
        };
        out.action = Some(rds::route::Action::Redirect(rds::RedirectAction {
            host_redirect: redirect.authority.clone().unwrap_or_default(),
            port_redirect: redirect_port(redirect, port.number),
            response_code: code as i32,
            scheme_rewrite_specifier: redirect
                .scheme
                .clone()
                .map(rds::redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
            path_rewrite_specifier: redirect
                .uri
                .clone()
                .map(rds::redirect_action::PathRewriteSpecifier::PathRedirect),
            ..Default::default()
        }));
    } else {
        out.action = Some(rds::route::Action::Route(route_action(
            config, http, svc, port,
        )));
    }
    if let Some(f) = &http.fault
        && let Some(any) = fault_config(f)
    {
        out.typed_per_filter_config = HashMap::from([(FAULT_FILTER.to_owned(), any)]);
    }
    // The route's header edits, then (one destination) the destination's, as istiod
    // appends them; a weighted destination's go on its cluster weight (`route_action`).
    let single = match http.route.as_slice() {
        [only] if http.redirect.is_none() => only.headers.as_ref(),
        _ => None,
    };
    for h in http.headers.iter().chain(single) {
        let ops = HeaderEdits::of(h);
        out.request_headers_to_add.extend(ops.request_add);
        out.request_headers_to_remove.extend(ops.request_remove);
        out.response_headers_to_add.extend(ops.response_add);
        out.response_headers_to_remove.extend(ops.response_remove);
    }
    out
}

/// A VirtualService `Headers` as Envoy's header edits.
#[derive(Default)]
struct HeaderEdits {
    request_add: Vec<core::HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<core::HeaderValueOption>,
    response_remove: Vec<String>,
}

impl HeaderEdits {
    fn of(h: &Headers) -> Self {
        let (request_add, request_remove) = h.request.as_ref().map(header_ops).unwrap_or_default();
        let (response_add, response_remove) =
            h.response.as_ref().map(header_ops).unwrap_or_default();
        Self {
            request_add,
            request_remove,
            response_add,
            response_remove,
        }
    }
}

fn header_ops(ops: &HeaderOperations) -> (Vec<core::HeaderValueOption>, Vec<String>) {
    let value = |k: &String, v: &String, action: core::header_value_option::HeaderAppendAction| {
        core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        }
    };
    use core::header_value_option::HeaderAppendAction as A;
    let add = ops
        .set
        .iter()
        .map(|(k, v)| value(k, v, A::OverwriteIfExistsOrAdd))
        .chain(
            ops.add
                .iter()
                .map(|(k, v)| value(k, v, A::AppendIfExistsOrAdd)),
        )
        .collect();
    (add, ops.remove.clone())
}

fn route_match(m: &HttpMatchRequest) -> rds::RouteMatch {
    use rds::route_match::PathSpecifier;
    let mut out = rds::RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".into())),
        ..Default::default()
    };
    if let Some(uri) = &m.uri {
        use crate::istio::api::StringMatchKind as K;
        out.path_specifier = match uri.kind() {
            Some(K::Exact(p)) => Some(PathSpecifier::Path(p.into())),
            Some(K::Prefix(p)) => Some(PathSpecifier::Prefix(p.into())),
            Some(K::Regex(r)) => Some(PathSpecifier::SafeRegex(pb::regex(r))),
            None => Some(PathSpecifier::Prefix("/".into())),
        };
        if m.ignore_uri_case {
            out.case_sensitive = Some(BoolValue { value: false });
        }
    }
    let pseudo = [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ];
    for (name, sm) in pseudo {
        if let Some(sm) = sm {
            out.headers.push(header_matcher(name, sm, false));
        }
    }
    for (name, sm) in &m.headers {
        out.headers.push(header_matcher(name, sm, false));
    }
    for (name, sm) in &m.without_headers {
        out.headers.push(header_matcher(name, sm, true));
    }
    for (name, sm) in &m.query_params {
        use rds::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
        let spec = match pb::string_matcher(sm, false) {
            Some(s) => Q::StringMatch(s),
            None => Q::PresentMatch(true),
        };
        out.query_parameters.push(rds::QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(spec),
        });
    }
    out
}

fn header_matcher(
    name: &str,
    sm: &crate::istio::api::StringMatch,
    invert: bool,
) -> rds::HeaderMatcher {
    use rds::header_matcher::HeaderMatchSpecifier as H;
    // An empty match (`end-user: {}`) means "present", as in Istio.
    let spec = match pb::string_matcher(sm, false) {
        Some(s) => H::StringMatch(s),
        None => H::PresentMatch(true),
    };
    // istiod: a `withoutHeaders` value match also holds when the header is absent (Envoy
    // would otherwise fail an inverted match on a missing header); not for a present match.
    let treat_missing_header_as_empty = invert && matches!(spec, H::StringMatch(_));
    rds::HeaderMatcher {
        name: name.into(),
        invert_match: invert,
        header_match_specifier: Some(spec),
        treat_missing_header_as_empty,
    }
}

/// The cluster a destination names, with the port resolved as Istio does: the
/// destination's port, else the route's own port for the same host, else the service's
/// only port.
fn destination_cluster(
    config: &MeshConfig,
    d: &Destination,
    svc: &Service,
    port: &ServicePort,
) -> String {
    let number = match &d.port {
        Some(p) if p.number != 0 => p.number,
        _ if d.host == svc.host => port.number,
        _ => 0,
    };
    // Another host without an explicit port: its first port (validation requires a
    // single-port service there).
    let number = if number == 0 {
        config
            .services
            .get(&d.host)
            .and_then(|s| s.ports.first())
            .map_or(port.number, |p| p.number)
    } else {
        number
    };
    cluster_name(number, &d.subset, &d.host)
}

fn route_action(
    config: &MeshConfig,
    http: &HttpRoute,
    svc: &Service,
    port: &ServicePort,
) -> rds::RouteAction {
    use rds::route_action::ClusterSpecifier;
    let mut action = rds::RouteAction::default();
    let dests = &http.route;
    action.cluster_specifier = Some(match dests.as_slice() {
        [] => ClusterSpecifier::Cluster(cluster_name(port.number, "", &svc.host)),
        [only] => {
            ClusterSpecifier::Cluster(destination_cluster(config, &only.destination, svc, port))
        }
        many => ClusterSpecifier::WeightedClusters(rds::WeightedCluster {
            clusters: many
                .iter()
                .filter(|d| d.weight > 0)
                .map(|d| {
                    let ops = d.headers.as_ref().map(HeaderEdits::of).unwrap_or_default();
                    rds::weighted_cluster::ClusterWeight {
                        name: destination_cluster(config, &d.destination, svc, port),
                        weight: pb::u32v(u32::try_from(d.weight).unwrap_or(0)),
                        request_headers_to_add: ops.request_add,
                        request_headers_to_remove: ops.request_remove,
                        response_headers_to_add: ops.response_add,
                        response_headers_to_remove: ops.response_remove,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }),
    });
    action.hash_policy = match dests.as_slice() {
        [] => hash_policy(config, &svc.host, "").into_iter().collect(),
        many => many
            .iter()
            .filter_map(|d| hash_policy(config, &d.destination.host, &d.destination.subset))
            .collect(),
    };
    let timeout = http
        .timeout
        .as_ref()
        .and_then(|t| t.get())
        .unwrap_or_default();
    action.timeout = Some(pb::duration(timeout));
    action.retry_policy = match &http.retries {
        Some(r) if r.attempts == 0 => None,
        Some(r) => Some(retry_policy(r)),
        None => Some(retry_policy(&HttpRetry {
            attempts: 2,
            ..Default::default()
        })),
    };
    if let Some(rw) = &http.rewrite {
        if let Some(uri) = &rw.uri {
            action.prefix_rewrite = uri.clone();
        }
        if let Some(a) = &rw.authority {
            action.host_rewrite_specifier = Some(
                rds::route_action::HostRewriteSpecifier::HostRewriteLiteral(a.clone()),
            );
        }
        if let Some(re) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(
                envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                    pattern: Some(pb::regex(&re.pattern)),
                    substitution: re.rewrite.clone(),
                },
            );
        }
    }
    if let Some(mirror) = &http.mirror {
        let pct = http.mirror_percentage.map(|p| p.value).unwrap_or(100.0);
        action.request_mirror_policies = vec![rds::route_action::RequestMirrorPolicy {
            cluster: destination_cluster(config, mirror, svc, port),
            // istiod: the copy keeps the request's host (no `-shadow` suffix).
            disable_shadow_host_suffix_append: true,
            runtime_fraction: Some(core::RuntimeFractionalPercent {
                default_value: pb::percent(pct),
                runtime_key: String::new(),
            }),
            ..Default::default()
        }];
    }
    sticky_retries(&mut action);
    action
}

/// Istio's translation of `retries`: numeric `retryOn` entries become retriable status
/// codes; retries go to other hosts when there are any.
fn retry_policy(r: &HttpRetry) -> rds::RetryPolicy {
    let retry_on = r.retry_on.as_deref().unwrap_or(DEFAULT_RETRY_ON);
    let mut on: Vec<String> = Vec::new();
    let mut codes: Vec<u32> = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => on.push(part.to_owned()),
        }
    }
    if r.retry_on.is_none() {
        codes.push(503);
    }
    if !codes.is_empty() && !on.iter().any(|o| o == "retriable-status-codes") {
        on.push("retriable-status-codes".into());
    }
    rds::RetryPolicy {
        retry_on: on.join(","),
        num_retries: pb::u32v(u32::try_from(r.attempts).unwrap_or(0)),
        per_try_timeout: r
            .per_try_timeout
            .as_ref()
            .and_then(|d| d.get())
            .map(pb::duration),
        retry_host_predicate: vec![rds::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(
                rds::retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack_any(
                    PreviousHostsPredicate::default(),
                )),
            ),
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: codes,
        ..Default::default()
    }
}

fn fault_config(f: &HttpFaultInjection) -> Option<Any> {
    let mut out = fault::HttpFault::default();
    if let Some(d) = &f.delay
        && let Some(fixed) = d
            .fixed_delay
            .as_ref()
            .and_then(|d| duration::parse(&d.0).ok())
    {
        out.delay = Some(common_fault::FaultDelay {
            percentage: pb::percent(d.percentage.map(|p| p.value).unwrap_or(100.0)),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                pb::duration(fixed),
            )),
        });
    }
    if let Some(a) = &f.abort {
        let error = if let Some(code) = a.http_status {
            Some(fault::fault_abort::ErrorType::HttpStatus(code))
        } else {
            a.grpc_status.as_ref().and_then(|name| {
                GRPC_STATUS
                    .iter()
                    .position(|s| s == name)
                    .map(|i| fault::fault_abort::ErrorType::GrpcStatus(i as u32))
            })
        };
        if let Some(error) = error {
            out.abort = Some(fault::FaultAbort {
                percentage: pb::percent(a.percentage.map(|p| p.value).unwrap_or(100.0)),
                error_type: Some(error),
                ..Default::default()
            });
        }
    }
    (out.delay.is_some() || out.abort.is_some()).then(|| pack_any(out))
}
