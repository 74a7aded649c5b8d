//! The full current xDS config of a client as JSON, for `/config_dump`.

use mesh_xds::client::ConfigSnapshot;
use serde_json::{Map, Value, json};

use super::debug_json::to_json;

fn section<'a, T: std::fmt::Debug + 'a>(
    items: impl Iterator<Item = (&'a std::sync::Arc<str>, &'a std::sync::Arc<T>)>,
) -> Value {
    let map: Map<String, Value> = items
        .map(|(name, r)| (name.to_string(), to_json(&**r)))
        .collect();
    Value::Object(map)
}

/// Every resource of `snapshot` (listeners, route configurations, clusters, endpoints) as
/// the client holds it after translation, keyed by resource name: a `/config_dump` source
/// for [`Admin::with_config_dump`](super::Admin::with_config_dump).
pub fn snapshot_json(snapshot: &ConfigSnapshot) -> Value {
    json!({
        "listeners": section(snapshot.listeners.iter()),
        "route_configs": section(snapshot.route_configs.iter()),
        "clusters": section(snapshot.clusters.iter()),
        "endpoints": section(snapshot.endpoints.iter()),
    })
}
