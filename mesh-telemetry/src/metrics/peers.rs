//! Label resolution: the peer labels of a call are computed once per peer (and again when
//! config changes), then the request path only looks up cached metric handles.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::IstioMetrics;
use super::labels::{
    IstioLabels, PeerLabels, Protocol, Reporter, SecurityPolicy, ServiceInfo, WorkloadInfo,
};
use super::source::SourceWorkload;

/// Beyond this many distinct peers, new peers share one "unknown" series set, so a client
/// sending arbitrary `Host` headers cannot grow memory without bound.
const MAX_PEERS: usize = 1024;
/// Beyond this many (protocol, code, grpc status, flags) combinations per peer, handles are
/// looked up in the family without caching.
const MAX_OUTCOMES: usize = 256;
/// Beyond this many distinct server identities behind one destination host, responses from
/// further servers keep the host's labels.
const MAX_SERVERS: usize = 64;

/// What the config knows about the workloads and services on the other side of calls.
/// Replace it with [`PeerResolver::set_directory`] when config changes; build it with
/// [`DirectoryBuilder`](super::directory::DirectoryBuilder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerDirectory {
    /// Destination service host (FQDN, no port) -> its service labels and (when one
    /// workload backs it) the workload labels. Used by the source reporter.
    pub services: HashMap<String, (ServiceInfo, WorkloadInfo)>,
    /// Peer principal (SPIFFE ID) -> workload labels. Used by the destination reporter
    /// for callers, and by the source reporter if the server's identity is known.
    pub workloads: HashMap<String, WorkloadInfo>,
}

type OutcomeKey = (Protocol, u16, Option<u16>, &'static str);

/// The handles of one outcome of one peer pair.
#[derive(Clone, Debug)]
pub(crate) struct Handles {
    pub(crate) requests: Counter,
    pub(crate) duration: Histogram,
    pub(crate) request_bytes: Histogram,
    pub(crate) response_bytes: Histogram,
}

/// The resolved labels of one peer pair with its cached handles.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    pub(crate) labels: Arc<PeerLabels>,
    metrics: IstioMetrics,
    /// Shared: a lookup clones one `Arc`, not the four handles (each an `Arc` whose count
    /// every worker thread would bump and drop per call).
    outcomes: RwLock<HashMap<OutcomeKey, Arc<Handles>>>,
    /// The directory the labels were resolved with (to resolve the server of a response).
    directory: Arc<PeerDirectory>,
    /// Source reporter: the same host served by a given server identity.
    servers: RwLock<HashMap<Box<str>, Arc<PeerMetrics>>>,
}

impl PeerMetrics {
    fn new(labels: PeerLabels, metrics: IstioMetrics, directory: Arc<PeerDirectory>) -> Self {
        Self {
            labels: Arc::new(labels),
            metrics,
            outcomes: RwLock::default(),
            directory,
            servers: RwLock::default(),
        }
    }

    /// Source reporter: these labels with the destination workload resolved from the
    /// server's verified identity (`principal`), when it differs from what the host told.
    pub(crate) fn for_server(&self, principal: &str) -> Option<Arc<PeerMetrics>> {
        if self.labels.reporter != Reporter::Source
            || self.labels.destination.principal == principal
        {
            return None;
        }
        if let Some(p) = self
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(principal)
        {
            return Some(p.clone());
        }
        let destination = match self.directory.workloads.get(principal) {
            Some(w) => w.clone(),
            None => WorkloadInfo::from_spiffe(&principal.parse().ok()?),
        };
        let labels = PeerLabels {
            destination,
            ..(*self.labels).clone()
        };
        let mut servers = self.servers.write().unwrap_or_else(|p| p.into_inner());
        if servers.len() >= MAX_SERVERS {
            return None;
        }
        let peer = Arc::new(PeerMetrics::new(
            labels,
            self.metrics.clone(),
            self.directory.clone(),
        ));
        servers.insert(principal.into(), peer.clone());
        Some(peer)
    }

    /// The handles for one outcome: a read lock and a small hash on the hot path.
    pub(crate) fn handles(
        &self,
        protocol: Protocol,
        code: u16,
        grpc: Option<u16>,
        flags: &'static str,
    ) -> Arc<Handles> {
        let key = (protocol, code, grpc, flags);
        if let Some(h) = self
            .outcomes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return h.clone();
        }
        let labels = IstioLabels {
            peer: self.labels.clone(),
            protocol,
            response_code: code,
            grpc_status: grpc,
            response_flags: flags,
        };
        let m = &self.metrics;
        let h = Arc::new(Handles {
            requests: m.requests.get_or_create_owned(&labels),
            duration: m.duration.get_or_create_owned(&labels),
            request_bytes: m.request_bytes.get_or_create_owned(&labels),
            response_bytes: m.response_bytes.get_or_create_owned(&labels),
        });
        let mut outcomes = self.outcomes.write().unwrap_or_else(|p| p.into_inner());
        if outcomes.len() < MAX_OUTCOMES {
            outcomes.insert(key, h.clone());
        }
        h
    }
}

/// Resolves the peer of each call to its label set, caching per peer key (the destination
/// host for the source reporter, the caller's principal for the destination reporter).
#[derive(Debug)]
pub struct PeerResolver {
    metrics: IstioMetrics,
    reporter: Reporter,
    local: WorkloadInfo,
    local_service: ServiceInfo,
    directory: ArcSwap<PeerDirectory>,
    cache: RwLock<HashMap<Box<str>, Arc<PeerMetrics>>>,
    overflow: Arc<PeerMetrics>,
}

impl PeerResolver {
    pub(crate) fn new(
        metrics: IstioMetrics,
        reporter: Reporter,
        local: WorkloadInfo,
        local_service: ServiceInfo,
    ) -> Self {
        let overflow = PeerMetrics::new(
            overflow_labels(reporter, &local, &local_service),
            metrics.clone(),
            Arc::default(),
        );
        Self {
            metrics,
            reporter,
            local,
            local_service,
            directory: ArcSwap::from_pointee(PeerDirectory::default()),
            cache: RwLock::default(),
            overflow: Arc::new(overflow),
        }
    }

    /// Replaces what is known about peers (call it when config changes); label sets are
    /// re-resolved on the next call to each peer.
    pub fn set_directory(&self, directory: PeerDirectory) {
        self.directory.store(Arc::new(directory));
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The reporter this resolver labels for.
    pub fn reporter(&self) -> Reporter {
        self.reporter
    }

    /// The peer metrics for `key`: the destination authority (source reporter) or the
    /// caller's SPIFFE ID, empty without one (destination reporter).
    pub(crate) fn resolve(&self, key: &str, mtls: bool) -> Arc<PeerMetrics> {
        self.resolve_with(key, mtls, None)
    }

    /// Destination reporter: the peer metrics of a caller whose source labels its
    /// transport told ([`SourceWorkload`]), cached per distinct label set.
    pub(crate) fn resolve_source(&self, source: &SourceWorkload, mtls: bool) -> Arc<PeerMetrics> {
        self.resolve_with(source.key(), mtls, Some(source.workload()))
    }

    fn resolve_with(
        &self,
        key: &str,
        mtls: bool,
        source: Option<&WorkloadInfo>,
    ) -> Arc<PeerMetrics> {
        if let Some(p) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return p.clone();
        }
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_PEERS {
            return self.overflow.clone();
        }
        let dir = self.directory.load_full();
        let mut labels = self.labels_for(&dir, key, mtls);
        if let (Reporter::Destination, Some(source)) = (self.reporter, source) {
            labels.source = source.clone();
        }
        let peer = Arc::new(PeerMetrics::new(labels, self.metrics.clone(), dir));
        cache.insert(key.into(), peer.clone());
        peer
    }

    fn labels_for(&self, dir: &PeerDirectory, key: &str, mtls: bool) -> PeerLabels {
        match self.reporter {
            Reporter::Source => {
                let host = super::labels::strip_port(key);
                let (service, destination) = dir
                    .services
                    .get(host)
                    .cloned()
                    .unwrap_or_else(|| (ServiceInfo::from_host(host), WorkloadInfo::default()));
                PeerLabels {
                    reporter: Reporter::Source,
                    source: self.local.clone(),
                    destination,
                    service,
                    security: SecurityPolicy::Unknown,
                }
            }
            Reporter::Destination => {
                let source = if key.is_empty() {
                    WorkloadInfo::default()
                } else {
                    dir.workloads.get(key).cloned().unwrap_or_else(|| {
                        key.parse()
                            .map(|id| WorkloadInfo::from_spiffe(&id))
                            .unwrap_or_default()
                    })
                };
                PeerLabels {
                    reporter: Reporter::Destination,
                    source,
                    destination: self.local.clone(),
                    service: self.local_service.clone(),
                    security: if mtls {
                        SecurityPolicy::MutualTls
                    } else {
                        SecurityPolicy::None
                    },
                }
            }
        }
    }
}

fn overflow_labels(reporter: Reporter, local: &WorkloadInfo, service: &ServiceInfo) -> PeerLabels {
    match reporter {
        Reporter::Source => PeerLabels {
            reporter,
            source: local.clone(),
            ..PeerLabels::default()
        },
        Reporter::Destination => PeerLabels {
            reporter,
            destination: local.clone(),
            service: service.clone(),
            ..PeerLabels::default()
        },
    }
}
