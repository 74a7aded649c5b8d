//! Route match conditions, compiled (Envoy's `RouteEntryImplBase::matchRoute` and the
//! per-path-specifier `matches`).

use mesh_core::model::{
    Fraction, HeaderMatchRule, HeaderMatcher, PathMatch, QueryParameterMatcher, Regex, RouteMatch,
};

use crate::RequestView;

#[derive(Debug)]
pub(crate) enum PathCond {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    SeparatedPrefix(String),
}

/// A route's compiled conditions.
#[derive(Debug)]
pub(crate) struct Conditions {
    pub(crate) path: PathCond,
    case_sensitive: bool,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryParameterMatcher>,
    fraction: Option<Fraction>,
    grpc: bool,
}

impl Conditions {
    pub(crate) fn new(m: &RouteMatch) -> Self {
        let path = match &m.path {
            PathMatch::Prefix(p) => PathCond::Prefix(p.clone()),
            PathMatch::Exact(p) => PathCond::Exact(p.clone()),
            PathMatch::Regex(r) => PathCond::Regex(r.clone()),
            PathMatch::PathSeparatedPrefix(p) => PathCond::SeparatedPrefix(p.clone()),
        };
        Self {
            path,
            case_sensitive: m.case_sensitive,
            headers: m.headers.clone(),
            query: m.query_parameters.clone(),
            fraction: m.fraction,
            grpc: m.grpc,
        }
    }

    /// Whether the request matches; on a match returns the part of the path that a
    /// `prefix_rewrite` replaces (Envoy's "matched path").
    /// `path` is `req.path_only()`, computed once per request by the caller.
    pub(crate) fn matches<'r>(
        &self,
        req: &RequestView<'r>,
        path: &str,
        random: u64,
    ) -> Option<&'r str> {
        let matched_len = match &self.path {
            PathCond::Prefix(p) => starts_with(path, p, self.case_sensitive).then_some(p.len()),
            PathCond::Exact(p) => eq(path, p, self.case_sensitive).then_some(p.len()),
            PathCond::Regex(re) => re.is_match(path).then_some(path.len()),
            PathCond::SeparatedPrefix(p) => (starts_with(path, p, self.case_sensitive)
                && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/'))
                .then_some(p.len()),
        }?;
        // Everything else is checked as Envoy's matchRoute does, after the path.
        if self.grpc && !req.is_grpc() {
            return None;
        }
        for h in &self.headers {
            if !header_matches(h, req) {
                return None;
            }
        }
        for q in &self.query {
            let value = req.query_param(&q.name)?;
            if let Some(m) = &q.value
                && !m.matches(value)
            {
                return None;
            }
        }
        if let Some(f) = self.fraction
            && !fraction_hit(f, random)
        {
            return None;
        }
        req.path.get(..matched_len)
    }
}

/// A header condition as Envoy 1.40 evaluates it on a request with several values of the
/// header (one per header line): the rule holds if any single value satisfies it, and
/// `invert_match` negates that. (The differential test against Envoy shows values are not
/// joined with `,` for this.) An absent header fails a value rule, inverted or not, unless
/// `treat_missing_header_as_empty`.
fn header_matches(h: &HeaderMatcher, req: &RequestView<'_>) -> bool {
    if h.name.starts_with(':') || h.name == "host" {
        return h.matches(req.header(&h.name).as_deref());
    }
    if matches!(h.rule, HeaderMatchRule::Present(_)) {
        // Presence only: no need to look at (or join) the values.
        return h.matches(req.headers.contains_key(h.name.as_str()).then_some(""));
    }
    let mut values = req
        .headers
        .get_all(h.name.as_str())
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .peekable();
    if values.peek().is_none() {
        // Envoy's `HeaderDataBaseImpl::matchesHeaders`: an absent header fails a value rule
        // even when inverted (checked against Envoy 1.40 by the differential test).
        return h.treat_missing_header_as_empty && h.matches(Some(""));
    }
    // `matches` applies the inversion; undo it per value, then apply it once.
    values.any(|v| h.matches(Some(v)) != h.invert_match) != h.invert_match
}

/// Envoy's `evaluateFractionalPercent`: `random % denominator < numerator`.
pub(crate) fn fraction_hit(f: Fraction, random: u64) -> bool {
    if f.denominator == 0 {
        return false;
    }
    random % u64::from(f.denominator) < u64::from(f.numerator)
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    let (s, p) = (s.as_bytes(), prefix.as_bytes());
    if case_sensitive {
        s.starts_with(p)
    } else {
        s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)
    }
}

fn eq(a: &str, b: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}
