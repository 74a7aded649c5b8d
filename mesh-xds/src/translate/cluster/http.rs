//! A cluster's HTTP protocol options: the deprecated cluster-level fields and the typed
//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use mesh_core::model::{HttpProtocolOptions, UpstreamProtocol};

use crate::translate::{At, Res, any_type_name, bail, opt_duration, refuse_set, unpack};

const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub(super) fn http_protocol(c: &pb::Cluster) -> Res<HttpProtocolOptions> {
    let mut out = HttpProtocolOptions::default();
    // Deprecated cluster-level fields first; the typed extension options override them.
    if let Some(h1) = &c.http_protocol_options {
        http1(h1).at("http_protocol_options")?;
    }
    if let Some(h2) = &c.http2_protocol_options {
        out.protocol = UpstreamProtocol::Http2;
        out.max_concurrent_streams = http2(h2).at("http2_protocol_options")?;
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

/// HTTP/1 codec options: none is implemented (hyper's codec with its defaults), so any set
/// field is refused.
fn http1(h: &core::Http1ProtocolOptions) -> Res<()> {
    refuse_set(&[
        ("allow_absolute_url", h.allow_absolute_url.is_some()),
        ("accept_http_10", h.accept_http_10),
        (
            "default_host_for_http_10",
            !h.default_host_for_http_10.is_empty(),
        ),
        ("header_key_format", h.header_key_format.is_some()),
        ("enable_trailers", h.enable_trailers),
        ("allow_chunked_length", h.allow_chunked_length),
        (
            "override_stream_error_on_invalid_http_message",
            h.override_stream_error_on_invalid_http_message.is_some(),
        ),
        ("send_fully_qualified_url", h.send_fully_qualified_url),
        ("use_balsa_parser", h.use_balsa_parser.is_some()),
        ("allow_custom_methods", h.allow_custom_methods),
        (
            "ignore_http_11_upgrade",
            !h.ignore_http_11_upgrade.is_empty(),
        ),
    ])
}

/// HTTP/2 codec options: `max_concurrent_streams` is applied; the flow-control windows,
/// flood limits, keepalive and codec choices are hyper's own, so setting them is refused.
fn http2(h: &core::Http2ProtocolOptions) -> Res<Option<u32>> {
    refuse_set(&[
        ("hpack_table_size", h.hpack_table_size.is_some()),
        (
            "initial_stream_window_size",
            h.initial_stream_window_size.is_some(),
        ),
        (
            "initial_connection_window_size",
            h.initial_connection_window_size.is_some(),
        ),
        ("allow_connect", h.allow_connect),
        ("allow_metadata", h.allow_metadata),
        ("max_outbound_frames", h.max_outbound_frames.is_some()),
        (
            "max_outbound_control_frames",
            h.max_outbound_control_frames.is_some(),
        ),
        (
            "max_consecutive_inbound_frames_with_empty_payload",
            h.max_consecutive_inbound_frames_with_empty_payload
                .is_some(),
        ),
        (
            "max_inbound_priority_frames_per_stream",
            h.max_inbound_priority_frames_per_stream.is_some(),
        ),
        (
            "max_inbound_window_update_frames_per_data_frame_sent",
            h.max_inbound_window_update_frames_per_data_frame_sent
                .is_some(),
        ),
        (
            "stream_error_on_invalid_http_messaging",
            h.stream_error_on_invalid_http_messaging,
        ),
        (
            "override_stream_error_on_invalid_http_message",
            h.override_stream_error_on_invalid_http_message.is_some(),
        ),
        (
            "custom_settings_parameters",
            !h.custom_settings_parameters.is_empty(),
        ),
        ("connection_keepalive", h.connection_keepalive.is_some()),
        ("use_oghttp2_codec", h.use_oghttp2_codec.is_some()),
        ("max_metadata_size", h.max_metadata_size.is_some()),
        (
            "enable_huffman_encoding",
            h.enable_huffman_encoding.is_some(),
        ),
        (
            "max_header_field_size_kb",
            h.max_header_field_size_kb.is_some(),
        ),
        ("disallow_obs_text", h.disallow_obs_text.is_some()),
        ("stream_reset_burst", h.stream_reset_burst.is_some()),
        ("stream_reset_rate", h.stream_reset_rate.is_some()),
    ])?;
    Ok(h.max_concurrent_streams.as_ref().map(|v| v.value))
}

fn common_http(c: &core::HttpProtocolOptions, out: &mut HttpProtocolOptions) -> Res<()> {
    refuse_set(&[
        (
            "max_connection_duration_jitter",
            c.max_connection_duration_jitter.is_some(),
        ),
        ("max_headers_count", c.max_headers_count.is_some()),
        (
            "max_response_headers_kb",
            c.max_response_headers_kb.is_some(),
        ),
        (
            "headers_with_underscores_action",
            c.headers_with_underscores_action != 0,
        ),
        ("max_stream_duration", c.max_stream_duration.is_some()),
    ])?;
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
    // hyper validates headers its own way; a custom validator (istiod sets none) is refused.
    if o.header_validation_config.is_some() {
        return bail("header_validation_config is not supported");
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
            Some(P::HttpProtocolOptions(h1)) => {
                http1(h1).at(".explicit_http_config.http_protocol_options")?;
                out.protocol = UpstreamProtocol::Http1;
            }
            None => out.protocol = UpstreamProtocol::Http1,
            Some(P::Http2ProtocolOptions(h2)) => {
                out.protocol = UpstreamProtocol::Http2;
                out.max_concurrent_streams =
                    http2(h2).at(".explicit_http_config.http2_protocol_options")?;
            }
            Some(P::Http3ProtocolOptions(_)) => {
                return bail("http3_protocol_options (HTTP/3 upstreams) are not supported");
            }
        },
        Some(U::UseDownstreamProtocolConfig(d)) => {
            if d.http3_protocol_options.is_some() {
                return bail("http3_protocol_options (HTTP/3 upstreams) are not supported");
            }
            if let Some(h1) = &d.http_protocol_options {
                http1(h1).at(".use_downstream_protocol_config.http_protocol_options")?;
            }
            out.protocol = UpstreamProtocol::UseDownstream;
            out.max_concurrent_streams = match &d.http2_protocol_options {
                Some(h2) => {
                    http2(h2).at(".use_downstream_protocol_config.http2_protocol_options")?
                }
                None => None,
            };
        }
        Some(U::AutoConfig(a)) => {
            if a.http3_protocol_options.is_some() {
                return bail("http3_protocol_options (HTTP/3 upstreams) are not supported");
            }
            if a.alternate_protocols_cache_options.is_some() {
                return bail(
                    "alternate_protocols_cache_options (HTTP/3 discovery) is not supported",
                )
                .at(".auto_config");
            }
            if let Some(h1) = &a.http_protocol_options {
                http1(h1).at(".auto_config.http_protocol_options")?;
            }
            out.protocol = UpstreamProtocol::Auto;
            out.max_concurrent_streams = match &a.http2_protocol_options {
                Some(h2) => http2(h2).at(".auto_config.http2_protocol_options")?,
                None => None,
            };
        }
    }
    Ok(())
}
