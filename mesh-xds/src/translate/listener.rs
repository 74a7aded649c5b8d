//! Listeners (LDS): client API listeners (gRPC A27) and server listeners with filter chains
//! (gRPC A36), their HTTP connection managers and HTTP filters (gRPC A39).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilterProto;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterProto;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::model::{
    FilterChain, FilterChainMatch, HttpConnectionManager, HttpFilter, HttpFilterConfig, Listener,
    ListenerKind, RouteSource, RouterFilter, ServerListener, SourceType,
};
use mesh_core::path::{EscapedSlashesAction, PathNormalization};

use super::matcher::cidrs;
use super::{At, Invalid, Res, any_type_name, bail, is_true, opt_duration, q, refuse_set, unpack};
use crate::resource::Rejection;

const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
const FAULT_TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";
const RBAC_TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
const TYPED_STRUCT_TYPES: [&str; 2] = ["udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"];

/// `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct`: only the wrapped type URL is needed.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
}

/// Decodes and validates an LDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<Listener>, Rejection> {
    let l: pb::Listener = super::decode_message(bytes, "envoy.config.listener.v3.Listener")?;
    if l.name.is_empty() {
        return Err(Rejection {
            name: None,
            reason: "listener has an empty name".into(),
        });
    }
    listener(&l)
        .map(Arc::new)
        .map_err(|e| e.reject("listener", &l.name))
}

/// Translates a `Listener`: an `api_listener` makes a client listener, otherwise it is a
/// server listener.
pub fn listener(l: &pb::Listener) -> Res<Listener> {
    let kind = match &l.api_listener {
        Some(api) => {
            let Some(any) = &api.api_listener else {
                return bail("api_listener.api_listener is required");
            };
            if any_type_name(any) != HCM_TYPE {
                return bail(format!(
                    "api_listener of type {:?} is not supported (only HttpConnectionManager)",
                    any.type_url
                ))
                .at("api_listener");
            }
            let m: hcm::HttpConnectionManager = unpack(any).at("api_listener")?;
            ListenerKind::Client(http_connection_manager(&m, Side::Client).at("api_listener")?)
        }
        None => ListenerKind::Server(Box::new(server_listener(l)?)),
    };
    // hyper's own flow control bounds what a connection buffers; Envoy's byte limit (istiod
    // sets it only on gateways) is refused rather than ignored.
    refuse_set(&[
        (
            "per_connection_buffer_limit_bytes",
            l.per_connection_buffer_limit_bytes.is_some(),
        ),
        (
            "per_connection_buffer_high_watermark_timeout",
            l.per_connection_buffer_high_watermark_timeout.is_some(),
        ),
    ])?;
    Ok(Listener {
        name: l.name.clone(),
        kind,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

fn server_listener(l: &pb::Listener) -> Res<ServerListener> {
    let address = match &l.address {
        Some(a) => socket_address(a).at("address")?,
        None => return bail("address is required for a server listener (no api_listener)"),
    };
    if !l.listener_filters.is_empty() {
        return bail("listener_filters are not supported");
    }
    if l.use_original_dst.as_ref().is_some_and(|b| b.value) {
        return bail("use_original_dst is not supported");
    }
    if l.filter_chain_matcher.is_some() {
        return bail("filter_chain_matcher is not supported (use filter_chain_match)");
    }
    if l.fcds_config.is_some() {
        return bail("fcds_config (filter chain discovery) is not supported");
    }
    if l.udp_listener_config.is_some() {
        return bail("udp_listener_config is not supported");
    }
    // Socket options that change which connections arrive or how: the server binds one plain
    // TCP socket at `address`.
    refuse_set(&[
        ("additional_addresses", !l.additional_addresses.is_empty()),
        ("transparent", is_true(l.transparent.as_ref())),
        ("freebind", is_true(l.freebind.as_ref())),
        ("socket_options", !l.socket_options.is_empty()),
        (
            "tcp_fast_open_queue_length",
            l.tcp_fast_open_queue_length.is_some(),
        ),
        (
            "connection_balance_config",
            l.connection_balance_config.is_some(),
        ),
        ("tcp_backlog_size", l.tcp_backlog_size.is_some()),
        (
            "bind_to_port",
            l.bind_to_port.as_ref().is_some_and(|b| !b.value),
        ),
        ("internal_listener", l.listener_specifier.is_some()),
        ("enable_mptcp", l.enable_mptcp),
        ("tcp_keepalive", l.tcp_keepalive.is_some()),
    ])?;
    let mut filter_chains = Vec::with_capacity(l.filter_chains.len());
    for (i, fc) in l.filter_chains.iter().enumerate() {
        let chain = filter_chain(fc).at_with(|| format!("filter_chains[{i}]"))?;
        // gRPC A36: two chains with the same match make the choice ambiguous.
        if let Some(j) = filter_chains
            .iter()
            .position(|c: &FilterChain| c.filter_chain_match == chain.filter_chain_match)
        {
            return bail(format!(
                "filter_chain_match equals that of filter_chains[{j}]"
            ))
            .at(format!("filter_chains[{i}]"));
        }
        filter_chains.push(chain);
    }
    let default_filter_chain = l
        .default_filter_chain
        .as_ref()
        .map(filter_chain)
        .transpose()
        .at("default_filter_chain")?;
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return bail("a server listener needs filter_chains or a default_filter_chain");
    }
    Ok(ServerListener {
        address,
        filter_chains,
        default_filter_chain,
    })
}

fn socket_address(a: &core::Address) -> Res<SocketAddr> {
    use core::address::Address as A;
    use core::socket_address::PortSpecifier as P;
    let Some(A::SocketAddress(sa)) = &a.address else {
        return bail("socket_address is required");
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        Invalid::new(format!(
            "socket_address.address {:?} is not an IP address",
            sa.address
        ))
    })?;
    let port = match &sa.port_specifier {
        Some(P::PortValue(p)) => u16::try_from(*p)
            .map_err(|_| Invalid::new(format!("socket_address.port_value {p} is out of range")))?,
        Some(P::NamedPort(n)) => {
            return bail(format!("socket_address.named_port {n:?} is not supported"));
        }
        None => return bail("socket_address.port_value is required"),
    };
    Ok(SocketAddr::new(ip, port))
}

fn filter_chain(fc: &pb::FilterChain) -> Res<FilterChain> {
    use pb::filter::ConfigType;
    if fc.use_proxy_proto.as_ref().is_some_and(|b| b.value) {
        return bail("use_proxy_proto is not supported");
    }
    if fc.transport_socket_connect_timeout.is_some() {
        return bail("transport_socket_connect_timeout is not supported");
    }
    let filter_chain_match = fc
        .filter_chain_match
        .as_ref()
        .map(filter_chain_match)
        .transpose()
        .at(".filter_chain_match")?
        .unwrap_or_default();
    // gRPC A36: exactly one network filter, the HTTP connection manager.
    let [filter] = fc.filters.as_slice() else {
        return bail(format!(
            "filters must hold exactly one HttpConnectionManager, found {} filters",
            fc.filters.len()
        ));
    };
    let any = match &filter.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        Some(ConfigType::ConfigDiscovery(_)) => {
            return bail("config_discovery (ECDS) is not supported")
                .at(format!(".filters[0] {}", q(&filter.name)));
        }
        None => {
            return bail("typed_config is required").at(format!(".filters[0] {}", q(&filter.name)));
        }
    };
    if any_type_name(any) != HCM_TYPE {
        return bail(format!(
            "network filter of type {:?} is not supported (only HttpConnectionManager)",
            any.type_url
        ))
        .at(format!(".filters[0] {}", q(&filter.name)));
    }
    let m: hcm::HttpConnectionManager = unpack(any).at(".filters[0]")?;
    let http_connection_manager =
        http_connection_manager(&m, Side::Server).at(format!(".filters[0] {}", q(&filter.name)))?;
    let tls = match &fc.transport_socket {
        Some(ts) => super::tls::downstream(ts).at(".transport_socket")?,
        None => None,
    };
    Ok(FilterChain {
        name: fc.name.clone(),
        filter_chain_match,
        tls,
        http_connection_manager,
    })
}

fn filter_chain_match(m: &pb::FilterChainMatch) -> Res<FilterChainMatch> {
    use pb::filter_chain_match::ConnectionSourceType as S;
    if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
        return bail("address_suffix / suffix_len are not supported");
    }
    if !m.direct_source_prefix_ranges.is_empty() {
        return bail("direct_source_prefix_ranges are not supported");
    }
    let destination_port = m
        .destination_port
        .as_ref()
        .map(|p| {
            u16::try_from(p.value)
                .map_err(|_| Invalid::new(format!("destination_port {} is out of range", p.value)))
        })
        .transpose()?;
    let source_type = match S::try_from(m.source_type) {
        Ok(S::Any) => SourceType::Any,
        Ok(S::SameIpOrLoopback) => SourceType::SameIpOrLoopback,
        Ok(S::External) => SourceType::External,
        Err(_) => return bail(format!("source_type {} is unknown", m.source_type)),
    };
    let source_ports = m
        .source_ports
        .iter()
        .map(|p| {
            u16::try_from(*p)
                .map_err(|_| Invalid::new(format!("source_ports: {p} is out of range")))
        })
        .collect::<Res<Vec<_>>>()?;
    let transport_protocol = match m.transport_protocol.as_str() {
        "" => None,
        p @ ("raw_buffer" | "tls") => Some(p.to_owned()),
        other => {
            return bail(format!(
                "transport_protocol {other:?} is not supported (raw_buffer or tls)"
            ));
        }
    };
    Ok(FilterChainMatch {
        destination_port,
        prefix_ranges: cidrs(&m.prefix_ranges, "prefix_ranges")?,
        source_type,
        source_prefix_ranges: cidrs(&m.source_prefix_ranges, "source_prefix_ranges")?,
        source_ports,
        transport_protocol,
        application_protocols: m.application_protocols.clone(),
        server_names: m.server_names.clone(),
    })
}

fn http_connection_manager(
    m: &hcm::HttpConnectionManager,
    side: Side,
) -> Res<HttpConnectionManager> {
    use hcm::http_connection_manager::RouteSpecifier as R;
    let route_source = match &m.route_specifier {
        Some(R::Rds(rds)) => {
            if rds.route_config_name.is_empty() {
                return bail("rds.route_config_name is required");
            }
            super::ads_config_source(rds.config_source.as_ref()).at(".rds.config_source")?;
            RouteSource::Rds(rds.route_config_name.clone())
        }
        Some(R::RouteConfig(rc)) => RouteSource::Inline(Arc::new(
            super::route::route_config(rc).at(format!(".route_config {}", q(&rc.name)))?,
        )),
        Some(R::ScopedRoutes(_)) => return bail("scoped_routes are not supported"),
        None => return bail("one of rds or route_config is required"),
    };
    // A server listener serves HTTP/1.1 and HTTP/2 (prior knowledge or ALPN) on every
    // connection, which is AUTO; restricting it to one codec is not implemented. A client
    // listener's requests are in-process calls: no codec to choose.
    if side == Side::Server && m.codec_type != hcm::http_connection_manager::CodecType::Auto as i32
    {
        return bail(format!(
            "codec_type {} is not supported on a server listener (AUTO only)",
            hcm::http_connection_manager::CodecType::try_from(m.codec_type)
                .map_or_else(|_| m.codec_type.to_string(), |c| c.as_str_name().to_owned())
        ));
    }
    if !m.upgrade_configs.is_empty() {
        return bail("upgrade_configs (websocket, CONNECT) are not supported");
    }
    let path_normalization = path_normalization(m)?;
    if m.path_normalization_options.is_some() {
        return bail("path_normalization_options is not supported");
    }
    if m.local_reply_config.is_some() {
        return bail("local_reply_config is not supported");
    }
    refuse_set(&[
        ("strip_matching_host_port", m.strip_matching_host_port),
        ("strip_trailing_host_dot", m.strip_trailing_host_dot),
        ("strip_any_host_port", m.strip_port_mode.is_some()),
    ])?;
    unsupported_hcm_fields(m)?;
    let common = m.common_http_protocol_options.unwrap_or_default();
    // The connection-level options act on a downstream connection, which only a server
    // listener has; the client listener's requests are in-process calls.
    refuse_set(&[
        ("idle_timeout", common.idle_timeout.is_some()),
        (
            "max_connection_duration",
            common.max_connection_duration.is_some(),
        ),
        ("max_headers_count", common.max_headers_count.is_some()),
        (
            "max_response_headers_kb",
            common.max_response_headers_kb.is_some(),
        ),
        (
            "headers_with_underscores_action",
            common.headers_with_underscores_action != 0,
        ),
        (
            "max_requests_per_connection",
            common.max_requests_per_connection.is_some(),
        ),
    ])
    .at(".common_http_protocol_options")?;
    let mut http_filters = Vec::with_capacity(m.http_filters.len());
    for (i, f) in m.http_filters.iter().enumerate() {
        let at = || format!(".http_filters[{i}] {}", q(&f.name));
        if f.name.is_empty() {
            return bail("name is required").at_with(at);
        }
        if http_filters.iter().any(|h: &HttpFilter| h.name == f.name) {
            return bail("duplicate filter name").at_with(at);
        }
        if let Some(config) = http_filter(f).at_with(at)? {
            // The server side applies only RBAC of the request filters; a local rate limit
            // there would be accepted and ignored.
            if side == Side::Server && matches!(config, HttpFilterConfig::LocalRateLimit(_)) {
                if f.is_optional {
                    continue;
                }
                return bail("local_ratelimit on a server listener is not supported").at_with(at);
            }
            if let Some(last) = http_filters.last()
                && matches!(
                    last,
                    HttpFilter {
                        config: HttpFilterConfig::Router(_),
                        ..
                    }
                )
            {
                return bail("the router filter must be the last filter").at_with(at);
            }
            http_filters.push(HttpFilter {
                name: f.name.clone(),
                config,
            });
        }
    }
    if !matches!(
        http_filters.last(),
        Some(HttpFilter {
            config: HttpFilterConfig::Router(_),
            ..
        })
    ) {
        return bail("http_filters must end with the router filter (envoy.filters.http.router)");
    }
    Ok(HttpConnectionManager {
        route_source,
        http_filters,
        max_stream_duration: opt_duration(common.max_stream_duration.as_ref())
            .at(".common_http_protocol_options.max_stream_duration")?,
        // Both refused above when set.
        idle_timeout: None,
        xff_num_trusted_hops: 0,
        path_normalization,
    })
}

/// HCM fields that change what Envoy does with a request or a connection and that this data
/// plane does not implement: NACKed when set to anything but their default. Stats, access
/// logs and tracing are accepted (no effect on traffic).
fn unsupported_hcm_fields(m: &hcm::HttpConnectionManager) -> Res<()> {
    refuse_set(&[
        ("add_user_agent", is_true(m.add_user_agent.as_ref())),
        ("http_protocol_options", m.http_protocol_options.is_some()),
        ("http2_protocol_options", m.http2_protocol_options.is_some()),
        ("http3_protocol_options", m.http3_protocol_options.is_some()),
        (
            "http1_safe_max_connection_duration",
            m.http1_safe_max_connection_duration,
        ),
        ("server_name", !m.server_name.is_empty()),
        (
            "server_header_transformation",
            m.server_header_transformation != 0,
        ),
        (
            "scheme_header_transformation",
            m.scheme_header_transformation.is_some(),
        ),
        ("max_request_headers_kb", m.max_request_headers_kb.is_some()),
        ("stream_idle_timeout", m.stream_idle_timeout.is_some()),
        ("stream_flush_timeout", m.stream_flush_timeout.is_some()),
        ("request_timeout", m.request_timeout.is_some()),
        (
            "request_headers_timeout",
            m.request_headers_timeout.is_some(),
        ),
        ("drain_timeout", m.drain_timeout.is_some()),
        ("drain_timeout_jitter", m.drain_timeout_jitter.is_some()),
        ("delayed_close_timeout", m.delayed_close_timeout.is_some()),
        ("use_remote_address", is_true(m.use_remote_address.as_ref())),
        ("xff_num_trusted_hops", m.xff_num_trusted_hops != 0),
        (
            "original_ip_detection_extensions",
            !m.original_ip_detection_extensions.is_empty(),
        ),
        (
            "early_header_mutation_extensions",
            !m.early_header_mutation_extensions.is_empty(),
        ),
        (
            "internal_address_config",
            m.internal_address_config.is_some(),
        ),
        ("skip_xff_append", m.skip_xff_append),
        ("via", !m.via.is_empty()),
        (
            "generate_request_id",
            is_true(m.generate_request_id.as_ref()),
        ),
        (
            "preserve_external_request_id",
            m.preserve_external_request_id,
        ),
        (
            "always_set_request_id_in_response",
            m.always_set_request_id_in_response,
        ),
        (
            "forward_client_cert_details",
            m.forward_client_cert_details != 0,
        ),
        (
            "set_current_client_cert_details",
            m.set_current_client_cert_details.is_some(),
        ),
        (
            "forward_client_cert_matcher",
            m.forward_client_cert_matcher.is_some(),
        ),
        ("proxy_100_continue", m.proxy_100_continue),
        (
            "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
            m.represent_ipv4_remote_address_as_ipv4_mapped_ipv6,
        ),
        ("request_id_extension", m.request_id_extension.is_some()),
        (
            "stream_error_on_invalid_http_message",
            m.stream_error_on_invalid_http_message.is_some(),
        ),
        ("proxy_status_config", m.proxy_status_config.is_some()),
        (
            "typed_header_validation_config",
            m.typed_header_validation_config.is_some(),
        ),
        ("append_x_forwarded_port", m.append_x_forwarded_port),
        ("append_local_overload", m.append_local_overload),
        ("forward_proto_config", m.forward_proto_config.is_some()),
    ])
}

/// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`. An unset
/// `normalize_path` means on (Istio's default `BASE`, which istiod sets on every sidecar HCM
/// but its proxyless generator leaves out), not Envoy's runtime default of off: a path RBAC
/// rule must not be bypassable because a control plane said nothing. `false` turns it off.
fn path_normalization(m: &hcm::HttpConnectionManager) -> Res<PathNormalization> {
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as A;
    let escaped_slashes = match A::try_from(m.path_with_escaped_slashes_action) {
        Ok(A::ImplementationSpecificDefault | A::KeepUnchanged) => {
            EscapedSlashesAction::KeepUnchanged
        }
        Ok(A::RejectRequest) => EscapedSlashesAction::RejectRequest,
        Ok(A::UnescapeAndRedirect) => EscapedSlashesAction::UnescapeAndRedirect,
        Ok(A::UnescapeAndForward) => EscapedSlashesAction::UnescapeAndForward,
        Err(_) => {
            return bail(format!(
                "path_with_escaped_slashes_action {} is not a known action",
                m.path_with_escaped_slashes_action
            ));
        }
    };
    Ok(PathNormalization {
        normalize_path: m.normalize_path.as_ref().is_none_or(|b| b.value),
        merge_slashes: m.merge_slashes,
        escaped_slashes,
    })
}

/// Translates one HTTP filter; `Ok(None)` for an optional filter we do not know (A39).
fn http_filter(f: &hcm::HttpFilter) -> Res<Option<HttpFilterConfig>> {
    use hcm::http_filter::ConfigType;
    let any = match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        Some(ConfigType::ConfigDiscovery(_)) if f.is_optional => return Ok(None),
        Some(ConfigType::ConfigDiscovery(_)) => {
            return bail("config_discovery (ECDS) is not supported");
        }
        None if f.is_optional => return Ok(None),
        None => return bail("typed_config is required"),
    };
    if f.disabled {
        if f.is_optional {
            return Ok(None);
        }
        return bail("disabled filters (enabled per route) are not supported");
    }
    let type_name = any_type_name(any);
    let config = match type_name {
        ROUTER_TYPE => {
            let r: RouterProto = unpack(any)?;
            // Stats, tracing and upstream logs are accepted (no effect on traffic).
            refuse_set(&[
                ("upstream_http_filters", !r.upstream_http_filters.is_empty()),
                ("strict_check_headers", !r.strict_check_headers.is_empty()),
                ("respect_expected_rq_timeout", r.respect_expected_rq_timeout),
            ])
            .at(".typed_config")?;
            HttpFilterConfig::Router(RouterFilter {
                suppress_envoy_headers: r.suppress_envoy_headers,
            })
        }
        FAULT_TYPE => {
            let fault: HttpFault = unpack(any)?;
            HttpFilterConfig::Fault(super::fault::http_fault(&fault).at(".typed_config")?)
        }
        super::rate_limit::TYPE => {
            let l = unpack(any)?;
            HttpFilterConfig::LocalRateLimit(
                super::rate_limit::local_rate_limit(&l, false).at(".typed_config")?,
            )
        }
        RBAC_TYPE => {
            let r: RbacFilterProto = unpack(any)?;
            HttpFilterConfig::Rbac(super::rbac::rbac_filter(&r).at(".typed_config")?)
        }
        _ if f.is_optional => return Ok(None),
        t if TYPED_STRUCT_TYPES.contains(&t) => {
            let inner = typed_struct_type(any);
            return bail(format!(
                "filter type {inner:?} (in a TypedStruct) is not supported and the filter is not optional"
            ));
        }
        other => {
            return bail(format!(
                "filter type {other:?} is not supported and the filter is not optional"
            ));
        }
    };
    Ok(Some(config))
}

fn typed_struct_type(any: &Any) -> String {
    use prost::Message;
    TypedStruct::decode(any.value.as_slice())
        .map(|t| t.type_url)
        .unwrap_or_default()
}
