//! Targets: what the application asks to watch.

use super::XdsClientError;

/// The listener name for a target: `xds:///host:port` (gRPC's form, the authority part is
/// not supported) or a bare listener name such as `reviews.default.svc.cluster.local:9080`.
///
/// ```
/// use mesh_xds::client::listener_name_for_target;
///
/// assert_eq!(listener_name_for_target("xds:///reviews:9080").unwrap(), "reviews:9080");
/// assert_eq!(listener_name_for_target("reviews:9080").unwrap(), "reviews:9080");
/// assert!(listener_name_for_target("xds://istiod/reviews:9080").is_err());
/// ```
pub fn listener_name_for_target(target: &str) -> Result<&str, XdsClientError> {
    let name = match target.strip_prefix("xds:") {
        Some(rest) => rest
            .strip_prefix("///")
            .ok_or_else(|| XdsClientError::InvalidTarget {
                target: target.to_owned(),
                reason: "an xds target must be xds:///<listener> (no authority)",
            })?,
        None if target.contains("://") => {
            return Err(XdsClientError::InvalidTarget {
                target: target.to_owned(),
                reason: "only the xds: scheme (or a bare listener name) is supported",
            });
        }
        None => target,
    };
    if name.is_empty() {
        return Err(XdsClientError::InvalidTarget {
            target: target.to_owned(),
            reason: "the listener name is empty",
        });
    }
    if name == "*" {
        return Err(XdsClientError::InvalidTarget {
            target: target.to_owned(),
            reason: "\"*\" is the wildcard, not a listener; use the wildcard_listeners option",
        });
    }
    Ok(name)
}
