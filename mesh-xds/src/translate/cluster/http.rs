//! A cluster's HTTP protocol options: the deprecated cluster-level fields and the typed
//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use mesh_core::model::{HttpProtocolOptions, UpstreamProtocol};

use crate::translate::{At, Res, any_type_name, bail, opt_duration, unpack};

const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub(super) fn http_protocol(c: &pb::Cluster) -> Res<HttpProtocolOptions> {
    let mut out = HttpProtocolOptions::default();
    // Deprecated cluster-level fields first; the typed extension options override them.
    if let Some(h2) = &c.http2_protocol_options {
        out.protocol = UpstreamProtocol::Http2;
        out.max_concurrent_streams = h2.max_concurrent_streams.as_ref().map(|v| v.value);
    }
    if c.protocol_selection == pb::cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32 {
        out.protocol = UpstreamProtocol::UseDownstream;
    }
    if let Some(common) = &c.common_http_protocol_options {
        common_http(common, &mut out).at("common_http_protocol_options")?;
    }
    if let Some(n) = &c.max_requests_per_connection {
        out.max_requests_per_connection = Some(n.value);
    }
    for (key, any) in &c.typed_extension_protocol_options {
        let at = || format!("typed_extension_protocol_options[{key:?}]");
        if key != HTTP_OPTIONS_KEY && any_type_name(any) != HTTP_OPTIONS_KEY {
            return bail(format!(
                "protocol options {:?} are not supported",
                any.type_url
            ))
            .at_with(at);
        }
        let opts: uphttp::HttpProtocolOptions = unpack(any).at_with(at)?;
        upstream_http_options(&opts, &mut out).at_with(at)?;
    }
    Ok(out)
}

fn common_http(c: &core::HttpProtocolOptions, out: &mut HttpProtocolOptions) -> Res<()> {
    out.idle_timeout = opt_duration(c.idle_timeout.as_ref())
        .at(".idle_timeout")?
        .or(out.idle_timeout);
    if let Some(n) = &c.max_requests_per_connection {
        out.max_requests_per_connection = Some(n.value);
    }
    out.max_connection_duration = opt_duration(c.max_connection_duration.as_ref())
        .at(".max_connection_duration")?
        .or(out.max_connection_duration);
    Ok(())
}

fn upstream_http_options(
    o: &uphttp::HttpProtocolOptions,
    out: &mut HttpProtocolOptions,
) -> Res<()> {
    use uphttp::http_protocol_options::UpstreamProtocolOptions as U;
    use uphttp::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    if !o.http_filters.is_empty() {
        return bail("http_filters (upstream HTTP filters) are not supported");
    }
    if o.outlier_detection.is_some() {
        return bail("outlier_detection (upstream error matcher) is not supported");
    }
    if !o.request_mirror_policies.is_empty()
        || !o.hash_policy.is_empty()
        || o.retry_policy.is_some()
    {
        return bail(
            "cluster-level request_mirror_policies / hash_policy / retry_policy are not supported",
        );
    }
    if let Some(u) = &o.upstream_http_protocol_options
        && (u.auto_sni || u.auto_san_validation)
    {
        return bail(
            "upstream_http_protocol_options auto_sni / auto_san_validation are not supported",
        );
    }
    if let Some(common) = &o.common_http_protocol_options {
        common_http(common, out).at(".common_http_protocol_options")?;
    }
    match &o.upstream_protocol_options {
        None => {}
        Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(P::HttpProtocolOptions(_)) | None => out.protocol = UpstreamProtocol::Http1,
            Some(P::Http2ProtocolOptions(h2)) => {
                out.protocol = UpstreamProtocol::Http2;
                out.max_concurrent_streams = h2.max_concurrent_streams.as_ref().map(|v| v.value);
            }
            Some(P::Http3ProtocolOptions(_)) => return bail("HTTP/3 upstreams are not supported"),
        },
        Some(U::UseDownstreamProtocolConfig(d)) => {
            if d.http3_protocol_options.is_some() {
                return bail("HTTP/3 upstreams are not supported");
            }
            out.protocol = UpstreamProtocol::UseDownstream;
            out.max_concurrent_streams = d
                .http2_protocol_options
                .as_ref()
                .and_then(|h| h.max_concurrent_streams.as_ref().map(|v| v.value));
        }
        Some(U::AutoConfig(a)) => {
            if a.http3_protocol_options.is_some() {
                return bail("HTTP/3 upstreams are not supported");
            }
            out.protocol = UpstreamProtocol::Auto;
            out.max_concurrent_streams = a
                .http2_protocol_options
                .as_ref()
                .and_then(|h| h.max_concurrent_streams.as_ref().map(|v| v.value));
        }
    }
    Ok(())
}
