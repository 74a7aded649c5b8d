//! Host entries for DNS clusters, like lines of `/etc/hosts`: a name listed here resolves to
//! its addresses (with the endpoint's port) at each refresh of a `STRICT_DNS` or
//! `LOGICAL_DNS` cluster, without asking the system's resolver. The table is process-wide,
//! as `/etc/hosts` is; it serves programs that resolve some names their own way (a service
//! registry's, a test's), and names not listed go to the system's resolver.
//!
//! ```
//! use mesh_route::cluster::hosts;
//! hosts::set("reviews.registry.internal", &["10.0.0.7".parse().unwrap()]);
//! assert_eq!(hosts::get("reviews.registry.internal").unwrap().len(), 1);
//! hosts::remove("reviews.registry.internal");
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, RwLock};

static HOSTS: LazyLock<RwLock<HashMap<String, Vec<IpAddr>>>> = LazyLock::new(Default::default);

/// Lists `name` (exact, ASCII case-insensitive) with `addrs`, in order, replacing any
/// earlier entry; a name listed with no address resolves to none.
pub fn set(name: &str, addrs: &[IpAddr]) {
    HOSTS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_ascii_lowercase(), addrs.to_vec());
}

/// Removes `name`: it goes to the system's resolver again.
pub fn remove(name: &str) {
    HOSTS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&name.to_ascii_lowercase());
}

/// The addresses listed for `name`, if it is listed.
pub fn get(name: &str) -> Option<Vec<IpAddr>> {
    HOSTS
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&name.to_ascii_lowercase())
        .cloned()
}
