//! Matchers shared by routes, filter chains and TLS validation: strings, headers, query
//! parameters, CIDR ranges and fractions.

use std::fmt;
use std::net::IpAddr;

/// A compiled regular expression. Envoy's RE2 dialect maps onto the `regex` crate (both are
/// linear-time and share the syntax that matters: no backreferences, no lookaround).
///
/// Built in one of two modes: [`Regex::full`] matches only when the whole input matches
/// (Envoy's `safe_regex` matchers use `RE2::FullMatch`), [`Regex::search`] finds the pattern
/// anywhere (used for `regex_rewrite` substitutions).
///
/// ```
/// use mesh_core::model::Regex;
/// let full = Regex::full("/api/v[0-9]+").unwrap();
/// assert!(full.is_match("/api/v2"));
/// assert!(!full.is_match("/api/v2/users"));
/// let search = Regex::search("v[0-9]+").unwrap();
/// assert_eq!(search.replace_all("/api/v2/v3", "vN"), "/api/vN/vN");
/// ```
#[derive(Clone)]
pub struct Regex {
    source: String,
    full: bool,
    compiled: regex::Regex,
}

impl Regex {
    /// Compiles `pattern` for whole-input matching.
    pub fn full(pattern: &str) -> Result<Self, regex::Error> {
        let compiled = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(Self {
            source: pattern.to_owned(),
            full: true,
            compiled,
        })
    }

    /// Compiles `pattern` for matching anywhere in the input.
    pub fn search(pattern: &str) -> Result<Self, regex::Error> {
        let compiled = regex::Regex::new(pattern)?;
        Ok(Self {
            source: pattern.to_owned(),
            full: false,
            compiled,
        })
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the input matches (whole input for [`Regex::full`], anywhere otherwise).
    pub fn is_match(&self, input: &str) -> bool {
        self.compiled.is_match(input)
    }

    /// Replaces every match with `substitution` (`\1`-style groups as Envoy writes them are
    /// accepted and mapped to the `regex` crate's `${1}`).
    pub fn replace_all(&self, input: &str, substitution: &str) -> String {
        let sub = envoy_substitution(substitution);
        self.compiled.replace_all(input, sub.as_str()).into_owned()
    }

    /// The compiled expression.
    pub fn compiled(&self) -> &regex::Regex {
        &self.compiled
    }
}

/// Envoy (RE2) writes capture groups in substitutions as `\1`; the `regex` crate wants `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(*d);
                    out.push('}');
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.source)
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.full == other.full
    }
}

impl Eq for Regex {}

/// Envoy's `type.matcher.v3.StringMatcher`.
///
/// ```
/// use mesh_core::model::StringMatcher;
/// let m = StringMatcher::Prefix { value: "/API".into(), ignore_case: true };
/// assert!(m.matches("/api/v1"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatcher {
    /// The input equals the value.
    Exact {
        /// Expected value.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The input starts with the value.
    Prefix {
        /// Expected prefix.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The input ends with the value.
    Suffix {
        /// Expected suffix.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The input contains the value.
    Contains {
        /// Expected substring.
        value: String,
        /// Compare ASCII case-insensitively.
        ignore_case: bool,
    },
    /// The whole input matches the regular expression.
    Regex(Regex),
}

impl StringMatcher {
    /// Whether `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        match self {
            Self::Exact { value, ignore_case } => {
                if *ignore_case {
                    input.eq_ignore_ascii_case(value)
                } else {
                    input == value
                }
            }
            Self::Prefix { value, ignore_case } => {
                input.len() >= value.len()
                    && input.is_char_boundary(value.len())
                    && eq(&input[..value.len()], value, *ignore_case)
            }
            Self::Suffix { value, ignore_case } => {
                input.len() >= value.len()
                    && input.is_char_boundary(input.len() - value.len())
                    && eq(&input[input.len() - value.len()..], value, *ignore_case)
            }
            Self::Contains { value, ignore_case } => {
                if *ignore_case {
                    input
                        .to_ascii_lowercase()
                        .contains(&value.to_ascii_lowercase())
                } else {
                    input.contains(value.as_str())
                }
            }
            Self::Regex(re) => re.is_match(input),
        }
    }
}

fn eq(a: &str, b: &str, ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// How a header is matched (Envoy's `HeaderMatcher.header_match_specifier`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatchRule {
    /// The value matches the string matcher (covers the legacy exact/prefix/suffix/contains/
    /// safe_regex fields as well as `string_match`).
    String(StringMatcher),
    /// The value parses as an integer in `[start, end)`.
    Range {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

/// Envoy's `route.v3.HeaderMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatcher {
    /// Header name, lowercased.
    pub name: String,
    /// The rule applied to the value.
    pub rule: HeaderMatchRule,
    /// Invert the result.
    pub invert_match: bool,
    /// A missing header is treated as an empty value instead of failing the match.
    pub treat_missing_header_as_empty: bool,
}

impl HeaderMatcher {
    /// Matches against the header's value (`None` when absent). An absent header fails every
    /// value rule even when inverted (as Envoy 1.40 does; mesh-route's differential test
    /// checks it), unless `treat_missing_header_as_empty`.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = match value {
            None if self.treat_missing_header_as_empty => Some(""),
            v => v,
        };
        let hit = match (&self.rule, value) {
            (HeaderMatchRule::Present(want), v) => v.is_some() == *want,
            (_, None) => return false,
            (HeaderMatchRule::String(m), Some(v)) => m.matches(v),
            (HeaderMatchRule::Range { start, end }, Some(v)) => v
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| n >= *start && n < *end),
        };
        hit != self.invert_match
    }
}

/// Envoy's `route.v3.QueryParameterMatcher`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParameterMatcher {
    /// Parameter name.
    pub name: String,
    /// `None`: the parameter must be present; `Some`: its value must match.
    pub value: Option<StringMatcher>,
}

/// A fraction, as Envoy's `FractionalPercent` (numerator over 100, 10 000 or 1 000 000).
///
/// ```
/// use mesh_core::model::Fraction;
/// assert_eq!(Fraction::new(25, 100).per_million(), 250_000);
/// assert_eq!(Fraction::new(200, 100).per_million(), 1_000_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u32,
    /// Denominator: 100, 10 000 or 1 000 000.
    pub denominator: u32,
}

impl Fraction {
    /// Always true.
    pub const ALWAYS: Fraction = Fraction {
        numerator: 100,
        denominator: 100,
    };

    /// Builds a fraction.
    pub const fn new(numerator: u32, denominator: u32) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    /// The fraction in parts per million, capped at 1 000 000 (Envoy caps numerators above
    /// the denominator).
    pub fn per_million(self) -> u32 {
        if self.denominator == 0 {
            return 0;
        }
        let v = u64::from(self.numerator) * 1_000_000 / u64::from(self.denominator);
        v.min(1_000_000) as u32
    }
}

/// An IP prefix such as `10.0.0.0/8`.
///
/// ```
/// use mesh_core::model::CidrRange;
/// let r = CidrRange::new("10.0.0.0".parse().unwrap(), 8).unwrap();
/// assert!(r.contains("10.1.2.3".parse().unwrap()));
/// assert!(!r.contains("11.0.0.1".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CidrRange {
    /// Network address.
    pub address: IpAddr,
    /// Prefix length in bits.
    pub prefix_len: u8,
}

impl CidrRange {
    /// Builds a range; `None` when the prefix is longer than the address.
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self {
            address,
            prefix_len,
        })
    }

    /// Whether `ip` is inside the range (IPv4 never matches an IPv6 range and vice versa).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix_len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix_len)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    a[full] & mask == b[full] & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: fn(String, bool) -> StringMatcher, v: &str, ic: bool) -> StringMatcher {
        kind(v.to_owned(), ic)
    }

    #[test]
    fn string_matchers() {
        let exact = |v, ignore_case| StringMatcher::Exact {
            value: v,
            ignore_case,
        };
        let prefix = |v, ignore_case| StringMatcher::Prefix {
            value: v,
            ignore_case,
        };
        let suffix = |v, ignore_case| StringMatcher::Suffix {
            value: v,
            ignore_case,
        };
        let contains = |v, ignore_case| StringMatcher::Contains {
            value: v,
            ignore_case,
        };
        assert!(s(exact, "abc", false).matches("abc"));
        assert!(!s(exact, "abc", false).matches("ABC"));
        assert!(s(exact, "abc", true).matches("ABC"));
        assert!(s(prefix, "/a", false).matches("/a/b"));
        assert!(!s(prefix, "/a/b/c", false).matches("/a"));
        assert!(s(suffix, ".COM", true).matches("x.com"));
        assert!(!s(suffix, ".com", false).matches("x.org"));
        assert!(s(contains, "MID", true).matches("amidb"));
        assert!(!s(contains, "MID", false).matches("amidb"));
        // Multi-byte input must not panic on a non-boundary slice.
        assert!(!s(prefix, "a", false).matches("é"));
        assert!(!s(suffix, "a", false).matches("é"));
    }

    #[test]
    fn regex_full_vs_search() {
        let full = Regex::full("a|ab").unwrap();
        assert!(full.is_match("ab"), "full match must try every alternative");
        assert!(!full.is_match("xab"));
        assert!(Regex::search("b").unwrap().is_match("abc"));
        assert!(Regex::full("a(").is_err());
        let re = Regex::search("^/v([0-9]+)/(.*)$").unwrap();
        assert_eq!(
            re.replace_all("/v1/users", "/\\2/version/\\1"),
            "/users/version/1"
        );
        assert_eq!(Regex::search("x").unwrap().replace_all("x", "$1"), "$1");
    }

    #[test]
    fn header_matcher() {
        let m = HeaderMatcher {
            name: "x-n".into(),
            rule: HeaderMatchRule::Range { start: 10, end: 20 },
            invert_match: false,
            treat_missing_header_as_empty: false,
        };
        assert!(m.matches(Some("10")));
        assert!(!m.matches(Some("20")));
        assert!(!m.matches(Some("abc")));
        assert!(!m.matches(None));
        let inv = HeaderMatcher {
            invert_match: true,
            ..m.clone()
        };
        assert!(inv.matches(Some("20")));
        assert!(
            !inv.matches(None),
            "absent header never matches, even inverted"
        );
        let present = HeaderMatcher {
            rule: HeaderMatchRule::Present(false),
            ..m
        };
        assert!(present.matches(None));
        assert!(!present.matches(Some("")));
    }

    #[test]
    fn cidr() {
        let r = CidrRange::new("192.168.1.0".parse().unwrap(), 23).unwrap();
        assert!(r.contains("192.168.0.255".parse().unwrap()));
        assert!(!r.contains("192.168.2.0".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        assert!(
            CidrRange::new("::".parse().unwrap(), 0)
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(CidrRange::new("10.0.0.0".parse().unwrap(), 33).is_none());
    }
}
