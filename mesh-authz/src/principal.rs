//! Principals written the way Istio writes them, translated as istiod does for Envoy.
//!
//! Istio's `source.principals` values are SPIFFE IDs without `spiffe://`, with a single
//! `*` wildcard as prefix or suffix; `source.namespaces` become a regex on the SPIFFE ID's
//! `/ns/<ns>/` segment.

use mesh_core::model::{Principal, Regex, StringMatcher};

const SCHEME: &str = "spiffe://";

/// Istio's `source.principals` entry: `*` (any authenticated peer), `prefix*`, `*suffix`,
/// or an exact ID (`cluster.local/ns/default/sa/productpage`).
pub fn istio(value: &str) -> Principal {
    Principal::Authenticated(Some(istio_matcher(value)))
}

/// The string matcher istiod generates for a principal value.
fn istio_matcher(value: &str) -> StringMatcher {
    let value = value.strip_prefix(SCHEME).unwrap_or(value);
    if value == "*" {
        // istiod: any non-empty principal.
        return StringMatcher::Prefix {
            value: String::new(),
            ignore_case: false,
        };
    }
    if let Some(prefix) = value.strip_suffix('*') {
        return StringMatcher::Prefix {
            value: format!("{SCHEME}{prefix}"),
            ignore_case: false,
        };
    }
    if let Some(suffix) = value.strip_prefix('*') {
        return StringMatcher::Suffix {
            value: suffix.to_owned(),
            ignore_case: false,
        };
    }
    exact(&format!("{SCHEME}{value}"))
}

fn exact(value: &str) -> StringMatcher {
    StringMatcher::Exact {
        value: value.to_owned(),
        ignore_case: false,
    }
}

/// Exactly this SPIFFE ID (with `spiffe://`).
pub fn spiffe_id(id: &str) -> Principal {
    Principal::Authenticated(Some(exact(id)))
}

/// Istio's `source.namespaces` entry: `*`, `prefix*`, `*suffix` or an exact namespace,
/// matched against the `/ns/<ns>/` segment of the caller's SPIFFE ID as istiod does
/// (`.*/ns/<ns>/.*`).
pub fn istio_namespace(ns: &str) -> Principal {
    let seg = if ns == "*" {
        "[^/]+".to_owned()
    } else if let Some(prefix) = ns.strip_suffix('*') {
        format!("{}[^/]*", regex_escape(prefix))
    } else if let Some(suffix) = ns.strip_prefix('*') {
        format!("[^/]*{}", regex_escape(suffix))
    } else {
        regex_escape(ns)
    };
    match Regex::full(&format!(".*/ns/{seg}/.*")) {
        Ok(re) => Principal::Authenticated(Some(StringMatcher::Regex(re))),
        // Unreachable with escaped input; fail closed rather than panic.
        Err(_) => Principal::Not(Box::new(Principal::Any)),
    }
}

/// Everyone except what `p` matches (Istio's `notPrincipals`, `notNamespaces`).
pub fn not(p: Principal) -> Principal {
    Principal::Not(Box::new(p))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
