//! RBAC evaluation on arbitrary policies and requests: the compiled matchers the layer
//! runs (`AuthzPolicies::check`) must not panic and must agree with mesh-core's reference
//! evaluator (`AuthzPolicies::evaluate` over `rbac_request`) on the enforced decision, the
//! shadow decision and the AUDIT match, naming the same policy.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use mesh_authz::{AuthzPolicies, AuthzPolicy, ConnectionAddrs, PolicyAction, rbac_request};
use mesh_core::SpiffeId;
use mesh_core::model::{
    CidrRange, HeaderMatchRule, HeaderMatcher, Permission, Principal, RbacPolicy, Regex,
    StringMatcher,
};
use mesh_tls::PeerIdentity;

const PEERS: [&str; 3] = [
    "spiffe://cluster.local/ns/default/sa/a",
    "spiffe://cluster.local/ns/default/sa/b",
    "spiffe://cluster.local/ns/prod/sa/a",
];

/// Nesting deeper than this becomes `Any` (policies are small; keeps the stack bounded).
const MAX_DEPTH: usize = 6;

#[derive(Arbitrary, Debug)]
enum Str {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(String),
}

impl Str {
    fn build(&self) -> StringMatcher {
        match self {
            Str::Exact(v, ic) => StringMatcher::Exact {
                value: v.clone(),
                ignore_case: *ic,
            },
            Str::Prefix(v, ic) => StringMatcher::Prefix {
                value: v.clone(),
                ignore_case: *ic,
            },
            Str::Suffix(v, ic) => StringMatcher::Suffix {
                value: v.clone(),
                ignore_case: *ic,
            },
            Str::Contains(v, ic) => StringMatcher::Contains {
                value: v.clone(),
                ignore_case: *ic,
            },
            // Short patterns only: regex compilation cost is not what is fuzzed here.
            Str::Regex(p) => match Regex::full(&p.chars().take(24).collect::<String>()) {
                Ok(re) => StringMatcher::Regex(re),
                Err(_) => StringMatcher::Exact {
                    value: p.clone(),
                    ignore_case: false,
                },
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Name {
    Method,
    Path,
    Authority,
    Scheme,
    XA,
    Host,
    Other(String),
}

impl Name {
    /// Policy header names are lowercase in mesh-core's model (the xDS translation and
    /// the compiled matchers lowercase them).
    fn build(&self) -> String {
        match self {
            Name::Method => ":method".into(),
            Name::Path => ":path".into(),
            Name::Authority => ":authority".into(),
            Name::Scheme => ":scheme".into(),
            Name::XA => "x-a".into(),
            Name::Host => "host".into(),
            Name::Other(s) => s.to_ascii_lowercase(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Rule {
    Str(Str),
    Range(i64, i64),
    Present(bool),
}

#[derive(Arbitrary, Debug)]
struct Header {
    name: Name,
    rule: Rule,
    invert: bool,
    missing_as_empty: bool,
}

impl Header {
    fn build(&self) -> HeaderMatcher {
        HeaderMatcher {
            name: self.name.build(),
            rule: match &self.rule {
                Rule::Str(s) => HeaderMatchRule::String(s.build()),
                Rule::Range(start, end) => HeaderMatchRule::Range {
                    start: *start,
                    end: *end,
                },
                Rule::Present(p) => HeaderMatchRule::Present(*p),
            },
            invert_match: self.invert,
            treat_missing_header_as_empty: self.missing_as_empty,
        }
    }
}

fn cidr(ip: [u8; 4], len: u8) -> CidrRange {
    let ip = IpAddr::from(ip);
    CidrRange::new(ip, len % 33).expect("a prefix length of at most 32")
}

#[derive(Arbitrary, Debug)]
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(Header),
    UrlPath(Str),
    DestinationIp([u8; 4], u8),
    DestinationPort(u16),
    DestinationPortRange(u16, u16),
    ServerName(Str),
}

impl Perm {
    fn build(&self, depth: usize) -> Permission {
        if depth > MAX_DEPTH {
            return Permission::Any;
        }
        let all = |v: &[Perm]| v.iter().map(|p| p.build(depth + 1)).collect();
        match self {
            Perm::Any => Permission::Any,
            Perm::And(v) => Permission::And(all(v)),
            Perm::Or(v) => Permission::Or(all(v)),
            Perm::Not(p) => Permission::Not(Box::new(p.build(depth + 1))),
            Perm::Header(h) => Permission::Header(h.build()),
            Perm::UrlPath(s) => Permission::UrlPath(s.build()),
            Perm::DestinationIp(ip, len) => Permission::DestinationIp(cidr(*ip, *len)),
            Perm::DestinationPort(p) => Permission::DestinationPort(*p),
            Perm::DestinationPortRange(start, end) => Permission::DestinationPortRange {
                start: *start,
                end: *end,
            },
            Perm::ServerName(s) => Permission::RequestedServerName(s.build()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Princ {
    Any,
    And(Vec<Princ>),
    Or(Vec<Princ>),
    Not(Box<Princ>),
    Authenticated(Option<Str>),
    /// An exact known SPIFFE ID (what the caller index covers).
    Peer(u8),
    DirectRemoteIp([u8; 4], u8),
    RemoteIp([u8; 4], u8),
    Header(Header),
    UrlPath(Str),
}

impl Princ {
    fn build(&self, depth: usize) -> Principal {
        if depth > MAX_DEPTH {
            return Principal::Any;
        }
        let all = |v: &[Princ]| v.iter().map(|p| p.build(depth + 1)).collect();
        match self {
            Princ::Any => Principal::Any,
            Princ::And(v) => Principal::And(all(v)),
            Princ::Or(v) => Principal::Or(all(v)),
            Princ::Not(p) => Principal::Not(Box::new(p.build(depth + 1))),
            Princ::Authenticated(m) => Principal::Authenticated(m.as_ref().map(Str::build)),
            Princ::Peer(i) => mesh_authz::principal::spiffe_id(PEERS[usize::from(*i) % 3]),
            Princ::DirectRemoteIp(ip, len) => Principal::DirectRemoteIp(cidr(*ip, *len)),
            Princ::RemoteIp(ip, len) => Principal::RemoteIp(cidr(*ip, *len)),
            Princ::Header(h) => Principal::Header(h.build()),
            Princ::UrlPath(s) => Principal::UrlPath(s.build()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Policy {
    action: u8,
    dry_run: bool,
    permissions: Vec<Perm>,
    principals: Vec<Princ>,
}

#[derive(Arbitrary, Debug)]
enum Peer {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: Option<String>,
    path: String,
    authority: Option<String>,
    headers: Vec<(Name, Vec<u8>)>,
    peer: Option<Peer>,
    addrs: Option<([u8; 4], u16, [u8; 4], u16)>,
}

impl Req {
    /// `None` when `http` refuses the parts (such requests never reach a server).
    fn build(&self) -> Option<Request<()>> {
        let method = match &self.method {
            None => Method::GET,
            Some(m) => Method::from_bytes(m.as_bytes()).ok()?,
        };
        let uri = match &self.authority {
            Some(a) => format!("http://{a}/{}", self.path),
            None => format!("/{}", self.path),
        };
        let mut req = Request::builder().method(method).uri(uri).body(()).ok()?;
        for (name, value) in self.headers.iter().take(8) {
            let name = HeaderName::from_bytes(name.build().as_bytes()).ok()?;
            req.headers_mut()
                .append(name, HeaderValue::from_bytes(value).ok()?);
        }
        match &self.peer {
            None => {}
            Some(Peer::Known(i)) => {
                let id = SpiffeId::new(PEERS[usize::from(*i) % 3]).ok()?;
                req.extensions_mut().insert(PeerIdentity(id));
            }
            Some(Peer::Other(s)) => {
                let id = SpiffeId::new(s).ok()?;
                req.extensions_mut().insert(PeerIdentity(id));
            }
        }
        if let Some((rip, rport, lip, lport)) = self.addrs {
            req.extensions_mut().insert(ConnectionAddrs {
                remote: SocketAddr::new(Ipv4Addr::from(rip).into(), rport),
                local: SocketAddr::new(Ipv4Addr::from(lip).into(), lport),
            });
        }
        Some(req)
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    policies: Vec<Policy>,
    request: Req,
}

fuzz_target!(|input: Input| {
    let Some(req) = input.request.build() else {
        return;
    };
    let policies = AuthzPolicies::new(input.policies.iter().take(8).enumerate().map(|(i, p)| {
        let name = format!("p{i}");
        let action = match p.action % 3 {
            0 => PolicyAction::Allow,
            1 => PolicyAction::Deny,
            _ => PolicyAction::Audit,
        };
        let rbac = RbacPolicy {
            name: name.clone(),
            permissions: p.permissions.iter().map(|x| x.build(0)).collect(),
            principals: p.principals.iter().map(|x| x.build(0)).collect(),
        };
        let policy = AuthzPolicy::new(name, action, rbac);
        if p.dry_run { policy.dry_run() } else { policy }
    }));
    let fast = policies.check(&req);
    rbac_request(&req, |r| {
        assert_eq!(fast.decision, policies.evaluate(r), "enforced decision");
        assert_eq!(fast.shadow, policies.evaluate_shadow(r), "shadow decision");
        assert_eq!(fast.audit, policies.audit_match(r), "audit match");
    });
});
