//! Listener building blocks shared by the generators: HTTP filters and connection managers.

use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::util::pack_any;

use super::pb;
use super::route::FAULT_FILTER;

pub(crate) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";

fn http_filter(name: &str, any: envoy_types::pb::google::protobuf::Any) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

/// The fault filter (configured per route) then the router, as grpcgen's
/// `supportedFilters`.
pub(crate) fn outbound_filters() -> Vec<hcm::HttpFilter> {
    vec![
        http_filter(FAULT_FILTER, pack_any(HttpFault::default())),
        http_filter("envoy.filters.http.router", pack_any(Router::default())),
    ]
}

/// Only the router (inbound: the app itself is behind it).
pub(crate) fn router_only() -> Vec<hcm::HttpFilter> {
    vec![http_filter(
        "envoy.filters.http.router",
        pack_any(Router::default()),
    )]
}

/// Istio's default path normalization (`meshConfig.pathNormalization` `BASE`), as istiod's
/// listener builder sets it on sidecar HCMs: RFC 3986 normalization, escaped slashes kept.
/// Set on every HCM we generate so that RBAC and routing see the path the app gets.
pub(crate) fn base_path_normalization(h: &mut hcm::HttpConnectionManager) {
    h.normalize_path = Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
    h.merge_slashes = false;
    h.path_with_escaped_slashes_action =
        hcm::http_connection_manager::PathWithEscapedSlashesAction::KeepUnchanged as i32;
}

/// A connection manager that fetches `route_name` over ADS.
pub(crate) fn rds_hcm(stat_prefix: &str, route_name: &str) -> hcm::HttpConnectionManager {
    let mut h = hcm::HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        http_filters: outbound_filters(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: pb::ads(),
                route_config_name: route_name.into(),
            },
        )),
        ..Default::default()
    };
    base_path_normalization(&mut h);
    h
}
