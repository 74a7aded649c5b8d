//! Listener translation (work in progress: client listeners with RDS).

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use mesh_core::model::{HttpConnectionManager, HttpFilter, HttpFilterConfig, Listener, ListenerKind, RouteSource};

use super::{Res, bail, unpack};
use crate::resource::Rejection;

/// Decodes and validates an LDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<Listener>, Rejection> {
    let l: pb::Listener = super::decode_message(bytes, "envoy.config.listener.v3.Listener")?;
    listener(&l).map(Arc::new).map_err(|e| e.reject("listener", &l.name))
}

fn listener(l: &pb::Listener) -> Res<Listener> {
    let Some(api) = l.api_listener.as_ref().and_then(|a| a.api_listener.as_ref()) else {
        return bail("server listeners are not supported yet");
    };
    let m: hcm::HttpConnectionManager = unpack(api)?;
    let route_source = match &m.route_specifier {
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => {
            RouteSource::Rds(rds.route_config_name.clone())
        }
        _ => return bail("only rds is supported yet"),
    };
    Ok(Listener {
        name: l.name.clone(),
        kind: ListenerKind::Client(HttpConnectionManager {
            route_source,
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config: HttpFilterConfig::Router,
            }],
            max_stream_duration: None,
            idle_timeout: None,
            xff_num_trusted_hops: 0,
        }),
    })
}
