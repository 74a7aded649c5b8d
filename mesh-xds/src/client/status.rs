//! Client status per resource, as data for the admin endpoint and CSDS.

use std::time::SystemTime;

use crate::resource::ResourceType;

/// Where a subscribed resource stands, in CSDS's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceState {
    /// Subscribed, no answer from the server yet.
    Requested,
    /// The last version received was accepted.
    Acked,
    /// The last version received was rejected; the previous good one (if any) is still served.
    Nacked,
    /// The server said (or implied, by omission or by timeout) that the resource does not exist.
    DoesNotExist,
}

impl ResourceState {
    /// The CSDS `ClientResourceStatus` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Acked => "ACKED",
            Self::Nacked => "NACKED",
            Self::DoesNotExist => "DOES_NOT_EXIST",
        }
    }
}

impl std::fmt::Display for ResourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of one resource the client knows about.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceStatus {
    /// Resource type.
    pub kind: ResourceType,
    /// Resource name.
    pub name: String,
    /// Current state.
    pub state: ResourceState,
    /// Version of the resource being served (empty before the first accepted version).
    pub version: String,
    /// Why the last update of this resource was rejected, while [`ResourceState::Nacked`].
    pub last_error: Option<String>,
    /// When the state last changed because of the server (or a does-not-exist timer).
    pub last_update: Option<SystemTime>,
    /// Whether a good version of the resource is being served.
    pub has_value: bool,
}

/// A point-in-time view of the whole client, see [`crate::client::XdsClient::status`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientStatus {
    /// Whether an ADS stream is currently open.
    pub connected: bool,
    /// Whether every subscribed type has had its first answer.
    pub ready: bool,
    /// Every subscribed (or, for wildcard types, received) resource, sorted by type then name.
    pub resources: Vec<ResourceStatus>,
    /// Last accepted SotW `version_info` per type (delta: `system_version_info`).
    pub type_versions: Vec<(ResourceType, String)>,
}

impl ClientStatus {
    /// The status of one resource.
    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&ResourceStatus> {
        self.resources
            .iter()
            .find(|r| r.kind == kind && r.name == name)
    }
}
