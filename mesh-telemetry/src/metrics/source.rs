//! A caller's workload labels as its transport describes them: an HBONE tunnel's `baggage`
//! (ztunnel's source description). The destination reporter takes a request's source
//! labels from it in place of the ones the certificate alone gives (principal, namespace).

use std::sync::Arc;

use super::labels::WorkloadInfo;

/// Request extension: the caller's source labels for `istio_requests_total` on the
/// destination side. Put it on every request of a connection (the `mesh` facade's HBONE
/// server does, from the tunnel's `baggage`); build it once per connection, clones are
/// cheap. The caller's verified principal belongs in `workload.principal`.
#[derive(Clone, Debug)]
pub struct SourceWorkload {
    /// Cache key of these labels (the resolver caches label sets per distinct source).
    key: Arc<str>,
    workload: Arc<WorkloadInfo>,
}

impl SourceWorkload {
    /// The source labels `workload`.
    pub fn new(workload: WorkloadInfo) -> Self {
        let w = &workload;
        // A newline never occurs in a principal, so this never equals a principal key.
        let key = [
            &w.principal,
            &w.workload,
            &w.namespace,
            &w.app,
            &w.version,
            &w.canonical_service,
            &w.canonical_revision,
            &w.cluster,
        ]
        .map(String::as_str)
        .join("\n");
        Self {
            key: format!("\n{key}").into(),
            workload: Arc::new(workload),
        }
    }

    /// The source labels.
    pub fn workload(&self) -> &WorkloadInfo {
        &self.workload
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}
