//! One generation of a node's resources, decoded: what a [`LocalSource`](super::LocalSource)
//! builds its snapshots and its status from.
//!
//! Each generated resource goes through mesh-xds's decoder (the translation an xDS client
//! runs on what it receives). A resource whose content did not change since the previous
//! generation is not decoded again and keeps its `Arc`. A rejected resource keeps its last
//! good value (fail-static, as an xDS client keeps a NACKed resource's last good version)
//! and carries the reason a client would put in its NACK; a resource no longer generated
//! is gone (as delta xDS removes it).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use mesh_core::config::{ConfigSnapshot, ResourceMap};
use mesh_xds::client::{ClientStatus, ResourceState, ResourceStatus};
use mesh_xds::resource::{self, Rejection, Resource, ResourceType};
use mesh_xds::translate::Dialect;

use crate::xds_server::VersionedResources;

/// One resource.
#[derive(Clone)]
struct Entry {
    /// Content hash of the latest generated version, decoded or rejected.
    version: Arc<str>,
    /// The last good value and the content hash it was decoded from.
    good: Option<(Resource, Arc<str>)>,
    /// What the good value refers to (what an xDS client would subscribe to next).
    dependencies: Arc<[(ResourceType, Arc<str>)]>,
    /// Why the latest version was rejected; the last good value, if any, still serves.
    error: Option<String>,
    /// When the entry last changed.
    updated: SystemTime,
}

/// The rejections of one type in one generation, shown as an xDS client's NACK shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rejected {
    pub(super) ty: ResourceType,
    /// Resources of the type generated.
    pub(super) total: usize,
    /// The type's version (content hash).
    pub(super) version: String,
    /// One line per rejected resource: `<type> "<name>": <reason>`.
    pub(super) lines: Vec<String>,
}

impl fmt::Display for Rejected {
    /// The message of the `error_detail` an xDS client NACKs with.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rejected {} of {} {} resources (version {:?}):\n{}",
            self.lines.len(),
            self.total,
            self.ty,
            self.version,
            self.lines.join("\n")
        )
    }
}

/// Every resource generated for a node, decoded.
#[derive(Default)]
pub(super) struct Catalog {
    types: [HashMap<Arc<str>, Entry>; 4],
    /// Per type, its version (content hash) when the generator produced the type.
    type_versions: [Option<String>; 4],
}

fn index(ty: ResourceType) -> usize {
    match ty {
        ResourceType::Listener => 0,
        ResourceType::RouteConfiguration => 1,
        ResourceType::Cluster => 2,
        ResourceType::ClusterLoadAssignment => 3,
    }
}

/// Decodes one resource as an xDS client of the node does (in its `dialect`); a name that
/// differs from the content's is a rejection (as a delta client rejects it).
fn decode(
    ty: ResourceType,
    name: &str,
    raw: &envoy_types::pb::google::protobuf::Any,
    dialect: Dialect,
) -> Result<Resource, String> {
    let decoded = resource::decode_as(ty, raw, dialect).and_then(|r| {
        if r.name() == name {
            Ok(r)
        } else {
            Err(Rejection {
                name: Some(name.to_owned()),
                reason: format!(
                    "resource name {name:?} does not match its content {:?}",
                    r.name()
                ),
            })
        }
    });
    decoded.map_err(|r| r.reason)
}

impl Catalog {
    /// The catalog of `generated`, reusing what `previous` decoded from identical content.
    /// Returns the rejections per type (empty when everything decoded).
    pub(super) fn next(
        previous: Option<&Catalog>,
        generated: &VersionedResources,
        dialect: Dialect,
    ) -> (Catalog, Vec<Rejected>) {
        let now = SystemTime::now();
        let mut catalog = Catalog::default();
        let mut rejected = Vec::new();
        for ty in ResourceType::ALL {
            let Some(typ) = generated.get(ty.type_url()) else {
                continue;
            };
            let i = index(ty);
            catalog.type_versions[i] = Some(typ.version.clone());
            let old = previous.map(|p| &p.types[i]);
            let mut lines = Vec::new();
            let entries = &mut catalog.types[i];
            for (name, versioned) in &typ.resources {
                let before = old.and_then(|o| o.get_key_value(name.as_str()));
                if let Some((key, e)) = before
                    && *e.version == *versioned.version
                {
                    entries.insert(key.clone(), e.clone());
                    continue;
                }
                let key: Arc<str> = before.map_or_else(|| name.as_str().into(), |(k, _)| k.clone());
                let version: Arc<str> = versioned.version.as_str().into();
                let entry = match decode(ty, name, &versioned.resource, dialect) {
                    Ok(value) => Entry {
                        dependencies: value
                            .dependencies()
                            .into_iter()
                            .map(|(t, n)| (t, Arc::from(n)))
                            .collect(),
                        good: Some((value, version.clone())),
                        version,
                        error: None,
                        updated: now,
                    },
                    Err(reason) => {
                        lines.push(format!("{ty} {name:?}: {reason}"));
                        match before {
                            // Fail-static: the last good value keeps serving.
                            Some((_, e)) => Entry {
                                version,
                                error: Some(reason),
                                updated: now,
                                ..e.clone()
                            },
                            None => Entry {
                                version,
                                good: None,
                                dependencies: Arc::new([]),
                                error: Some(reason),
                                updated: now,
                            },
                        }
                    }
                };
                entries.insert(key, entry);
            }
            if !lines.is_empty() {
                rejected.push(Rejected {
                    ty,
                    total: typ.resources.len(),
                    version: typ.version.clone(),
                    lines,
                });
            }
        }
        (catalog, rejected)
    }

    /// Every resource the roots reach through their dependencies, roots first: the
    /// demanded listeners, and in `wildcard` mode every listener and cluster.
    fn reachable(
        &self,
        demanded: &BTreeSet<Arc<str>>,
        wildcard: bool,
    ) -> Vec<(ResourceType, Arc<str>)> {
        let mut roots: Vec<(ResourceType, Arc<str>)> = demanded
            .iter()
            .map(|n| (ResourceType::Listener, n.clone()))
            .collect();
        if wildcard {
            for ty in [ResourceType::Listener, ResourceType::Cluster] {
                let mut names: Vec<_> = self.types[index(ty)].keys().cloned().collect();
                names.sort();
                roots.extend(names.into_iter().map(|n| (ty, n)));
            }
        }
        let mut seen: HashSet<(ResourceType, Arc<str>)> = HashSet::new();
        let mut queue: VecDeque<(ResourceType, Arc<str>)> = VecDeque::new();
        for r in roots {
            if seen.insert(r.clone()) {
                queue.push_back(r);
            }
        }
        let mut out = Vec::new();
        while let Some((ty, name)) = queue.pop_front() {
            if let Some(e) = self.types[index(ty)].get(&name) {
                for dep in e.dependencies.iter() {
                    if seen.insert(dep.clone()) {
                        queue.push_back(dep.clone());
                    }
                }
            }
            out.push((ty, name));
        }
        out
    }

    /// The snapshot for these roots; maps whose content is the same as `previous`'s are
    /// `previous`'s (so consumers can compare by pointer).
    pub(super) fn snapshot(
        &self,
        demanded: &BTreeSet<Arc<str>>,
        wildcard: bool,
        previous: &ConfigSnapshot,
    ) -> ConfigSnapshot {
        let mut listeners = ResourceMap::new();
        let mut route_configs = ResourceMap::new();
        let mut clusters = ResourceMap::new();
        let mut endpoints = ResourceMap::new();
        for (ty, name) in self.reachable(demanded, wildcard) {
            let Some((value, _)) = self.types[index(ty)]
                .get(&name)
                .and_then(|e| e.good.as_ref())
            else {
                continue;
            };
            match value {
                Resource::Listener(v) => listeners.insert(name, v.clone()).map(drop),
                Resource::RouteConfiguration(v) => route_configs.insert(name, v.clone()).map(drop),
                Resource::Cluster(v) => clusters.insert(name, v.clone()).map(drop),
                Resource::ClusterLoadAssignment(v) => endpoints.insert(name, v.clone()).map(drop),
            };
        }
        ConfigSnapshot {
            listeners: reuse(listeners, &previous.listeners),
            route_configs: reuse(route_configs, &previous.route_configs),
            clusters: reuse(clusters, &previous.clusters),
            endpoints: reuse(endpoints, &previous.endpoints),
        }
    }

    /// The status an xDS client holding what this source serves would report: every
    /// resource reachable from the roots (`ACKED`, `NACKED` with the reason, or
    /// `DOES_NOT_EXIST` when not generated), sorted by type then name.
    pub(super) fn status(
        &self,
        demanded: &BTreeSet<Arc<str>>,
        wildcard: bool,
        ready: bool,
    ) -> ClientStatus {
        let mut resources: Vec<ResourceStatus> = self
            .reachable(demanded, wildcard)
            .into_iter()
            .map(|(kind, name)| match self.types[index(kind)].get(&name) {
                Some(e) => ResourceStatus {
                    kind,
                    name: name.to_string(),
                    state: if e.error.is_some() {
                        ResourceState::Nacked
                    } else {
                        ResourceState::Acked
                    },
                    version: e
                        .good
                        .as_ref()
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default(),
                    last_error: e.error.clone(),
                    last_update: Some(e.updated),
                    has_value: e.good.is_some(),
                },
                None => ResourceStatus {
                    kind,
                    name: name.to_string(),
                    state: ResourceState::DoesNotExist,
                    version: String::new(),
                    last_error: None,
                    last_update: None,
                    has_value: false,
                },
            })
            .collect();
        resources.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        ClientStatus {
            connected: true,
            ready,
            resources,
            type_versions: ResourceType::ALL
                .into_iter()
                .filter_map(|ty| Some((ty, self.type_versions[index(ty)].clone()?)))
                .collect(),
        }
    }
}

/// `next` when it holds exactly `previous`'s values, else `next`.
fn reuse<T>(next: ResourceMap<T>, previous: &Arc<ResourceMap<T>>) -> Arc<ResourceMap<T>> {
    let same = next.len() == previous.len()
        && next
            .iter()
            .all(|(k, v)| previous.get(k).is_some_and(|p| Arc::ptr_eq(p, v)));
    if same {
        previous.clone()
    } else {
        Arc::new(next)
    }
}

/// Whether two snapshots hold the very same maps.
pub(super) fn same_maps(a: &ConfigSnapshot, b: &ConfigSnapshot) -> bool {
    Arc::ptr_eq(&a.listeners, &b.listeners)
        && Arc::ptr_eq(&a.route_configs, &b.route_configs)
        && Arc::ptr_eq(&a.clusters, &b.clusters)
        && Arc::ptr_eq(&a.endpoints, &b.endpoints)
}
