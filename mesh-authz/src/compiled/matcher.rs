//! Matchers compiled from mesh-core's RBAC model: header names resolved to a request field
//! or a per-request cache slot, case-insensitive values lowercased once, and no allocation
//! when matching.

use std::net::IpAddr;

use http::HeaderName;
use mesh_core::model::{
    CidrRange, HeaderMatchRule, HeaderMatcher, Permission, Principal, Regex, StringMatcher,
};

use super::view::{RequestView, SLOTS};

/// A compiled [`StringMatcher`]; `*NoCase` values are stored lowercase.
#[derive(Clone, Debug)]
pub(crate) enum Str {
    Exact(Box<str>),
    ExactNoCase(Box<str>),
    Prefix(Box<str>),
    PrefixNoCase(Box<str>),
    Suffix(Box<str>),
    SuffixNoCase(Box<str>),
    Contains(Box<str>),
    ContainsNoCase(Box<[u8]>),
    Regex(Regex),
}

impl Str {
    fn compile(m: &StringMatcher) -> Self {
        let lower = |v: &str| v.to_ascii_lowercase().into_boxed_str();
        match m {
            StringMatcher::Exact { value, ignore_case } if *ignore_case => {
                Self::ExactNoCase(lower(value))
            }
            StringMatcher::Exact { value, .. } => Self::Exact(value.as_str().into()),
            StringMatcher::Prefix { value, ignore_case } if *ignore_case => {
                Self::PrefixNoCase(lower(value))
            }
            StringMatcher::Prefix { value, .. } => Self::Prefix(value.as_str().into()),
            StringMatcher::Suffix { value, ignore_case } if *ignore_case => {
                Self::SuffixNoCase(lower(value))
            }
            StringMatcher::Suffix { value, .. } => Self::Suffix(value.as_str().into()),
            StringMatcher::Contains { value, ignore_case } if *ignore_case => {
                Self::ContainsNoCase(value.to_ascii_lowercase().into_bytes().into())
            }
            StringMatcher::Contains { value, .. } => Self::Contains(value.as_str().into()),
            StringMatcher::Regex(re) => Self::Regex(re.clone()),
        }
    }

    /// Same result as [`StringMatcher::matches`]. Byte comparisons are enough: a match of
    /// valid UTF-8 (ASCII case folded) always ends on a character boundary.
    pub(crate) fn matches(&self, input: &str) -> bool {
        let b = input.as_bytes();
        match self {
            // SPIFFE IDs and paths share long prefixes (`spiffe://cluster.local/ns/...`):
            // comparing the last byte first rejects most candidates without a memcmp.
            Self::Exact(v) => {
                b.len() == v.len() && b.last() == v.as_bytes().last() && input == &**v
            }
            Self::ExactNoCase(v) => input.eq_ignore_ascii_case(v),
            Self::Prefix(v) => {
                b.len() >= v.len()
                    && (v.is_empty() || b[v.len() - 1] == v.as_bytes()[v.len() - 1])
                    && b.starts_with(v.as_bytes())
            }
            Self::PrefixNoCase(v) => {
                b.len() >= v.len() && b[..v.len()].eq_ignore_ascii_case(v.as_bytes())
            }
            Self::Suffix(v) => b.ends_with(v.as_bytes()),
            Self::SuffixNoCase(v) => {
                b.len() >= v.len() && b[b.len() - v.len()..].eq_ignore_ascii_case(v.as_bytes())
            }
            Self::Contains(v) => input.contains(&**v),
            Self::ContainsNoCase(v) => {
                v.is_empty() || b.windows(v.len()).any(|w| w.eq_ignore_ascii_case(v))
            }
            Self::Regex(re) => re.is_match(input),
        }
    }

    /// A rough evaluation cost, to evaluate cheap matchers first.
    fn cost(&self) -> u32 {
        match self {
            Self::Regex(_) => 16,
            Self::ContainsNoCase(_) | Self::Contains(_) => 4,
            _ => 2,
        }
    }

    /// The exact, case-sensitive value, if that is what this matcher is.
    fn exact(&self) -> Option<&str> {
        match self {
            Self::Exact(v) => Some(v),
            _ => None,
        }
    }
}

/// Where a header matcher finds its value.
#[derive(Clone, Debug)]
enum HeaderRef {
    Method,
    Path,
    Authority,
    /// A regular header whose lookup is cached per request in this slot.
    Slot(usize, HeaderName),
    /// A regular header beyond the cache's slots: looked up on every use.
    Uncached(HeaderName),
    /// A name no request can carry (another pseudo-header, invalid characters).
    Absent,
}

#[derive(Clone, Debug)]
enum Rule {
    Str(Str),
    Range(i64, i64),
    Present(bool),
}

/// A compiled [`HeaderMatcher`].
#[derive(Clone, Debug)]
pub(crate) struct Header {
    target: HeaderRef,
    rule: Rule,
    invert: bool,
    missing_as_empty: bool,
}

impl Header {
    fn compile(h: &HeaderMatcher, names: &mut Names) -> Self {
        let rule = match &h.rule {
            HeaderMatchRule::String(m) => Rule::Str(Str::compile(m)),
            HeaderMatchRule::Range { start, end } => Rule::Range(*start, *end),
            HeaderMatchRule::Present(p) => Rule::Present(*p),
        };
        Self {
            target: names.resolve(&h.name),
            rule,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        }
    }

    fn cost(&self) -> u32 {
        let lookup = match self.target {
            HeaderRef::Slot(..) | HeaderRef::Uncached(_) => 4,
            _ => 0,
        };
        lookup
            + match &self.rule {
                Rule::Str(m) => m.cost(),
                Rule::Range(..) => 4,
                Rule::Present(_) => 1,
            }
    }

    /// Same result as [`HeaderMatcher::matches`] on the view's header.
    fn matches(&self, view: &RequestView<'_>) -> bool {
        match &self.target {
            HeaderRef::Method => self.matches_value(Some(view.method)),
            HeaderRef::Path => self.matches_value(Some(view.path)),
            HeaderRef::Authority => self.matches_value(view.authority),
            HeaderRef::Slot(i, name) => self.matches_value(view.slot(*i, name)),
            HeaderRef::Uncached(name) => self.matches_value(view.lookup(name).as_deref()),
            HeaderRef::Absent => self.matches_value(None),
        }
    }

    fn matches_value(&self, value: Option<&str>) -> bool {
        let value = match value {
            None if self.missing_as_empty => Some(""),
            v => v,
        };
        let hit = match (&self.rule, value) {
            (Rule::Present(want), v) => v.is_some() == *want,
            (_, None) => return false,
            (Rule::Str(m), Some(v)) => m.matches(v),
            (Rule::Range(start, end), Some(v)) => v
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| n >= *start && n < *end),
        };
        hit != self.invert
    }
}

/// Header names seen while compiling a policy set, each given a cache slot.
#[derive(Debug, Default)]
pub(crate) struct Names {
    slots: Vec<HeaderName>,
}

impl Names {
    /// Lowercases `name` (Envoy's header names are case-insensitive) and resolves it.
    fn resolve(&mut self, name: &str) -> HeaderRef {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            ":method" => return HeaderRef::Method,
            ":path" => return HeaderRef::Path,
            ":authority" => return HeaderRef::Authority,
            _ => {}
        }
        let Ok(name) = HeaderName::from_bytes(lower.as_bytes()) else {
            return HeaderRef::Absent;
        };
        if let Some(i) = self.slots.iter().position(|n| *n == name) {
            return HeaderRef::Slot(i, name);
        }
        if self.slots.len() < SLOTS {
            self.slots.push(name.clone());
            return HeaderRef::Slot(self.slots.len() - 1, name);
        }
        HeaderRef::Uncached(name)
    }
}

/// A compiled [`Permission`].
#[derive(Clone, Debug)]
pub(crate) enum Perm {
    Any,
    And(Box<[Perm]>),
    Or(Box<[Perm]>),
    Not(Box<Perm>),
    Header(Header),
    UrlPath(Str),
    DestinationIp(CidrRange),
    DestinationPort(u16),
    DestinationPortRange(u16, u16),
    ServerName(Str),
}

impl Perm {
    pub(crate) fn compile(p: &Permission, names: &mut Names) -> Self {
        // Matchers are pure, so And/Or children can run cheapest first.
        let all = |v: &[Permission], names: &mut Names| -> Box<[Perm]> {
            let mut all: Vec<Perm> = v.iter().map(|p| Self::compile(p, names)).collect();
            all.sort_by_key(Perm::cost);
            all.into()
        };
        match p {
            Permission::Any => Self::Any,
            Permission::And(v) => Self::And(all(v, names)),
            Permission::Or(v) => Self::Or(all(v, names)),
            Permission::Not(p) => Self::Not(Box::new(Self::compile(p, names))),
            Permission::Header(h) => Self::Header(Header::compile(h, names)),
            Permission::UrlPath(m) => Self::UrlPath(Str::compile(m)),
            Permission::DestinationIp(c) => Self::DestinationIp(*c),
            Permission::DestinationPort(p) => Self::DestinationPort(*p),
            Permission::DestinationPortRange { start, end } => {
                Self::DestinationPortRange(*start, *end)
            }
            Permission::RequestedServerName(m) => Self::ServerName(Str::compile(m)),
        }
    }

    /// A rough evaluation cost, to evaluate cheap matchers first.
    pub(crate) fn cost(&self) -> u32 {
        match self {
            Self::Any => 0,
            Self::And(v) | Self::Or(v) => v.iter().map(Self::cost).sum(),
            Self::Not(p) => p.cost(),
            Self::Header(h) => h.cost(),
            Self::UrlPath(m) | Self::ServerName(m) => m.cost(),
            Self::DestinationIp(_) | Self::DestinationPort(_) | Self::DestinationPortRange(..) => 1,
        }
    }

    pub(crate) fn matches(&self, view: &RequestView<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::And(v) => v.iter().all(|p| p.matches(view)),
            Self::Or(v) => v.iter().any(|p| p.matches(view)),
            Self::Not(p) => !p.matches(view),
            Self::Header(h) => h.matches(view),
            Self::UrlPath(m) => m.matches(view.path_without_query),
            Self::DestinationIp(c) => view.destination.is_some_and(|d| c.contains(d.0)),
            Self::DestinationPort(p) => view.destination.is_some_and(|d| d.1 == *p),
            Self::DestinationPortRange(start, end) => view
                .destination
                .is_some_and(|d| d.1 >= *start && d.1 < *end),
            Self::ServerName(m) => m.matches(view.server_name.unwrap_or("")),
        }
    }
}

/// A compiled [`Principal`].
#[derive(Clone, Debug)]
pub(crate) enum Princ {
    Any,
    And(Box<[Princ]>),
    Or(Box<[Princ]>),
    Not(Box<Princ>),
    Authenticated,
    Peer(Str),
    DirectRemoteIp(CidrRange),
    RemoteIp(CidrRange),
    Header(Header),
    UrlPath(Str),
}

impl Princ {
    pub(crate) fn compile(p: &Principal, names: &mut Names) -> Self {
        let all = |v: &[Principal], names: &mut Names| -> Box<[Princ]> {
            let mut all: Vec<Princ> = v.iter().map(|p| Self::compile(p, names)).collect();
            all.sort_by_key(Princ::cost);
            all.into()
        };
        match p {
            Principal::Any => Self::Any,
            Principal::And(v) => Self::And(all(v, names)),
            Principal::Or(v) => Self::Or(all(v, names)),
            Principal::Not(p) => Self::Not(Box::new(Self::compile(p, names))),
            Principal::Authenticated(None) => Self::Authenticated,
            Principal::Authenticated(Some(m)) => Self::Peer(Str::compile(m)),
            Principal::DirectRemoteIp(c) => Self::DirectRemoteIp(*c),
            Principal::RemoteIp(c) => Self::RemoteIp(*c),
            Principal::Header(h) => Self::Header(Header::compile(h, names)),
            Principal::UrlPath(m) => Self::UrlPath(Str::compile(m)),
        }
    }

    /// A rough evaluation cost, to evaluate cheap matchers first.
    pub(crate) fn cost(&self) -> u32 {
        match self {
            Self::Any => 0,
            Self::And(v) | Self::Or(v) => v.iter().map(Self::cost).sum(),
            Self::Not(p) => p.cost(),
            Self::Authenticated | Self::DirectRemoteIp(_) | Self::RemoteIp(_) => 1,
            Self::Peer(m) | Self::UrlPath(m) => m.cost(),
            Self::Header(h) => h.cost(),
        }
    }

    pub(crate) fn matches(&self, view: &RequestView<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::And(v) => v.iter().all(|p| p.matches(view)),
            Self::Or(v) => v.iter().any(|p| p.matches(view)),
            Self::Not(p) => !p.matches(view),
            Self::Authenticated => view.peer.is_some(),
            Self::Peer(m) => view.peer.is_some_and(|p| m.matches(p)),
            Self::DirectRemoteIp(c) => view.peer_ip.is_some_and(|ip| c.contains(ip)),
            Self::RemoteIp(c) => view
                .remote_ip
                .or(view.peer_ip)
                .is_some_and(|ip: IpAddr| c.contains(ip)),
            Self::Header(h) => h.matches(view),
            Self::UrlPath(m) => m.matches(view.path_without_query),
        }
    }

    /// The exact peer IDs this principal can match, when it can only match those
    /// (`None`: it may match other callers too, or plaintext ones).
    pub(crate) fn exact_peers<'p>(&'p self, out: &mut Vec<&'p str>) -> bool {
        match self {
            Self::Peer(m) => match m.exact() {
                Some(v) => {
                    out.push(v);
                    true
                }
                None => false,
            },
            // Matching an Or needs one child to match: every child must be exact.
            Self::Or(v) => v.iter().all(|p| p.exact_peers(out)),
            // Matching an And needs every child to match: one exact child is enough.
            Self::And(v) => v.iter().any(|p| {
                let before = out.len();
                let exact = p.exact_peers(out);
                if !exact {
                    out.truncate(before);
                }
                exact
            }),
            _ => false,
        }
    }
}
