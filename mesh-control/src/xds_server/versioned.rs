//! What a [`Generator`](super::Generator) produces for one node, and the versioned form
//! the server serves from it.
//!
//! Versions are content hashes: a resource's version is the xxh64 of its encoding, a type's
//! version the hash of its (name, version) pairs. Regenerating identical config therefore
//! yields identical versions, and a config change that does not touch a node pushes nothing
//! to it.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use xxhash_rust::xxh64::Xxh64;

/// Resources of every type for one node, as a generator returns them.
///
/// ```
/// use envoy_types::pb::envoy::config::cluster::v3::Cluster;
/// use mesh_control::xds_server::Resources;
///
/// let mut r = Resources::default();
/// r.add("outbound|9080||reviews.default.svc.cluster.local", Cluster {
///     name: "outbound|9080||reviews.default.svc.cluster.local".into(),
///     ..Default::default()
/// });
/// assert_eq!(r.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    by_type: BTreeMap<String, BTreeMap<String, Any>>,
}

impl Resources {
    /// Adds (or replaces) a resource under `name`, packed as its own type URL.
    pub fn add<M: prost::Name>(&mut self, name: impl Into<String>, message: M) {
        let any = envoy_types::util::pack_any(message);
        self.add_any(name, any);
    }

    /// Adds (or replaces) an already packed resource.
    pub fn add_any(&mut self, name: impl Into<String>, any: Any) {
        self.by_type
            .entry(any.type_url.clone())
            .or_default()
            .insert(name.into(), any);
    }

    /// Makes `type_url` known even when it has no resources (so a wildcard subscriber is
    /// told "none" rather than left waiting).
    pub fn declare_type(&mut self, type_url: &str) {
        self.by_type.entry(type_url.to_owned()).or_default();
    }

    /// Number of resources of every type.
    pub fn len(&self) -> usize {
        self.by_type.values().map(BTreeMap::len).sum()
    }

    /// Whether there is no resource at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The resources of one type, by name.
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&str, &Any)> {
        self.by_type
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Every type URL present.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }
}

/// One resource with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedResource {
    /// Content hash (hex).
    pub version: String,
    /// The packed resource.
    pub resource: Any,
}

/// The resources of one type with the type's version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionedType {
    /// Hash over every (name, version) pair (hex).
    pub version: String,
    /// Resources by name.
    pub resources: BTreeMap<String, VersionedResource>,
}

/// A consistent, versioned set of resources for one node key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionedResources {
    /// Per type URL.
    pub types: BTreeMap<String, VersionedType>,
}

impl VersionedResources {
    /// Versions every resource of `resources`.
    pub fn new(resources: Resources) -> VersionedResources {
        let types = resources
            .by_type
            .into_iter()
            .map(|(url, named)| {
                let mut type_hash = Xxh64::new(0);
                let resources: BTreeMap<String, VersionedResource> = named
                    .into_iter()
                    .map(|(name, any)| {
                        let version = format!("{:016x}", xxhash_rust::xxh64::xxh64(&any.value, 0));
                        type_hash.write(name.as_bytes());
                        type_hash.write_u8(0);
                        type_hash.write(version.as_bytes());
                        (
                            name,
                            VersionedResource {
                                version,
                                resource: any,
                            },
                        )
                    })
                    .collect();
                let versioned = VersionedType {
                    version: format!("{:016x}", type_hash.finish()),
                    resources,
                };
                (url, versioned)
            })
            .collect();
        VersionedResources { types }
    }

    /// The resources of one type, if the generator produced that type.
    pub fn get(&self, type_url: &str) -> Option<&VersionedType> {
        self.types.get(type_url)
    }

    /// Whether both have the same types at the same versions (cheap: compares
    /// type versions only, which are content hashes).
    pub fn same_versions(&self, other: &VersionedResources) -> bool {
        self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(&other.types)
                .all(|((a, ta), (b, tb))| a == b && ta.version == tb.version)
    }

    /// Number of resources of every type.
    pub fn len(&self) -> usize {
        self.types.values().map(|t| t.resources.len()).sum()
    }

    /// Whether there is no resource at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Versioned resources shared by every stream of the same node key.
pub type SharedResources = Arc<VersionedResources>;

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str, timeout_s: i64) -> Cluster {
        Cluster {
            name: name.into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: timeout_s,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn versions_are_content_hashes() {
        let mut a = Resources::default();
        a.add("a", cluster("a", 1));
        a.add("b", cluster("b", 1));
        let mut b = a.clone();
        let (s1, s2) = (
            VersionedResources::new(a.clone()),
            VersionedResources::new(b.clone()),
        );
        assert_eq!(s1, s2, "same content, same versions");
        b.add("b", cluster("b", 2));
        let s3 = VersionedResources::new(b);
        let url = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        let (t1, t3) = (s1.get(url).unwrap(), s3.get(url).unwrap());
        assert_ne!(t1.version, t3.version);
        assert_eq!(t1.resources["a"].version, t3.resources["a"].version);
        assert_ne!(t1.resources["b"].version, t3.resources["b"].version);
        assert_eq!(s3.len(), 2);
    }
}
