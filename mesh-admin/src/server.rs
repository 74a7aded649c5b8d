//! [`Admin`]: the admin server's sources, set one by one; what it serves is in
//! `handlers.rs`.

use std::fmt;
use std::sync::Arc;

use mesh_tls::IdentityStore;
use prometheus_client::registry::Registry;

use crate::xds::XdsStatusSource;

/// A closure that returns a JSON view of some state.
pub type JsonFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// A closure that applies a log filter (e.g. `info,mesh_xds=debug`) and returns the new
/// filter, or why it was refused.
pub type LogFilterFn = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// The admin server's sources. Every part is optional; endpoints without a source answer
/// `404` naming what is missing.
#[derive(Clone, Default)]
pub struct Admin {
    pub(crate) registry: Option<Arc<Registry>>,
    pub(crate) config_dump: Option<JsonFn>,
    pub(crate) clusters: Option<JsonFn>,
    pub(crate) identity: Option<IdentityStore>,
    pub(crate) xds: Option<Arc<dyn XdsStatusSource>>,
    pub(crate) log_filter: Option<LogFilterFn>,
    /// `/graph.json`'s previous read, for rates (shared by clones).
    pub(crate) graph: Arc<crate::graph::GraphState>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("registry", &self.registry.is_some())
            .field("config_dump", &self.config_dump.is_some())
            .field("clusters", &self.clusters.is_some())
            .field("identity", &self.identity.is_some())
            .field("xds", &self.xds.is_some())
            .field("log_filter", &self.log_filter.is_some())
            .finish()
    }
}

impl Admin {
    /// An admin server with no sources (only `/healthz` and `/ready` answer 200).
    pub fn new() -> Self {
        Self::default()
    }

    /// `/stats/prometheus` encodes this registry.
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// `/config_dump` returns this JSON (with the xDS client status when one is set).
    pub fn with_config_dump(
        mut self,
        f: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.config_dump = Some(Arc::new(f));
        self
    }

    /// `/clusters` returns this JSON (endpoints with health and ejection state).
    pub fn with_clusters(
        mut self,
        f: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.clusters = Some(Arc::new(f));
        self
    }

    /// `/certs` shows this store's certificate (never its key); `/ready` requires it to
    /// hold a valid certificate.
    pub fn with_identity(mut self, store: IdentityStore) -> Self {
        self.identity = Some(store);
        self
    }

    /// `/config_dump` includes the xDS client status; `/ready` requires the first ACKs.
    pub fn with_xds(mut self, source: Arc<dyn XdsStatusSource>) -> Self {
        self.xds = Some(source);
        self
    }

    /// `POST /logging?filter=...` applies a log filter through `f`, see
    /// [`reload_log_filter`].
    pub fn with_log_filter(mut self, f: LogFilterFn) -> Self {
        self.log_filter = Some(f);
        self
    }
}

/// A [`LogFilterFn`] that swaps the `EnvFilter` of a `tracing-subscriber` reload layer.
///
/// ```
/// use tracing_subscriber::{EnvFilter, reload, prelude::*};
/// let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
/// let _subscriber = tracing_subscriber::registry().with(filter);
/// let set = mesh_admin::reload_log_filter(handle);
/// assert_eq!(set("mesh_xds=debug").unwrap(), "mesh_xds=debug");
/// assert!(set("=[").is_err());
/// ```
pub fn reload_log_filter<S: 'static>(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) -> LogFilterFn {
    Arc::new(move |spec: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(spec)
            .map_err(|e| format!("invalid log filter {spec:?}: {e}"))?;
        let shown = filter.to_string();
        handle
            .reload(filter)
            .map_err(|e| format!("cannot apply the log filter: {e}"))?;
        Ok(shown)
    })
}
