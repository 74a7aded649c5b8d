//! Validation (Galley's job): every rule broken, with file, resource, field path and reason.
//!
//! Rules are checked per resource first ([`fields`]: names, durations, regexes, weights,
//! percentages, principals, unsupported fields, ...) and then across resources
//! ([`references`]: duplicate names, unknown hosts, undefined subsets, subsets that select
//! no workload, missing ports). All errors are collected; nothing stops at the first.

mod fields;
mod names;
mod references;
mod routes;
mod security;

use super::api::{Origin, Resource, ResourceKey};
use super::error::ConfigError;

/// Checks resources alone and against each other; returns every error found.
pub fn validate(resources: &[Resource]) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for r in resources {
        let mut errs = Errs::new(&r.origin, r.key(), &mut out);
        fields::check(r, &mut errs);
    }
    references::check(resources, &mut out);
    out.sort_by(|a, b| a.origin.cmp(&b.origin));
    out
}

/// Collects the errors of one resource.
pub(crate) struct Errs<'a> {
    origin: &'a Origin,
    key: ResourceKey,
    out: &'a mut Vec<ConfigError>,
}

impl<'a> Errs<'a> {
    pub(crate) fn new(origin: &'a Origin, key: ResourceKey, out: &'a mut Vec<ConfigError>) -> Self {
        Errs { origin, key, out }
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.out.push(ConfigError::new(
            self.origin,
            Some(&self.key),
            field,
            reason,
        ));
    }

    /// Reports a field of Istio's API that this data plane does not implement.
    pub(crate) fn unsupported<T>(&mut self, field: &str, value: &Option<T>) {
        if value.is_some() {
            self.push(
                field,
                "not supported by this data plane (see docs/istio-config.md for the subset)",
            );
        }
    }
}
