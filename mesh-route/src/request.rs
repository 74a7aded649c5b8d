//! The view of a request that routing and hashing read: authority, path, method, scheme,
//! headers and the peer address, borrowed from the caller (no copies).

use std::borrow::Cow;
use std::net::SocketAddr;

use http::HeaderMap;

/// What the router and the hash policies read from a request.
///
/// Build it from `http::request::Parts` with [`RequestView::from_parts`], or field by field
/// in tests and benches with [`RequestView::new`].
///
/// ```
/// let headers = http::HeaderMap::new();
/// let view = mesh_route::RequestView::new("example.com", "/a?b=1", &headers);
/// assert_eq!(view.path_only(), "/a");
/// assert_eq!(view.query(), Some("b=1"));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:scheme` (`http` or `https`).
    pub scheme: &'a str,
    /// `:authority` (or `Host`), port included when the client sent one.
    pub authority: &'a str,
    /// `:path`: path and query as sent.
    pub path: &'a str,
    /// Request headers (without pseudo-headers).
    pub headers: &'a HeaderMap,
    /// The downstream peer address, for source-IP hashing.
    pub source: Option<SocketAddr>,
}

impl<'a> RequestView<'a> {
    /// A `GET` over `http` with no peer address.
    pub fn new(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> Self {
        Self {
            method: "GET",
            scheme: "http",
            authority,
            path,
            headers,
            source: None,
        }
    }

    /// Reads the method, scheme, authority (URI first, then `Host`) and path of a request.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| std::str::from_utf8(h.as_bytes()).ok())
            })
            .unwrap_or("");
        Self {
            method: parts.method.as_str(),
            scheme: parts.uri.scheme_str().unwrap_or("http"),
            authority,
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: &parts.headers,
            source: None,
        }
    }

    /// Sets the peer address.
    pub fn with_source(mut self, source: SocketAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Sets the method.
    pub fn with_method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }

    /// Sets the scheme.
    pub fn with_scheme(mut self, scheme: &'a str) -> Self {
        self.scheme = scheme;
        self
    }

    /// The path without query string and fragment (Envoy's `removeQueryAndFragment`).
    pub fn path_only(&self) -> &'a str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }

    /// The raw query string after the first `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The first value of query parameter `name`, undecoded (Envoy's `parseQueryString` +
    /// `getFirstValue`); a parameter without `=` has the empty value.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        let query = self.query()?;
        query
            .split('&')
            .find_map(|pair| match pair.split_once('=') {
                Some((k, v)) if k == name => Some(v),
                None if pair == name => Some(""),
                _ => None,
            })
    }

    /// A header's value as Envoy's matchers see it: every value joined with `,`;
    /// pseudo-headers (`:authority`/`host`, `:path`, `:method`, `:scheme`) come from the view.
    /// `name` must be lowercase. Values that are not UTF-8 are skipped.
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        match name {
            ":authority" | "host" => return Some(Cow::Borrowed(self.authority)),
            ":path" => return Some(Cow::Borrowed(self.path)),
            ":method" => return Some(Cow::Borrowed(self.method)),
            ":scheme" => return Some(Cow::Borrowed(self.scheme)),
            _ => {}
        }
        let mut values = self
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = String::with_capacity(first.len() + second.len() + 1);
                joined.push_str(first);
                joined.push(',');
                joined.push_str(second);
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    /// The first value of a header, as UTF-8.
    pub fn first_header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    /// Whether the request is gRPC (`content-type: application/grpc`, `+proto`, `;...`).
    pub fn is_grpc(&self) -> bool {
        self.first_header("content-type").is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parts_reads_uri_then_host() {
        let (absolute, _) = http::Request::get("https://api.example.com:8443/a/b?x=1")
            .header("host", "ignored")
            .body(())
            .unwrap()
            .into_parts();
        let v = RequestView::from_parts(&absolute);
        assert_eq!(v.authority, "api.example.com:8443");
        assert_eq!(v.scheme, "https");
        assert_eq!(v.path, "/a/b?x=1");
        let (origin, _) = http::Request::post("/p")
            .header("host", "svc:80")
            .body(())
            .unwrap()
            .into_parts();
        let v = RequestView::from_parts(&origin);
        assert_eq!(
            (v.authority, v.scheme, v.method, v.path),
            ("svc:80", "http", "POST", "/p")
        );
    }

    #[test]
    fn query_and_headers() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.insert(
            "content-type",
            "application/grpc;charset=utf-8".parse().unwrap(),
        );
        let v = RequestView::new("h", "/p?a=1&flag&a=2&b=%41", &h);
        assert_eq!(v.path_only(), "/p");
        assert_eq!(v.query_param("a"), Some("1"), "first value wins");
        assert_eq!(v.query_param("flag"), Some(""));
        assert_eq!(v.query_param("b"), Some("%41"), "undecoded, as Envoy");
        assert_eq!(v.query_param("c"), None);
        assert_eq!(v.header("x-a").as_deref(), Some("1,2"));
        assert_eq!(v.header(":authority").as_deref(), Some("h"));
        assert_eq!(v.header("x-none"), None);
        assert!(v.is_grpc());
        assert_eq!(RequestView::new("h", "/", &h).query(), None);
    }
}
