//! Path rewrites and redirect locations, as Envoy builds them
//! (`rewritePathByPrefixOrRegex`, `Http::Utility::newUri`, `processRequestHost`).

use mesh_core::model::{PathRedirect, Redirect, RegexRewrite};

use crate::RequestView;

/// Rewrites `path` (with its query) after a match of `matched`: a prefix rewrite replaces
/// the matched part and keeps the rest (query included); a regex rewrite substitutes in the
/// path without its query and keeps the query. `None`: nothing to do (or the regex produced
/// an empty path, which Envoy ignores).
pub(crate) fn rewrite_path(
    path: &str,
    matched: &str,
    prefix: Option<&str>,
    regex: Option<&RegexRewrite>,
) -> Option<String> {
    if let Some(prefix) = prefix {
        let rest = path.get(matched.len()..).unwrap_or("");
        let mut out = String::with_capacity(prefix.len() + rest.len());
        out.push_str(prefix);
        out.push_str(rest);
        return Some(out);
    }
    let regex = regex?;
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let new_path = regex.apply(&path[..end]);
    if new_path.is_empty() {
        return None;
    }
    let mut out = new_path;
    out.push_str(&path[end..]);
    Some(out)
}

/// The `Location` of a redirect.
pub(crate) fn location(r: &Redirect, req: &RequestView<'_>, matched: &str) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(req.scheme);
    let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
    let host = match &r.host {
        Some(h) => h.as_str(),
        None => request_host(req, scheme, !port.is_empty()),
    };
    // prefix/regex rewrites act on the request path first, as the router filter does.
    let rewritten = match &r.path {
        Some(PathRedirect::PrefixRewrite(p)) => rewrite_path(req.path, matched, Some(p), None),
        Some(PathRedirect::RegexRewrite(re)) => rewrite_path(req.path, matched, None, Some(re)),
        _ => None,
    };
    let current = rewritten.as_deref().unwrap_or(req.path);
    let mut path_has_query_from_config = false;
    let mut path = match &r.path {
        Some(PathRedirect::Path(p)) if p.contains('?') => {
            path_has_query_from_config = true;
            p.clone()
        }
        Some(PathRedirect::Path(p)) => match current.find('?') {
            Some(q) => format!("{p}{}", &current[q..]),
            None => p.clone(),
        },
        _ => current.to_owned(),
    };
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if r.strip_query
        && !path_has_query_from_config
        && let Some(q) = path.find('?')
    {
        path.truncate(q);
    }
    format!("{scheme}://{host}{port}{path}")
}

/// The request's host for a redirect, without its port when a new port is set or when the
/// scheme changes away from the port's default.
fn request_host<'a>(req: &RequestView<'a>, new_scheme: &str, new_port: bool) -> &'a str {
    let host = req.authority;
    if host.is_empty() {
        return host;
    }
    let end = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    let Some(end) = end else {
        return host;
    };
    let port = &host[end..];
    let proto = req.first_header("x-forwarded-proto").unwrap_or(req.scheme);
    let mut remove = new_port;
    if new_scheme != proto {
        remove |= proto.eq_ignore_ascii_case("https") && port == ":443";
        remove |= proto.eq_ignore_ascii_case("http") && port == ":80";
    }
    if remove { &host[..end] } else { host }
}
