//! Per-resource rules for `PeerAuthentication` and `AuthorizationPolicy`.

use super::super::api::{
    Action, AuthorizationPolicy, Condition, LabelSelector, MtlsMode, Operation, PeerAuthentication,
    Source,
};
use super::Errs;
use super::names::{check_ip_or_cidr, check_labels, is_dns_label};

/// Attributes a `when` condition may test (the ones an mTLS-only data plane knows).
const CONDITION_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

fn selector(f: &str, sel: &Option<LabelSelector>, errs: &mut Errs<'_>) {
    if let Some(s) = sel {
        check_labels(&format!("{f}.matchLabels"), &s.match_labels, errs);
    }
}

pub(crate) fn peer_authentication(pa: &PeerAuthentication, errs: &mut Errs<'_>) {
    selector("spec.selector", &pa.selector, errs);
    if !pa.port_level_mtls.is_empty() {
        let has_selector = pa
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !has_selector {
            errs.push(
                "spec.portLevelMtls",
                "portLevelMtls needs a workload selector",
            );
        }
        for (port, m) in &pa.port_level_mtls {
            let f = format!("spec.portLevelMtls.{}", port.0);
            if !(1..=65535).contains(&port.0) {
                errs.push(&f, format!("port {} is out of range 1..=65535", port.0));
            }
            if m.mode == MtlsMode::Unset {
                errs.push(format!("{f}.mode"), "a port-level mode must be set");
            }
        }
    }
}

pub(crate) fn authorization_policy(ap: &AuthorizationPolicy, errs: &mut Errs<'_>) {
    selector("spec.selector", &ap.selector, errs);
    errs.unsupported("spec.targetRef", &ap.target_ref);
    errs.unsupported("spec.targetRefs", &ap.target_refs);
    errs.unsupported("spec.provider", &ap.provider);
    if ap.action == Action::Custom {
        errs.push(
            "spec.action",
            "action CUSTOM (external authorization) is not supported: use ALLOW, DENY or AUDIT",
        );
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            source(&format!("{f}.from[{j}].source"), &from.source, errs);
        }
        for (j, to) in rule.to.iter().enumerate() {
            operation(&format!("{f}.to[{j}].operation"), &to.operation, errs);
        }
        for (j, c) in rule.when.iter().enumerate() {
            condition(&format!("{f}.when[{j}]"), c, errs);
        }
    }
}

/// `*` alone, or at most one `*` at the start or the end.
fn wildcard_ok(v: &str) -> bool {
    let stars = v.matches('*').count();
    stars == 0 || (stars == 1 && (v.starts_with('*') || v.ends_with('*')))
}

fn principal(f: &str, p: &str, errs: &mut Errs<'_>) {
    if p.is_empty() {
        errs.push(f, "principal must not be empty");
    } else if p.starts_with("spiffe://") {
        errs.push(
            f,
            format!(
                "invalid principal `{p}`: write it without `spiffe://` \
                 (like `cluster.local/ns/default/sa/productpage`)"
            ),
        );
    } else if !wildcard_ok(p) {
        errs.push(
            f,
            format!("invalid principal `{p}`: `*` is only allowed as a prefix or suffix"),
        );
    } else if !p.contains('*') {
        if let Err(e) = mesh_core::SpiffeId::new(&format!("spiffe://{p}")) {
            errs.push(f, format!("invalid principal `{p}`: {e}"));
        } else if !p.contains("/ns/") || !p.contains("/sa/") {
            errs.push(
                f,
                format!(
                    "invalid principal `{p}`: expected <trust domain>/ns/<namespace>/sa/<account>"
                ),
            );
        }
    }
}

fn namespace(f: &str, n: &str, errs: &mut Errs<'_>) {
    let ok = if n == "*" {
        true
    } else if wildcard_ok(n) {
        let bare = n.trim_matches('*');
        !bare.is_empty()
            && bare
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && (n.contains('*') || is_dns_label(n))
    } else {
        false
    };
    if !ok {
        errs.push(f, format!("invalid namespace `{n}`"));
    }
}

fn source(f: &str, s: &Source, errs: &mut Errs<'_>) {
    errs.unsupported(&format!("{f}.requestPrincipals"), &s.request_principals);
    errs.unsupported(
        &format!("{f}.notRequestPrincipals"),
        &s.not_request_principals,
    );
    errs.unsupported(&format!("{f}.remoteIpBlocks"), &s.remote_ip_blocks);
    errs.unsupported(&format!("{f}.notRemoteIpBlocks"), &s.not_remote_ip_blocks);
    errs.unsupported(&format!("{f}.serviceAccounts"), &s.service_accounts);
    errs.unsupported(&format!("{f}.notServiceAccounts"), &s.not_service_accounts);
    errs.unsupported(&format!("{f}.trustDomains"), &s.trust_domains);
    errs.unsupported(&format!("{f}.notTrustDomains"), &s.not_trust_domains);
    let lists = [
        &s.principals,
        &s.not_principals,
        &s.namespaces,
        &s.not_namespaces,
        &s.ip_blocks,
        &s.not_ip_blocks,
    ];
    let any_unsupported = s.request_principals.is_some()
        || s.not_request_principals.is_some()
        || s.remote_ip_blocks.is_some()
        || s.not_remote_ip_blocks.is_some()
        || s.service_accounts.is_some()
        || s.not_service_accounts.is_some()
        || s.trust_domains.is_some()
        || s.not_trust_domains.is_some();
    if lists.iter().all(|l| l.is_empty()) && !any_unsupported {
        errs.push(f, "a source must set at least one field");
    }
    for (name, list) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
    ] {
        for (i, p) in list.iter().enumerate() {
            principal(&format!("{f}.{name}[{i}]"), p, errs);
        }
    }
    for (name, list) in [
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
    ] {
        for (i, n) in list.iter().enumerate() {
            namespace(&format!("{f}.{name}[{i}]"), n, errs);
        }
    }
    for (name, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
    ] {
        for (i, b) in list.iter().enumerate() {
            check_ip_or_cidr(&format!("{f}.{name}[{i}]"), b, errs);
        }
    }
}

fn operation(f: &str, o: &Operation, errs: &mut Errs<'_>) {
    let lists = [
        &o.hosts,
        &o.not_hosts,
        &o.ports,
        &o.not_ports,
        &o.methods,
        &o.not_methods,
        &o.paths,
        &o.not_paths,
    ];
    if lists.iter().all(|l| l.is_empty()) {
        errs.push(f, "an operation must set at least one field");
    }
    for (name, list) in [("hosts", &o.hosts), ("notHosts", &o.not_hosts)] {
        for (i, h) in list.iter().enumerate() {
            if h.is_empty() || !wildcard_ok(h) {
                errs.push(format!("{f}.{name}[{i}]"), format!("invalid host `{h}`"));
            }
        }
    }
    for (name, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (i, p) in list.iter().enumerate() {
            if !p.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                errs.push(
                    format!("{f}.{name}[{i}]"),
                    format!("invalid port `{p}` (a number in 1..=65535)"),
                );
            }
        }
    }
    for (name, list) in [("methods", &o.methods), ("notMethods", &o.not_methods)] {
        for (i, m) in list.iter().enumerate() {
            if m != "*" && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())) {
                errs.push(
                    format!("{f}.{name}[{i}]"),
                    format!("invalid method `{m}` (an upper-case HTTP method such as GET)"),
                );
            }
        }
    }
    for (name, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (i, p) in list.iter().enumerate() {
            if p != "*" && (!wildcard_ok(p) || !(p.starts_with('/') || p.starts_with('*'))) {
                errs.push(
                    format!("{f}.{name}[{i}]"),
                    format!("invalid path `{p}` (starts with `/`; `*` only as a prefix or suffix)"),
                );
            }
        }
    }
}

fn condition(f: &str, c: &Condition, errs: &mut Errs<'_>) {
    let header = c
        .key
        .strip_prefix("request.headers[")
        .and_then(|rest| rest.strip_suffix(']'));
    match header {
        Some(name) => {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errs.push(
                    format!("{f}.key"),
                    format!("`{name}` is not a valid header name"),
                );
            }
        }
        None if CONDITION_KEYS.contains(&c.key.as_str()) => {}
        None => errs.push(
            format!("{f}.key"),
            format!(
                "condition key `{}` is not supported (use request.headers[<name>], {})",
                c.key,
                CONDITION_KEYS.join(", ")
            ),
        ),
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        errs.push(f, "values or notValues is required");
    }
    if c.key == "source.ip" || c.key == "destination.ip" {
        for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
            for (i, v) in list.iter().enumerate() {
                check_ip_or_cidr(&format!("{f}.{name}[{i}]"), v, errs);
            }
        }
    }
    if c.key == "source.principal" {
        for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
            for (i, v) in list.iter().enumerate() {
                principal(&format!("{f}.{name}[{i}]"), v, errs);
            }
        }
    }
}
