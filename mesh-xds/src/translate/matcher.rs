//! Matchers: string, regex, header, query parameter, fraction and CIDR translation.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as pbm;
use envoy_types::pb::envoy::r#type::v3 as pbt;
use mesh_core::model::{
    CidrRange, Fraction, HeaderMatchRule, HeaderMatcher, QueryParameterMatcher, Regex,
    StringMatcher,
};

use super::{At, Invalid, Res, bail};

/// Compiles a `safe_regex` for whole-input matching.
pub fn regex_full(m: &pbm::RegexMatcher) -> Res<Regex> {
    Regex::full(&m.regex).map_err(|e| {
        // Report the error against the pattern as written, not our anchored wrapper.
        regex_error(&m.regex, Regex::search(&m.regex).err().unwrap_or(e))
    })
}

/// Compiles a regex for searching (rewrites).
pub fn regex_search(m: &pbm::RegexMatcher) -> Res<Regex> {
    Regex::search(&m.regex).map_err(|e| regex_error(&m.regex, e))
}

fn regex_error(pattern: &str, e: regex::Error) -> Invalid {
    // The regex crate's messages span lines; NACK details are one line per resource.
    let detail = e.to_string().replace('\n', " ");
    let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    Invalid::new(format!("regex {pattern:?} does not compile: {detail}"))
}

/// Translates a `StringMatcher`.
pub fn string_matcher(m: &pbm::StringMatcher) -> Res<StringMatcher> {
    use pbm::string_matcher::MatchPattern as P;
    let ignore_case = m.ignore_case;
    Ok(match &m.match_pattern {
        None => return bail("string matcher has no match_pattern"),
        Some(P::Exact(v)) => StringMatcher::Exact {
            value: v.clone(),
            ignore_case,
        },
        Some(P::Prefix(v)) => non_empty(v, "prefix").map(|_| StringMatcher::Prefix {
            value: v.clone(),
            ignore_case,
        })?,
        Some(P::Suffix(v)) => non_empty(v, "suffix").map(|_| StringMatcher::Suffix {
            value: v.clone(),
            ignore_case,
        })?,
        Some(P::Contains(v)) => non_empty(v, "contains").map(|_| StringMatcher::Contains {
            value: v.clone(),
            ignore_case,
        })?,
        Some(P::SafeRegex(re)) => {
            if ignore_case {
                return bail("ignore_case is not allowed with safe_regex");
            }
            StringMatcher::Regex(regex_full(re).at(".safe_regex")?)
        }
        Some(P::Custom(ext)) => {
            return bail(format!(
                "custom string matcher {:?} is not supported",
                ext.name
            ));
        }
    })
}

fn non_empty(v: &str, field: &str) -> Res<()> {
    if v.is_empty() {
        return bail(format!("{field} must not be empty"));
    }
    Ok(())
}

/// Translates a route `HeaderMatcher`.
pub fn header_matcher(m: &route::HeaderMatcher) -> Res<HeaderMatcher> {
    use route::header_matcher::HeaderMatchSpecifier as S;
    if m.name.is_empty() {
        return bail("header matcher has an empty name");
    }
    let sm = |ctor: fn(String, bool) -> StringMatcher, v: &String| ctor(v.clone(), false);
    let rule = match &m.header_match_specifier {
        // No specifier means "present" in Envoy.
        None => HeaderMatchRule::Present(true),
        Some(S::ExactMatch(v)) => HeaderMatchRule::String(sm(
            |value, ignore_case| StringMatcher::Exact { value, ignore_case },
            v,
        )),
        Some(S::PrefixMatch(v)) => HeaderMatchRule::String(sm(
            |value, ignore_case| StringMatcher::Prefix { value, ignore_case },
            v,
        )),
        Some(S::SuffixMatch(v)) => HeaderMatchRule::String(sm(
            |value, ignore_case| StringMatcher::Suffix { value, ignore_case },
            v,
        )),
        Some(S::ContainsMatch(v)) => HeaderMatchRule::String(sm(
            |value, ignore_case| StringMatcher::Contains { value, ignore_case },
            v,
        )),
        Some(S::SafeRegexMatch(re)) => HeaderMatchRule::String(StringMatcher::Regex(
            regex_full(re).at(".safe_regex_match")?,
        )),
        Some(S::RangeMatch(r)) => {
            if r.start > r.end {
                return bail(format!(
                    "range_match start {} is greater than end {}",
                    r.start, r.end
                ));
            }
            HeaderMatchRule::Range {
                start: r.start,
                end: r.end,
            }
        }
        Some(S::PresentMatch(p)) => HeaderMatchRule::Present(*p),
        Some(S::StringMatch(s)) => HeaderMatchRule::String(string_matcher(s).at(".string_match")?),
    };
    Ok(HeaderMatcher {
        name: m.name.to_ascii_lowercase(),
        rule,
        invert_match: m.invert_match,
        treat_missing_header_as_empty: m.treat_missing_header_as_empty,
    })
}

/// Translates a list of header matchers, naming the index of a bad one.
pub fn header_matchers(ms: &[route::HeaderMatcher], field: &str) -> Res<Vec<HeaderMatcher>> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| header_matcher(m).at_with(|| format!(".{field}[{i}]")))
        .collect()
}

/// Translates a `QueryParameterMatcher`.
pub fn query_parameter_matcher(m: &route::QueryParameterMatcher) -> Res<QueryParameterMatcher> {
    use route::query_parameter_matcher::QueryParameterMatchSpecifier as S;
    if m.name.is_empty() {
        return bail("query parameter matcher has an empty name");
    }
    let value = match &m.query_parameter_match_specifier {
        None => return bail("query parameter matcher has neither string_match nor present_match"),
        Some(S::StringMatch(s)) => Some(string_matcher(s).at(".string_match")?),
        Some(S::PresentMatch(true)) => None,
        Some(S::PresentMatch(false)) => {
            return bail("present_match: false is not supported (use string_match)");
        }
    };
    Ok(QueryParameterMatcher {
        name: m.name.clone(),
        value,
    })
}

/// Translates a `FractionalPercent`.
pub fn fraction(f: &pbt::FractionalPercent) -> Res<Fraction> {
    use pbt::fractional_percent::DenominatorType as D;
    let denominator = match D::try_from(f.denominator) {
        Ok(D::Hundred) => 100,
        Ok(D::TenThousand) => 10_000,
        Ok(D::Million) => 1_000_000,
        Err(_) => return bail(format!("unknown denominator {}", f.denominator)),
    };
    Ok(Fraction::new(f.numerator.min(denominator), denominator))
}

/// Translates a `RuntimeFractionalPercent` (the runtime key is ignored: no runtime here).
pub fn runtime_fraction(f: &core::RuntimeFractionalPercent) -> Res<Fraction> {
    match &f.default_value {
        Some(v) => fraction(v).at(".default_value"),
        None => bail("default_value is required"),
    }
}

/// Translates a `CidrRange`.
pub fn cidr(c: &core::CidrRange) -> Res<CidrRange> {
    let ip: IpAddr = c.address_prefix.parse().map_err(|_| {
        Invalid::new(format!(
            "address_prefix {:?} is not an IP address",
            c.address_prefix
        ))
    })?;
    let len = c.prefix_len.as_ref().map_or(0, |v| v.value);
    let len = u8::try_from(len).ok().and_then(|l| CidrRange::new(ip, l));
    // Envoy masks the address to the prefix; keep it as given, `contains` masks both sides.
    len.ok_or_else(|| {
        Invalid::new(format!(
            "prefix_len {:?} is too long for {}",
            c.prefix_len.as_ref().map(|v| v.value),
            c.address_prefix
        ))
    })
}

/// Translates a list of CIDR ranges, naming the index of a bad one.
pub fn cidrs(cs: &[core::CidrRange], field: &str) -> Res<Vec<CidrRange>> {
    cs.iter()
        .enumerate()
        .map(|(i, c)| cidr(c).at_with(|| format!(".{field}[{i}]")))
        .collect()
}
