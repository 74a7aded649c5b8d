//! [`MeshConfig`]: one validated, immutable snapshot of the config directory.
//!
//! It is what the xDS generators read: services (from `ServiceEntry`) with their ports and
//! workloads (inline endpoints and selected `WorkloadEntry` resources), and the routing and
//! security resources, all with hosts qualified to FQDNs. It is only built from config that
//! passed validation, so every reference in it resolves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::api::{
    AuthorizationPolicy, DestinationRule, Location, Origin, PeerAuthentication, Resolution,
    Resource, ResourceKey, ServicePort, Spec, VirtualService, WorkloadEntry,
};

/// Cluster domain suffix used to qualify short host names (`reviews` in namespace `default`
/// becomes `reviews.default.svc.cluster.local`), as Istio does on Kubernetes.
pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// Istio's root namespace: a `PeerAuthentication` or `AuthorizationPolicy` there without a
/// selector applies to the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Qualifies a short host name (no dot) with the namespace of the resource using it.
///
/// ```
/// use mesh_control::istio::qualify_host;
/// assert_eq!(qualify_host("reviews", "default"), "reviews.default.svc.cluster.local");
/// assert_eq!(qualify_host("api.example.com", "default"), "api.example.com");
/// ```
pub fn qualify_host(host: &str, namespace: &str) -> String {
    if host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.{DOMAIN_SUFFIX}")
    }
}

/// A resource of one kind with its identity and origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Named<T> {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Where it was read from.
    pub origin: Origin,
    /// `metadata.annotations` (e.g. `istio.io/dry-run`).
    pub annotations: BTreeMap<String, String>,
    /// The spec, with short hosts qualified to FQDNs.
    pub spec: T,
}

/// One workload of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// `WorkloadEntry` namespace/name, or `<ServiceEntry name>[i]` for inline endpoints.
    pub name: String,
    /// Namespace of the workload (its identity's namespace).
    pub namespace: String,
    /// The workload entry.
    pub entry: WorkloadEntry,
}

impl Workload {
    /// The port this workload serves a service port on: the workload's own mapping for the
    /// port's name, else the port's `targetPort`, else its number.
    pub fn port_for(&self, port: &ServicePort) -> u32 {
        self.entry
            .ports
            .get(&port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    /// Whether the workload carries all of `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels_match(&self.entry.labels, labels)
    }

    /// The SPIFFE path of the workload's identity, `ns/<namespace>/sa/<serviceAccount>`
    /// (`default` service account when none is set).
    pub fn identity_path(&self) -> String {
        let sa = if self.entry.service_account.is_empty() {
            "default"
        } else {
            &self.entry.service_account
        };
        format!("ns/{}/sa/{sa}", self.namespace)
    }
}

/// Whether `have` contains every label of `want`.
pub fn labels_match(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// A service defined by a `ServiceEntry` host.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// The FQDN.
    pub host: String,
    /// The `ServiceEntry` that defines it.
    pub defined_by: ResourceKey,
    /// Where that `ServiceEntry` was read from.
    pub origin: Origin,
    /// Namespace of the `ServiceEntry`.
    pub namespace: String,
    /// Namespaces that may see it (`*` for all).
    pub export_to: Vec<String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// How endpoint addresses are resolved.
    pub resolution: Resolution,
    /// Inside or outside the mesh.
    pub location: Location,
    /// Virtual IPs.
    pub addresses: Vec<String>,
    /// Extra identities the workloads may present.
    pub subject_alt_names: Vec<String>,
    /// Workloads, in config order.
    pub workloads: Vec<Workload>,
}

/// Whether `exportTo` of a resource in namespace `owner` lets `namespace` see it (empty:
/// every namespace, Istio's default).
pub fn exported_to(export_to: &[String], owner: &str, namespace: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == namespace || (e == "." && owner == namespace))
}

fn is_limited(export_to: &[String]) -> bool {
    !export_to.is_empty() && !export_to.iter().any(|e| e == "*")
}

impl Service {
    /// Whether a resource or workload in `namespace` may refer to this service.
    pub fn visible_from(&self, namespace: &str) -> bool {
        exported_to(&self.export_to, &self.namespace, namespace)
    }

    /// The port with this number.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// WorkloadEntries by (namespace, label key, label value).
type LabelIndex<'a> = HashMap<(&'a str, &'a str, &'a str), Vec<(&'a Resource, &'a WorkloadEntry)>>;

/// Builds the service registry from `ServiceEntry` and `WorkloadEntry` resources.
///
/// Best effort on unvalidated input (the first definition of a host wins), so the validator
/// can use it to check references.
pub fn build_services(resources: &[Resource]) -> BTreeMap<String, Service> {
    // WorkloadEntries indexed by (namespace, label key, label value), so a selector looks at
    // the entries carrying one of its labels instead of every entry of the mesh.
    let mut by_label: LabelIndex<'_> = HashMap::new();
    for r in resources {
        if let Spec::WorkloadEntry(we) = &r.spec {
            for (k, v) in &we.labels {
                by_label
                    .entry((r.metadata.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push((r, we));
            }
        }
    }
    let mut services = BTreeMap::new();
    for r in resources {
        let Spec::ServiceEntry(se) = &r.spec else {
            continue;
        };
        let ns = &r.metadata.namespace;
        let mut workloads: Vec<Workload> = se
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Workload {
                name: format!("{}/{}[{i}]", ns, r.metadata.name),
                namespace: ns.clone(),
                entry: e.clone(),
            })
            .collect();
        // An empty selector selects nothing here (validation rejects it).
        if let Some(sel) = &se.workload_selector
            && let Some((k, v)) = sel.labels.iter().next()
        {
            let candidates = by_label.get(&(ns.as_str(), k.as_str(), v.as_str()));
            workloads.extend(
                candidates
                    .into_iter()
                    .flatten()
                    .filter(|(_, we)| labels_match(&we.labels, &sel.labels))
                    .map(|(wr, we)| Workload {
                        name: format!("{}/{}", wr.metadata.namespace, wr.metadata.name),
                        namespace: wr.metadata.namespace.clone(),
                        entry: (*we).clone(),
                    }),
            );
        }
        for host in &se.hosts {
            let host = qualify_host(host, ns);
            services.entry(host.clone()).or_insert_with(|| Service {
                host,
                defined_by: r.key(),
                origin: r.origin.clone(),
                namespace: ns.clone(),
                export_to: se.export_to.clone(),
                ports: se.ports.clone(),
                resolution: se.resolution,
                location: se.location,
                addresses: se.addresses.clone(),
                subject_alt_names: se.subject_alt_names.clone(),
                workloads: workloads.clone(),
            });
        }
    }
    services
}

/// Both lists are sorted by namespace/name.
fn share_named<T: PartialEq>(new: &mut [Arc<Named<T>>], old: &[Arc<Named<T>>]) {
    for item in new {
        let found = old.binary_search_by(|o| {
            (o.namespace.as_str(), o.name.as_str())
                .cmp(&(item.namespace.as_str(), item.name.as_str()))
        });
        if let Ok(i) = found
            && old[i] == *item
        {
            *item = old[i].clone();
        }
    }
}

fn named<T>(r: &Resource, spec: T) -> Arc<Named<T>> {
    Arc::new(Named {
        name: r.metadata.name.clone(),
        namespace: r.metadata.namespace.clone(),
        origin: r.origin.clone(),
        annotations: r.metadata.annotations.clone(),
        spec,
    })
}

/// A validated, immutable view of a config directory.
///
/// ```
/// use mesh_control::istio::{MeshConfig, SourceFile};
///
/// let yaml = r#"
/// apiVersion: networking.istio.io/v1
/// kind: ServiceEntry
/// metadata: { name: ratings, namespace: default }
/// spec:
///   hosts: [ratings.default.svc.cluster.local]
///   location: MESH_INTERNAL
///   resolution: STATIC
///   ports: [{ number: 9080, name: http, protocol: HTTP }]
///   endpoints: [{ address: 127.0.0.1, ports: { http: 19080 }, serviceAccount: ratings }]
/// "#;
/// let files = [SourceFile { path: "ratings.yaml".into(), text: yaml.into() }];
/// let (config, _warnings) = MeshConfig::from_files(&files).unwrap();
/// let svc = &config.services["ratings.default.svc.cluster.local"];
/// assert_eq!(svc.workloads[0].port_for(&svc.ports[0]), 19080);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshConfig {
    /// Services by FQDN.
    pub services: BTreeMap<String, Arc<Service>>,
    /// Virtual services (hosts and destinations qualified), sorted by namespace/name.
    pub virtual_services: Vec<Arc<Named<VirtualService>>>,
    /// Destination rules (host qualified), sorted by namespace/name.
    pub destination_rules: Vec<Arc<Named<DestinationRule>>>,
    /// Peer authentications, sorted by namespace/name.
    pub peer_authentications: Vec<Arc<Named<PeerAuthentication>>>,
    /// Authorization policies, sorted by namespace/name.
    pub authorization_policies: Vec<Arc<Named<AuthorizationPolicy>>>,
}

impl MeshConfig {
    /// What a workload in `namespace` sees (Istio's `exportTo` on ServiceEntry,
    /// VirtualService and DestinationRule): the others are left out.
    pub fn visible_to(&self, namespace: &str) -> MeshConfig {
        MeshConfig {
            services: self
                .services
                .iter()
                .filter(|(_, s)| s.visible_from(namespace))
                .map(|(h, s)| (h.clone(), s.clone()))
                .collect(),
            virtual_services: self
                .virtual_services
                .iter()
                .filter(|v| exported_to(&v.spec.export_to, &v.namespace, namespace))
                .cloned()
                .collect(),
            destination_rules: self
                .destination_rules
                .iter()
                .filter(|d| exported_to(&d.spec.export_to, &d.namespace, namespace))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// Whether some resource is exported to some namespaces only (then what a workload
    /// sees depends on its namespace).
    pub fn has_export_limits(&self) -> bool {
        self.services.values().any(|s| is_limited(&s.export_to))
            || self
                .virtual_services
                .iter()
                .any(|v| is_limited(&v.spec.export_to))
            || self
                .destination_rules
                .iter()
                .any(|d| is_limited(&d.spec.export_to))
    }

    /// Builds the snapshot from resources that passed [`validate`](super::validate).
    pub fn from_validated(resources: &[Resource]) -> MeshConfig {
        let services = build_services(resources)
            .into_iter()
            .map(|(h, s)| (h, Arc::new(s)))
            .collect();
        let mut config = MeshConfig {
            services,
            ..MeshConfig::default()
        };
        let mut sorted: Vec<&Resource> = resources.iter().collect();
        sorted.sort_by_key(|r| r.key());
        for r in sorted {
            let ns = &r.metadata.namespace;
            match &r.spec {
                Spec::VirtualService(vs) => {
                    let mut vs = vs.clone();
                    for h in &mut vs.hosts {
                        *h = qualify_host(h, ns);
                    }
                    for route in &mut vs.http {
                        for d in &mut route.route {
                            d.destination.host = qualify_host(&d.destination.host, ns);
                        }
                        if let Some(m) = &mut route.mirror {
                            m.host = qualify_host(&m.host, ns);
                        }
                    }
                    config.virtual_services.push(named(r, vs));
                }
                Spec::DestinationRule(dr) => {
                    let mut dr = dr.clone();
                    dr.host = qualify_host(&dr.host, ns);
                    config.destination_rules.push(named(r, *dr));
                }
                Spec::PeerAuthentication(pa) => {
                    config.peer_authentications.push(named(r, pa.clone()))
                }
                Spec::AuthorizationPolicy(ap) => {
                    config.authorization_policies.push(named(r, ap.clone()))
                }
                Spec::ServiceEntry(_) | Spec::WorkloadEntry(_) => {}
            }
        }
        config
    }

    /// Reuses the `Arc`s of `previous` for every piece that did not change, so consumers
    /// (the xDS generators) can skip unchanged services and rules with `Arc::ptr_eq`.
    pub fn share_unchanged(&mut self, previous: &MeshConfig) {
        for (host, svc) in &mut self.services {
            if let Some(old) = previous.services.get(host)
                && old == svc
            {
                *svc = old.clone();
            }
        }
        share_named(&mut self.virtual_services, &previous.virtual_services);
        share_named(&mut self.destination_rules, &previous.destination_rules);
        share_named(
            &mut self.peer_authentications,
            &previous.peer_authentications,
        );
        share_named(
            &mut self.authorization_policies,
            &previous.authorization_policies,
        );
    }

    /// The virtual service for a host, if any.
    pub fn virtual_service_for(&self, host: &str) -> Option<&Arc<Named<VirtualService>>> {
        self.virtual_services
            .iter()
            .find(|vs| vs.spec.hosts.iter().any(|h| h == host))
    }

    /// The destination rule for a host, if any.
    pub fn destination_rule_for(&self, host: &str) -> Option<&Arc<Named<DestinationRule>>> {
        self.destination_rules
            .iter()
            .find(|dr| dr.spec.host == host)
    }
}
