//! Per-route filter overrides (`typed_per_filter_config`, gRPC A39).

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::route::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::model::{FilterOverride, FilterOverrides};

use crate::translate::{At, Res, any_type_name, bail, unpack};

/// Translates `typed_per_filter_config` (gRPC A39): fault and local rate limit overrides and `FilterConfig`
/// wrappers (disabled, or optional); an unknown non-optional override is rejected.
pub fn filter_overrides(map: &HashMap<String, Any>) -> Res<FilterOverrides> {
    let mut out = BTreeMap::new();
    for (name, any) in map {
        let at = || format!(".typed_per_filter_config[{name:?}]");
        if let Some(o) = filter_override(any).at_with(at)? {
            out.insert(name.clone(), o);
        }
    }
    Ok(out)
}

fn filter_override(any: &Any) -> Res<Option<FilterOverride>> {
    let (config, optional) = if any_type_name(any) == "envoy.config.route.v3.FilterConfig" {
        let fc: pb::FilterConfig = unpack(any)?;
        if fc.disabled {
            return Ok(Some(FilterOverride::Disabled));
        }
        match fc.config {
            Some(c) => (c, fc.is_optional),
            None => return bail("FilterConfig has neither config nor disabled"),
        }
    } else {
        (any.clone(), false)
    };
    match any_type_name(&config) {
        "envoy.extensions.filters.http.fault.v3.HTTPFault" => {
            let f: HttpFault = unpack(&config)?;
            Ok(Some(FilterOverride::Fault(
                crate::translate::fault::http_fault(&f)?,
            )))
        }
        crate::translate::rate_limit::TYPE => {
            let l = unpack(&config)?;
            Ok(Some(FilterOverride::LocalRateLimit(
                crate::translate::rate_limit::local_rate_limit(&l, true)?,
            )))
        }
        _ if optional => Ok(None),
        other => bail(format!("override of type {other:?} is not supported")),
    }
}
