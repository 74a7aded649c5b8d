//! Issue #16: Envoy fields that change behaviour and that this data plane does not implement
//! are NACKed with their name, never accepted and ignored. Each case sets one field on an
//! otherwise valid resource; `scripts/config-fields --check` requires every `refused` row of
//! the Envoy table in docs/configuration.md to name a test that mentions the field.

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration as PbDuration, UInt32Value, UInt64Value,
};
use envoy_types::util::pack_any;

use super::listener::{filter, router};
use super::{ads, socket};
use crate::resource::ResourceType;

fn dur() -> Option<PbDuration> {
    Some(PbDuration {
        seconds: 1,
        nanos: 0,
    })
}
fn yes() -> Option<BoolValue> {
    Some(BoolValue { value: true })
}
fn u32v() -> Option<UInt32Value> {
    Some(UInt32Value { value: 7 })
}
fn u64v() -> Option<UInt64Value> {
    Some(UInt64Value { value: 7 })
}
fn ext() -> core::TypedExtensionConfig {
    core::TypedExtensionConfig {
        name: "x".into(),
        typed_config: Some(pack_any(core::TypedExtensionConfig::default())),
    }
}

fn base_hcm() -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        http_filters: vec![router()],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: ads(),
                route_config_name: "r".into(),
            },
        )),
        ..Default::default()
    }
}

/// A client (API) listener whose connection manager `f` edits.
pub(super) fn client(f: impl FnOnce(&mut hcm::HttpConnectionManager)) -> Any {
    let mut h = base_hcm();
    f(&mut h);
    pack_any(lds::Listener {
        name: "l".into(),
        api_listener: Some(lds::ApiListener {
            api_listener: Some(pack_any(h)),
        }),
        ..Default::default()
    })
}

/// A server listener with one plaintext chain; `f` edits the listener and its chain.
fn server(f: impl FnOnce(&mut lds::Listener, &mut lds::FilterChain)) -> Any {
    let mut chain = lds::FilterChain {
        name: "c".into(),
        filters: vec![lds::Filter {
            name: "hcm".into(),
            config_type: Some(lds::filter::ConfigType::TypedConfig(pack_any(base_hcm()))),
        }],
        ..Default::default()
    };
    let mut l = lds::Listener {
        name: "srv".into(),
        address: socket("0.0.0.0", 8080),
        ..Default::default()
    };
    f(&mut l, &mut chain);
    l.filter_chains = vec![chain];
    pack_any(l)
}

pub(super) fn cluster(f: impl FnOnce(&mut cds::Cluster)) -> Any {
    let mut c = cds::Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            eds_config: ads(),
            service_name: String::new(),
        }),
        ..Default::default()
    };
    f(&mut c);
    pack_any(c)
}

fn h2(f: impl FnOnce(&mut core::Http2ProtocolOptions)) -> Any {
    let mut o = core::Http2ProtocolOptions::default();
    f(&mut o);
    cluster(|c| c.http2_protocol_options = Some(o))
}

fn h1(f: impl FnOnce(&mut core::Http1ProtocolOptions)) -> Any {
    let mut o = core::Http1ProtocolOptions::default();
    f(&mut o);
    cluster(|c| c.http_protocol_options = Some(o))
}

/// The typed upstream HTTP options with `common_http_protocol_options` edited by `f`.
fn upstream_common(f: impl FnOnce(&mut core::HttpProtocolOptions)) -> Any {
    let mut common = core::HttpProtocolOptions::default();
    f(&mut common);
    let opts = uphttp::HttpProtocolOptions {
        common_http_protocol_options: Some(common),
        ..Default::default()
    };
    cluster(|c| {
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            pack_any(opts),
        );
    })
}

pub(super) fn route_config(f: impl FnOnce(&mut rds::RouteConfiguration)) -> Any {
    let mut r = rds::RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![rds::VirtualHost {
            name: "v".into(),
            domains: vec!["*".into()],
            routes: vec![rds::Route {
                r#match: Some(rds::RouteMatch {
                    path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(rds::route::Action::Route(rds::RouteAction {
                    cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(
                        "c".into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    f(&mut r);
    pack_any(r)
}

pub(super) fn vhost(f: impl FnOnce(&mut rds::VirtualHost)) -> Any {
    route_config(|r| f(&mut r.virtual_hosts[0]))
}

pub(super) fn route(f: impl FnOnce(&mut rds::Route)) -> Any {
    route_config(|r| f(&mut r.virtual_hosts[0].routes[0]))
}

pub(super) fn action(f: impl FnOnce(&mut rds::RouteAction)) -> Any {
    route(|r| {
        let Some(rds::route::Action::Route(a)) = &mut r.action else {
            unreachable!()
        };
        f(a)
    })
}

fn cla(f: impl FnOnce(&mut eds::ClusterLoadAssignment)) -> Any {
    let mut c = eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        ..Default::default()
    };
    f(&mut c);
    pack_any(c)
}

pub(super) fn upstream_tls(f: impl FnOnce(&mut tls::UpstreamTlsContext)) -> Any {
    let mut ctx = tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::ValidationContextCertificateProviderInstance(
                    tls::common_tls_context::CertificateProviderInstance {
                        instance_name: "default".into(),
                        certificate_name: "ROOTCA".into(),
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    f(&mut ctx);
    cluster(|c| {
        c.transport_socket = Some(core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
                ctx,
            ))),
        })
    })
}

pub(super) fn fault_abort(f: impl FnOnce(&mut fault::FaultAbort)) -> Any {
    let mut a = fault::FaultAbort {
        error_type: Some(fault::fault_abort::ErrorType::HttpStatus(503)),
        ..Default::default()
    };
    f(&mut a);
    let fc = fault::HttpFault {
        abort: Some(a),
        ..Default::default()
    };
    client(|h| h.http_filters.insert(0, filter("fault", pack_any(fc))))
}

fn router_with(f: impl FnOnce(&mut Router)) -> Any {
    let mut r = Router::default();
    f(&mut r);
    client(|h| h.http_filters = vec![filter("envoy.filters.http.router", pack_any(r))])
}

/// Every case is NACKed with an error naming its field; all failures are listed at once.
fn assert_all_named(cases: Vec<(&str, ResourceType, Any)>) {
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(field, ty, any)| match crate::resource::decode(ty, &any) {
            Ok(_) => Some(format!("{field}: accepted")),
            Err(e) if e.reason.contains(field) && e.reason.contains("not supported") => None,
            Err(e) => Some(format!("{field}: {}", e.reason)),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unsupported_envoy_fields_are_nacked() {
    use ResourceType::{Cluster, ClusterLoadAssignment as Cla, Listener, RouteConfiguration};
    let cases: Vec<(&str, ResourceType, Any)> = vec![
        // HttpConnectionManager, on the client's API listener.
        (
            "add_user_agent",
            Listener,
            client(|h| h.add_user_agent = yes()),
        ),
        (
            "http_protocol_options",
            Listener,
            client(|h| h.http_protocol_options = Some(Default::default())),
        ),
        (
            "http2_protocol_options",
            Listener,
            client(|h| h.http2_protocol_options = Some(Default::default())),
        ),
        (
            "http3_protocol_options",
            Listener,
            client(|h| h.http3_protocol_options = Some(Default::default())),
        ),
        (
            "http1_safe_max_connection_duration",
            Listener,
            client(|h| h.http1_safe_max_connection_duration = true),
        ),
        (
            "server_name",
            Listener,
            client(|h| h.server_name = "x".into()),
        ),
        (
            "server_header_transformation",
            Listener,
            client(|h| h.server_header_transformation = 1),
        ),
        (
            "scheme_header_transformation",
            Listener,
            client(|h| h.scheme_header_transformation = Some(Default::default())),
        ),
        (
            "max_request_headers_kb",
            Listener,
            client(|h| h.max_request_headers_kb = u32v()),
        ),
        (
            "stream_idle_timeout",
            Listener,
            client(|h| h.stream_idle_timeout = dur()),
        ),
        (
            "stream_flush_timeout",
            Listener,
            client(|h| h.stream_flush_timeout = dur()),
        ),
        (
            "request_timeout",
            Listener,
            client(|h| h.request_timeout = dur()),
        ),
        (
            "request_headers_timeout",
            Listener,
            client(|h| h.request_headers_timeout = dur()),
        ),
        (
            "drain_timeout",
            Listener,
            client(|h| h.drain_timeout = dur()),
        ),
        (
            "drain_timeout_jitter",
            Listener,
            client(|h| h.drain_timeout_jitter = Some(Percent { value: 1.0 })),
        ),
        (
            "delayed_close_timeout",
            Listener,
            client(|h| h.delayed_close_timeout = dur()),
        ),
        (
            "use_remote_address",
            Listener,
            client(|h| h.use_remote_address = yes()),
        ),
        (
            "xff_num_trusted_hops",
            Listener,
            client(|h| h.xff_num_trusted_hops = 1),
        ),
        (
            "original_ip_detection_extensions",
            Listener,
            client(|h| h.original_ip_detection_extensions = vec![ext()]),
        ),
        (
            "early_header_mutation_extensions",
            Listener,
            client(|h| h.early_header_mutation_extensions = vec![ext()]),
        ),
        (
            "internal_address_config",
            Listener,
            client(|h| h.internal_address_config = Some(Default::default())),
        ),
        (
            "skip_xff_append",
            Listener,
            client(|h| h.skip_xff_append = true),
        ),
        ("via", Listener, client(|h| h.via = "mesh".into())),
        (
            "generate_request_id",
            Listener,
            client(|h| h.generate_request_id = yes()),
        ),
        (
            "preserve_external_request_id",
            Listener,
            client(|h| h.preserve_external_request_id = true),
        ),
        (
            "always_set_request_id_in_response",
            Listener,
            client(|h| h.always_set_request_id_in_response = true),
        ),
        (
            "forward_client_cert_details",
            Listener,
            client(|h| h.forward_client_cert_details = 1),
        ),
        (
            "set_current_client_cert_details",
            Listener,
            client(|h| h.set_current_client_cert_details = Some(Default::default())),
        ),
        (
            "forward_client_cert_matcher",
            Listener,
            client(|h| h.forward_client_cert_matcher = Some(Default::default())),
        ),
        (
            "proxy_100_continue",
            Listener,
            client(|h| h.proxy_100_continue = true),
        ),
        (
            "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
            Listener,
            client(|h| h.represent_ipv4_remote_address_as_ipv4_mapped_ipv6 = true),
        ),
        (
            "request_id_extension",
            Listener,
            client(|h| h.request_id_extension = Some(Default::default())),
        ),
        (
            "stream_error_on_invalid_http_message",
            Listener,
            client(|h| h.stream_error_on_invalid_http_message = yes()),
        ),
        (
            "proxy_status_config",
            Listener,
            client(|h| h.proxy_status_config = Some(Default::default())),
        ),
        (
            "typed_header_validation_config",
            Listener,
            client(|h| h.typed_header_validation_config = Some(ext())),
        ),
        (
            "append_x_forwarded_port",
            Listener,
            client(|h| h.append_x_forwarded_port = true),
        ),
        (
            "append_local_overload",
            Listener,
            client(|h| h.append_local_overload = true),
        ),
        (
            "forward_proto_config",
            Listener,
            client(|h| h.forward_proto_config = Some(Default::default())),
        ),
        (
            // strip_port_mode's only member
            "strip_any_host_port",
            Listener,
            client(|h| {
                h.strip_port_mode =
                    Some(hcm::http_connection_manager::StripPortMode::StripAnyHostPort(true))
            }),
        ),
        // HttpConnectionManager.common_http_protocol_options (core.HttpProtocolOptions).
        (
            "idle_timeout",
            Listener,
            client(|h| {
                h.common_http_protocol_options = Some(core::HttpProtocolOptions {
                    idle_timeout: dur(),
                    ..Default::default()
                })
            }),
        ),
        (
            "max_connection_duration",
            Listener,
            client(|h| {
                h.common_http_protocol_options = Some(core::HttpProtocolOptions {
                    max_connection_duration: dur(),
                    ..Default::default()
                })
            }),
        ),
        (
            "max_requests_per_connection",
            Listener,
            client(|h| {
                h.common_http_protocol_options = Some(core::HttpProtocolOptions {
                    max_requests_per_connection: u32v(),
                    ..Default::default()
                })
            }),
        ),
        (
            "max_headers_count",
            Listener,
            server(|_, chain| {
                let mut h = base_hcm();
                h.common_http_protocol_options = Some(core::HttpProtocolOptions {
                    max_headers_count: u32v(),
                    ..Default::default()
                });
                chain.filters[0].config_type =
                    Some(lds::filter::ConfigType::TypedConfig(pack_any(h)));
            }),
        ),
        // Listener (server) socket options and FilterChain.
        (
            "additional_addresses",
            Listener,
            server(|l, _| l.additional_addresses = vec![Default::default()]),
        ),
        (
            "transparent",
            Listener,
            server(|l, _| l.transparent = yes()),
        ),
        ("freebind", Listener, server(|l, _| l.freebind = yes())),
        (
            "socket_options",
            Listener,
            server(|l, _| l.socket_options = vec![Default::default()]),
        ),
        (
            "tcp_fast_open_queue_length",
            Listener,
            server(|l, _| l.tcp_fast_open_queue_length = u32v()),
        ),
        (
            "connection_balance_config",
            Listener,
            server(|l, _| l.connection_balance_config = Some(Default::default())),
        ),
        (
            "tcp_backlog_size",
            Listener,
            server(|l, _| l.tcp_backlog_size = u32v()),
        ),
        (
            "codec_type",
            Listener,
            server(|_, chain| {
                let mut h = base_hcm();
                h.codec_type = hcm::http_connection_manager::CodecType::Http1 as i32;
                chain.filters[0].config_type =
                    Some(lds::filter::ConfigType::TypedConfig(pack_any(h)));
            }),
        ),
        (
            "bind_to_port",
            Listener,
            server(|l, _| l.bind_to_port = Some(BoolValue { value: false })),
        ),
        (
            "internal_listener",
            Listener,
            server(|l, _| {
                l.listener_specifier = Some(lds::listener::ListenerSpecifier::InternalListener(
                    Default::default(),
                ))
            }),
        ),
        (
            "enable_mptcp",
            Listener,
            server(|l, _| l.enable_mptcp = true),
        ),
        (
            "tcp_keepalive",
            Listener,
            server(|l, _| l.tcp_keepalive = Some(Default::default())),
        ),
        (
            "transport_socket_connect_timeout",
            Listener,
            server(|_, c| c.transport_socket_connect_timeout = dur()),
        ),
        // Cluster.
        (
            "upstream_connection_options",
            Cluster,
            cluster(|c| c.upstream_connection_options = Some(Default::default())),
        ),
        (
            "close_connections_on_host_health_failure",
            Cluster,
            cluster(|c| c.close_connections_on_host_health_failure = true),
        ),
        (
            "ignore_health_on_host_removal",
            Cluster,
            cluster(|c| c.ignore_health_on_host_removal = true),
        ),
        (
            "lrs_server",
            Cluster,
            cluster(|c| c.lrs_server = Some(Default::default())),
        ),
        (
            "connection_pool_per_downstream_connection",
            Cluster,
            cluster(|c| c.connection_pool_per_downstream_connection = true),
        ),
        (
            "preconnect_policy",
            Cluster,
            cluster(|c| c.preconnect_policy = Some(Default::default())),
        ),
        (
            "queuing_policies",
            Cluster,
            cluster(|c| c.queuing_policies = Some(Default::default())),
        ),
        (
            "close_connections_on_host_set_change",
            Cluster,
            cluster(|c| {
                c.common_lb_config = Some(cds::cluster::CommonLbConfig {
                    close_connections_on_host_set_change: true,
                    ..Default::default()
                })
            }),
        ),
        (
            "budget_interval",
            Cluster,
            cluster(|c| {
                c.circuit_breakers = Some(cds::CircuitBreakers {
                    thresholds: vec![cds::circuit_breakers::Thresholds {
                        retry_budget: Some(cds::circuit_breakers::thresholds::RetryBudget {
                            budget_interval: dur(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }),
        ),
        // core.HttpProtocolOptions of a cluster (typed upstream options).
        (
            "max_connection_duration_jitter",
            Cluster,
            upstream_common(|o| o.max_connection_duration_jitter = Some(Percent { value: 1.0 })),
        ),
        (
            "max_headers_count",
            Cluster,
            upstream_common(|o| o.max_headers_count = u32v()),
        ),
        (
            "max_response_headers_kb",
            Cluster,
            upstream_common(|o| o.max_response_headers_kb = u32v()),
        ),
        (
            "headers_with_underscores_action",
            Cluster,
            upstream_common(|o| o.headers_with_underscores_action = 1),
        ),
        (
            "max_stream_duration",
            Cluster,
            upstream_common(|o| o.max_stream_duration = dur()),
        ),
        (
            "alternate_protocols_cache_options",
            Cluster,
            cluster(|c| {
                let opts = uphttp::HttpProtocolOptions {
                    upstream_protocol_options: Some(
                        uphttp::http_protocol_options::UpstreamProtocolOptions::AutoConfig(
                            uphttp::http_protocol_options::AutoHttpConfig {
                                alternate_protocols_cache_options: Some(Default::default()),
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                };
                c.typed_extension_protocol_options.insert(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
                    pack_any(opts),
                );
            }),
        ),
        // core.Http2ProtocolOptions of a cluster.
        (
            "hpack_table_size",
            Cluster,
            h2(|o| o.hpack_table_size = u32v()),
        ),
        (
            "initial_stream_window_size",
            Cluster,
            h2(|o| o.initial_stream_window_size = u32v()),
        ),
        (
            "initial_connection_window_size",
            Cluster,
            h2(|o| o.initial_connection_window_size = u32v()),
        ),
        ("allow_connect", Cluster, h2(|o| o.allow_connect = true)),
        ("allow_metadata", Cluster, h2(|o| o.allow_metadata = true)),
        (
            "max_outbound_frames",
            Cluster,
            h2(|o| o.max_outbound_frames = u32v()),
        ),
        (
            "max_outbound_control_frames",
            Cluster,
            h2(|o| o.max_outbound_control_frames = u32v()),
        ),
        (
            "max_consecutive_inbound_frames_with_empty_payload",
            Cluster,
            h2(|o| o.max_consecutive_inbound_frames_with_empty_payload = u32v()),
        ),
        (
            "max_inbound_priority_frames_per_stream",
            Cluster,
            h2(|o| o.max_inbound_priority_frames_per_stream = u32v()),
        ),
        (
            "max_inbound_window_update_frames_per_data_frame_sent",
            Cluster,
            h2(|o| o.max_inbound_window_update_frames_per_data_frame_sent = u32v()),
        ),
        (
            "stream_error_on_invalid_http_messaging",
            Cluster,
            h2(|o| o.stream_error_on_invalid_http_messaging = true),
        ),
        (
            "override_stream_error_on_invalid_http_message",
            Cluster,
            h2(|o| o.override_stream_error_on_invalid_http_message = yes()),
        ),
        (
            "custom_settings_parameters",
            Cluster,
            h2(|o| o.custom_settings_parameters = vec![Default::default()]),
        ),
        (
            "connection_keepalive",
            Cluster,
            h2(|o| o.connection_keepalive = Some(Default::default())),
        ),
        (
            "use_oghttp2_codec",
            Cluster,
            h2(|o| o.use_oghttp2_codec = yes()),
        ),
        (
            "max_metadata_size",
            Cluster,
            h2(|o| o.max_metadata_size = u64v()),
        ),
        (
            "enable_huffman_encoding",
            Cluster,
            h2(|o| o.enable_huffman_encoding = yes()),
        ),
        (
            "max_header_field_size_kb",
            Cluster,
            h2(|o| o.max_header_field_size_kb = u32v()),
        ),
        (
            "disallow_obs_text",
            Cluster,
            h2(|o| o.disallow_obs_text = yes()),
        ),
        (
            "stream_reset_burst",
            Cluster,
            h2(|o| o.stream_reset_burst = u64v()),
        ),
        (
            "stream_reset_rate",
            Cluster,
            h2(|o| o.stream_reset_rate = u64v()),
        ),
        // core.Http1ProtocolOptions of a cluster.
        (
            "allow_absolute_url",
            Cluster,
            h1(|o| o.allow_absolute_url = yes()),
        ),
        ("accept_http_10", Cluster, h1(|o| o.accept_http_10 = true)),
        (
            "default_host_for_http_10",
            Cluster,
            h1(|o| o.default_host_for_http_10 = "x".into()),
        ),
        (
            "header_key_format",
            Cluster,
            h1(|o| o.header_key_format = Some(Default::default())),
        ),
        ("enable_trailers", Cluster, h1(|o| o.enable_trailers = true)),
        (
            "allow_chunked_length",
            Cluster,
            h1(|o| o.allow_chunked_length = true),
        ),
        (
            "override_stream_error_on_invalid_http_message",
            Cluster,
            h1(|o| o.override_stream_error_on_invalid_http_message = yes()),
        ),
        (
            "send_fully_qualified_url",
            Cluster,
            h1(|o| o.send_fully_qualified_url = true),
        ),
        (
            "use_balsa_parser",
            Cluster,
            h1(|o| o.use_balsa_parser = yes()),
        ),
        (
            "allow_custom_methods",
            Cluster,
            h1(|o| o.allow_custom_methods = true),
        ),
        (
            "ignore_http_11_upgrade",
            Cluster,
            h1(|o| o.ignore_http_11_upgrade = vec![Default::default()]),
        ),
        // TLS.
        (
            "allow_renegotiation",
            Cluster,
            upstream_tls(|t| t.allow_renegotiation = true),
        ),
        (
            "key_log",
            Cluster,
            upstream_tls(|t| {
                t.common_tls_context.as_mut().unwrap().key_log = Some(Default::default())
            }),
        ),
        // tls_params: what rustls cannot do is refused by name (see tls::tls_params).
        (
            "signature_algorithms",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    signature_algorithms: vec!["ecdsa_secp256r1_sha256".into()],
                    ..Default::default()
                })
            }),
        ),
        (
            "compliance_policies",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    compliance_policies: vec![0],
                    ..Default::default()
                })
            }),
        ),
        (
            "tls_maximum_protocol_version",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv11 as i32,
                    ..Default::default()
                })
            }),
        ),
        (
            "tls_minimum_protocol_version",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    tls_minimum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv13 as i32,
                    tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv12 as i32,
                    ..Default::default()
                })
            }),
        ),
        (
            "cipher_suites[1]: \"RC4-SHA\"",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    cipher_suites: vec!["ECDHE-ECDSA-AES128-GCM-SHA256".into(), "RC4-SHA".into()],
                    ..Default::default()
                })
            }),
        ),
        (
            "cipher_suites: a list without a suite",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv12 as i32,
                    cipher_suites: vec!["AES128-GCM-SHA256".into()],
                    ..Default::default()
                })
            }),
        ),
        (
            "ecdh_curves[0]: \"B-571\"",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    ecdh_curves: vec!["B-571".into()],
                    ..Default::default()
                })
            }),
        ),
        (
            "ecdh_curves: a list without a curve",
            Cluster,
            common_tls(|c| {
                c.tls_params = Some(tls::TlsParameters {
                    ecdh_curves: vec!["P-521".into()],
                    ..Default::default()
                })
            }),
        ),
        // RouteConfiguration, VirtualHost, Route.
        (
            "internal_only_headers",
            RouteConfiguration,
            route_config(|r| r.internal_only_headers = vec!["x-internal".into()]),
        ),
        (
            "most_specific_header_mutations_wins",
            RouteConfiguration,
            route_config(|r| r.most_specific_header_mutations_wins = true),
        ),
        (
            "validate_clusters",
            RouteConfiguration,
            route_config(|r| r.validate_clusters = yes()),
        ),
        (
            "max_direct_response_body_size_bytes",
            RouteConfiguration,
            route_config(|r| r.max_direct_response_body_size_bytes = u32v()),
        ),
        (
            "route_specifiers",
            RouteConfiguration,
            route_config(|r| r.route_specifiers = vec![ext()]),
        ),
        (
            "rate_limits",
            RouteConfiguration,
            vhost(|v| v.rate_limits = vec![Default::default()]),
        ),
        (
            "cors",
            RouteConfiguration,
            vhost(|v| v.cors = Some(Default::default())),
        ),
        (
            "include_attempt_count_in_response",
            RouteConfiguration,
            vhost(|v| v.include_attempt_count_in_response = true),
        ),
        (
            "include_is_timeout_retry_header",
            RouteConfiguration,
            vhost(|v| v.include_is_timeout_retry_header = true),
        ),
        (
            "per_request_buffer_limit_bytes",
            RouteConfiguration,
            vhost(|v| v.per_request_buffer_limit_bytes = u32v()),
        ),
        (
            "request_body_buffer_limit",
            RouteConfiguration,
            vhost(|v| v.request_body_buffer_limit = u64v()),
        ),
        (
            "route_specifiers",
            RouteConfiguration,
            vhost(|v| v.route_specifiers = vec![ext()]),
        ),
        (
            "per_request_buffer_limit_bytes",
            RouteConfiguration,
            route(|r| r.per_request_buffer_limit_bytes = u32v()),
        ),
        (
            "request_body_buffer_limit",
            RouteConfiguration,
            route(|r| r.request_body_buffer_limit = u64v()),
        ),
        (
            "route_specifiers",
            RouteConfiguration,
            route(|r| r.route_specifiers = vec![ext()]),
        ),
        // RouteAction and what it holds.
        (
            "rate_limits",
            RouteConfiguration,
            action(|a| a.rate_limits = vec![Default::default()]),
        ),
        (
            "include_vh_rate_limits",
            RouteConfiguration,
            action(|a| a.include_vh_rate_limits = yes()),
        ),
        (
            "cors",
            RouteConfiguration,
            action(|a| a.cors = Some(Default::default())),
        ),
        (
            "flush_timeout",
            RouteConfiguration,
            action(|a| a.flush_timeout = dur()),
        ),
        (
            "early_data_policy",
            RouteConfiguration,
            action(|a| a.early_data_policy = Some(ext())),
        ),
        (
            "upgrade_configs",
            RouteConfiguration,
            action(|a| a.upgrade_configs = vec![Default::default()]),
        ),
        (
            "use_hash_policy",
            RouteConfiguration,
            action(|a| {
                a.cluster_specifier = Some(rds::route_action::ClusterSpecifier::WeightedClusters(
                    rds::WeightedCluster {
                        clusters: vec![rds::weighted_cluster::ClusterWeight {
                            name: "c".into(),
                            weight: u32v(),
                            ..Default::default()
                        }],
                        random_value_specifier: Some(
                            rds::weighted_cluster::RandomValueSpecifier::UseHashPolicy(BoolValue {
                                value: true,
                            }),
                        ),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "refresh_cluster_on_retry",
            RouteConfiguration,
            action(|a| {
                a.retry_policy = Some(rds::RetryPolicy {
                    retry_on: "5xx".into(),
                    refresh_cluster_on_retry: true,
                    ..Default::default()
                })
            }),
        ),
        // ClusterLoadAssignment.
        (
            "endpoint_stale_after",
            Cla,
            cla(|c| {
                c.policy = Some(eds::cluster_load_assignment::Policy {
                    endpoint_stale_after: dur(),
                    ..Default::default()
                })
            }),
        ),
        (
            "named_endpoints",
            Cla,
            cla(|c| {
                c.named_endpoints.insert("e".into(), Default::default());
            }),
        ),
        // The router filter.
        (
            "upstream_http_filters",
            Listener,
            router_with(|r| r.upstream_http_filters = vec![Default::default()]),
        ),
        (
            "strict_check_headers",
            Listener,
            router_with(|r| r.strict_check_headers = vec!["x-envoy-max-retries".into()]),
        ),
        (
            "respect_expected_rq_timeout",
            Listener,
            router_with(|r| r.respect_expected_rq_timeout = true),
        ),
        // The fault filter.
        (
            "response_body",
            Listener,
            fault_abort(|a| a.response_body = "x".into()),
        ),
    ];
    assert_all_named(cases);
}

/// RBAC rules this data plane does not evaluate (metadata, filter state, CEL, custom
/// matchers) are not NACKed, since Istio sends them for JWT rules: the rule set fails closed
/// and denies every request, so no request is let through by a rule it cannot check.
#[test]
fn unmodelled_rbac_rules_fail_closed() {
    use envoy_types::pb::envoy::config::rbac::v3 as rbac;
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
    use mesh_core::model::{RbacRequest, RbacRuleSet};
    use rbac::permission::Rule;
    use rbac::principal::Identifier;

    let any_principal = || rbac::Principal {
        identifier: Some(Identifier::Any(true)),
    };
    let any_permission = || rbac::Permission {
        rule: Some(Rule::Any(true)),
    };
    let policy = |permission: rbac::Permission, principal: rbac::Principal| rbac::Policy {
        permissions: vec![permission],
        principals: vec![principal],
        ..Default::default()
    };
    let with_condition = |f: fn(&mut rbac::Policy)| {
        let mut p = policy(any_permission(), any_principal());
        f(&mut p);
        p
    };
    let cases: Vec<(&str, rbac::Policy)> = vec![
        (
            "metadata",
            policy(
                any_permission(),
                rbac::Principal {
                    identifier: Some(Identifier::Metadata(Default::default())),
                },
            ),
        ),
        (
            "filter_state",
            policy(
                any_permission(),
                rbac::Principal {
                    identifier: Some(Identifier::FilterState(Default::default())),
                },
            ),
        ),
        (
            "sourced_metadata",
            policy(
                any_permission(),
                rbac::Principal {
                    identifier: Some(Identifier::SourcedMetadata(Default::default())),
                },
            ),
        ),
        (
            "custom",
            policy(
                any_permission(),
                rbac::Principal {
                    identifier: Some(Identifier::Custom(Default::default())),
                },
            ),
        ),
        (
            "metadata",
            policy(
                rbac::Permission {
                    rule: Some(Rule::Metadata(Default::default())),
                },
                any_principal(),
            ),
        ),
        (
            "matcher",
            policy(
                rbac::Permission {
                    rule: Some(Rule::Matcher(Default::default())),
                },
                any_principal(),
            ),
        ),
        (
            "uri_template",
            policy(
                rbac::Permission {
                    rule: Some(Rule::UriTemplate(Default::default())),
                },
                any_principal(),
            ),
        ),
        (
            "sourced_metadata",
            policy(
                rbac::Permission {
                    rule: Some(Rule::SourcedMetadata(Default::default())),
                },
                any_principal(),
            ),
        ),
        (
            "requested_server_name",
            policy(
                rbac::Permission {
                    rule: Some(Rule::RequestedServerName(Default::default())),
                },
                any_principal(),
            ),
        ),
        (
            "condition",
            with_condition(|p| p.condition = Some(Default::default())),
        ),
        (
            "checked_condition",
            with_condition(|p| p.checked_condition = Some(Default::default())),
        ),
    ];
    for (field, p) in cases {
        let filter = RbacFilter {
            rules: Some(rbac::Rbac {
                action: rbac::rbac::Action::Allow as i32,
                policies: [("p".to_string(), p)].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = crate::translate::rbac::rbac_filter(&filter)
            .unwrap_or_else(|e| panic!("{field}: unexpected NACK {e}"));
        assert!(
            matches!(got.rules, RbacRuleSet::Unmodelled { .. }),
            "{field}: {:?}",
            got.rules
        );
        assert!(!got.rules.allows(&RbacRequest::default()), "{field}");
    }
}

fn validation(f: impl FnOnce(&mut tls::CertificateValidationContext)) -> Any {
    let mut v = tls::CertificateValidationContext {
        ca_certificate_provider_instance: Some(tls::CertificateProviderPluginInstance {
            instance_name: "default".into(),
            certificate_name: "ROOTCA".into(),
        }),
        ..Default::default()
    };
    f(&mut v);
    upstream_tls(|t| {
        t.common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type =
            Some(tls::common_tls_context::ValidationContextType::ValidationContext(v))
    })
}

pub(super) fn common_tls(f: impl FnOnce(&mut tls::CommonTlsContext)) -> Any {
    upstream_tls(|t| f(t.common_tls_context.as_mut().unwrap()))
}

fn downstream_tls(f: impl FnOnce(&mut tls::DownstreamTlsContext)) -> Any {
    let mut ctx = tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_provider_instance: Some(tls::CertificateProviderPluginInstance {
                instance_name: "default".into(),
                certificate_name: "default".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    f(&mut ctx);
    server(|_, chain| {
        chain.transport_socket = Some(core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
                ctx,
            ))),
        })
    })
}

pub(super) fn upstream_options(f: impl FnOnce(&mut uphttp::HttpProtocolOptions)) -> Any {
    let mut opts = uphttp::HttpProtocolOptions::default();
    f(&mut opts);
    cluster(|c| {
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            pack_any(opts),
        );
    })
}

pub(super) fn lb_policy(any: Any) -> Any {
    cluster(|c| {
        c.load_balancing_policy = Some(cds::LoadBalancingPolicy {
            policies: vec![cds::load_balancing_policy::Policy {
                typed_extension_config: Some(core::TypedExtensionConfig {
                    name: "p".into(),
                    typed_config: Some(any),
                }),
            }],
        })
    })
}

fn outlier(f: impl FnOnce(&mut cds::OutlierDetection)) -> Any {
    let mut o = cds::OutlierDetection::default();
    f(&mut o);
    cluster(|c| c.outlier_detection = Some(o))
}

fn socket_address(f: impl FnOnce(&mut core::Address)) -> Any {
    let mut a = socket("10.0.0.1", 80).unwrap();
    f(&mut a);
    cla(|c| {
        c.endpoints = vec![eds::LocalityLbEndpoints {
            lb_endpoints: vec![eds::LbEndpoint {
                host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
                    address: Some(a),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }]
    })
}

/// NACKs that predate the Envoy table: each names the field it refuses.
#[test]
fn refused_envoy_fields_are_named() {
    use ResourceType::{Cluster, ClusterLoadAssignment as Cla, Listener, RouteConfiguration};
    use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
    let cases: Vec<(&str, ResourceType, Any)> = vec![
        // Cluster.
        (
            "transport_socket_matches",
            Cluster,
            cluster(|c| c.transport_socket_matches = vec![Default::default()]),
        ),
        (
            "transport_socket_matcher",
            Cluster,
            cluster(|c| c.transport_socket_matcher = Some(Default::default())),
        ),
        (
            "health_checks",
            Cluster,
            cluster(|c| c.health_checks = vec![Default::default()]),
        ),
        (
            "upstream_http_protocol_options",
            Cluster,
            cluster(|c| {
                c.upstream_http_protocol_options = Some(core::UpstreamHttpProtocolOptions {
                    auto_sni: true,
                    ..Default::default()
                })
            }),
        ),
        (
            "upstream_bind_config",
            Cluster,
            cluster(|c| c.upstream_bind_config = Some(Default::default())),
        ),
        (
            "lb_subset_config",
            Cluster,
            cluster(|c| {
                c.lb_subset_config = Some(cds::cluster::LbSubsetConfig {
                    subset_selectors: vec![Default::default()],
                    ..Default::default()
                })
            }),
        ),
        (
            "original_dst_lb_config",
            Cluster,
            cluster(|c| {
                c.lb_config = Some(cds::cluster::LbConfig::OriginalDstLbConfig(
                    Default::default(),
                ))
            }),
        ),
        (
            "filters",
            Cluster,
            cluster(|c| c.filters = vec![Default::default()]),
        ),
        (
            "upstream_config",
            Cluster,
            cluster(|c| c.upstream_config = Some(ext())),
        ),
        (
            "per_host_thresholds",
            Cluster,
            cluster(|c| {
                c.circuit_breakers = Some(cds::CircuitBreakers {
                    per_host_thresholds: vec![Default::default()],
                    ..Default::default()
                })
            }),
        ),
        (
            "max_connection_pools",
            Cluster,
            cluster(|c| {
                c.circuit_breakers = Some(cds::CircuitBreakers {
                    thresholds: vec![cds::circuit_breakers::Thresholds {
                        max_connection_pools: u32v(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }),
        ),
        ("monitors", Cluster, outlier(|o| o.monitors = vec![ext()])),
        (
            "always_eject_one_host",
            Cluster,
            outlier(|o| o.always_eject_one_host = yes()),
        ),
        (
            "detect_degraded_hosts",
            Cluster,
            outlier(|o| o.detect_degraded_hosts = yes()),
        ),
        (
            "active_request_bias",
            Cluster,
            cluster(|c| {
                c.lb_policy = cds::cluster::LbPolicy::LeastRequest as i32;
                c.lb_config = Some(cds::cluster::LbConfig::LeastRequestLbConfig(
                    cds::cluster::LeastRequestLbConfig {
                        active_request_bias: Some(Default::default()),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "slow_start_config",
            Cluster,
            cluster(|c| {
                c.lb_policy = cds::cluster::LbPolicy::LeastRequest as i32;
                c.lb_config = Some(cds::cluster::LbConfig::LeastRequestLbConfig(
                    cds::cluster::LeastRequestLbConfig {
                        slow_start_config: Some(Default::default()),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "slow_start_config",
            Cluster,
            cluster(|c| {
                c.lb_config = Some(cds::cluster::LbConfig::RoundRobinLbConfig(
                    cds::cluster::RoundRobinLbConfig {
                        slow_start_config: Some(Default::default()),
                    },
                ))
            }),
        ),
        (
            "consistent_hashing_lb_config",
            Cluster,
            cluster(|c| {
                c.common_lb_config = Some(cds::cluster::CommonLbConfig {
                    consistent_hashing_lb_config: Some(
                        cds::cluster::common_lb_config::ConsistentHashingLbConfig {
                            use_hostname_for_hashing: true,
                            ..Default::default()
                        },
                    ),
                    ..Default::default()
                })
            }),
        ),
        (
            "override_host_status",
            Cluster,
            cluster(|c| {
                c.common_lb_config = Some(cds::cluster::CommonLbConfig {
                    override_host_status: Some(Default::default()),
                    ..Default::default()
                })
            }),
        ),
        // Typed LB policies.
        (
            "active_request_bias",
            Cluster,
            lb_policy(pack_any(lbp::least_request::v3::LeastRequest {
                active_request_bias: Some(Default::default()),
                ..Default::default()
            })),
        ),
        (
            "slow_start_config",
            Cluster,
            lb_policy(pack_any(lbp::least_request::v3::LeastRequest {
                slow_start_config: Some(Default::default()),
                ..Default::default()
            })),
        ),
        (
            "enable_full_scan",
            Cluster,
            lb_policy(pack_any(lbp::least_request::v3::LeastRequest {
                enable_full_scan: yes(),
                ..Default::default()
            })),
        ),
        (
            "selection_method",
            Cluster,
            lb_policy(pack_any(lbp::least_request::v3::LeastRequest {
                selection_method: lbp::least_request::v3::least_request::SelectionMethod::FullScan
                    as i32,
                ..Default::default()
            })),
        ),
        (
            "consistent_hashing_lb_config",
            Cluster,
            lb_policy(pack_any(lbp::maglev::v3::Maglev {
                consistent_hashing_lb_config: Some(Default::default()),
                ..Default::default()
            })),
        ),
        (
            "use_hostname_for_hashing",
            Cluster,
            lb_policy(pack_any(lbp::ring_hash::v3::RingHash {
                use_hostname_for_hashing: true,
                ..Default::default()
            })),
        ),
        (
            "hash_balance_factor",
            Cluster,
            lb_policy(pack_any(lbp::ring_hash::v3::RingHash {
                hash_balance_factor: u32v(),
                ..Default::default()
            })),
        ),
        (
            "consistent_hashing_lb_config",
            Cluster,
            lb_policy(pack_any(lbp::ring_hash::v3::RingHash {
                consistent_hashing_lb_config: Some(Default::default()),
                ..Default::default()
            })),
        ),
        (
            "slow_start_config",
            Cluster,
            lb_policy(pack_any(lbp::round_robin::v3::RoundRobin {
                slow_start_config: Some(Default::default()),
                ..Default::default()
            })),
        ),
        // Upstream HTTP options.
        (
            "upstream_http_protocol_options",
            Cluster,
            upstream_options(|o| {
                o.upstream_http_protocol_options = Some(core::UpstreamHttpProtocolOptions {
                    auto_san_validation: true,
                    ..Default::default()
                })
            }),
        ),
        (
            "http_filters",
            Cluster,
            upstream_options(|o| o.http_filters = vec![Default::default()]),
        ),
        (
            "outlier_detection",
            Cluster,
            upstream_options(|o| o.outlier_detection = Some(Default::default())),
        ),
        (
            "request_mirror_policies",
            Cluster,
            upstream_options(|o| o.request_mirror_policies = vec![Default::default()]),
        ),
        (
            "hash_policy",
            Cluster,
            upstream_options(|o| o.hash_policy = vec![Default::default()]),
        ),
        (
            "retry_policy",
            Cluster,
            upstream_options(|o| o.retry_policy = Some(Default::default())),
        ),
        (
            "http3_protocol_options",
            Cluster,
            upstream_options(|o| {
                use uphttp::http_protocol_options as hp;
                o.upstream_protocol_options = Some(hp::UpstreamProtocolOptions::ExplicitHttpConfig(
                    hp::ExplicitHttpConfig {
                        protocol_config: Some(
                            hp::explicit_http_config::ProtocolConfig::Http3ProtocolOptions(
                                Default::default(),
                            ),
                        ),
                    },
                ))
            }),
        ),
        (
            "http3_protocol_options",
            Cluster,
            upstream_options(|o| {
                use uphttp::http_protocol_options as hp;
                o.upstream_protocol_options =
                    Some(hp::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                        hp::UseDownstreamHttpConfig {
                            http3_protocol_options: Some(Default::default()),
                            ..Default::default()
                        },
                    ))
            }),
        ),
        (
            "http3_protocol_options",
            Cluster,
            upstream_options(|o| {
                use uphttp::http_protocol_options as hp;
                o.upstream_protocol_options = Some(hp::UpstreamProtocolOptions::AutoConfig(
                    hp::AutoHttpConfig {
                        http3_protocol_options: Some(Default::default()),
                        ..Default::default()
                    },
                ))
            }),
        ),
        // TLS.
        (
            "auto_host_sni",
            Cluster,
            upstream_tls(|t| t.auto_host_sni = true),
        ),
        (
            "auto_sni_san_validation",
            Cluster,
            upstream_tls(|t| t.auto_sni_san_validation = true),
        ),
        (
            "tls_certificates",
            Cluster,
            common_tls(|c| c.tls_certificates = vec![Default::default()]),
        ),
        (
            "tls_certificate_sds_secret_configs",
            Cluster,
            common_tls(|c| c.tls_certificate_sds_secret_configs = vec![Default::default()]),
        ),
        (
            "custom_tls_certificate_selector",
            Cluster,
            common_tls(|c| c.custom_tls_certificate_selector = Some(ext())),
        ),
        (
            "tls_certificate_certificate_provider",
            Cluster,
            common_tls(|c| c.tls_certificate_certificate_provider = Some(Default::default())),
        ),
        (
            "custom_handshaker",
            Cluster,
            common_tls(|c| c.custom_handshaker = Some(ext())),
        ),
        (
            "validation_context_sds_secret_config",
            Cluster,
            common_tls(|c| {
                c.validation_context_type = Some(
                    tls::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                        Default::default(),
                    ),
                )
            }),
        ),
        (
            "validation_context_certificate_provider",
            Cluster,
            common_tls(|c| {
                c.validation_context_type = Some(
                    tls::common_tls_context::ValidationContextType::ValidationContextCertificateProvider(
                        Default::default(),
                    ),
                )
            }),
        ),
        (
            "validation_context_sds_secret_config",
            Cluster,
            common_tls(|c| {
                c.validation_context_type = Some(
                    tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                        tls::common_tls_context::CombinedCertificateValidationContext {
                            validation_context_sds_secret_config: Some(Default::default()),
                            ..Default::default()
                        },
                    ),
                )
            }),
        ),
        (
            "validation_context_certificate_provider",
            Cluster,
            common_tls(|c| {
                c.validation_context_type = Some(
                    tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                        tls::common_tls_context::CombinedCertificateValidationContext {
                            validation_context_certificate_provider: Some(Default::default()),
                            ..Default::default()
                        },
                    ),
                )
            }),
        ),
        (
            "trusted_ca",
            Cluster,
            validation(|v| v.trusted_ca = Some(Default::default())),
        ),
        (
            "system_root_certs",
            Cluster,
            validation(|v| v.system_root_certs = Some(Default::default())),
        ),
        (
            "watched_directory",
            Cluster,
            validation(|v| v.watched_directory = Some(Default::default())),
        ),
        (
            "verify_certificate_spki",
            Cluster,
            validation(|v| v.verify_certificate_spki = vec!["x".into()]),
        ),
        (
            "verify_certificate_hash",
            Cluster,
            validation(|v| v.verify_certificate_hash = vec!["x".into()]),
        ),
        (
            "require_signed_certificate_timestamp",
            Cluster,
            validation(|v| v.require_signed_certificate_timestamp = yes()),
        ),
        (
            "crl",
            Cluster,
            validation(|v| v.crl = Some(Default::default())),
        ),
        (
            "allow_expired_certificate",
            Cluster,
            validation(|v| v.allow_expired_certificate = true),
        ),
        (
            "trust_chain_verification",
            Cluster,
            validation(|v| {
                v.trust_chain_verification =
                    tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted
                        as i32
            }),
        ),
        (
            "custom_validator_config",
            Cluster,
            validation(|v| v.custom_validator_config = Some(ext())),
        ),
        (
            "max_verify_depth",
            Cluster,
            validation(|v| v.max_verify_depth = u32v()),
        ),
        (
            "session_timeout",
            Listener,
            downstream_tls(|t| t.session_timeout = dur()),
        ),
        (
            "prefer_client_ciphers",
            Listener,
            downstream_tls(|t| t.prefer_client_ciphers = true),
        ),
        // Buffer limits: hyper's flow control bounds buffering instead.
        (
            "per_connection_buffer_limit_bytes",
            Cluster,
            cluster(|c| c.per_connection_buffer_limit_bytes = u32v()),
        ),
        (
            "per_connection_buffer_high_watermark_timeout",
            Cluster,
            cluster(|c| c.per_connection_buffer_high_watermark_timeout = dur()),
        ),
        (
            "per_connection_buffer_limit_bytes",
            Listener,
            server(|l, _| l.per_connection_buffer_limit_bytes = u32v()),
        ),
        (
            "per_connection_buffer_high_watermark_timeout",
            Listener,
            server(|l, _| l.per_connection_buffer_high_watermark_timeout = dur()),
        ),
        // DNS resolver settings: the system resolver is used.
        (
            "dns_failure_refresh_rate",
            Cluster,
            cluster(|c| c.dns_failure_refresh_rate = Some(Default::default())),
        ),
        (
            "dns_resolvers",
            Cluster,
            cluster(|c| c.dns_resolvers = vec![Default::default()]),
        ),
        (
            "use_tcp_for_dns_lookups",
            Cluster,
            cluster(|c| c.use_tcp_for_dns_lookups = true),
        ),
        (
            "dns_resolution_config",
            Cluster,
            cluster(|c| c.dns_resolution_config = Some(Default::default())),
        ),
        (
            "header_validation_config",
            Cluster,
            upstream_options(|o| o.header_validation_config = Some(ext())),
        ),
        (
            "require_sni",
            Listener,
            downstream_tls(|t| t.require_sni = yes()),
        ),
        (
            "ocsp_staple_policy",
            Listener,
            downstream_tls(|t| {
                t.ocsp_staple_policy =
                    tls::downstream_tls_context::OcspStaplePolicy::MustStaple as i32
            }),
        ),
        (
            "session_ticket_keys",
            Listener,
            downstream_tls(|t| {
                t.session_ticket_keys_type = Some(
                    tls::downstream_tls_context::SessionTicketKeysType::SessionTicketKeys(
                        Default::default(),
                    ),
                )
            }),
        ),
        (
            "session_ticket_keys_sds_secret_config",
            Listener,
            downstream_tls(|t| {
                t.session_ticket_keys_type = Some(
                    tls::downstream_tls_context::SessionTicketKeysType::SessionTicketKeysSdsSecretConfig(
                        Default::default(),
                    ),
                )
            }),
        ),
        (
            "disable_stateless_session_resumption",
            Listener,
            downstream_tls(|t| {
                t.session_ticket_keys_type = Some(
                    tls::downstream_tls_context::SessionTicketKeysType::DisableStatelessSessionResumption(
                        true,
                    ),
                )
            }),
        ),
        // ClusterLoadAssignment and addresses.
        (
            "weighted_priority_health",
            Cla,
            cla(|c| {
                c.policy = Some(eds::cluster_load_assignment::Policy {
                    weighted_priority_health: true,
                    ..Default::default()
                })
            }),
        ),
        (
            "drop_overloads",
            Cla,
            cla(|c| {
                c.policy = Some(eds::cluster_load_assignment::Policy {
                    drop_overloads: vec![Default::default()],
                    ..Default::default()
                })
            }),
        ),
        (
            "load_balancer_endpoints",
            Cla,
            cla(|c| {
                c.endpoints = vec![eds::LocalityLbEndpoints {
                    lb_config: Some(eds::locality_lb_endpoints::LbConfig::LoadBalancerEndpoints(
                        Default::default(),
                    )),
                    ..Default::default()
                }]
            }),
        ),
        (
            "leds_cluster_locality_config",
            Cla,
            cla(|c| {
                c.endpoints = vec![eds::LocalityLbEndpoints {
                    lb_config: Some(
                        eds::locality_lb_endpoints::LbConfig::LedsClusterLocalityConfig(
                            Default::default(),
                        ),
                    ),
                    ..Default::default()
                }]
            }),
        ),
        (
            "endpoint_name",
            Cla,
            cla(|c| {
                c.endpoints = vec![eds::LocalityLbEndpoints {
                    lb_endpoints: vec![eds::LbEndpoint {
                        host_identifier: Some(eds::lb_endpoint::HostIdentifier::EndpointName(
                            "e".into(),
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                }]
            }),
        ),
        (
            "additional_addresses",
            Cla,
            cla(|c| {
                c.endpoints = vec![eds::LocalityLbEndpoints {
                    lb_endpoints: vec![eds::LbEndpoint {
                        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(
                            eds::Endpoint {
                                address: socket("10.0.0.1", 80),
                                additional_addresses: vec![Default::default()],
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                }]
            }),
        ),
        (
            "pipe",
            Cla,
            socket_address(|a| a.address = Some(core::address::Address::Pipe(Default::default()))),
        ),
        (
            "envoy_internal_address",
            Cla,
            socket_address(|a| {
                a.address = Some(core::address::Address::EnvoyInternalAddress(
                    Default::default(),
                ))
            }),
        ),
        // Listener, filter chains, HCM.
        (
            "fcds_config",
            Listener,
            server(|l, _| l.fcds_config = Some(Default::default())),
        ),
        (
            "filter_chain_matcher",
            Listener,
            server(|l, _| l.filter_chain_matcher = Some(Default::default())),
        ),
        (
            "use_original_dst",
            Listener,
            server(|l, _| l.use_original_dst = yes()),
        ),
        (
            "udp_listener_config",
            Listener,
            server(|l, _| l.udp_listener_config = Some(Default::default())),
        ),
        (
            "listener_filters",
            Listener,
            server(|l, _| l.listener_filters = vec![Default::default()]),
        ),
        (
            "use_proxy_proto",
            Listener,
            server(|_, c| c.use_proxy_proto = yes()),
        ),
        (
            "address_suffix",
            Listener,
            server(|_, c| {
                c.filter_chain_match = Some(lds::FilterChainMatch {
                    address_suffix: "x".into(),
                    ..Default::default()
                })
            }),
        ),
        (
            "suffix_len",
            Listener,
            server(|_, c| {
                c.filter_chain_match = Some(lds::FilterChainMatch {
                    suffix_len: u32v(),
                    ..Default::default()
                })
            }),
        ),
        (
            "direct_source_prefix_ranges",
            Listener,
            server(|_, c| {
                c.filter_chain_match = Some(lds::FilterChainMatch {
                    direct_source_prefix_ranges: vec![Default::default()],
                    ..Default::default()
                })
            }),
        ),
        (
            "config_discovery",
            Listener,
            server(|_, c| {
                c.filters[0].config_type =
                    Some(lds::filter::ConfigType::ConfigDiscovery(Default::default()))
            }),
        ),
        (
            "scoped_routes",
            Listener,
            client(|h| {
                h.route_specifier = Some(
                    hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(Default::default()),
                )
            }),
        ),
        (
            "local_reply_config",
            Listener,
            client(|h| h.local_reply_config = Some(Default::default())),
        ),
        (
            "strip_matching_host_port",
            Listener,
            client(|h| h.strip_matching_host_port = true),
        ),
        (
            "strip_trailing_host_dot",
            Listener,
            client(|h| h.strip_trailing_host_dot = true),
        ),
        (
            "upgrade_configs",
            Listener,
            client(|h| h.upgrade_configs = vec![Default::default()]),
        ),
        (
            "path_normalization_options",
            Listener,
            client(|h| h.path_normalization_options = Some(Default::default())),
        ),
        (
            "config_discovery",
            Listener,
            client(|h| {
                let mut f = filter("x", pack_any(Router::default()));
                f.config_type = Some(hcm::http_filter::ConfigType::ConfigDiscovery(
                    Default::default(),
                ));
                h.http_filters.insert(0, f)
            }),
        ),
        (
            "disabled",
            Listener,
            client(|h| {
                let mut f = filter("fault", pack_any(fault::HttpFault::default()));
                f.disabled = true;
                h.http_filters.insert(0, f)
            }),
        ),
        (
            "downstream_nodes",
            Listener,
            client(|h| {
                let f = fault::HttpFault {
                    downstream_nodes: vec!["n".into()],
                    ..Default::default()
                };
                h.http_filters.insert(0, filter("fault", pack_any(f)))
            }),
        ),
        (
            "upstream_cluster",
            Listener,
            client(|h| {
                let f = fault::HttpFault {
                    upstream_cluster: "c".into(),
                    ..Default::default()
                };
                h.http_filters.insert(0, filter("fault", pack_any(f)))
            }),
        ),
        (
            "response_rate_limit",
            Listener,
            client(|h| {
                let f = fault::HttpFault {
                    response_rate_limit: Some(Default::default()),
                    ..Default::default()
                };
                h.http_filters.insert(0, filter("fault", pack_any(f)))
            }),
        ),
        // Routes.
        (
            "cluster_specifier_plugins",
            RouteConfiguration,
            route_config(|r| r.cluster_specifier_plugins = vec![Default::default()]),
        ),
        (
            "ignore_port_in_host_matching",
            RouteConfiguration,
            route_config(|r| r.ignore_port_in_host_matching = true),
        ),
        (
            "vhost_header",
            RouteConfiguration,
            route_config(|r| r.vhost_header = "x".into()),
        ),
        (
            "ignore_path_parameters_in_path_matching",
            RouteConfiguration,
            route_config(|r| r.ignore_path_parameters_in_path_matching = true),
        ),
        (
            "vhds",
            RouteConfiguration,
            route_config(|r| r.vhds = Some(Default::default())),
        ),
        (
            "require_tls",
            RouteConfiguration,
            vhost(|v| v.require_tls = 1),
        ),
        (
            "matcher",
            RouteConfiguration,
            vhost(|v| v.matcher = Some(Default::default())),
        ),
        (
            "hedge_policy",
            RouteConfiguration,
            vhost(|v| v.hedge_policy = Some(Default::default())),
        ),
        (
            "retry_policy_typed_config",
            RouteConfiguration,
            vhost(|v| v.retry_policy_typed_config = Some(Default::default())),
        ),
        (
            "filter_action",
            RouteConfiguration,
            route(|r| r.action = Some(rds::route::Action::FilterAction(Default::default()))),
        ),
        (
            "path_match_policy",
            RouteConfiguration,
            route(|r| {
                r.r#match.as_mut().unwrap().path_specifier =
                    Some(rds::route_match::PathSpecifier::PathMatchPolicy(ext()))
            }),
        ),
        (
            "connect_matcher",
            RouteConfiguration,
            route(|r| {
                r.r#match.as_mut().unwrap().path_specifier = Some(
                    rds::route_match::PathSpecifier::ConnectMatcher(Default::default()),
                )
            }),
        ),
        (
            "cookies",
            RouteConfiguration,
            route(|r| r.r#match.as_mut().unwrap().cookies = vec![Default::default()]),
        ),
        (
            "tls_context",
            RouteConfiguration,
            route(|r| r.r#match.as_mut().unwrap().tls_context = Some(Default::default())),
        ),
        (
            "dynamic_metadata",
            RouteConfiguration,
            route(|r| r.r#match.as_mut().unwrap().dynamic_metadata = vec![Default::default()]),
        ),
        (
            "filter_state",
            RouteConfiguration,
            route(|r| r.r#match.as_mut().unwrap().filter_state = vec![Default::default()]),
        ),
        (
            "cluster_specifier_plugin",
            RouteConfiguration,
            action(|a| {
                a.cluster_specifier = Some(
                    rds::route_action::ClusterSpecifier::ClusterSpecifierPlugin("p".into()),
                )
            }),
        ),
        (
            "inline_cluster_specifier_plugin",
            RouteConfiguration,
            action(|a| {
                a.cluster_specifier = Some(
                    rds::route_action::ClusterSpecifier::InlineClusterSpecifierPlugin(
                        Default::default(),
                    ),
                )
            }),
        ),
        (
            "cluster_not_found_response_code",
            RouteConfiguration,
            action(|a| a.cluster_not_found_response_code = 1),
        ),
        (
            "metadata_match",
            RouteConfiguration,
            action(|a| a.metadata_match = Some(Default::default())),
        ),
        (
            "path_rewrite_policy",
            RouteConfiguration,
            action(|a| a.path_rewrite_policy = Some(ext())),
        ),
        (
            "path_rewrite",
            RouteConfiguration,
            action(|a| a.path_rewrite = "x".into()),
        ),
        (
            "host_rewrite_path_regex",
            RouteConfiguration,
            action(|a| {
                a.host_rewrite_specifier = Some(
                    rds::route_action::HostRewriteSpecifier::HostRewritePathRegex(
                        Default::default(),
                    ),
                )
            }),
        ),
        (
            "host_rewrite",
            RouteConfiguration,
            action(|a| {
                a.host_rewrite_specifier = Some(
                    rds::route_action::HostRewriteSpecifier::HostRewrite("x".into()),
                )
            }),
        ),
        (
            "append_x_forwarded_host",
            RouteConfiguration,
            action(|a| a.append_x_forwarded_host = true),
        ),
        (
            "retry_policy_typed_config",
            RouteConfiguration,
            action(|a| a.retry_policy_typed_config = Some(Default::default())),
        ),
        (
            "hedge_policy",
            RouteConfiguration,
            action(|a| a.hedge_policy = Some(Default::default())),
        ),
        (
            "internal_redirect_policy",
            RouteConfiguration,
            action(|a| a.internal_redirect_policy = Some(Default::default())),
        ),
        (
            "internal_redirect_action",
            RouteConfiguration,
            action(|a| a.internal_redirect_action = 1),
        ),
        (
            "max_internal_redirects",
            RouteConfiguration,
            action(|a| a.max_internal_redirects = u32v()),
        ),
        ("priority", RouteConfiguration, action(|a| a.priority = 1)),
        (
            "cluster_header",
            RouteConfiguration,
            action(|a| {
                a.request_mirror_policies = vec![rds::route_action::RequestMirrorPolicy {
                    cluster_header: "x-mirror".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "request_headers_mutations",
            RouteConfiguration,
            action(|a| {
                a.request_mirror_policies = vec![rds::route_action::RequestMirrorPolicy {
                    cluster: "shadow".into(),
                    request_headers_mutations: vec![Default::default()],
                    ..Default::default()
                }]
            }),
        ),
        (
            "host_rewrite_literal",
            RouteConfiguration,
            action(|a| {
                a.request_mirror_policies = vec![rds::route_action::RequestMirrorPolicy {
                    cluster: "shadow".into(),
                    host_rewrite_literal: "h".into(),
                    ..Default::default()
                }]
            }),
        ),
        (
            "retry_priority",
            RouteConfiguration,
            action(|a| {
                a.retry_policy = Some(rds::RetryPolicy {
                    retry_priority: Some(Default::default()),
                    ..Default::default()
                })
            }),
        ),
        (
            "retry_options_predicates",
            RouteConfiguration,
            action(|a| {
                a.retry_policy = Some(rds::RetryPolicy {
                    retry_options_predicates: vec![ext()],
                    ..Default::default()
                })
            }),
        ),
        (
            "rate_limited_retry_back_off",
            RouteConfiguration,
            action(|a| {
                a.retry_policy = Some(rds::RetryPolicy {
                    rate_limited_retry_back_off: Some(Default::default()),
                    ..Default::default()
                })
            }),
        ),
        (
            "retriable_request_headers",
            RouteConfiguration,
            action(|a| {
                a.retry_policy = Some(rds::RetryPolicy {
                    retriable_request_headers: vec![Default::default()],
                    ..Default::default()
                })
            }),
        ),
        (
            "header_name",
            RouteConfiguration,
            action(|a| {
                a.cluster_specifier = Some(rds::route_action::ClusterSpecifier::WeightedClusters(
                    rds::WeightedCluster {
                        clusters: vec![rds::weighted_cluster::ClusterWeight {
                            name: "c".into(),
                            weight: u32v(),
                            ..Default::default()
                        }],
                        random_value_specifier: Some(
                            rds::weighted_cluster::RandomValueSpecifier::HeaderName("h".into()),
                        ),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "cluster_header",
            RouteConfiguration,
            action(|a| {
                a.cluster_specifier = Some(rds::route_action::ClusterSpecifier::WeightedClusters(
                    rds::WeightedCluster {
                        clusters: vec![rds::weighted_cluster::ClusterWeight {
                            cluster_header: "h".into(),
                            weight: u32v(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "host_rewrite_literal",
            RouteConfiguration,
            action(|a| {
                a.cluster_specifier = Some(rds::route_action::ClusterSpecifier::WeightedClusters(
                    rds::WeightedCluster {
                        clusters: vec![rds::weighted_cluster::ClusterWeight {
                            name: "c".into(),
                            weight: u32v(),
                            host_rewrite_specifier: Some(
                                rds::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(
                                    "h".into(),
                                ),
                            ),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "attributes",
            RouteConfiguration,
            action(|a| {
                a.hash_policy = vec![rds::route_action::HashPolicy {
                    policy_specifier: Some(
                        rds::route_action::hash_policy::PolicySpecifier::Cookie(
                            rds::route_action::hash_policy::Cookie {
                                name: "c".into(),
                                attributes: vec![Default::default()],
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                }]
            }),
        ),
        (
            "path_rewrite",
            RouteConfiguration,
            route(|r| {
                r.action = Some(rds::route::Action::Redirect(rds::RedirectAction {
                    path_rewrite_specifier: Some(
                        rds::redirect_action::PathRewriteSpecifier::PathRewrite("x".into()),
                    ),
                    ..Default::default()
                }))
            }),
        ),
        (
            "body_format",
            RouteConfiguration,
            route(|r| {
                r.action = Some(rds::route::Action::DirectResponse(
                    rds::DirectResponseAction {
                        status: 200,
                        body_format: Some(Default::default()),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "environment_variable",
            RouteConfiguration,
            route(|r| {
                r.action = Some(rds::route::Action::DirectResponse(
                    rds::DirectResponseAction {
                        status: 200,
                        body: Some(core::DataSource {
                            specifier: Some(core::data_source::Specifier::EnvironmentVariable(
                                "X".into(),
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "watched_directory",
            RouteConfiguration,
            route(|r| {
                r.action = Some(rds::route::Action::DirectResponse(
                    rds::DirectResponseAction {
                        status: 200,
                        body: Some(core::DataSource {
                            specifier: Some(core::data_source::Specifier::InlineString("b".into())),
                            watched_directory: Some(Default::default()),
                        }),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "custom",
            RouteConfiguration,
            route(|r| {
                r.r#match.as_mut().unwrap().headers = vec![rds::HeaderMatcher {
                    name: "h".into(),
                    header_match_specifier: Some(
                        rds::header_matcher::HeaderMatchSpecifier::StringMatch(
                            envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher {
                                match_pattern: Some(
                                    envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern::Custom(
                                        Default::default(),
                                    ),
                                ),
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                }]
            }),
        ),
        // Config sources.
        (
            "path_config_source",
            Listener,
            client(|h| {
                h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                    hcm::Rds {
                        config_source: Some(core::ConfigSource {
                            config_source_specifier: Some(
                                core::config_source::ConfigSourceSpecifier::PathConfigSource(
                                    Default::default(),
                                ),
                            ),
                            ..Default::default()
                        }),
                        route_config_name: "r".into(),
                    },
                ))
            }),
        ),
        (
            "api_config_source",
            Listener,
            client(|h| {
                h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                    hcm::Rds {
                        config_source: Some(core::ConfigSource {
                            config_source_specifier: Some(
                                core::config_source::ConfigSourceSpecifier::ApiConfigSource(
                                    Default::default(),
                                ),
                            ),
                            ..Default::default()
                        }),
                        route_config_name: "r".into(),
                    },
                ))
            }),
        ),
        (
            "path",
            Listener,
            client(|h| {
                h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                    hcm::Rds {
                        config_source: Some(core::ConfigSource {
                            config_source_specifier: Some(
                                core::config_source::ConfigSourceSpecifier::Path("/x".into()),
                            ),
                            ..Default::default()
                        }),
                        route_config_name: "r".into(),
                    },
                ))
            }),
        ),
    ];
    assert_all_named(cases);
}

/// `max_connections` / `max_pending_requests` are accepted on every HTTP protocol: the
/// pool counts them on HTTP/1.1, HTTP/2, downstream-protocol and ALPN clusters alike.
#[test]
fn breakers_are_accepted_on_every_protocol() {
    use uphttp::http_protocol_options as hp;
    let with =
        |proto: hp::UpstreamProtocolOptions, tls: bool, t: cds::circuit_breakers::Thresholds| {
            let opts = uphttp::HttpProtocolOptions {
                upstream_protocol_options: Some(proto),
                ..Default::default()
            };
            let mut any = cluster(|c| {
                c.typed_extension_protocol_options.insert(
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
                    pack_any(opts),
                );
                c.circuit_breakers = Some(cds::CircuitBreakers {
                    thresholds: vec![t],
                    ..Default::default()
                });
            });
            if tls {
                let mut c = <cds::Cluster as prost::Message>::decode(any.value.as_slice()).unwrap();
                let tls_any = upstream_tls(|_| {});
                let tls_cluster =
                    <cds::Cluster as prost::Message>::decode(tls_any.value.as_slice()).unwrap();
                c.transport_socket = tls_cluster.transport_socket;
                any = pack_any(c);
            }
            crate::resource::decode(ResourceType::Cluster, &any).map_err(|e| e.reason)
        };
    let downstream =
        || hp::UpstreamProtocolOptions::UseDownstreamProtocolConfig(Default::default());
    let auto = || hp::UpstreamProtocolOptions::AutoConfig(Default::default());
    let h1 = || {
        hp::UpstreamProtocolOptions::ExplicitHttpConfig(hp::ExplicitHttpConfig {
            protocol_config: Some(
                hp::explicit_http_config::ProtocolConfig::HttpProtocolOptions(Default::default()),
            ),
        })
    };
    let conns = |n: u32| cds::circuit_breakers::Thresholds {
        max_connections: Some(UInt32Value { value: n }),
        ..Default::default()
    };
    let pending = cds::circuit_breakers::Thresholds {
        max_pending_requests: u32v(),
        ..Default::default()
    };
    for (name, proto) in [
        ("downstream", downstream()),
        ("auto", auto()),
        ("http1", h1()),
    ] {
        for tls in [false, true] {
            for t in [conns(2), pending, conns(u32::MAX)] {
                let translated = with(proto.clone(), tls, t);
                assert!(translated.is_ok(), "{name} tls={tls} {t:?}: {translated:?}");
            }
        }
    }
}

/// Each RBAC permission and principal the data plane evaluates is translated into its model
/// variant (the rule set is enforced, not failed closed).
#[test]
fn rbac_permissions_and_principals_translate_to_their_rules() {
    use envoy_types::pb::envoy::config::core::v3::CidrRange as PbCidr;
    use envoy_types::pb::envoy::config::rbac::v3 as rbac;
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
    use envoy_types::pb::envoy::r#type::matcher::v3 as m;
    use envoy_types::pb::envoy::r#type::v3::Int32Range;
    use mesh_core::model::{Permission as P, Principal as Q, RbacRuleSet};
    use rbac::permission::Rule;
    use rbac::principal::Identifier;

    let exact = |s: &str| m::StringMatcher {
        match_pattern: Some(m::string_matcher::MatchPattern::Exact(s.into())),
        ..Default::default()
    };
    let path = || m::PathMatcher {
        rule: Some(m::path_matcher::Rule::Path(exact("/a"))),
    };
    let cidr = || PbCidr {
        address_prefix: "10.0.0.0".into(),
        prefix_len: Some(UInt32Value { value: 8 }),
    };
    let header = || rds::HeaderMatcher {
        name: "x-a".into(),
        header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::StringMatch(
            exact("1"),
        )),
        ..Default::default()
    };
    let any_perm = || rbac::Permission {
        rule: Some(Rule::Any(true)),
    };
    let any_id = || rbac::Principal {
        identifier: Some(Identifier::Any(true)),
    };
    let perm = |r: Rule| rbac::Permission { rule: Some(r) };
    let id = |i: Identifier| rbac::Principal {
        identifier: Some(i),
    };
    let translate = |p: rbac::Permission, q: rbac::Principal| {
        let filter = RbacFilter {
            rules: Some(rbac::Rbac {
                action: rbac::rbac::Action::Allow as i32,
                policies: [(
                    "p".to_string(),
                    rbac::Policy {
                        permissions: vec![p],
                        principals: vec![q],
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match crate::translate::rbac::rbac_filter(&filter).unwrap().rules {
            RbacRuleSet::Rules(r) => r.policies.into_iter().next().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let permission = |r: Rule| translate(perm(r), any_id()).permissions.remove(0);
    let principal = |i: Identifier| translate(any_perm(), id(i)).principals.remove(0);
    let set = |r: Vec<rbac::Permission>| rbac::permission::Set { rules: r };
    let ids = |i: Vec<rbac::Principal>| rbac::principal::Set { ids: i };

    assert!(
        matches!(permission(Rule::AndRules(set(vec![any_perm()]))), P::And(v) if v == [P::Any])
    );
    assert!(matches!(permission(Rule::OrRules(set(vec![any_perm()]))), P::Or(v) if v == [P::Any]));
    assert!(matches!(permission(Rule::NotRule(Box::new(any_perm()))), P::Not(b) if *b == P::Any));
    assert!(matches!(permission(Rule::Header(header())), P::Header(_)));
    assert!(matches!(permission(Rule::UrlPath(path())), P::UrlPath(_)));
    assert!(matches!(
        permission(Rule::DestinationIp(cidr())),
        P::DestinationIp(_)
    ));
    assert!(matches!(
        permission(Rule::DestinationPortRange(Int32Range {
            start: 80,
            end: 90
        })),
        P::DestinationPortRange { start: 80, end: 90 }
    ));
    assert!(
        matches!(principal(Identifier::AndIds(ids(vec![any_id()]))), Q::And(v) if v == [Q::Any])
    );
    assert!(matches!(principal(Identifier::OrIds(ids(vec![any_id()]))), Q::Or(v) if v == [Q::Any]));
    assert!(matches!(principal(Identifier::NotId(Box::new(any_id()))), Q::Not(b) if *b == Q::Any));
    assert!(matches!(
        principal(Identifier::RemoteIp(cidr())),
        Q::RemoteIp(_)
    ));
    assert!(matches!(
        principal(Identifier::Header(header())),
        Q::Header(_)
    ));
    assert!(matches!(
        principal(Identifier::UrlPath(path())),
        Q::UrlPath(_)
    ));
}

/// Every outlier-detection field is carried into the model (mesh-resilience's detector reads
/// them); a field left at its default here would silently keep Envoy's default.
#[test]
fn every_outlier_detection_field_is_translated() {
    let secs = |s| {
        Some(PbDuration {
            seconds: s,
            nanos: 0,
        })
    };
    let v = |n| Some(UInt32Value { value: n });
    let o = cds::OutlierDetection {
        consecutive_5xx: v(11),
        interval: secs(2),
        base_ejection_time: secs(3),
        max_ejection_percent: v(41),
        enforcing_consecutive_5xx: v(91),
        enforcing_success_rate: v(92),
        success_rate_minimum_hosts: v(6),
        success_rate_request_volume: v(101),
        success_rate_stdev_factor: v(1901),
        consecutive_gateway_failure: v(7),
        enforcing_consecutive_gateway_failure: v(93),
        split_external_local_origin_errors: true,
        consecutive_local_origin_failure: v(8),
        enforcing_consecutive_local_origin_failure: v(94),
        enforcing_local_origin_success_rate: v(95),
        failure_percentage_threshold: v(86),
        enforcing_failure_percentage: v(96),
        enforcing_failure_percentage_local_origin: v(97),
        failure_percentage_minimum_hosts: v(9),
        failure_percentage_request_volume: v(51),
        max_ejection_time: secs(400),
        max_ejection_time_jitter: secs(4),
        ..Default::default()
    };
    let got = match crate::resource::decode(ResourceType::Cluster, &outlier(|x| *x = o)) {
        Ok(crate::resource::Resource::Cluster(c)) => c.outlier_detection.unwrap(),
        other => panic!("{other:?}"),
    };
    use std::time::Duration;
    assert_eq!(got.consecutive_5xx, 11);
    assert_eq!(got.interval, Duration::from_secs(2));
    assert_eq!(got.base_ejection_time, Duration::from_secs(3));
    assert_eq!(got.max_ejection_percent, 41);
    assert_eq!(got.enforcing_consecutive_5xx, 91);
    assert_eq!(got.success_rate.enforcing_percentage, 92);
    assert_eq!(got.success_rate.minimum_hosts, 6);
    assert_eq!(got.success_rate.request_volume, 101);
    assert_eq!(got.success_rate.stdev_factor, 1901);
    assert_eq!(got.consecutive_gateway_failure, 7);
    assert_eq!(got.enforcing_consecutive_gateway_failure, 93);
    assert!(got.split_external_local_origin_errors);
    assert_eq!(got.consecutive_local_origin_failure, 8);
    assert_eq!(got.enforcing_consecutive_local_origin_failure, 94);
    assert_eq!(got.enforcing_local_origin_success_rate, 95);
    assert_eq!(got.failure_percentage.threshold, 86);
    assert_eq!(got.failure_percentage.enforcing_percentage, 96);
    assert_eq!(got.enforcing_failure_percentage_local_origin, 97);
    assert_eq!(got.failure_percentage.minimum_hosts, 9);
    assert_eq!(got.failure_percentage.request_volume, 51);
    assert_eq!(got.max_ejection_time, Duration::from_secs(400));
    assert_eq!(got.max_ejection_time_jitter, Duration::from_secs(4));
}
