//! Envoy's `ConfigSource.initial_fetch_timeout` on the config sources a resource names
//! (a cluster's `eds_config`, a connection manager's `rds.config_source`): how long the
//! xDS client waits for the resource it points at before marking it does-not-exist. Unset:
//! the client's `resource_timeout`; zero: wait for ever (Envoy's meaning, and what istiod
//! sends). Read from the raw resource after [`crate::resource::decode`] accepted it (which
//! validated the durations), since the timeout belongs to the subscription, not to the
//! resource's model.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3::ConfigSource;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::Any;

use super::{opt_duration, unpack};
use crate::resource::ResourceType;

/// `(type, name, timeout)` of every resource `raw` subscribes to whose config source sets
/// `initial_fetch_timeout`.
pub fn initial_fetch_timeouts(
    ty: ResourceType,
    raw: &Any,
) -> Vec<(ResourceType, String, Duration)> {
    match ty {
        ResourceType::Cluster => cluster(raw).into_iter().collect(),
        ResourceType::Listener => listener(raw),
        _ => Vec::new(),
    }
}

fn timeout(c: Option<&ConfigSource>) -> Option<Duration> {
    opt_duration(c?.initial_fetch_timeout.as_ref())
        .ok()
        .flatten()
}

fn cluster(raw: &Any) -> Option<(ResourceType, String, Duration)> {
    let c: cds::Cluster = unpack(raw).ok()?;
    let eds = c.eds_cluster_config.as_ref()?;
    let t = timeout(eds.eds_config.as_ref())?;
    let name = if eds.service_name.is_empty() {
        c.name
    } else {
        eds.service_name.clone()
    };
    Some((ResourceType::ClusterLoadAssignment, name, t))
}

fn listener(raw: &Any) -> Vec<(ResourceType, String, Duration)> {
    let Ok(l) = unpack::<lds::Listener>(raw) else {
        return Vec::new();
    };
    let api = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref());
    let chains = l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref());
    let filters = chains
        .flat_map(|fc| &fc.filters)
        .filter_map(|f| match &f.config_type {
            Some(lds::filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        });
    api.into_iter()
        .chain(filters)
        .filter_map(|any| {
            let m: hcm::HttpConnectionManager = unpack(any).ok()?;
            let Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) = &m.route_specifier
            else {
                return None;
            };
            let t = timeout(rds.config_source.as_ref())?;
            Some((
                ResourceType::RouteConfiguration,
                rds.route_config_name.clone(),
                t,
            ))
        })
        .collect()
}
