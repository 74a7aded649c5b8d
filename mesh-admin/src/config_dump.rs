//! The full current config of a client as JSON, for `/config_dump`.

use std::sync::Arc;

use mesh_core::config::{ConfigSnapshot, ConfigSource};
use serde_json::{Map, Value, json};

use crate::debug_json::to_json;

fn section<'a, T: std::fmt::Debug + 'a>(
    items: impl Iterator<Item = (&'a Arc<str>, &'a Arc<T>)>,
) -> Value {
    let map: Map<String, Value> = items
        .map(|(name, r)| (name.to_string(), to_json(&**r)))
        .collect();
    Value::Object(map)
}

/// Every resource of `snapshot` (listeners, route configurations, clusters, endpoints) as
/// the client holds it after translation, keyed by resource name: a `/config_dump` source
/// for [`Admin::with_config_dump`](crate::Admin::with_config_dump).
pub fn snapshot_json(snapshot: &ConfigSnapshot) -> Value {
    json!({
        "listeners": section(snapshot.listeners.iter()),
        "route_configs": section(snapshot.route_configs.iter()),
        "clusters": section(snapshot.clusters.iter()),
        "endpoints": section(snapshot.endpoints.iter()),
    })
}

/// A `/config_dump` source that dumps the current snapshot of any config source (the xDS
/// client, a static config, the embedded control plane) with [`snapshot_json`].
///
/// ```
/// use mesh_admin::{Admin, config_dump};
/// use mesh_core::config::{ConfigSnapshot, StaticSource};
///
/// let source = StaticSource::new(ConfigSnapshot::default());
/// let dump = config_dump::from_source(&source);
/// assert_eq!(dump()["clusters"], serde_json::json!({}));
/// let _admin = Admin::new().with_config_dump(dump);
/// ```
pub fn from_source<S: ConfigSource + ?Sized>(
    source: &S,
) -> impl Fn() -> Value + Send + Sync + 'static {
    let snapshots = source.snapshots();
    move || snapshot_json(&snapshots.borrow())
}
