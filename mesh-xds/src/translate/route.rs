//! Route configurations (RDS, or inline in an HTTP connection manager): virtual hosts, routes,
//! matches, actions and per-route policies (gRPC A28, A31, A33, A44; Envoy's
//! route_components.proto).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::model::{
    AppendAction, ClusterSpecifier, DirectResponse, FilterOverride, FilterOverrides, ForwardAction,
    HashPolicy, HashPolicyKind, HeaderOps, HeaderValueOption, HostRewrite, MaxStreamDuration,
    MirrorPolicy, PathMatch, PathRedirect, Redirect, RegexRewrite, RetryBackOff, RetryOn,
    RetryPolicy, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost, WeightedCluster,
};

use super::matcher::{
    header_matchers, query_parameter_matcher, regex_full, regex_search, runtime_fraction,
};
use super::{At, Invalid, Res, any_type_name, bail, opt_duration, q, unpack};
use crate::resource::Rejection;

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

fn forward_action(a: &pb::RouteAction, inherited_mirrors: &[MirrorPolicy]) -> Res<ForwardAction> {
    use pb::route_action::ClusterSpecifier as C;
    use pb::route_action::HostRewriteSpecifier as H;
    let cluster = match &a.cluster_specifier {
        None => {
            return bail(
                "cluster_specifier (cluster, weighted_clusters, cluster_header) is required",
            );
        }
        Some(C::Cluster(c)) if c.is_empty() => return bail("cluster must not be empty"),
        Some(C::Cluster(c)) => ClusterSpecifier::Cluster(c.clone()),
        Some(C::ClusterHeader(h)) => {
            valid_header_name(h).at(".cluster_header")?;
            ClusterSpecifier::Header(h.to_ascii_lowercase())
        }
        Some(C::WeightedClusters(w)) => weighted_clusters(w).at(".weighted_clusters")?,
        Some(C::ClusterSpecifierPlugin(p)) => {
            return bail(format!("cluster_specifier_plugin {p:?} is not supported"));
        }
        Some(C::InlineClusterSpecifierPlugin(_)) => {
            return bail("inline_cluster_specifier_plugin is not supported");
        }
    };
    if a.metadata_match.is_some() {
        return bail("metadata_match (subset load balancing) is not supported");
    }
    if a.path_rewrite_policy.is_some() {
        return bail("path_rewrite_policy is not supported");
    }
    if !a.path_rewrite.is_empty() {
        return bail("path_rewrite (substitution format) is not supported");
    }
    if a.append_x_forwarded_host {
        return bail("append_x_forwarded_host is not supported");
    }
    if a.retry_policy_typed_config.is_some() {
        return bail("retry_policy_typed_config is not supported");
    }
    if a.hedge_policy.is_some() {
        return bail("hedge_policy is not supported");
    }
    if a.internal_redirect_policy.is_some()
        || a.internal_redirect_action
            == pb::route_action::InternalRedirectAction::HandleInternalRedirect as i32
    {
        return bail("internal redirects are not supported");
    }
    if a.priority == core::RoutingPriority::High as i32 {
        return bail("priority HIGH is not supported");
    }
    if a.cluster_not_found_response_code
        != pb::route_action::ClusterNotFoundResponseCode::ServiceUnavailable as i32
    {
        return bail(
            "cluster_not_found_response_code other than SERVICE_UNAVAILABLE is not supported",
        );
    }
    if !a.prefix_rewrite.is_empty() && a.regex_rewrite.is_some() {
        return bail("prefix_rewrite and regex_rewrite are mutually exclusive");
    }
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(H::HostRewriteLiteral(h)) => Some(HostRewrite::Literal(h.clone())),
        Some(H::AutoHostRewrite(b)) => b.value.then_some(HostRewrite::Auto),
        Some(H::HostRewriteHeader(h)) => {
            valid_header_name(h).at(".host_rewrite_header")?;
            Some(HostRewrite::Header(h.to_ascii_lowercase()))
        }
        Some(H::HostRewritePathRegex(_)) => {
            return bail("host_rewrite_path_regex is not supported");
        }
        Some(H::HostRewrite(_)) => {
            return bail("host_rewrite (substitution format) is not supported");
        }
    };
    // max_stream_duration wins over the deprecated max_grpc_timeout / grpc_timeout_offset.
    let max_stream_duration = match &a.max_stream_duration {
        Some(m) => MaxStreamDuration {
            max_stream_duration: opt_duration(m.max_stream_duration.as_ref())
                .at(".max_stream_duration.max_stream_duration")?,
            grpc_timeout_header_max: opt_duration(m.grpc_timeout_header_max.as_ref())
                .at(".max_stream_duration.grpc_timeout_header_max")?,
            grpc_timeout_header_offset: opt_duration(m.grpc_timeout_header_offset.as_ref())
                .at(".max_stream_duration.grpc_timeout_header_offset")?,
        },
        None => MaxStreamDuration {
            max_stream_duration: None,
            grpc_timeout_header_max: opt_duration(a.max_grpc_timeout.as_ref())
                .at(".max_grpc_timeout")?,
            grpc_timeout_header_offset: opt_duration(a.grpc_timeout_offset.as_ref())
                .at(".grpc_timeout_offset")?,
        },
    };
    let mut mirrors = mirror_policies(&a.request_mirror_policies).at(".request_mirror_policies")?;
    if mirrors.is_empty() {
        mirrors = inherited_mirrors.to_vec();
    }
    let hash_policies = a
        .hash_policy
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            hash_policy(h)
                .at_with(|| format!(".hash_policy[{i}]"))
                .transpose()
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(ForwardAction {
        cluster,
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        regex_rewrite: a
            .regex_rewrite
            .as_ref()
            .map(regex_rewrite)
            .transpose()
            .at(".regex_rewrite")?,
        host_rewrite,
        timeout: opt_duration(a.timeout.as_ref()).at(".timeout")?,
        idle_timeout: opt_duration(a.idle_timeout.as_ref()).at(".idle_timeout")?,
        retry_policy: a
            .retry_policy
            .as_ref()
            .map(retry_policy)
            .transpose()
            .at(".retry_policy")?,
        mirror_policies: mirrors,
        hash_policies,
        max_stream_duration,
    })
}

fn weighted_clusters(w: &pb::WeightedCluster) -> Res<ClusterSpecifier> {
    if w.clusters.is_empty() {
        return bail("clusters must not be empty");
    }
    // runtime_key_prefix only lets a runtime override the weights; there is no runtime.
    if w.random_value_specifier.is_some() {
        return bail("random_value_specifier (header_name) is not supported");
    }
    let mut total: u64 = 0;
    let mut out = Vec::with_capacity(w.clusters.len());
    for (i, c) in w.clusters.iter().enumerate() {
        let at = || format!(".clusters[{i}]");
        if c.name.is_empty() {
            let why = if c.cluster_header.is_empty() {
                "name is required"
            } else {
                "cluster_header in a weighted cluster is not supported"
            };
            return bail(why).at_with(at);
        }
        if c.metadata_match.is_some() {
            return bail("metadata_match (subset load balancing) is not supported").at_with(at);
        }
        if c.host_rewrite_specifier.is_some() {
            return bail("host_rewrite_literal in a weighted cluster is not supported").at_with(at);
        }
        let weight = c.weight.as_ref().map_or(0, |v| v.value);
        total += u64::from(weight);
        out.push(WeightedCluster {
            name: c.name.clone(),
            weight,
            headers: header_ops(
                &c.request_headers_to_add,
                &c.request_headers_to_remove,
                &c.response_headers_to_add,
                &c.response_headers_to_remove,
            )
            .at_with(at)?,
            filter_overrides: filter_overrides(&c.typed_per_filter_config).at_with(at)?,
        });
    }
    // gRPC A28: the sum must be positive and fit in 32 bits.
    if total == 0 {
        return bail("the sum of cluster weights must be greater than 0");
    }
    if total > u64::from(u32::MAX) {
        return bail(format!(
            "the sum of cluster weights ({total}) exceeds 4294967295"
        ));
    }
    if let Some(t) = &w.total_weight
        && t.value != 0
        && u64::from(t.value) != total
    {
        return bail(format!(
            "total_weight {} does not equal the sum of cluster weights {total}",
            t.value
        ));
    }
    Ok(ClusterSpecifier::Weighted(out))
}

fn regex_rewrite(r: &RegexMatchAndSubstitute) -> Res<RegexRewrite> {
    let Some(p) = &r.pattern else {
        return bail("pattern is required");
    };
    Ok(RegexRewrite {
        pattern: regex_search(p).at(".pattern")?,
        substitution: r.substitution.clone(),
    })
}

/// Translates a retry policy (gRPC A44, Envoy `RetryPolicy`).
pub fn retry_policy(r: &pb::RetryPolicy) -> Res<RetryPolicy> {
    let mut retry_on = Vec::new();
    for token in r
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match RetryOn::parse(token) {
            Some(c) if !retry_on.contains(&c) => retry_on.push(c),
            Some(_) => {}
            None => return bail(format!("retry_on {token:?} is not a known retry condition")),
        }
    }
    if r.retry_priority.is_some() {
        return bail("retry_priority is not supported");
    }
    let mut retry_previous_hosts = false;
    for (i, p) in r.retry_host_predicate.iter().enumerate() {
        let typed = match &p.config_type {
            Some(pb::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => {
                any_type_name(any)
            }
            None => "",
        };
        if p.name == "envoy.retry_host_predicates.previous_hosts"
            || typed == "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        {
            retry_previous_hosts = true;
        } else {
            return bail(format!(
                "retry host predicate {:?} is not supported (only previous_hosts)",
                p.name
            ))
            .at(format!(".retry_host_predicate[{i}]"));
        }
    }
    if !r.retry_options_predicates.is_empty() {
        return bail("retry_options_predicates are not supported");
    }
    if r.rate_limited_retry_back_off.is_some() {
        return bail("rate_limited_retry_back_off is not supported");
    }
    if !r.retriable_request_headers.is_empty() {
        return bail("retriable_request_headers are not supported");
    }
    let back_off = match &r.retry_back_off {
        None => RetryBackOff::default(),
        Some(b) => {
            let base =
                match opt_duration(b.base_interval.as_ref()).at(".retry_back_off.base_interval")? {
                    Some(d) if !d.is_zero() => d,
                    _ => return bail("retry_back_off.base_interval must be greater than 0"),
                };
            let max = opt_duration(b.max_interval.as_ref())
                .at(".retry_back_off.max_interval")?
                .unwrap_or(base * 10);
            if max < base {
                return bail("retry_back_off.max_interval must not be less than base_interval");
            }
            RetryBackOff {
                base_interval: base,
                max_interval: max,
            }
        }
    };
    let mut retriable_status_codes = Vec::with_capacity(r.retriable_status_codes.len());
    for c in &r.retriable_status_codes {
        match u16::try_from(*c) {
            Ok(c) if (100..600).contains(&c) => retriable_status_codes.push(c),
            _ => return bail(format!("retriable_status_codes: {c} is not an HTTP status")),
        }
    }
    Ok(RetryPolicy {
        retry_on,
        num_retries: r.num_retries.as_ref().map_or(1, |v| v.value),
        per_try_timeout: opt_duration(r.per_try_timeout.as_ref()).at(".per_try_timeout")?,
        per_try_idle_timeout: opt_duration(r.per_try_idle_timeout.as_ref())
            .at(".per_try_idle_timeout")?,
        back_off,
        retriable_status_codes,
        retriable_headers: header_matchers(&r.retriable_headers, "retriable_headers")?,
        retry_previous_hosts,
        host_selection_retry_max_attempts: u32::try_from(
            r.host_selection_retry_max_attempts.max(1),
        )
        .unwrap_or(u32::MAX),
    })
}

fn mirror_policies(ms: &[pb::route_action::RequestMirrorPolicy]) -> Res<Vec<MirrorPolicy>> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| mirror_policy(m).at_with(|| format!("[{i}]")))
        .collect()
}

fn mirror_policy(m: &pb::route_action::RequestMirrorPolicy) -> Res<MirrorPolicy> {
    if m.cluster.is_empty() {
        return bail(if m.cluster_header.is_empty() {
            "cluster is required"
        } else {
            "cluster_header is not supported"
        });
    }
    if !m.request_headers_mutations.is_empty() {
        return bail("request_headers_mutations are not supported");
    }
    if !m.host_rewrite_literal.is_empty() {
        return bail("host_rewrite_literal is not supported");
    }
    Ok(MirrorPolicy {
        cluster: m.cluster.clone(),
        fraction: m
            .runtime_fraction
            .as_ref()
            .map(runtime_fraction)
            .transpose()
            .at(".runtime_fraction")?,
    })
}

/// `None` for a policy that can never produce a hash (`source_ip: false`).
fn hash_policy(h: &pb::route_action::HashPolicy) -> Res<Option<HashPolicy>> {
    use pb::route_action::hash_policy::PolicySpecifier as P;
    let kind = match &h.policy_specifier {
        None => return bail("policy_specifier is required"),
        Some(P::Header(hd)) => {
            valid_header_name(&hd.header_name).at(".header.header_name")?;
            HashPolicyKind::Header {
                name: hd.header_name.to_ascii_lowercase(),
                regex_rewrite: hd
                    .regex_rewrite
                    .as_ref()
                    .map(regex_rewrite)
                    .transpose()
                    .at(".header.regex_rewrite")?,
            }
        }
        Some(P::Cookie(c)) => {
            if c.name.is_empty() {
                return bail("cookie.name is required");
            }
            if !c.attributes.is_empty() {
                return bail("cookie.attributes are not supported");
            }
            HashPolicyKind::Cookie {
                name: c.name.clone(),
                ttl: opt_duration(c.ttl.as_ref()).at(".cookie.ttl")?,
                path: c.path.clone(),
            }
        }
        Some(P::ConnectionProperties(c)) if c.source_ip => HashPolicyKind::SourceIp,
        Some(P::ConnectionProperties(_)) => return Ok(None),
        Some(P::QueryParameter(qp)) => {
            if qp.name.is_empty() {
                return bail("query_parameter.name is required");
            }
            HashPolicyKind::QueryParameter {
                name: qp.name.clone(),
            }
        }
        Some(P::FilterState(f)) if f.key == "io.grpc.channel_id" => HashPolicyKind::ChannelId,
        Some(P::FilterState(f)) => {
            return bail(format!(
                "filter_state key {:?} is not supported (only io.grpc.channel_id)",
                f.key
            ));
        }
    };
    Ok(Some(HashPolicy {
        kind,
        terminal: h.terminal,
    }))
}

fn redirect(r: &pb::RedirectAction) -> Res<Redirect> {
    use pb::redirect_action::PathRewriteSpecifier as P;
    use pb::redirect_action::RedirectResponseCode as C;
    use pb::redirect_action::SchemeRewriteSpecifier as S;
    let scheme = match &r.scheme_rewrite_specifier {
        None => None,
        Some(S::HttpsRedirect(true)) => Some("https".to_owned()),
        Some(S::HttpsRedirect(false)) => None,
        Some(S::SchemeRedirect(s)) if s.is_empty() => None,
        Some(S::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let path = match &r.path_rewrite_specifier {
        None => None,
        Some(P::PathRedirect(p)) => Some(PathRedirect::Path(p.clone())),
        Some(P::PrefixRewrite(p)) => Some(PathRedirect::PrefixRewrite(p.clone())),
        Some(P::RegexRewrite(rr)) => Some(PathRedirect::RegexRewrite(
            regex_rewrite(rr).at(".regex_rewrite")?,
        )),
        Some(P::PathRewrite(_)) => {
            return bail("path_rewrite (substitution format) is not supported");
        }
    };
    let response_code = match C::try_from(r.response_code) {
        Ok(C::MovedPermanently) => 301,
        Ok(C::Found) => 302,
        Ok(C::SeeOther) => 303,
        Ok(C::TemporaryRedirect) => 307,
        Ok(C::PermanentRedirect) => 308,
        Err(_) => return bail(format!("response_code {} is unknown", r.response_code)),
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| Invalid::new(format!("port_redirect {p} is out of range")))?,
        ),
    };
    Ok(Redirect {
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port,
        path,
        response_code,
        strip_query: r.strip_query,
    })
}

fn direct_response(d: &pb::DirectResponseAction) -> Res<DirectResponse> {
    use core::data_source::Specifier as S;
    let status = match u16::try_from(d.status) {
        Ok(s) if (200..600).contains(&s) => s,
        _ => return bail(format!("status {} is outside [200, 600)", d.status)),
    };
    if d.body_format.is_some() {
        return bail("body_format is not supported");
    }
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => None,
        Some(S::InlineBytes(b)) => Some(b.clone()),
        Some(S::InlineString(s)) => Some(s.clone().into_bytes()),
        Some(S::Filename(_)) => return bail("body.filename is not supported (inline bodies only)"),
        Some(S::EnvironmentVariable(_)) => {
            return bail("body.environment_variable is not supported (inline bodies only)");
        }
    };
    Ok(DirectResponse { status, body })
}

fn valid_header_name(h: &str) -> Res<()> {
    if h.is_empty() {
        return bail("header name must not be empty");
    }
    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
        return bail(format!("{h:?} is not a valid header name"));
    }
    Ok(())
}

fn header_name_for_mutation(h: &str) -> Res<String> {
    if h.starts_with(':') || h.eq_ignore_ascii_case("host") {
        return bail(format!("{h:?}: pseudo-headers and host cannot be modified"));
    }
    valid_header_name(h)?;
    Ok(h.to_ascii_lowercase())
}

fn header_value_option(o: &core::HeaderValueOption) -> Res<HeaderValueOption> {
    use core::header_value_option::HeaderAppendAction as A;
    let Some(h) = &o.header else {
        return bail("header is required");
    };
    let name = header_name_for_mutation(&h.key)?;
    let value = if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8(h.raw_value.clone())
            .map_err(|_| Invalid::new(format!("{name}: raw_value is not UTF-8")))?
    };
    if http::HeaderValue::from_str(&value).is_err() {
        return bail(format!("{name}: value is not a valid header value"));
    }
    let action = match (&o.append, A::try_from(o.append_action)) {
        (Some(_), Ok(a)) if a != A::AppendIfExistsOrAdd => {
            return bail(format!(
                "{name}: append and append_action are mutually exclusive"
            ));
        }
        (Some(b), _) if b.value => AppendAction::Append,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::AppendIfExistsOrAdd)) => AppendAction::Append,
        (None, Ok(A::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(A::OverwriteIfExistsOrAdd)) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(A::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            return bail(format!("{name}: unknown append_action {}", o.append_action));
        }
    };
    Ok(HeaderValueOption {
        name,
        value,
        action,
        keep_empty_value: o.keep_empty_value,
    })
}

fn header_adds(list: &[core::HeaderValueOption], field: &str) -> Res<Vec<HeaderValueOption>> {
    list.iter()
        .enumerate()
        .map(|(i, o)| header_value_option(o).at_with(|| format!(".{field}[{i}]")))
        .collect()
}

fn header_removes(list: &[String], field: &str) -> Res<Vec<String>> {
    list.iter()
        .enumerate()
        .map(|(i, h)| header_name_for_mutation(h).at_with(|| format!(".{field}[{i}]")))
        .collect()
}

fn header_ops(
    req_add: &[core::HeaderValueOption],
    req_remove: &[String],
    resp_add: &[core::HeaderValueOption],
    resp_remove: &[String],
) -> Res<HeaderOps> {
    Ok(HeaderOps {
        request_headers_to_add: header_adds(req_add, "request_headers_to_add")?,
        request_headers_to_remove: header_removes(req_remove, "request_headers_to_remove")?,
        response_headers_to_add: header_adds(resp_add, "response_headers_to_add")?,
        response_headers_to_remove: header_removes(resp_remove, "response_headers_to_remove")?,
    })
}

/// Translates `typed_per_filter_config` (gRPC A39): fault overrides and `FilterConfig`
/// wrappers (disabled, or optional); an unknown non-optional override is rejected.
pub fn filter_overrides(map: &HashMap<String, Any>) -> Res<FilterOverrides> {
    let mut out = BTreeMap::new();
    for (name, any) in map {
        let at = || format!(".typed_per_filter_config[{name:?}]");
        if let Some(o) = filter_override(any).at_with(at)? {
            out.insert(name.clone(), o);
        }
    }
    Ok(out)
}

fn filter_override(any: &Any) -> Res<Option<FilterOverride>> {
    let (config, optional) = if any_type_name(any) == "envoy.config.route.v3.FilterConfig" {
        let fc: pb::FilterConfig = unpack(any)?;
        if fc.disabled {
            return Ok(Some(FilterOverride::Disabled));
        }
        match fc.config {
            Some(c) => (c, fc.is_optional),
            None => return bail("FilterConfig has neither config nor disabled"),
        }
    } else {
        (any.clone(), false)
    };
    match any_type_name(&config) {
        "envoy.extensions.filters.http.fault.v3.HTTPFault" => {
            let f: HttpFault = unpack(&config)?;
            Ok(Some(FilterOverride::Fault(super::fault::http_fault(&f)?)))
        }
        _ if optional => Ok(None),
        other => bail(format!("override of type {other:?} is not supported")),
    }
}

/// Envoy's default route timeout when a forwarding route sets none.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
