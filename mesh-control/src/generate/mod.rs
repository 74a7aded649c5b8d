//! xDS generators: a validated [`MeshConfig`] becomes Envoy resources, as istiod's
//! generators do (`pilot/pkg/networking/grpcgen` for proxyless clients, the sidecar
//! generator for Envoy).
//!
//! [`MeshGenerator`] picks the generator per node from its metadata, like istiod:
//! `GENERATOR: grpc` gets the proxyless resources (our library and gRPC's xDS clients),
//! anything else the Envoy resources.
//!
//! Names follow Istio, so clients and tooling written for istiod work unchanged:
//! - client listeners `<fqdn>:<port>` (ApiListener + HttpConnectionManager -> RDS of the
//!   same name), server listeners `xds.istio.io/grpc/lds/inbound/<ip>:<port>`;
//! - clusters `outbound|<port>|<subset>|<fqdn>`, EDS with the same service name;
//! - TLS (`ISTIO_MUTUAL`): certificate provider instance `default` (certificate `default`,
//!   CA `ROOTCA`) and SAN matchers carrying the workloads' SPIFFE IDs.
//!
//! For Envoy, which has no certificate provider for Istio's agent without istio-agent,
//! clusters carry inline `tls_certificates` and `trusted_ca` file names, which the Envoy
//! node names in its metadata (see [`EnvoyNodeMeta`]): the simplest setup that works with a
//! stock Envoy.

mod authz;
mod cluster;
mod endpoint;
mod envoy;
mod grpc;
mod inbound;
mod listener;
mod locality;
mod names;
mod pb;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::xds_server::{GenerateError, Generator, Resources};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;

use crate::istio::MeshConfig;

pub use envoy::EnvoyNodeMeta;
pub use inbound::InboundNode;
pub use names::{cluster_name, inbound_listener_name, parse_cluster_name, virtual_host_domains};

/// Generator settings shared by every kind of node.
#[derive(Clone, Debug)]
pub struct GeneratorOptions {
    /// The trust domain of the workloads' SPIFFE IDs (default `cluster.local`).
    pub trust_domain: String,
    /// Connect timeout of clusters when the DestinationRule sets none (default 10 s).
    pub connect_timeout: std::time::Duration,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            trust_domain: "cluster.local".into(),
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Which generator serves a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Proxyless (`GENERATOR: grpc`).
    Proxyless,
    /// Envoy (anything else).
    Envoy,
}

impl NodeKind {
    /// Reads the node's `GENERATOR` metadata.
    pub fn of(node: &Node) -> NodeKind {
        if node_meta(node, "GENERATOR").as_deref() == Some("grpc") {
            NodeKind::Proxyless
        } else {
            NodeKind::Envoy
        }
    }
}

/// A string field of the node's metadata.
pub fn node_meta(node: &Node, key: &str) -> Option<String> {
    let value = node.metadata.as_ref()?.fields.get(key)?;
    match &value.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        Some(Kind::NumberValue(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The node's `LABELS` metadata (string values only).
pub(crate) fn node_labels(node: &Node) -> std::collections::BTreeMap<String, String> {
    let Some(Kind::StructValue(s)) = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get("LABELS"))
        .and_then(|v| v.kind.as_ref())
    else {
        return Default::default();
    };
    s.fields
        .iter()
        .filter_map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(v)) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// The node's locality as `region/zone/subzone` (empty when it sends none).
pub(crate) fn node_locality(node: &Node) -> String {
    node.locality
        .as_ref()
        .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
        .filter(|l| l != "//")
        .unwrap_or_default()
}

/// Istio's generators for [`MeshConfig`]: proxyless or Envoy, per node.
#[derive(Clone, Debug, Default)]
pub struct MeshGenerator {
    options: GeneratorOptions,
    /// The proxyless client side of the last config per client namespace, shared by
    /// every proxyless node of the namespace.
    outbound: Arc<Mutex<Option<(MeshConfig, ByNamespace)>>>,
}

/// Generated resources by client namespace.
type ByNamespace = HashMap<String, Resources>;

/// How many namespaces' outputs the cache keeps: a node names its own namespace, so an
/// unbounded cache would grow with whatever namespaces clients claim.
const MAX_CACHED_NAMESPACES: usize = 256;

/// Whether two configs hold the very same `Arc`s (so the same content: the cache keeps
/// its config alive, so an address cannot be reused while compared).
fn same_arcs(a: &MeshConfig, b: &MeshConfig) -> bool {
    fn lists<T>(a: &[Arc<T>], b: &[Arc<T>]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y))
    }
    a.services.len() == b.services.len()
        && a.services
            .iter()
            .zip(&b.services)
            .all(|((ka, va), (kb, vb))| ka == kb && Arc::ptr_eq(va, vb))
        && lists(&a.virtual_services, &b.virtual_services)
        && lists(&a.destination_rules, &b.destination_rules)
        && lists(&a.peer_authentications, &b.peer_authentications)
        && lists(&a.authorization_policies, &b.authorization_policies)
}

impl MeshGenerator {
    /// A generator with these settings.
    pub fn new(options: GeneratorOptions) -> Self {
        MeshGenerator {
            options,
            outbound: Arc::default(),
        }
    }

    /// The proxyless client side for `config` and the node, generated once per config
    /// version unless a VirtualService matches on the caller, a resource is exported to
    /// some namespaces only, or locality load balancing may act (then per node, from what
    /// its namespace sees, with its locality's priorities).
    fn outbound(&self, config: &MeshConfig, node: &InboundNode) -> Resources {
        let source_matches = config
            .virtual_services
            .iter()
            .flat_map(|vs| &vs.spec.http)
            .flat_map(|h| &h.matches)
            .any(route::has_source_match);
        if source_matches || config.has_export_limits() || locality::per_client(config) {
            let caller = route::Caller {
                namespace: &node.namespace,
                labels: &node.labels,
            };
            let client =
                locality::Client::new(Some(&locality::parse(&node.locality)), &node.labels);
            let visible = config.visible_to(&node.namespace);
            return grpc::generate(
                &visible,
                &self.options,
                Some(&node.namespace),
                Some(caller),
                Some(&client),
            );
        }
        // Shared by the nodes of one namespace (a service's short name is a domain of its
        // virtual host in its own namespace only).
        let mut cache = self.outbound.lock().unwrap_or_else(|e| e.into_inner());
        if !cache
            .as_ref()
            .is_some_and(|(cached, _)| same_arcs(cached, config))
        {
            *cache = Some((config.clone(), HashMap::new()));
        }
        let (_, by_namespace) = cache.as_mut().expect("just set");
        if by_namespace.len() >= MAX_CACHED_NAMESPACES
            && !by_namespace.contains_key(&node.namespace)
            && let Some(old) = by_namespace.keys().next().cloned()
        {
            // Any one goes: its nodes get it generated again when they next ask.
            by_namespace.remove(&old);
        }
        by_namespace
            .entry(node.namespace.clone())
            .or_insert_with(|| {
                grpc::generate(config, &self.options, Some(&node.namespace), None, None)
            })
            .clone()
    }

    /// The proxyless resources (every client and server listener, route, cluster and
    /// endpoint set), independent of any node: for tools and tests. With workloads sharing
    /// an address and port, the first one's inbound listener is included.
    pub fn proxyless(&self, config: &MeshConfig) -> Resources {
        let mut out = grpc::generate(config, &self.options, None, None, None);
        inbound::add_all(&mut out, config);
        out
    }

    /// What a `GENERATOR: grpc` node is served: the client side of every service, and the
    /// inbound listeners of the node's own workload (found by IP, then namespace, service
    /// account, pod name and labels; see [`InboundNode`]), with its PeerAuthentication
    /// and AuthorizationPolicies.
    pub fn proxyless_for(&self, config: &MeshConfig, node: &InboundNode) -> Resources {
        let mut out = self.outbound(config, node);
        inbound::add_for_node(&mut out, config, node);
        out
    }

    /// The resources for an Envoy node with this metadata.
    pub fn envoy(&self, config: &MeshConfig, meta: &EnvoyNodeMeta) -> Resources {
        envoy::generate(config, &self.options, meta)
    }
}

impl Generator<MeshConfig> for MeshGenerator {
    fn node_key(&self, node: &Node) -> String {
        match NodeKind::of(node) {
            // The client side is the same for every proxyless node; the inbound listeners
            // depend on what identifies the node's workload.
            NodeKind::Proxyless => format!("grpc|{}", InboundNode::from_node(node).key()),
            NodeKind::Envoy => EnvoyNodeMeta::from_node(node).key(),
        }
    }

    fn generate(&self, node: &Node, config: &MeshConfig) -> Result<Resources, GenerateError> {
        Ok(match NodeKind::of(node) {
            NodeKind::Proxyless => self.proxyless_for(config, &InboundNode::from_node(node)),
            NodeKind::Envoy => self.envoy(config, &EnvoyNodeMeta::from_node(node)),
        })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_inbound;
