//! Route configuration translation (work in progress).

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3 as pb;
use mesh_core::model::RouteConfig;

use crate::resource::Rejection;

/// Decodes and validates an RDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<RouteConfig>, Rejection> {
    let r: pb::RouteConfiguration =
        super::decode_message(bytes, "envoy.config.route.v3.RouteConfiguration")?;
    Ok(Arc::new(RouteConfig {
        name: r.name.clone(),
        ..Default::default()
    }))
}
