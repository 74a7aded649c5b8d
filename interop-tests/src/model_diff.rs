//! Field-by-field differences between two client models (what a data plane holds after
//! decoding a control plane's resources), for differential tests of our control plane
//! against istiod.
//!
//! A model object is flattened from its pretty `Debug` form into `path = value` leaves
//! (`circuit_breakers.max_connections = 1024`, `routes[0].action.timeout = Some(15s)`): the
//! model types are plain data whose `Debug` is derived, so this sees every field without a
//! second description of the model to keep in step. Struct fields and map keys name a path
//! segment, list items add `[i]`, tuple wrappers (`Some(..)`, `Arc(..)`) add nothing.
//!
//! ```
//! use mesh_interop_tests::model_diff::flatten;
//!
//! #[derive(Debug)]
//! struct Cb { max_connections: u32, hosts: Vec<&'static str>, timeout: Option<u32> }
//! let flat = flatten(&Cb { max_connections: 2, hosts: vec!["a"], timeout: Some(1) });
//! assert_eq!(flat["max_connections"], "2");
//! assert_eq!(flat["hosts[0]"], "\"a\"");
//! assert_eq!(flat["timeout"], "1");
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Debug};

/// `path -> value` for every leaf of `value`'s pretty `Debug` output.
pub fn flatten(value: &impl Debug) -> BTreeMap<String, String> {
    flatten_text(&format!("{value:#?}"))
}

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// `Name {` or `{`: lines are `key: value`.
    Fields,
    /// `[`: lines are items.
    List,
    /// `Name(`: one wrapped value.
    Tuple,
}

/// [`flatten`] on already formatted text.
pub fn flatten_text(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // (path, scope, next list index)
    let mut stack: Vec<(String, Scope, usize)> = vec![(String::new(), Scope::Tuple, 0)];
    for raw in text.lines() {
        let line = raw.trim().trim_end_matches(',');
        if line.is_empty() {
            continue;
        }
        if matches!(line, "}" | "]" | ")") {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let (parent, scope, index) = stack.last_mut().expect("root never popped");
        let parent = parent.clone();
        let (label, value) = match *scope {
            Scope::Fields => match split_key(line) {
                Some((k, v)) => (join(&parent, k), v),
                None => (parent.clone(), line),
            },
            Scope::List => {
                let i = *index;
                *index += 1;
                (format!("{parent}[{i}]"), line)
            }
            Scope::Tuple => (parent.clone(), line),
        };
        let opened = if value.ends_with('{') {
            Some(Scope::Fields)
        } else if value.ends_with('[') {
            Some(Scope::List)
        } else if value.ends_with('(') {
            Some(Scope::Tuple)
        } else {
            None
        };
        match opened {
            Some(s) => stack.push((label, s, 0)),
            None => {
                out.insert(label, value.to_string());
            }
        }
    }
    out
}

/// `key: value` (a struct field, or a map entry whose key is a quoted string).
fn split_key(line: &str) -> Option<(&str, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let end = rest.find("\": ")?;
        return Some((&rest[..end], &rest[end + 3..]));
    }
    let (k, v) = line.split_once(": ")?;
    k.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some((k, v))
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// One field that differs between two models of the same resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    /// `CDS`, `EDS`, `RDS`, `LDS`.
    pub kind: &'static str,
    /// The resource name.
    pub resource: String,
    /// The field path (see [`flatten`]); empty when the whole resource is on one side only.
    pub path: String,
    /// Our value (`None`: absent).
    pub ours: Option<String>,
    /// The other control plane's value (`None`: absent).
    pub theirs: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(
            f,
            "{} {:?} {}: ours {} / istiod {}",
            self.kind,
            self.resource,
            if self.path.is_empty() {
                "(resource)"
            } else {
                &self.path
            },
            show(&self.ours),
            show(&self.theirs)
        )
    }
}

/// Every differing leaf of two flattened models of `resource`.
pub fn diff(
    kind: &'static str,
    resource: &str,
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    for (path, v) in ours {
        if theirs.get(path) != Some(v) {
            out.push(Difference {
                kind,
                resource: resource.to_string(),
                path: path.clone(),
                ours: Some(v.clone()),
                theirs: theirs.get(path).cloned(),
            });
        }
    }
    for (path, v) in theirs {
        if !ours.contains_key(path) {
            out.push(Difference {
                kind,
                resource: resource.to_string(),
                path: path.clone(),
                ours: None,
                theirs: Some(v.clone()),
            });
        }
    }
    out
}

/// A difference the docs list with its reason: matches a [`Difference`] whose kind is
/// `kind`, whose resource name contains `resource`, and whose path matches `path` (`*`
/// matches any run of characters; `[*]` any list index).
#[derive(Clone, Copy, Debug)]
pub struct Expected {
    /// `CDS`, `EDS`, `RDS`, `LDS`.
    pub kind: &'static str,
    /// A substring of the resource name (`""`: any).
    pub resource: &'static str,
    /// A glob over the path.
    pub path: &'static str,
    /// Why the two control planes differ here (as docs/istio.md says).
    pub reason: &'static str,
}

impl Expected {
    /// Whether this entry explains `d`.
    pub fn explains(&self, d: &Difference) -> bool {
        self.kind == d.kind && d.resource.contains(self.resource) && glob(self.path, &d.path)
    }
}

/// `*` matches any run of characters (including none).
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
        b: Option<Vec<u8>>,
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        items: Vec<Inner>,
        map: BTreeMap<String, u32>,
        empty: Vec<u8>,
    }

    #[test]
    fn flattens_structs_lists_maps_and_wrappers() {
        let v = Outer {
            name: "x: y".into(),
            inner: Some(Inner {
                a: 1,
                b: Some(vec![7, 8]),
            }),
            items: vec![Inner { a: 2, b: None }, Inner { a: 3, b: None }],
            map: BTreeMap::from([("k|1".to_string(), 5)]),
            empty: vec![],
        };
        let f = flatten(&v);
        let want: BTreeMap<String, String> = [
            ("name", "\"x: y\""),
            ("inner.a", "1"),
            ("inner.b[0]", "7"),
            ("inner.b[1]", "8"),
            ("items[0].a", "2"),
            ("items[0].b", "None"),
            ("items[1].a", "3"),
            ("items[1].b", "None"),
            ("map.k|1", "5"),
            ("empty", "[]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(f, want);
    }

    #[test]
    fn diff_reports_changed_missing_and_extra_leaves() {
        let a = flatten_text("X {\n    a: 1,\n    b: 2,\n}");
        let b = flatten_text("X {\n    a: 1,\n    b: 3,\n    c: 4,\n}");
        let d = diff("CDS", "c", &a, &b);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].path, "b");
        assert_eq!(d[1].path, "c");
        assert_eq!(d[1].ours, None);
    }

    #[test]
    fn globs() {
        assert!(glob("a.*.c", "a.b.c"));
        assert!(glob("routes[*].timeout", "routes[12].timeout"));
        assert!(glob("*", ""));
        assert!(!glob("a.*.c", "a.b.d"));
        assert!(!glob("ab*ba", "aba"));
        assert!(glob("exact", "exact"));
    }
}
