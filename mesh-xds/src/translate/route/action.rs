//! What a route does: forward (weighted clusters, rewrites, hash and mirror policies),
//! redirect, or answer directly.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use mesh_core::model::{
    ClusterSpecifier, DirectResponse, ForwardAction, HashPolicy, HashPolicyKind, HostRewrite,
    MaxStreamDuration, MirrorPolicy, PathRedirect, Redirect, RegexRewrite, WeightedCluster,
};

use crate::translate::matcher::{regex_search, runtime_fraction};
use crate::translate::{At, Invalid, Res, bail, is_true, opt_duration, refuse_set};

use super::filters::filter_overrides;
use super::headers::{header_ops, valid_header_name};
use super::retry::retry_policy;

pub(super) fn forward_action(
    a: &pb::RouteAction,
    inherited_mirrors: &[MirrorPolicy],
) -> Res<ForwardAction> {
    use pb::route_action::ClusterSpecifier as C;
    use pb::route_action::HostRewriteSpecifier as H;
    refuse_set(&[
        ("rate_limits", !a.rate_limits.is_empty()),
        (
            "include_vh_rate_limits",
            is_true(a.include_vh_rate_limits.as_ref()),
        ),
        ("cors", a.cors.is_some()),
        ("flush_timeout", a.flush_timeout.is_some()),
        ("early_data_policy", a.early_data_policy.is_some()),
        ("upgrade_configs", !a.upgrade_configs.is_empty()),
    ])?;
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
        || a.max_internal_redirects.is_some()
        || a.internal_redirect_action
            == pb::route_action::InternalRedirectAction::HandleInternalRedirect as i32
    {
        return bail(
            "internal_redirect_policy / internal_redirect_action / max_internal_redirects (internal redirects) are not supported",
        );
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
            // Envoy: 0 is "not enforced" (istiod's proxyless routes say 0 without a timeout).
            max_stream_duration: opt_duration(m.max_stream_duration.as_ref())
                .at(".max_stream_duration.max_stream_duration")?
                .filter(|d| !d.is_zero()),
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

pub(super) fn weighted_clusters(w: &pb::WeightedCluster) -> Res<ClusterSpecifier> {
    if w.clusters.is_empty() {
        return bail("clusters must not be empty");
    }
    // runtime_key_prefix only lets a runtime override the weights; there is no runtime.
    if w.random_value_specifier.is_some() {
        return bail("random_value_specifier (header_name, use_hash_policy) is not supported");
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

pub(super) fn regex_rewrite(r: &RegexMatchAndSubstitute) -> Res<RegexRewrite> {
    let Some(p) = &r.pattern else {
        return bail("pattern is required");
    };
    Ok(RegexRewrite {
        pattern: regex_search(p).at(".pattern")?,
        substitution: r.substitution.clone(),
    })
}

pub(super) fn mirror_policies(
    ms: &[pb::route_action::RequestMirrorPolicy],
) -> Res<Vec<MirrorPolicy>> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| mirror_policy(m).at_with(|| format!("[{i}]")))
        .collect()
}

pub(super) fn mirror_policy(m: &pb::route_action::RequestMirrorPolicy) -> Res<MirrorPolicy> {
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
        keep_host: m.disable_shadow_host_suffix_append,
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
pub(super) fn hash_policy(h: &pb::route_action::HashPolicy) -> Res<Option<HashPolicy>> {
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

pub(super) fn redirect(r: &pb::RedirectAction) -> Res<Redirect> {
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

pub(super) fn direct_response(d: &pb::DirectResponseAction) -> Res<DirectResponse> {
    use core::data_source::Specifier as S;
    let status = match u16::try_from(d.status) {
        Ok(s) if (200..600).contains(&s) => s,
        _ => return bail(format!("status {} is outside [200, 600)", d.status)),
    };
    if d.body_format.is_some() {
        return bail("body_format is not supported");
    }
    if d.body
        .as_ref()
        .is_some_and(|b| b.watched_directory.is_some())
    {
        return bail("body.watched_directory is not supported");
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
