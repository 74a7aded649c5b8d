//! `PeerAuthentication` and `AuthorizationPolicy` (security.istio.io).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{LabelSelector, PortKey, Unsupported};

/// `PeerAuthentication.spec`: which mTLS mode a workload's server side accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads this applies to; none means the whole namespace (or the mesh, in the root
    /// namespace).
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Mode for all ports.
    #[serde(default)]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides (requires a selector).
    #[serde(default)]
    pub port_level_mtls: BTreeMap<PortKey, MutualTls>,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// The mode.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent (namespace, then mesh; the mesh default is `PERMISSIVE`).
    #[default]
    Unset,
    /// Plain text only.
    Disable,
    /// mTLS and plain text.
    Permissive,
    /// mTLS only.
    Strict,
}

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Workloads this applies to; none means the whole namespace (or the mesh, in the root
    /// namespace).
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Not supported (Gateway API attachment).
    #[serde(default)]
    pub target_ref: Option<Unsupported>,
    /// Not supported (Gateway API attachment).
    #[serde(default)]
    pub target_refs: Option<Unsupported>,
    /// Any rule that matches applies the action.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// `ALLOW` (default), `DENY` or `AUDIT`; `CUSTOM` is not supported.
    #[serde(default)]
    pub action: Action,
    /// Not supported (`CUSTOM` action provider).
    #[serde(default)]
    pub provider: Option<Unsupported>,
}

/// `AuthorizationPolicy.Action`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow matching requests (and deny the rest, once any ALLOW policy selects a workload).
    #[default]
    Allow,
    /// Deny matching requests.
    Deny,
    /// Log matching requests.
    Audit,
    /// External authorization: not supported.
    Custom,
}

/// `Rule`: all of `from`, `to` and `when` must match (each list is an OR).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources.
    #[serde(default)]
    pub from: Vec<From>,
    /// Operations.
    #[serde(default)]
    pub to: Vec<To>,
    /// Extra conditions.
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `Rule.From`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct From {
    /// The source.
    #[serde(default)]
    pub source: Source,
}

/// `Rule.To`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct To {
    /// The operation.
    #[serde(default)]
    pub operation: Operation,
}

/// `Source`: who calls. Principals are SPIFFE IDs without `spiffe://`
/// (`cluster.local/ns/default/sa/productpage`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`*` allowed as a prefix or suffix).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Negated `principals`.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// Peer namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Negated `namespaces`.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// Peer IPs or CIDRs.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Negated `ipBlocks`.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// Not supported (JWT).
    #[serde(default)]
    pub request_principals: Option<Unsupported>,
    /// Not supported (JWT).
    #[serde(default)]
    pub not_request_principals: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub remote_ip_blocks: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub not_remote_ip_blocks: Option<Unsupported>,
    /// Not supported (use `principals`).
    #[serde(default)]
    pub service_accounts: Option<Unsupported>,
    /// Not supported (use `notPrincipals`).
    #[serde(default)]
    pub not_service_accounts: Option<Unsupported>,
    /// Not supported (use `principals`).
    #[serde(default)]
    pub trust_domains: Option<Unsupported>,
    /// Not supported (use `notPrincipals`).
    #[serde(default)]
    pub not_trust_domains: Option<Unsupported>,
}

/// `Operation`: what is called.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// `Host` / `:authority` values.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Negated `hosts`.
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Destination ports (as strings, like Istio).
    #[serde(default)]
    pub ports: Vec<String>,
    /// Negated `ports`.
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Negated `methods`.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// Paths (`*` allowed as a prefix or suffix).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Negated `paths`.
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `Condition`: an attribute and accepted (or refused) values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Attribute name, such as `request.headers[x-user]` or `source.ip`.
    #[serde(default)]
    pub key: String,
    /// Accepted values.
    #[serde(default)]
    pub values: Vec<String>,
    /// Refused values.
    #[serde(default)]
    pub not_values: Vec<String>,
}
