use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_xds::client::{ClientStatus, XdsClient};

use crate::metrics::library::XdsStatusSource;

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
