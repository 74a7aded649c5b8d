//! Virtual host selection by authority (Envoy's `RouteMatcher::findVirtualHost`): exact
//! domains, then `*.suffix` wildcards longest first, then `prefix.*` wildcards longest first,
//! then `*`. Case-insensitive. A wildcard never matches the empty string.

use std::borrow::Cow;
use std::collections::HashMap;

/// How the port in the authority takes part in virtual host selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HostPortMode {
    /// Match the authority as sent, then, if nothing but `*` matched and it carries a port,
    /// match it again without the port (so `reviews:9080` finds a host listing `reviews`).
    FallbackWithoutPort,
    /// Envoy's default: the authority is matched as sent, port included.
    #[default]
    AsIs,
    /// Envoy's `strip_any_host_port`: the port is removed before matching.
    StripAny,
}

/// Domains of every virtual host, indexed for lookup.
#[derive(Debug, Default)]
pub(crate) struct VhostIndex {
    exact: HashMap<String, usize>,
    /// Suffix wildcards grouped by suffix length, longest first.
    suffixes: Vec<(usize, HashMap<String, usize>)>,
    /// Prefix wildcards grouped by prefix length, longest first.
    prefixes: Vec<(usize, HashMap<String, usize>)>,
    default: Option<usize>,
}

impl VhostIndex {
    /// Indexes `domains[i]` -> virtual host `i`. The first virtual host wins for a duplicate
    /// (the xDS translation rejects duplicates).
    pub(crate) fn new<'a>(domains: impl Iterator<Item = (usize, &'a [String])>) -> Self {
        let mut index = Self::default();
        let mut suffixes: HashMap<usize, HashMap<String, usize>> = HashMap::new();
        let mut prefixes: HashMap<usize, HashMap<String, usize>> = HashMap::new();
        for (i, ds) in domains {
            for d in ds {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    index.default.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    suffixes
                        .entry(suffix.len())
                        .or_default()
                        .entry(suffix.to_owned())
                        .or_insert(i);
                } else if let Some(prefix) = d.strip_suffix('*') {
                    prefixes
                        .entry(prefix.len())
                        .or_default()
                        .entry(prefix.to_owned())
                        .or_insert(i);
                } else {
                    index.exact.entry(d).or_insert(i);
                }
            }
        }
        index.suffixes = suffixes.into_iter().collect();
        index.suffixes.sort_by_key(|e| std::cmp::Reverse(e.0));
        index.prefixes = prefixes.into_iter().collect();
        index.prefixes.sort_by_key(|e| std::cmp::Reverse(e.0));
        index
    }

    /// The virtual host for `authority`.
    pub(crate) fn find(&self, authority: &str, mode: HostPortMode) -> Option<usize> {
        let host = lower(authority);
        match mode {
            HostPortMode::AsIs => self.find_specific(&host).or(self.default),
            HostPortMode::StripAny => self.find_specific(strip_port(&host)).or(self.default),
            HostPortMode::FallbackWithoutPort => self
                .find_specific(&host)
                .or_else(|| {
                    let bare = strip_port(&host);
                    (bare.len() != host.len())
                        .then(|| self.find_specific(bare))
                        .flatten()
                })
                .or(self.default),
        }
    }

    fn find_specific(&self, host: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        for (len, map) in &self.suffixes {
            // The wildcard must match at least one character.
            if *len >= host.len() {
                continue;
            }
            if let Some(tail) = host.get(host.len() - len..)
                && let Some(&i) = map.get(tail)
            {
                return Some(i);
            }
        }
        for (len, map) in &self.prefixes {
            if *len >= host.len() {
                continue;
            }
            if let Some(head) = host.get(..*len)
                && let Some(&i) = map.get(head)
            {
                return Some(i);
            }
        }
        None
    }
}

fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Removes a trailing `:port` (digits only; IPv6 literals keep their brackets), as Envoy's
/// `HeaderUtility::getPortStart`.
pub(crate) fn strip_port(host: &str) -> &str {
    let Some(colon) = host.rfind(':') else {
        return host;
    };
    // `[::1]` without port: the last colon is inside the brackets.
    if host.starts_with('[') && !host[..colon].ends_with(']') {
        return host;
    }
    // An unbracketed IPv6 address has more than one colon and no port.
    if !host.starts_with('[') && host[..colon].contains(':') {
        return host;
    }
    let port = &host[colon + 1..];
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return host;
    }
    &host[..colon]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(vhosts: &[&[&str]]) -> VhostIndex {
        let owned: Vec<Vec<String>> = vhosts
            .iter()
            .map(|ds| ds.iter().map(|d| d.to_string()).collect())
            .collect();
        VhostIndex::new(owned.iter().enumerate().map(|(i, d)| (i, d.as_slice())))
    }

    #[test]
    fn search_order() {
        let idx = index(&[
            &["www.foo.com"],
            &["*.foo.com"],
            &["*-bar.foo.com"],
            &["foo.*"],
            &["foo-b*"],
            &["*"],
        ]);
        let f = |h| idx.find(h, HostPortMode::AsIs);
        assert_eq!(f("www.foo.com"), Some(0));
        assert_eq!(f("WWW.Foo.COM"), Some(0));
        assert_eq!(f("a.foo.com"), Some(1));
        assert_eq!(f("baz-bar.foo.com"), Some(2), "longest suffix first");
        assert_eq!(f("-bar.foo.com"), Some(1), "wildcard never matches empty");
        assert_eq!(f(".foo.com"), Some(5));
        assert_eq!(f("foo.org"), Some(3));
        assert_eq!(f("foo-bar.org"), Some(4), "longest prefix first");
        assert_eq!(f("other"), Some(5));
    }

    #[test]
    fn ports() {
        let idx = index(&[&["a.com"], &["a.com:8080"], &["*.b.com"]]);
        assert_eq!(idx.find("a.com:8080", HostPortMode::AsIs), Some(1));
        assert_eq!(idx.find("a.com:9090", HostPortMode::AsIs), None);
        assert_eq!(
            idx.find("a.com:9090", HostPortMode::FallbackWithoutPort),
            Some(0)
        );
        assert_eq!(
            idx.find("a.com:8080", HostPortMode::FallbackWithoutPort),
            Some(1)
        );
        assert_eq!(idx.find("a.com:8080", HostPortMode::StripAny), Some(0));
        assert_eq!(
            idx.find("x.b.com:1", HostPortMode::AsIs),
            None,
            "the port is part of the host"
        );
        assert_eq!(
            idx.find("x.b.com:1", HostPortMode::FallbackWithoutPort),
            Some(2)
        );
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("h:x"), "h:x");
    }
}
