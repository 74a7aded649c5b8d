//! Syntax checks for names, hosts, labels, addresses, durations and regexes.

use std::net::IpAddr;
use std::time::Duration;

use super::super::api::{Percent, ProtoDuration, StringMatch};
use super::super::duration;
use super::Errs;

/// RFC 1123 label: lowercase alphanumerics and `-`, 1..=63, alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks `metadata.name` and `metadata.namespace`.
pub(crate) fn check_metadata(name: &str, namespace: &str, errs: &mut Errs<'_>) {
    if !is_dns_subdomain(name) {
        errs.push(
            "metadata.name",
            format!(
                "`{name}` is not a valid name (lowercase letters, digits, `-` and `.`, \
                 starting and ending with a letter or digit)"
            ),
        );
    }
    if !is_dns_label(namespace) {
        errs.push(
            "metadata.namespace",
            format!("`{namespace}` is not a valid namespace (an RFC 1123 label)"),
        );
    }
}

/// A service host: a DNS name (short or fully qualified); wildcards are not supported.
pub(crate) fn check_host(field: &str, host: &str, errs: &mut Errs<'_>) {
    if host.is_empty() {
        errs.push(field, "host is required");
    } else if host.contains('*') {
        errs.push(field, format!("wildcard host `{host}` is not supported"));
    } else if !is_dns_subdomain(&host.to_ascii_lowercase()) {
        errs.push(field, format!("`{host}` is not a valid DNS name"));
    }
}

/// Label keys (`prefix/name`) and values, as Kubernetes defines them.
pub(crate) fn check_labels<'a>(
    field: &str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    errs: &mut Errs<'_>,
) {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    for (k, v) in labels {
        let key_ok = match k.split_once('/') {
            Some((prefix, name)) => is_dns_subdomain(prefix) && name_ok(name),
            None => name_ok(k),
        };
        if !key_ok {
            errs.push(
                format!("{field}.{k}"),
                format!("`{k}` is not a valid label key"),
            );
        }
        if !v.is_empty() && !name_ok(v) {
            errs.push(
                format!("{field}.{k}"),
                format!("`{v}` is not a valid label value"),
            );
        }
    }
}

/// A port number in 1..=65535.
pub(crate) fn check_port(field: &str, port: u32, errs: &mut Errs<'_>) {
    if !(1..=65535).contains(&port) {
        errs.push(field, format!("port {port} is out of range 1..=65535"));
    }
}

/// An IP address.
pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// An IP address or CIDR (`10.0.0.0/8`, `::1/128`).
pub(crate) fn check_ip_or_cidr(field: &str, s: &str, errs: &mut Errs<'_>) {
    let ok = match s.split_once('/') {
        None => is_ip(s),
        Some((ip, len)) => match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    };
    if !ok {
        errs.push(field, format!("`{s}` is not an IP address or CIDR"));
    }
}

/// Namespaces in `exportTo`: `.`, `*` or namespace names.
pub(crate) fn check_export_to(field: &str, export_to: &[String], errs: &mut Errs<'_>) {
    for (i, e) in export_to.iter().enumerate() {
        if e != "." && e != "*" && !is_dns_label(e) {
            errs.push(
                format!("{field}[{i}]"),
                format!("`{e}` is not `.`, `*` or a namespace name"),
            );
        }
    }
}

/// A duration Istio accepts where it configures a timer: at least 1ms, whole milliseconds.
pub(crate) fn check_duration(field: &str, d: &Option<ProtoDuration>, errs: &mut Errs<'_>) {
    let Some(d) = d else { return };
    match duration::parse(&d.0) {
        Err(e) => errs.push(field, e),
        Ok(v) if v < Duration::from_millis(1) => {
            errs.push(field, format!("duration `{}` must be at least 1ms", d.0))
        }
        Ok(v) if v.subsec_nanos() % 1_000_000 != 0 => errs.push(
            field,
            format!("duration `{}` must be whole milliseconds", d.0),
        ),
        Ok(_) => {}
    }
}

/// A percentage in 0..=100.
pub(crate) fn check_percent(field: &str, p: &Option<Percent>, errs: &mut Errs<'_>) {
    if let Some(p) = p
        && !(0.0..=100.0).contains(&p.value)
    {
        errs.push(
            format!("{field}.value"),
            format!("percentage {} is out of range 0..=100", p.value),
        );
    }
}

/// A regex as Envoy will compile it (RE2 syntax; the `regex` crate accepts the same subset).
pub(crate) fn check_regex(field: &str, re: &str, errs: &mut Errs<'_>) {
    if let Err(e) = regex::Regex::new(re) {
        let msg = e.to_string();
        // The regex crate's message spans several lines; keep the last, which says why.
        let why = msg.lines().last().unwrap_or(&msg).trim();
        let why = why.strip_prefix("error: ").unwrap_or(why);
        errs.push(field, format!("invalid regex `{re}`: {why}"));
    }
}

/// A `StringMatch`: exactly one of exact/prefix/regex, and a regex that compiles.
pub(crate) fn check_string_match(field: &str, m: &StringMatch, errs: &mut Errs<'_>) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .into_iter()
        .filter(|s| *s)
        .count();
    if set != 1 {
        errs.push(field, "exactly one of exact, prefix or regex must be set");
    }
    if let Some(re) = &m.regex {
        check_regex(&format!("{field}.regex"), re, errs);
    }
}

/// An HTTP header name.
pub(crate) fn check_header_name(field: &str, name: &str, errs: &mut Errs<'_>) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        errs.push(field, format!("`{name}` is not a valid header name"));
    }
}
