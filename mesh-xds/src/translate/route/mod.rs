//! Route configurations (RDS, or inline in an HTTP connection manager): virtual hosts, routes,
//! matches, actions and per-route policies (gRPC A28, A31, A33, A44; Envoy's
//! route_components.proto).

mod action;
mod filters;
pub(crate) mod headers;
mod retry;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3 as pb;
use mesh_core::model::{
    FilterOverrides, MirrorPolicy, PathMatch, Route, RouteAction, RouteConfig, RouteMatch,
    VirtualHost,
};

use super::matcher::{header_matchers, query_parameter_matcher, regex_full, runtime_fraction};
use super::{At, Res, bail, is_true, q, refuse_set};
use crate::resource::Rejection;

pub use filters::filter_overrides;
pub use retry::retry_policy;

use action::{direct_response, forward_action, mirror_policies, redirect};
use headers::header_ops;

/// Decodes and validates an RDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<RouteConfig>, Rejection> {
    let r: pb::RouteConfiguration =
        super::decode_message(bytes, "envoy.config.route.v3.RouteConfiguration")?;
    if r.name.is_empty() {
        return Err(Rejection {
            name: None,
            reason: "route_config has an empty name".into(),
        });
    }
    route_config(&r)
        .map(Arc::new)
        .map_err(|e| e.reject("route_config", &r.name))
}

/// Translates a `RouteConfiguration`.
pub fn route_config(r: &pb::RouteConfiguration) -> Res<RouteConfig> {
    if r.vhds.is_some() {
        return bail("vhds (on-demand virtual hosts) is not supported");
    }
    if !r.cluster_specifier_plugins.is_empty() {
        return bail("cluster_specifier_plugins are not supported");
    }
    if !r.vhost_header.is_empty() {
        return bail(format!(
            "vhost_header {:?} is not supported",
            r.vhost_header
        ));
    }
    if r.ignore_port_in_host_matching {
        return bail("ignore_port_in_host_matching is not supported");
    }
    if r.ignore_path_parameters_in_path_matching {
        return bail("ignore_path_parameters_in_path_matching is not supported");
    }
    // `validate_clusters: false` is what this data plane does (a route to an unknown cluster
    // answers 503); `true` would NACK such a configuration, which we do not.
    refuse_set(&[
        ("internal_only_headers", !r.internal_only_headers.is_empty()),
        (
            "most_specific_header_mutations_wins",
            r.most_specific_header_mutations_wins,
        ),
        ("validate_clusters", is_true(r.validate_clusters.as_ref())),
        (
            "max_direct_response_body_size_bytes",
            r.max_direct_response_body_size_bytes.is_some(),
        ),
        ("route_specifiers", !r.route_specifiers.is_empty()),
    ])?;
    let config_overrides = filter_overrides(&r.typed_per_filter_config)?;
    let config_mirrors = mirror_policies(&r.request_mirror_policies)?;
    let mut seen_domains = HashSet::new();
    let mut virtual_hosts = Vec::with_capacity(r.virtual_hosts.len());
    for (i, vh) in r.virtual_hosts.iter().enumerate() {
        let at = || format!("virtual_host[{i}] {}", q(&vh.name));
        let mut v = virtual_host(vh, &config_mirrors, &config_overrides).at_with(at)?;
        for d in &v.domains {
            if !seen_domains.insert(d.to_ascii_lowercase()) {
                return bail(format!(
                    "domain {d:?} appears in more than one virtual host"
                ))
                .at_with(at);
            }
        }
        v.name = vh.name.clone();
        virtual_hosts.push(v);
    }
    Ok(RouteConfig {
        name: r.name.clone(),
        virtual_hosts,
        headers: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
    })
}

fn virtual_host(
    vh: &pb::VirtualHost,
    parent_mirrors: &[MirrorPolicy],
    parent_overrides: &FilterOverrides,
) -> Res<VirtualHost> {
    if vh.domains.is_empty() {
        return bail("domains must not be empty");
    }
    for d in &vh.domains {
        validate_domain(d).at(".domains")?;
    }
    if vh.matcher.is_some() {
        return bail("matcher (generic matching tree) is not supported");
    }
    if vh.require_tls != pb::virtual_host::TlsRequirementType::None as i32 {
        return bail("require_tls is not supported");
    }
    // `virtual_clusters` only name stats; the rest would change requests or responses.
    refuse_set(&[
        ("rate_limits", !vh.rate_limits.is_empty()),
        ("cors", vh.cors.is_some()),
        (
            "include_attempt_count_in_response",
            vh.include_attempt_count_in_response,
        ),
        (
            "include_is_timeout_retry_header",
            vh.include_is_timeout_retry_header,
        ),
        (
            "per_request_buffer_limit_bytes",
            vh.per_request_buffer_limit_bytes.is_some(),
        ),
        (
            "request_body_buffer_limit",
            vh.request_body_buffer_limit.is_some(),
        ),
        ("route_specifiers", !vh.route_specifiers.is_empty()),
    ])?;
    if vh.hedge_policy.is_some() {
        return bail("hedge_policy is not supported");
    }
    if vh.retry_policy_typed_config.is_some() {
        return bail("retry_policy_typed_config is not supported");
    }
    let retry_policy = vh
        .retry_policy
        .as_ref()
        .map(retry_policy)
        .transpose()
        .at(".retry_policy")?;
    let mut overrides = filter_overrides(&vh.typed_per_filter_config)?;
    for (k, v) in parent_overrides {
        overrides.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut mirrors = mirror_policies(&vh.request_mirror_policies)?;
    if mirrors.is_empty() {
        mirrors = parent_mirrors.to_vec();
    }
    let mut routes = Vec::with_capacity(vh.routes.len());
    for (i, r) in vh.routes.iter().enumerate() {
        routes.push(route(r, &mirrors).at_with(|| format!("route[{i}]"))?);
    }
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes,
        retry_policy,
        headers: header_ops(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        )?,
        filter_overrides: overrides,
        include_request_attempt_count: vh.include_request_attempt_count,
    })
}

/// Envoy and gRPC A28: `*`, `*.suffix`, `prefix*` or an exact name; one wildcard at most.
fn validate_domain(d: &str) -> Res<()> {
    if d.is_empty() {
        return bail("empty domain");
    }
    if d == "*" {
        return Ok(());
    }
    let stars = d.matches('*').count();
    if stars > 1 || (stars == 1 && !d.starts_with('*') && !d.ends_with('*')) {
        return bail(format!(
            "domain {d:?}: a wildcard is allowed only once, at the start or the end"
        ));
    }
    Ok(())
}

fn route(r: &pb::Route, inherited_mirrors: &[MirrorPolicy]) -> Res<Route> {
    let Some(m) = &r.r#match else {
        return bail("match is required");
    };
    let route_match = route_match(m).at(".match")?;
    refuse_set(&[
        (
            "per_request_buffer_limit_bytes",
            r.per_request_buffer_limit_bytes.is_some(),
        ),
        (
            "request_body_buffer_limit",
            r.request_body_buffer_limit.is_some(),
        ),
        ("route_specifiers", !r.route_specifiers.is_empty()),
    ])?;
    let action = match &r.action {
        None => return bail("an action (route, redirect, direct_response) is required"),
        Some(pb::route::Action::Route(a)) => {
            RouteAction::Forward(Box::new(forward_action(a, inherited_mirrors).at(".route")?))
        }
        Some(pb::route::Action::Redirect(a)) => RouteAction::Redirect(redirect(a).at(".redirect")?),
        Some(pb::route::Action::DirectResponse(a)) => {
            RouteAction::DirectResponse(direct_response(a).at(".direct_response")?)
        }
        Some(pb::route::Action::FilterAction(_)) => {
            return bail("filter_action is not supported");
        }
        Some(pb::route::Action::NonForwardingAction(_)) => RouteAction::NonForwarding,
    };
    Ok(Route {
        name: r.name.clone(),
        route_match,
        action,
        headers: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
        filter_overrides: filter_overrides(&r.typed_per_filter_config)?,
    })
}

fn route_match(m: &pb::RouteMatch) -> Res<RouteMatch> {
    use pb::route_match::PathSpecifier as P;
    let path = match &m.path_specifier {
        None => return bail("path_specifier (prefix, path, safe_regex, ...) is required"),
        Some(P::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(P::Path(p)) => PathMatch::Exact(p.clone()),
        Some(P::SafeRegex(re)) => PathMatch::Regex(regex_full(re).at(".safe_regex")?),
        Some(P::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || (p.len() > 1 && p.ends_with('/')) {
                return bail(format!(
                    "path_separated_prefix {p:?} must not contain '?' or '#' nor end with '/'"
                ));
            }
            PathMatch::PathSeparatedPrefix(p.clone())
        }
        Some(P::ConnectMatcher(_)) => return bail("connect_matcher is not supported"),
        Some(P::PathMatchPolicy(ext)) => {
            return bail(format!("path_match_policy {:?} is not supported", ext.name));
        }
    };
    if !m.cookies.is_empty() {
        return bail("cookies matchers are not supported");
    }
    if !m.dynamic_metadata.is_empty() {
        return bail("dynamic_metadata matchers are not supported");
    }
    if !m.filter_state.is_empty() {
        return bail("filter_state matchers are not supported");
    }
    if m.tls_context.is_some() {
        return bail("tls_context matching is not supported");
    }
    let query_parameters = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, qp)| query_parameter_matcher(qp).at_with(|| format!(".query_parameters[{i}]")))
        .collect::<Res<Vec<_>>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers: header_matchers(&m.headers, "headers")?,
        query_parameters,
        fraction: m
            .runtime_fraction
            .as_ref()
            .map(runtime_fraction)
            .transpose()
            .at(".runtime_fraction")?,
        grpc: m.grpc.is_some(),
    })
}

/// Envoy's default route timeout when a forwarding route sets none.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
