//! The span attributes of Istio's sidecars: the literal tags istiod configures on every
//! span of a workload (pilot's `tracing.go`: `istio.canonical_service`,
//! `istio.canonical_revision`, `istio.mesh_id`, `istio.namespace`, `istio.cluster_id`, with
//! its defaults) and `node_id`; Envoy's per-request tags are set by the layer.

use crate::metrics::WorkloadInfo;

/// The workload's span attributes, the same on every span it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanTags {
    /// `istio.canonical_service` (default `unknown`, as istiod).
    pub canonical_service: String,
    /// `istio.canonical_revision` (default `latest`).
    pub canonical_revision: String,
    /// `istio.namespace` (default `default`).
    pub namespace: String,
    /// `istio.mesh_id` (default `unknown`).
    pub mesh_id: String,
    /// `istio.cluster_id` (default `unknown`).
    pub cluster_id: String,
    /// `node_id`: the xDS node id (`sidecar~<ip>~<workload>.<ns>~<ns>.svc.cluster.local`), or
    /// empty.
    pub node_id: String,
}

impl Default for SpanTags {
    fn default() -> Self {
        Self {
            canonical_service: "unknown".into(),
            canonical_revision: "latest".into(),
            namespace: "default".into(),
            mesh_id: "unknown".into(),
            cluster_id: "unknown".into(),
            node_id: String::new(),
        }
    }
}

impl SpanTags {
    /// The tags of a workload described for Istio's metrics (its `unknown` values become
    /// istiod's defaults).
    ///
    /// ```
    /// use mesh_telemetry::metrics::WorkloadInfo;
    /// use mesh_telemetry::trace::SpanTags;
    /// let w = WorkloadInfo { workload: "reviews-v2".into(), namespace: "shop".into(),
    ///     canonical_service: "reviews".into(), ..Default::default() };
    /// let t = SpanTags::from_workload(&w);
    /// assert_eq!((t.canonical_service.as_str(), t.canonical_revision.as_str()), ("reviews", "latest"));
    /// assert_eq!(t.namespace, "shop");
    /// ```
    pub fn from_workload(w: &WorkloadInfo) -> Self {
        let d = Self::default();
        let or = |v: &str, default: String| {
            if v.is_empty() || v == "unknown" {
                default
            } else {
                v.to_string()
            }
        };
        Self {
            canonical_service: or(&w.canonical_service, or(&w.app, d.canonical_service)),
            canonical_revision: or(&w.canonical_revision, or(&w.version, d.canonical_revision)),
            namespace: or(&w.namespace, d.namespace),
            mesh_id: d.mesh_id,
            cluster_id: or(&w.cluster, d.cluster_id),
            node_id: d.node_id,
        }
    }

    /// Sets `istio.mesh_id`.
    pub fn mesh_id(mut self, mesh_id: impl Into<String>) -> Self {
        self.mesh_id = mesh_id.into();
        self
    }

    /// Sets `node_id`.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = node_id.into();
        self
    }
}
