//! Building the [`PeerDirectory`] that resolves `source_*` / `destination_*` labels: from
//! the xDS config the workload already receives, from what the application knows about
//! workloads, and, per connection, from the peer's verified SPIFFE ID.
//!
//! What a proxyless workload can know, and what it cannot:
//!
//! | label | source reporter (client) | destination reporter (server) |
//! |---|---|---|
//! | `destination_service*` | the request's host (`<name>.<ns>.svc.<domain>`) | configured [`ServiceInfo`] |
//! | `destination_principal` | the server's verified SPIFFE ID (per response) | ourselves |
//! | `destination_workload_namespace` | the server's SPIFFE ID (`/ns/<ns>/`) | ourselves |
//! | `destination_workload`, `_app`, `_version`, ... | only from the directory (principal -> workload) | ourselves |
//! | `source_principal`, `source_workload_namespace` | ourselves | the caller's verified SPIFFE ID |
//! | `source_workload`, `_app`, `_version`, ... | ourselves | only from the directory |
//!
//! Istio's sidecars learn the peer's workload name through metadata exchange (an HTTP
//! header or ALPN dance between sidecars); proxyless peers do not take part, so the
//! workload name of the other side is `unknown` unless the directory has it. A SPIFFE ID
//! names a service account, not a workload: several workloads (e.g. `reviews-v1` and
//! `reviews-v2`) may share one, so [`DirectoryBuilder::workload`] keeps a principal's
//! labels only while every workload registered for it agrees on them, and reports
//! `unknown` for the labels they disagree on. mesh-xds does not keep Istio's EDS endpoint
//! metadata (`filter_metadata["istio"]["workload"]`), so endpoint-level workload names do
//! not come from xDS today.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_core::SpiffeId;
use mesh_core::config::ConfigSource;
use mesh_core::model::{SanType, StringMatcher};
use mesh_xds::client::{ConfigSnapshot, XdsClient};

use super::labels::{ServiceInfo, UNKNOWN, WorkloadInfo};
use super::peers::{PeerDirectory, PeerResolver};

/// Builds a [`PeerDirectory`].
///
/// ```
/// use mesh_telemetry::metrics::{WorkloadInfo, directory::DirectoryBuilder};
/// let w = |name: &str, version: &str| WorkloadInfo {
///     workload: name.into(), namespace: "default".into(),
///     principal: "spiffe://cluster.local/ns/default/sa/reviews".into(),
///     app: "reviews".into(), version: version.into(), ..Default::default()
/// };
/// let dir = DirectoryBuilder::new()
///     .workload(w("reviews-v1", "v1"))
///     .workload(w("reviews-v2", "v2"))
///     .build();
/// let r = &dir.workloads["spiffe://cluster.local/ns/default/sa/reviews"];
/// assert_eq!((r.app.as_str(), r.workload.as_str()), ("reviews", "unknown"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct DirectoryBuilder {
    dir: PeerDirectory,
}

/// Keeps the labels two workloads of one principal agree on; `unknown` for the others.
fn agree(a: &WorkloadInfo, b: &WorkloadInfo) -> WorkloadInfo {
    let f = |x: &String, y: &String| {
        if x == y {
            x.clone()
        } else {
            UNKNOWN.to_string()
        }
    };
    WorkloadInfo {
        workload: f(&a.workload, &b.workload),
        namespace: f(&a.namespace, &b.namespace),
        principal: f(&a.principal, &b.principal),
        app: f(&a.app, &b.app),
        version: f(&a.version, &b.version),
        canonical_service: f(&a.canonical_service, &b.canonical_service),
        canonical_revision: f(&a.canonical_revision, &b.canonical_revision),
        cluster: f(&a.cluster, &b.cluster),
    }
}

impl DirectoryBuilder {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a workload under its principal (`workload.principal`).
    pub fn workload(mut self, workload: WorkloadInfo) -> Self {
        let key = workload.principal.clone();
        let merged = match self.dir.workloads.get(&key) {
            Some(old) => agree(old, &workload),
            None => workload,
        };
        self.dir.workloads.insert(key, merged);
        self
    }

    /// Registers the workload behind a service host (the source reporter's
    /// `destination_workload*` for requests to `host` before a response names the server).
    pub fn service(mut self, host: &str, workload: WorkloadInfo) -> Self {
        let service = ServiceInfo::from_host(host);
        let merged = match self.dir.services.get(&service.host) {
            Some((_, old)) => agree(old, &workload),
            None => workload,
        };
        self.dir
            .services
            .insert(service.host.clone(), (service, merged));
        self
    }

    /// Adds what the xDS config tells about the services this workload calls: each
    /// `outbound|<port>|<subset>|<fqdn>` cluster names a service, and its TLS SAN matchers
    /// name the SPIFFE IDs allowed to serve it. When one principal serves a service, the
    /// service's `destination_principal` and `destination_workload_namespace` are known
    /// before any response. Entries already registered win.
    pub fn xds(mut self, snapshot: &ConfigSnapshot) -> Self {
        let mut found: HashMap<String, Option<String>> = HashMap::new();
        for (name, cluster) in snapshot.clusters.iter() {
            let Some(host) = istio_cluster_host(name) else {
                continue;
            };
            let sans: Vec<&str> = cluster
                .tls
                .iter()
                .flat_map(|t| &t.validation.san_matchers)
                .filter_map(|m| match (&m.san_type, &m.matcher) {
                    (SanType::Uri | SanType::Any, StringMatcher::Exact { value, .. }) => {
                        Some(value.as_str())
                    }
                    _ => None,
                })
                .collect();
            let principal = match sans.as_slice() {
                [one] => Some(one.to_string()),
                _ => None,
            };
            found
                .entry(host.to_string())
                .and_modify(|p| {
                    if *p != principal {
                        *p = None;
                    }
                })
                .or_insert(principal);
        }
        for (host, principal) in found {
            if self.dir.services.contains_key(&host) {
                continue;
            }
            let workload = principal
                .as_deref()
                .and_then(|p| p.parse::<SpiffeId>().ok())
                .map(|id| {
                    self.dir
                        .workloads
                        .get(id.as_str())
                        .cloned()
                        .unwrap_or_else(|| WorkloadInfo::from_spiffe(&id))
                })
                .unwrap_or_default();
            let service = ServiceInfo::from_host(&host);
            self.dir.services.insert(host, (service, workload));
        }
        self
    }

    /// The directory.
    pub fn build(self) -> PeerDirectory {
        self.dir
    }
}

/// The FQDN of an Istio cluster name `outbound|<port>|<subset>|<fqdn>`.
fn istio_cluster_host(name: &str) -> Option<&str> {
    let mut parts = name.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("outbound" | "inbound"), Some(_), Some(_), Some(host)) if !host.is_empty() => {
            Some(host)
        }
        _ => None,
    }
}

/// Keeps `resolver`'s directory in step with `xds`: see [`follow_source`].
pub fn follow_xds(
    resolver: Arc<PeerResolver>,
    xds: &XdsClient,
    base: PeerDirectory,
) -> tokio::task::JoinHandle<()> {
    follow_source(resolver, xds, base)
}

/// Keeps `resolver`'s directory in step with `source` (the xDS client, the embedded control
/// plane in process, a static config): `base` (what the application knows) plus what each
/// new snapshot tells ([`DirectoryBuilder::xds`]), starting with the current snapshot
/// before it returns. The label cache is cleared only when the directory actually changed.
/// Ends when the source stops; abort the handle to stop earlier.
pub fn follow_source(
    resolver: Arc<PeerResolver>,
    source: &(impl ConfigSource + ?Sized),
    base: PeerDirectory,
) -> tokio::task::JoinHandle<()> {
    let mut snapshots = source.snapshots();
    // The first directory is in place before this returns: no request is labelled
    // without what the application registered.
    let first = DirectoryBuilder { dir: base.clone() }
        .xds(&snapshots.borrow_and_update())
        .build();
    resolver.set_directory(first.clone());
    tokio::spawn(async move {
        let mut last = Some(first);
        if snapshots.changed().await.is_err() {
            return;
        }
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            let dir = DirectoryBuilder { dir: base.clone() }
                .xds(&snapshot)
                .build();
            if last.as_ref() != Some(&dir) {
                resolver.set_directory(dir.clone());
                last = Some(dir);
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_cluster_names() {
        assert_eq!(
            istio_cluster_host("outbound|9080|v1|reviews.default.svc.cluster.local"),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(istio_cluster_host("outbound|9080||"), None);
        assert_eq!(istio_cluster_host("my-cluster"), None);
    }
}
