//! The xDS client's status for synchronous readers: [`XdsStatusSource`] (what the admin
//! server, [`XdsCollector`] and CSDS read), [`XdsStatusCache`] (a source following a live
//! [`XdsClient`]) and [`XdsCollector`] (`mesh_xds_*` metrics).
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use mesh_admin::{XdsCollector, XdsStatusCache};
//! use mesh_xds::client::ClientStatus;
//!
//! let status = XdsStatusCache::fixed(ClientStatus { connected: true, ..Default::default() });
//! let mut registry = Registry::default();
//! let mesh = registry.sub_registry_with_prefix("mesh");
//! mesh.register_collector(Box::new(XdsCollector::new(status)));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("mesh_xds_connected 1"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_telemetry::metrics::library::encode_family;
use mesh_xds::ResourceType;
use mesh_xds::client::{ClientStatus, ResourceState, XdsClient};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::unix_seconds;

/// A source of the xDS client's status for synchronous readers (scrapes, the admin
/// server). [`XdsStatusCache`] implements it for a live client.
pub trait XdsStatusSource: Send + Sync + 'static {
    /// The latest status (`None` before the first read).
    fn client_status(&self) -> Option<Arc<ClientStatus>>;
}

/// The xDS client's status, refreshed in the background for synchronous readers (scrapes,
/// the admin server, CSDS): after every config snapshot and at least every `period`.
#[derive(Debug, Default)]
pub struct XdsStatusCache {
    status: ArcSwapOption<ClientStatus>,
}

impl XdsStatusCache {
    /// A cache with a fixed status (for static config and tests).
    pub fn fixed(status: ClientStatus) -> Arc<Self> {
        Arc::new(Self {
            status: ArcSwapOption::from_pointee(status),
        })
    }

    /// Follows `client` until the client stops; abort the handle to stop earlier.
    pub fn spawn(client: XdsClient, period: Duration) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let cache = Arc::new(Self::default());
        let weak = Arc::downgrade(&cache);
        let task = tokio::spawn(async move {
            let mut snapshots = client.watch();
            loop {
                let Ok(status) = client.status().await else {
                    return;
                };
                let Some(cache) = weak.upgrade() else { return };
                cache.status.store(Some(Arc::new(status)));
                drop(cache);
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(period) => {}
                }
            }
        });
        (cache, task)
    }
}

impl XdsStatusSource for XdsStatusCache {
    fn client_status(&self) -> Option<Arc<ClientStatus>> {
        self.status.load_full()
    }
}

/// xDS: connected, ready, resources per type and state (`ACKED`, `NACKED`, ...), and the
/// last update per type.
pub struct XdsCollector {
    source: Arc<dyn XdsStatusSource>,
}

impl fmt::Debug for XdsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsCollector").finish_non_exhaustive()
    }
}

impl XdsCollector {
    /// Reads `source` on each scrape.
    pub fn new(source: Arc<dyn XdsStatusSource>) -> Self {
        Self { source }
    }
}

const STATES: [ResourceState; 4] = [
    ResourceState::Requested,
    ResourceState::Acked,
    ResourceState::Nacked,
    ResourceState::DoesNotExist,
];

impl Collector for XdsCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let status = self.source.client_status().unwrap_or_default();
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        encode_family(
            &mut enc,
            "xds_connected",
            "1 while the ADS stream is open",
            MetricType::Gauge,
            &[(vec![], b(status.connected))],
        )?;
        encode_family(
            &mut enc,
            "xds_ready",
            "1 once every subscribed type had its first answer",
            MetricType::Gauge,
            &[(vec![], b(status.ready))],
        )?;
        let mut resources = Vec::new();
        let mut last = Vec::new();
        for ty in ResourceType::ALL {
            for state in STATES {
                let n = status
                    .resources
                    .iter()
                    .filter(|r| r.kind == ty && r.state == state)
                    .count();
                resources.push((
                    vec![
                        ("type", ty.short_name().to_string()),
                        ("state", state.as_str().to_string()),
                    ],
                    n as f64,
                ));
            }
            if let Some(t) = status
                .resources
                .iter()
                .filter(|r| r.kind == ty)
                .filter_map(|r| r.last_update)
                .max()
            {
                last.push((vec![("type", ty.short_name().to_string())], unix_seconds(t)));
            }
        }
        encode_family(
            &mut enc,
            "xds_resources",
            "Subscribed resources by type and state (NACKED = last update rejected)",
            MetricType::Gauge,
            &resources,
        )?;
        encode_family(
            &mut enc,
            "xds_last_update_timestamp_seconds",
            "Last accepted or rejected update per type (Unix seconds)",
            MetricType::Gauge,
            &last,
        )
    }
}
