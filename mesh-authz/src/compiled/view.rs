//! The per-request view the compiled matchers read: the request's fields resolved once, and
//! a lazily filled cache for the regular headers the policies name. Building it allocates
//! nothing; only a header repeated in the request, once a policy asks for it, allocates
//! its `,`-joined value.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Request};
use mesh_core::extensions::{ConnectionAddrs, MeshConnectInfo, PeerIdentity};

/// Distinct regular header names whose lookups are cached per request; further names are
/// looked up on every use (still correct, just slower).
pub(crate) const SLOTS: usize = 16;

/// What the compiled matchers see of one request (the same facts as
/// [`crate::rbac_request`] gives mesh-core's evaluator).
pub(crate) struct RequestView<'r> {
    pub(crate) method: &'r str,
    /// Path with query (`:path`).
    pub(crate) path: &'r str,
    pub(crate) path_without_query: &'r str,
    pub(crate) authority: Option<&'r str>,
    pub(crate) peer: Option<&'r str>,
    pub(crate) peer_ip: Option<IpAddr>,
    pub(crate) remote_ip: Option<IpAddr>,
    pub(crate) destination: Option<(IpAddr, u16)>,
    pub(crate) server_name: Option<&'r str>,
    headers: &'r HeaderMap,
    slots: [OnceCell<Option<Cow<'r, str>>>; SLOTS],
}

impl<'r> RequestView<'r> {
    pub(crate) fn new<B>(req: &'r Request<B>) -> Self {
        let headers = req.headers();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let path_without_query = path.split(['?', '#']).next().unwrap_or(path);
        let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let ext = req.extensions();
        let connect = ext.get::<MeshConnectInfo>();
        let peer = ext
            .get::<PeerIdentity>()
            .or_else(|| connect.map(|c| &c.peer));
        let (remote, local) = match ext.get::<ConnectionAddrs>() {
            Some(a) => (Some(a.remote), Some(a.local)),
            None => (
                connect.and_then(|c| c.remote_addr),
                connect.and_then(|c| c.local_addr),
            ),
        };
        Self {
            method: req.method().as_str(),
            path,
            path_without_query,
            authority,
            peer: peer.map(|p| p.id().as_str()),
            peer_ip: remote.map(|a| a.ip()),
            remote_ip: None,
            destination: local.map(|a| (a.ip(), a.port())),
            server_name: None,
            headers,
            slots: [const { OnceCell::new() }; SLOTS],
        }
    }

    /// The value of the regular header cached in slot `i`.
    pub(crate) fn slot(&self, i: usize, name: &HeaderName) -> Option<&str> {
        match self.slots.get(i) {
            Some(cell) => cell.get_or_init(|| self.lookup(name)).as_deref(),
            None => None,
        }
    }

    /// A regular header's value: repeated values joined with `,` (Envoy's view), values
    /// that are not UTF-8 left out; a lone non-UTF-8 value counts as absent.
    pub(crate) fn lookup(&self, name: &HeaderName) -> Option<Cow<'r, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let Some(second) = values.next() else {
            return std::str::from_utf8(first.as_bytes())
                .ok()
                .map(Cow::Borrowed);
        };
        let mut joined = String::new();
        let utf8 = [first, second]
            .into_iter()
            .chain(values)
            .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok());
        for (i, v) in utf8.enumerate() {
            if i > 0 {
                joined.push(',');
            }
            joined.push_str(v);
        }
        Some(Cow::Owned(joined))
    }
}
