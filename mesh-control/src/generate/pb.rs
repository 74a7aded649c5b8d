//! Small constructors for Envoy protos, so the builders read like the config they emit.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use crate::istio::api::{StringMatch, StringMatchKind};

pub(crate) fn duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn u32v(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

/// `ads: {}`: fetch dependent resources over the same ADS stream.
pub(crate) fn ads() -> Option<core::ConfigSource> {
    Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    })
}

pub(crate) fn socket(ip: &str, port: u32) -> Option<core::Address> {
    Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: ip.into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

pub(crate) fn exact(value: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(value.into())),
        ignore_case: false,
    }
}

pub(crate) fn regex(value: &str) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        regex: value.into(),
        engine_type: None,
    }
}

/// An Istio `StringMatch` as an Envoy `StringMatcher` (validated config: exactly one kind).
pub(crate) fn string_matcher(m: &StringMatch, ignore_case: bool) -> Option<matcher::StringMatcher> {
    use matcher::string_matcher::MatchPattern;
    let pattern = match m.kind()? {
        StringMatchKind::Exact(v) => MatchPattern::Exact(v.into()),
        StringMatchKind::Prefix(v) => MatchPattern::Prefix(v.into()),
        StringMatchKind::Regex(v) => MatchPattern::SafeRegex(regex(v)),
    };
    Some(matcher::StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    })
}

/// A percentage (0..=100, fractions allowed) in millionths, as Istio translates it.
pub(crate) fn percent(value: f64) -> Option<FractionalPercent> {
    let millionths = (value.clamp(0.0, 100.0) * 10_000.0).round() as u32;
    Some(FractionalPercent {
        numerator: millionths,
        denominator: fractional_percent::DenominatorType::Million as i32,
    })
}
