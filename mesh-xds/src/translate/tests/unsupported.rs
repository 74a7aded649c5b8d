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
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration as PbDuration, UInt32Value, UInt64Value,
};
use envoy_types::util::pack_any;

use super::listener::{filter, router};
use super::{ads, reason, socket};
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
fn client(f: impl FnOnce(&mut hcm::HttpConnectionManager)) -> Any {
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

fn cluster(f: impl FnOnce(&mut cds::Cluster)) -> Any {
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

fn route_config(f: impl FnOnce(&mut rds::RouteConfiguration)) -> Any {
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

fn vhost(f: impl FnOnce(&mut rds::VirtualHost)) -> Any {
    route_config(|r| f(&mut r.virtual_hosts[0]))
}

fn route(f: impl FnOnce(&mut rds::Route)) -> Any {
    route_config(|r| f(&mut r.virtual_hosts[0].routes[0]))
}

fn cla(f: impl FnOnce(&mut eds::ClusterLoadAssignment)) -> Any {
    let mut c = eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        ..Default::default()
    };
    f(&mut c);
    pack_any(c)
}

fn upstream_tls(f: impl FnOnce(&mut tls::UpstreamTlsContext)) -> Any {
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

fn fault_abort(f: impl FnOnce(&mut fault::FaultAbort)) -> Any {
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
        // The fault filter.
        (
            "response_body",
            Listener,
            fault_abort(|a| a.response_body = "x".into()),
        ),
    ];
    for (field, ty, any) in cases {
        let why = reason(ty, &any);
        assert!(
            why.contains(field) && why.contains("not supported"),
            "{field}: {why}"
        );
    }
}
