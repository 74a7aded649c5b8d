//! Envoy protos (crate `envoy-types`) -> mesh-core model, validating as gRPC and Envoy do.
//!
//! Every translator returns [`Invalid`] with the field path where a rule was broken; the
//! resource decoder in [`crate::resource`] turns it into a [`Rejection`] naming the resource.
//! Fields we cannot honour and that change behaviour are rejected; harmless ones (stats,
//! access logs, metadata we do not use) are ignored.

// Deprecated Envoy fields are still sent by control planes (Istio among them) and must be
// honoured, so they are read here on purpose.
#![allow(deprecated)]

pub mod cluster;
pub mod endpoint;
pub mod fault;
pub mod fetch_timeout;
mod lb_limits;
pub mod lb_policy;
pub mod listener;
pub mod matcher;
pub mod rate_limit;
pub mod rbac;
pub mod route;
pub mod tls;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;

use crate::resource::Rejection;

/// Whose defaults fill in what a resource leaves unset.
///
/// ```
/// use mesh_xds::translate::Dialect;
/// use envoy_types::pb::envoy::config::core::v3::Node;
///
/// assert_eq!(Dialect::of_node(&Node::default()), Dialect::Envoy);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Envoy's defaults: any xDS control plane.
    #[default]
    Envoy,
    /// Istio's proxyless generator (a node whose metadata says `GENERATOR: grpc`). It
    /// sends a cluster's circuit breakers with `max_requests` only (gRFC A32): the retry
    /// limit is one it cannot express, which gRPC libraries do not have and istiod lifts for
    /// its sidecars (4294967295). So a thresholds entry without `max_retries` means no limit
    /// here, not Envoy's 3, which would fail retryable requests whenever more than three
    /// retries to a cluster overlap and which no Istio config could raise.
    IstioProxyless,
}

impl Dialect {
    /// The dialect of the control plane serving `node`: [`Dialect::IstioProxyless`] when its
    /// metadata asks istiod for the proxyless generator.
    pub fn of_node(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Self {
        use envoy_types::pb::google::protobuf::value::Kind;
        let generator = node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("GENERATOR"))
            .and_then(|v| v.kind.as_ref());
        match generator {
            Some(Kind::StringValue(g)) if g == "grpc" => Self::IstioProxyless,
            _ => Self::Envoy,
        }
    }

    /// A cluster's `max_retries` where its thresholds set none.
    pub(crate) fn unset_max_retries(self) -> u32 {
        match self {
            Self::Envoy => 3,
            Self::IstioProxyless => u32::MAX,
        }
    }
}

/// A validation failure: the path of fields down to the culprit, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// Path segments from the outside in, e.g. `["virtual_host 'vh'", "route[3]", ".match"]`.
    path: Vec<String>,
    message: String,
}

impl Invalid {
    /// A failure at the current position.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            message: message.into(),
        }
    }

    /// Prefixes a path segment. Segments starting with `.` or `[` are glued to the previous
    /// one; others are separated by a space.
    pub fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.insert(0, segment.into());
        self
    }

    /// Turns the failure into a [`Rejection`] of the resource `kind 'name'`.
    pub fn reject(self, kind: &str, name: &str) -> Rejection {
        Rejection {
            name: Some(name.to_owned()),
            reason: self.at(format!("{kind} '{name}'")).to_string(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.path.iter().enumerate() {
            let glue = i > 0 && !seg.starts_with('.') && !seg.starts_with('[');
            if glue {
                f.write_str(" ")?;
            }
            f.write_str(seg)?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, ": {}", self.message)
        }
    }
}

/// Result of a translation step.
pub type Res<T> = Result<T, Invalid>;

/// Adds a path segment to an error.
pub trait At<T> {
    /// Prefixes `segment` to the error's path.
    fn at(self, segment: impl Into<String>) -> Res<T>;
    /// Prefixes a lazily built segment.
    fn at_with(self, segment: impl FnOnce() -> String) -> Res<T>;
}

impl<T> At<T> for Res<T> {
    fn at(self, segment: impl Into<String>) -> Res<T> {
        self.map_err(|e| e.at(segment))
    }
    fn at_with(self, segment: impl FnOnce() -> String) -> Res<T> {
        self.map_err(|e| e.at(segment()))
    }
}

/// Shorthand for an error result.
pub fn bail<T>(message: impl Into<String>) -> Res<T> {
    Err(Invalid::new(message))
}

/// Refuses the first field of `fields` that is set (`(name, is_set)` pairs): fields that would
/// change behaviour in Envoy and that this data plane does not implement are NACKed rather
/// than accepted and ignored (issue #16).
pub fn refuse_set(fields: &[(&str, bool)]) -> Res<()> {
    match fields.iter().find(|(_, set)| *set) {
        Some((name, _)) => bail(format!("{name} is not supported")),
        None => Ok(()),
    }
}

/// gRPC A27: RDS and EDS must come over the same ADS stream (`ads` or `self`); the other
/// specifiers are refused by name.
pub fn ads_config_source(
    c: Option<&envoy_types::pb::envoy::config::core::v3::ConfigSource>,
) -> Res<()> {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier as S;
    // Acted on by the xDS client (fetch_timeout); validated here so a bad one is NACKed.
    opt_duration(c.and_then(|c| c.initial_fetch_timeout.as_ref())).at(".initial_fetch_timeout")?;
    let other = match c.and_then(|c| c.config_source_specifier.as_ref()) {
        Some(S::Ads(_)) | Some(S::Self_(_)) => return Ok(()),
        None => return bail("ads or self is required"),
        Some(S::Path(_)) => "path",
        Some(S::PathConfigSource(_)) => "path_config_source",
        Some(S::ApiConfigSource(_)) => "api_config_source",
    };
    bail(format!(
        "{other} is not supported: only ads or self config sources are"
    ))
}

/// Whether an optional `BoolValue` is set to true.
pub fn is_true(b: Option<&envoy_types::pb::google::protobuf::BoolValue>) -> bool {
    b.is_some_and(|b| b.value)
}

/// Converts a protobuf duration, rejecting negative or out-of-range values.
pub fn duration(d: &PbDuration) -> Res<Duration> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return bail(format!(
            "duration {}s {}ns is negative or malformed",
            d.seconds, d.nanos
        ));
    }
    // 315_576_000_000 s is protobuf's documented maximum.
    if d.seconds > 315_576_000_000 {
        return bail(format!("duration {}s is out of range", d.seconds));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Converts an optional protobuf duration.
pub fn opt_duration(d: Option<&PbDuration>) -> Res<Option<Duration>> {
    d.map(duration).transpose()
}

/// The fully qualified message name of an `Any` (after the last `/`).
pub fn any_type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or("")
}

/// Decodes an `Any` as `M`, checking its type URL.
pub fn unpack<M: Message + Default + prost::Name>(any: &Any) -> Res<M> {
    if any_type_name(any) != M::full_name() {
        return bail(format!(
            "expected {} but got type_url {:?}",
            M::full_name(),
            any.type_url
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| Invalid::new(format!("cannot decode {}: {e}", M::full_name())))
}

/// Decodes a top-level resource message.
pub(crate) fn decode_message<M: Message + Default>(
    bytes: &[u8],
    what: &str,
) -> Result<M, Rejection> {
    M::decode(bytes).map_err(|e| Rejection {
        name: None,
        reason: format!("cannot decode {what}: {e}"),
    })
}

/// `Some(v)` for a nonzero wrapper value, `None` otherwise.
pub fn u32_value(v: Option<&envoy_types::pb::google::protobuf::UInt32Value>) -> Option<u32> {
    v.map(|v| v.value)
}

/// Quotes a name for messages.
pub fn q(name: &str) -> String {
    format!("'{name}'")
}
