//! Request and response header edits, compiled once and applied in Envoy's order.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::model::{AppendAction, HeaderOps};

use crate::BuildError;

#[derive(Debug, Clone)]
struct Add {
    name: HeaderName,
    value: HeaderValue,
    action: AppendAction,
}

#[derive(Debug, Clone, Default)]
struct Level {
    remove: Vec<HeaderName>,
    add: Vec<Add>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }

    /// Envoy's `HeaderParser::evaluateHeaders`: removals first, then additions in order.
    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for add in &self.add {
            match add.action {
                AppendAction::Append => {
                    headers.append(add.name.clone(), add.value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&add.name) {
                        headers.insert(add.name.clone(), add.value.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(add.name.clone(), add.value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&add.name) {
                        headers.insert(add.name.clone(), add.value.clone());
                    }
                }
            }
        }
    }
}

/// The header edits of one routing decision, from the most specific level (weighted
/// cluster, route) to the least (virtual host, route configuration), as Envoy applies them
/// by default (`most_specific_header_mutations_wins: false`): a less specific level runs
/// last, so its overwrite wins.
///
/// Values are literal: Envoy's `%COMMAND%` substitutions are not expanded.
#[derive(Debug, Clone, Default)]
pub struct HeaderPlan {
    request: Vec<Level>,
    response: Vec<Level>,
}

impl HeaderPlan {
    /// Compiles the levels, most specific first.
    pub(crate) fn compile(levels: &[&HeaderOps], location: &str) -> Result<Self, BuildError> {
        let mut plan = HeaderPlan::default();
        for ops in levels {
            let req = level(
                &ops.request_headers_to_remove,
                &ops.request_headers_to_add,
                location,
            )?;
            if !req.is_empty() {
                plan.request.push(req);
            }
            let resp = level(
                &ops.response_headers_to_remove,
                &ops.response_headers_to_add,
                location,
            )?;
            if !resp.is_empty() {
                plan.response.push(resp);
            }
        }
        Ok(plan)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// Edits the upstream request's headers.
    pub fn apply_request(&self, headers: &mut HeaderMap) {
        for l in &self.request {
            l.apply(headers);
        }
    }

    /// Edits the response's headers (also for redirects and direct responses).
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        for l in &self.response {
            l.apply(headers);
        }
    }
}

fn level(
    remove: &[String],
    add: &[mesh_core::model::HeaderValueOption],
    location: &str,
) -> Result<Level, BuildError> {
    let bad = |name: &str, reason| BuildError::InvalidHeader {
        location: location.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let mut out = Level::default();
    for r in remove {
        out.remove
            .push(HeaderName::from_bytes(r.as_bytes()).map_err(|_| bad(r, "invalid header name"))?);
    }
    for a in add {
        // Envoy skips an empty value unless `keep_empty_value` is set.
        if a.value.is_empty() && !a.keep_empty_value {
            continue;
        }
        out.add.push(Add {
            name: HeaderName::from_bytes(a.name.as_bytes())
                .map_err(|_| bad(&a.name, "invalid header name"))?,
            value: HeaderValue::from_str(&a.value)
                .map_err(|_| bad(&a.name, "invalid header value"))?,
            action: a.action,
        });
    }
    Ok(out)
}
