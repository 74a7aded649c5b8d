//! Envoy's subject-alternative-name matchers (`match_typed_subject_alt_names`,
//! `match_subject_alt_names`) applied to a peer certificate, as Envoy's `StringSanMatcher`
//! does: a matcher looks at the SANs of its type only (every type for the untyped form),
//! an exact matcher on a DNS SAN follows DNS rules (case-insensitive, a `*.` wildcard SAN
//! covers one label), and IP SANs are compared in their text form.

use mesh_core::model::{SanMatcher, SanType, StringMatcher};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::svid::SvidError;

/// The URI, DNS, email and IP SANs of a certificate, IPs in their text form.
pub(crate) fn subject_alt_names(der: &[u8]) -> Result<Vec<(SanType, String)>, SvidError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed(format!("subjectAltName: {e}")))?;
    Ok(san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(v) => Some((SanType::Uri, (*v).to_owned())),
            GeneralName::DNSName(v) => Some((SanType::Dns, (*v).to_owned())),
            GeneralName::RFC822Name(v) => Some((SanType::Email, (*v).to_owned())),
            GeneralName::IPAddress(b) => ip_text(b).map(|ip| (SanType::IpAddress, ip)),
            _ => None,
        })
        .collect())
}

/// An IP SAN (4 or 16 bytes) as text; other lengths are malformed and match nothing.
fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

/// Whether `m` accepts the SAN `value` of type `ty`.
pub(crate) fn matches(m: &SanMatcher, ty: SanType, value: &str) -> bool {
    if m.san_type != SanType::Any && m.san_type != ty {
        return false;
    }
    match (&m.matcher, ty) {
        // Envoy: an exact name against a DNS SAN follows DNS matching, so a wildcard
        // certificate serves the names it covers.
        (StringMatcher::Exact { value: name, .. }, SanType::Dns) => dns_name_match(name, value),
        (matcher, _) => matcher.matches(value),
    }
}

/// `name` (the matcher's) against a certificate's DNS SAN `san`: equal ignoring ASCII case,
/// or `san` is `*.rest` and `name` is one non-empty label followed by `.rest`.
fn dns_name_match(name: &str, san: &str) -> bool {
    if name.eq_ignore_ascii_case(san) {
        return true;
    }
    let Some(rest) = san.strip_prefix('*') else {
        return false;
    };
    if !rest.starts_with('.') || name.len() <= rest.len() {
        return false;
    }
    let split = name.len() - rest.len();
    name.is_char_boundary(split)
        && !name[..split].contains('.')
        && name[split..].eq_ignore_ascii_case(rest)
}

/// A matcher as a rejection names it, e.g. `URI SAN prefix "spiffe://td/ns/a/"`.
pub(crate) fn describe(m: &SanMatcher) -> String {
    let ty = match m.san_type {
        SanType::Any => "SAN",
        SanType::Uri => "URI SAN",
        SanType::Dns => "DNS SAN",
        SanType::Email => "EMAIL SAN",
        SanType::IpAddress => "IP_ADDRESS SAN",
    };
    let (kind, value, ignore_case) = match &m.matcher {
        StringMatcher::Exact { value, ignore_case } => ("exact", value.as_str(), *ignore_case),
        StringMatcher::Prefix { value, ignore_case } => ("prefix", value.as_str(), *ignore_case),
        StringMatcher::Suffix { value, ignore_case } => ("suffix", value.as_str(), *ignore_case),
        StringMatcher::Contains { value, ignore_case } => {
            ("contains", value.as_str(), *ignore_case)
        }
        StringMatcher::Regex(re) => ("safe_regex", re.as_str(), false),
    };
    let case = if ignore_case { " (ignore_case)" } else { "" };
    format!("{ty} {kind} {value:?}{case}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(san_type: SanType, matcher: StringMatcher) -> SanMatcher {
        SanMatcher { san_type, matcher }
    }

    fn exact(v: &str) -> StringMatcher {
        StringMatcher::Exact {
            value: v.into(),
            ignore_case: false,
        }
    }

    #[test]
    fn dns_exact_follows_dns_rules() {
        let dns = m(SanType::Dns, exact("api.example.com"));
        assert!(matches(&dns, SanType::Dns, "API.example.com"));
        assert!(matches(&dns, SanType::Dns, "*.example.com"));
        assert!(!matches(&dns, SanType::Dns, "*.com"));
        assert!(!matches(
            &m(SanType::Dns, exact("a.b.example.com")),
            SanType::Dns,
            "*.example.com"
        ));
        assert!(!matches(
            &m(SanType::Dns, exact(".example.com")),
            SanType::Dns,
            "*.example.com"
        ));
        // Another type never matches a typed matcher; the untyped form looks at every type.
        assert!(!matches(&dns, SanType::Uri, "api.example.com"));
        assert!(matches(
            &m(SanType::Any, exact("api.example.com")),
            SanType::Dns,
            "api.example.com"
        ));
    }

    #[test]
    fn ip_sans_are_text() {
        assert_eq!(ip_text(&[127, 0, 0, 1]).as_deref(), Some("127.0.0.1"));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ip_text(&v6).as_deref(), Some("::1"));
        assert_eq!(ip_text(&[1, 2, 3]), None);
    }

    #[test]
    fn descriptions_name_the_rule() {
        let p = m(
            SanType::Uri,
            StringMatcher::Prefix {
                value: "spiffe://td/".into(),
                ignore_case: true,
            },
        );
        assert_eq!(
            describe(&p),
            r#"URI SAN prefix "spiffe://td/" (ignore_case)"#
        );
    }
}
