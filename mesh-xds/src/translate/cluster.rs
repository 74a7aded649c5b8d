//! Cluster translation (work in progress: EDS clusters).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use mesh_core::model::{Cluster, Discovery};

use crate::resource::Rejection;

/// Decodes and validates a CDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<Cluster>, Rejection> {
    let c: pb::Cluster = super::decode_message(bytes, "envoy.config.cluster.v3.Cluster")?;
    let service_name = c
        .eds_cluster_config
        .as_ref()
        .map(|e| e.service_name.clone())
        .filter(|s| !s.is_empty());
    Ok(Arc::new(Cluster {
        name: c.name.clone(),
        discovery: Discovery::Eds { service_name },
        lb_policy: Default::default(),
        common_lb: Default::default(),
        connect_timeout: Duration::from_secs(5),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls: None,
        http_protocol: Default::default(),
    }))
}
