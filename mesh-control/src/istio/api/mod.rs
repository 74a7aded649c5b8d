//! Typed Istio resources, as written in YAML (camelCase field names, enum names in capitals).
//!
//! The structs follow istio/api's `networking/v1alpha3` and `security/v1beta1` protos. Fields
//! outside the supported subset are either absent (serde reports them as unknown) or typed
//! [`Unsupported`], which the validator reports as "not supported" by name.

mod common;
mod destination_rule;
mod security;
mod service_entry;
mod virtual_service;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use common::{
    LabelSelector, Percent, PortKey, ProtoDuration, StringMatch, StringMatchKind, Unsupported,
    WorkloadSelector,
};
pub use destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, ConsistentHash, DestinationRule, H2UpgradePolicy,
    HttpCookie, HttpSettings, LoadBalancerSettings, LocalityDistribute, LocalityFailover,
    LocalityLbSetting, Maglev, OutlierDetection, RingHash, SimpleLb, Subset, TcpSettings, TlsMode,
    TrafficPolicy,
};
pub use security::{
    Action, AuthorizationPolicy, Condition, From, MtlsMode, MutualTls, Operation,
    PeerAuthentication, Rule, Source, To,
};
pub use service_entry::{Location, Resolution, ServiceEntry, ServicePort, WorkloadEntry};
pub use virtual_service::{
    Abort, Delay, DerivePort, Destination, HeaderOperations, Headers, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination,
    PortSelector, RegexRewrite, VirtualService,
};

/// The Istio kinds this control plane reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// networking.istio.io `ServiceEntry`
    ServiceEntry,
    /// networking.istio.io `WorkloadEntry`
    WorkloadEntry,
    /// networking.istio.io `VirtualService`
    VirtualService,
    /// networking.istio.io `DestinationRule`
    DestinationRule,
    /// security.istio.io `PeerAuthentication`
    PeerAuthentication,
    /// security.istio.io `AuthorizationPolicy`
    AuthorizationPolicy,
}

/// API group of the networking kinds.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// API group of the security kinds.
pub const SECURITY_GROUP: &str = "security.istio.io";

impl Kind {
    /// All supported kinds.
    pub const ALL: [Kind; 6] = [
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
    ];

    /// The `kind:` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy => SECURITY_GROUP,
            _ => NETWORKING_GROUP,
        }
    }

    /// The API versions accepted for this kind (all served by current Istio).
    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            SECURITY_GROUP => &["v1", "v1beta1"],
            _ => &["v1", "v1beta1", "v1alpha3"],
        }
    }

    /// Looks a kind up by group and `kind:` name.
    pub fn find(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies a resource: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Where a resource was read from.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based line where the YAML document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The behaviour-relevant part of `metadata`; the other metadata fields (uid,
/// resourceVersion, creationTimestamp, ...) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`default` when omitted).
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// The `spec` of a supported resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// A `ServiceEntry`.
    ServiceEntry(ServiceEntry),
    /// A `WorkloadEntry`.
    WorkloadEntry(WorkloadEntry),
    /// A `VirtualService`.
    VirtualService(VirtualService),
    /// A `DestinationRule`.
    DestinationRule(Box<DestinationRule>),
    /// A `PeerAuthentication`.
    PeerAuthentication(PeerAuthentication),
    /// An `AuthorizationPolicy`.
    AuthorizationPolicy(AuthorizationPolicy),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::PeerAuthentication(_) => Kind::PeerAuthentication,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }
}

/// One parsed (not yet validated) Istio resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The `apiVersion` as written (`networking.istio.io/v1`, ...).
    pub api_version: String,
    /// Name, namespace, labels.
    pub metadata: Metadata,
    /// The typed spec.
    pub spec: Spec,
    /// File and line.
    pub origin: Origin,
}

impl Resource {
    /// Kind, namespace and name.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.spec.kind(),
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }
}
