//! Locality load balancing per client, as istiod's endpoint builder applies a
//! DestinationRule's `localityLbSetting` (`pilot/pkg/networking/core/loadbalancer`):
//!
//! - the setting is the rule's, else the mesh default `{enabled: true}`; `enabled: false`
//!   turns it off (`GetLocalityLbSetting`);
//! - `distribute` sets the locality weights for clients in its `from` locality and drops
//!   the localities it does not name (`applyLocalityWeights`);
//! - otherwise, and only with outlier detection (without it Envoy never leaves priority 0),
//!   `failoverPriority` splits localities by how many of the listed labels match the
//!   client's (`applyFailoverPriorities`), then localities get priorities by how much of the
//!   client's region/zone/subzone they share, `failover` moving a region below its target
//!   (`applyLocalityFailover`); priorities are renumbered from 0 without gaps.
//!
//! The client's locality and labels are istiod's `setTopologyLabels`: the topology labels
//! (or `istio-locality`) if set, else the xDS node's locality; labels get the topology
//! labels added, as do the endpoints' (`AugmentLabels`), so `failoverPriority` can name
//! `topology.kubernetes.io/zone` and the like.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;

use super::pb;
use crate::istio::MeshConfig;
use crate::istio::api::{LocalityLbSetting, TrafficPolicy};

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
const SUBZONE: &str = "topology.istio.io/subzone";
/// Istio's label overriding a workload's locality (`.` or `/` separated).
const LOCALITY_LABEL: &str = "istio-locality";

/// The calling workload as locality load balancing sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Client {
    locality: core::Locality,
    labels: BTreeMap<String, String>,
}

impl Client {
    /// The client with these labels and xDS node locality (`istiod`'s `setTopologyLabels`).
    pub(crate) fn new(
        node_locality: Option<&core::Locality>,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let from_labels = match (labels.get(REGION), labels.get(ZONE), labels.get(SUBZONE)) {
            (None, None, None) => labels
                .get(LOCALITY_LABEL)
                .map(|l| parse(&l.replace('.', "/"))),
            (r, z, s) => Some(core::Locality {
                region: r.cloned().unwrap_or_default(),
                zone: z.cloned().unwrap_or_default(),
                sub_zone: s.cloned().unwrap_or_default(),
            }),
        };
        let locality = from_labels
            .or_else(|| node_locality.cloned())
            .unwrap_or_default();
        let labels = augment(labels, &locality);
        Client { locality, labels }
    }
}

/// `region/zone/subzone` as a `Locality` (missing parts empty).
pub(crate) fn parse(s: &str) -> core::Locality {
    let mut parts = s.splitn(3, '/');
    core::Locality {
        region: parts.next().unwrap_or_default().into(),
        zone: parts.next().unwrap_or_default().into(),
        sub_zone: parts.next().unwrap_or_default().into(),
    }
}

/// `labels` with the locality's topology labels added (`AugmentLabels`).
pub(crate) fn augment(
    labels: &BTreeMap<String, String>,
    l: &core::Locality,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for (k, v) in [(REGION, &l.region), (ZONE, &l.zone), (SUBZONE, &l.sub_zone)] {
        if !v.is_empty() {
            out.insert(k.into(), v.clone());
        }
    }
    out
}

/// The setting in force for a cluster with this (subset-merged) policy: the rule's unless
/// it says `enabled: false`, else the mesh default (on, nothing configured).
fn setting(policy: &TrafficPolicy) -> Option<LocalityLbSetting> {
    match policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.locality_lb_setting.as_ref())
    {
        Some(s) if s.enabled == Some(false) => None,
        Some(s) => Some(s.clone()),
        None => Some(LocalityLbSetting::default()),
    }
}

/// Failover needs outlier detection: without it no endpoint ever leaves priority 0.
fn failover_enabled(policy: &TrafficPolicy) -> bool {
    policy.outlier_detection.is_some()
}

/// Whether the cluster weighs localities (`locality_weighted_lb_config`), as istiod's
/// cluster builder decides: with `distribute`, or with failover settings that act.
pub(crate) fn weighted(policy: &TrafficPolicy) -> bool {
    setting(policy).is_some_and(|s| {
        !s.distribute.is_empty()
            || (failover_enabled(policy)
                && (!s.failover.is_empty() || !s.failover_priority.is_empty()))
    })
}

/// Whether some cluster's endpoints depend on the client: a DestinationRule with outlier
/// detection or a `localityLbSetting` (so snapshots are generated per client).
pub(crate) fn per_client(config: &MeshConfig) -> bool {
    let acts = |p: &TrafficPolicy| {
        p.outlier_detection.is_some()
            || p.load_balancer
                .as_ref()
                .is_some_and(|lb| lb.locality_lb_setting.is_some())
    };
    config.destination_rules.iter().any(|dr| {
        dr.spec.traffic_policy.as_ref().is_some_and(acts)
            || dr
                .spec
                .subsets
                .iter()
                .filter_map(|s| s.traffic_policy.as_ref())
                .any(acts)
    })
}

/// An endpoint with its labels (topology labels added).
pub(crate) type Labelled = (eds::LbEndpoint, BTreeMap<String, String>);

/// The endpoints of one locality.
pub(crate) struct Group {
    pub(crate) locality: core::Locality,
    pub(crate) endpoints: Vec<Labelled>,
}

/// The `LocalityLbEndpoints` of `groups` for `client` under `policy`. `by_labels: false`
/// (a DNS cluster's inline endpoints) leaves `failoverPriority` out, as istiod, which applies
/// it to EDS only.
pub(crate) fn assign(
    groups: Vec<Group>,
    policy: &TrafficPolicy,
    client: Option<&Client>,
    by_labels: bool,
) -> Vec<eds::LocalityLbEndpoints> {
    let setting = client.and_then(|c| setting(policy).map(|s| (c, s)));
    let Some((client, s)) = setting else {
        return groups
            .into_iter()
            .map(|g| locality_endpoints(g, 0))
            .collect();
    };
    if !s.distribute.is_empty() {
        let mut out: Vec<_> = groups
            .into_iter()
            .map(|g| locality_endpoints(g, 0))
            .collect();
        distribute(&client.locality, &mut out, &s);
        return out;
    }
    if !failover_enabled(policy) {
        return groups
            .into_iter()
            .map(|g| locality_endpoints(g, 0))
            .collect();
    }
    let mut out = if s.failover_priority.is_empty() || client.labels.is_empty() || !by_labels {
        groups
            .into_iter()
            .map(|g| locality_endpoints(g, 0))
            .collect()
    } else {
        let split: Vec<_> = groups
            .into_iter()
            .flat_map(|g| by_failover_priority(g, &client.labels, &s.failover_priority))
            .collect();
        compact(split)
    };
    // With `failoverPriority`, localities count only when `failover` is set.
    if s.failover_priority.is_empty() || !s.failover.is_empty() {
        by_locality(&client.locality, &mut out, &s);
        out = compact(out);
    }
    out
}

/// A group as one `LocalityLbEndpoints`; its weight is its endpoints' (gRPC ignores
/// localities without one).
fn locality_endpoints(g: Group, priority: u32) -> eds::LocalityLbEndpoints {
    let lb_endpoints: Vec<eds::LbEndpoint> = g.endpoints.into_iter().map(|(e, _)| e).collect();
    let weight: u32 = lb_endpoints.iter().map(endpoint_weight).sum();
    eds::LocalityLbEndpoints {
        locality: Some(g.locality),
        lb_endpoints,
        load_balancing_weight: pb::u32v(weight.max(1)),
        priority,
        ..Default::default()
    }
}

fn endpoint_weight(e: &eds::LbEndpoint) -> u32 {
    e.load_balancing_weight.as_ref().map_or(1, |w| w.value)
}

/// Whether `l` is within the rule's `region/zone/subzone` (`*` or a missing part matches
/// anything; the region must be given).
fn locality_match(l: &core::Locality, rule: &str) -> bool {
    let r = parse(rule);
    let part = |rule: &str, have: &str| rule == "*" || rule.is_empty() || rule == have;
    (r.region == "*" || r.region == l.region)
        && part(&r.zone, &l.zone)
        && part(&r.sub_zone, &l.sub_zone)
}

/// `applyLocalityWeights`: the first `distribute` entry whose `from` matches the client
/// sets each named locality's weight to its share of the entry's weight (split over the
/// localities a wildcard matches, in proportion to their weights, rounded up); the
/// localities it does not name get no traffic.
fn distribute(
    client: &core::Locality,
    out: &mut Vec<eds::LocalityLbEndpoints>,
    s: &LocalityLbSetting,
) {
    let Some(rule) = s
        .distribute
        .iter()
        .find(|d| locality_match(client, &d.from))
    else {
        return;
    };
    let mut unmatched: BTreeSet<usize> = (0..out.len()).collect();
    for (to, weight) in &rule.to {
        let matched: Vec<usize> = unmatched
            .iter()
            .copied()
            .filter(|i| {
                locality_match(out[*i].locality.as_ref().unwrap_or(&Default::default()), to)
            })
            .collect();
        let original = |i: usize| out[i].load_balancing_weight.as_ref().map_or(1, |w| w.value);
        let total: u64 = matched.iter().map(|i| u64::from(original(*i))).sum();
        let new: Vec<(usize, f64)> = matched
            .iter()
            .map(|i| {
                (
                    *i,
                    (u64::from(original(*i)) * u64::from(*weight)) as f64 / total as f64,
                )
            })
            .collect();
        for (i, w) in new {
            unmatched.remove(&i);
            if w > 0.0 {
                out[i].load_balancing_weight = pb::u32v(w.ceil() as u32);
            }
        }
    }
    let mut i = 0;
    out.retain(|_| {
        i += 1;
        !unmatched.contains(&(i - 1))
    });
}

/// `LbPriority`: 0 when region, zone and subzone match, 1 region and zone, 2 region, else 3.
fn lb_priority(client: &core::Locality, l: &core::Locality) -> u32 {
    if client.region != l.region {
        3
    } else if client.zone != l.zone {
        2
    } else if client.sub_zone != l.sub_zone {
        1
    } else {
        0
    }
}

/// `applyLocalityFailover`: priorities by shared locality (within those already set by
/// `failoverPriority`); another region gets 4 when a `failover` from the client's region
/// names a different target.
fn by_locality(
    client: &core::Locality,
    out: &mut [eds::LocalityLbEndpoints],
    s: &LocalityLbSetting,
) {
    for lle in out.iter_mut() {
        let l = lle.locality.clone().unwrap_or_default();
        let mut p = lb_priority(client, &l);
        if p == 3
            && let Some(f) = s.failover.iter().find(|f| f.from == client.region)
            && l.region != f.to
        {
            p = 4;
        }
        lle.priority = lle.priority * 5 + p;
    }
}

/// Priorities renumbered from 0 without gaps, order kept.
fn compact(mut out: Vec<eds::LocalityLbEndpoints>) -> Vec<eds::LocalityLbEndpoints> {
    let used: BTreeSet<u32> = out.iter().map(|l| l.priority).collect();
    let rank: BTreeMap<u32, u32> = used.into_iter().zip(0..).collect();
    for l in &mut out {
        l.priority = rank[&l.priority];
    }
    out
}

/// `applyFailoverPriorityPerLocality`: the group split by priority, 0 for endpoints whose
/// labels match the client's on every listed label, `n - j` when label `j` is the first to
/// differ (`label=value` compares with `value` instead of the client's).
fn by_failover_priority(
    g: Group,
    client: &BTreeMap<String, String>,
    labels: &[String],
) -> Vec<eds::LocalityLbEndpoints> {
    let n = labels.len() as u32;
    let mut by: BTreeMap<u32, Vec<Labelled>> = BTreeMap::new();
    for (e, ls) in g.endpoints {
        let mut p = 0;
        for (j, label) in labels.iter().enumerate() {
            let (name, want) = match label.split_once('=') {
                Some((name, value)) => (name, value),
                None => (label.as_str(), client.get(label).map_or("", String::as_str)),
            };
            if want != ls.get(name).map_or("", String::as_str) {
                p = n - j as u32;
                break;
            }
        }
        by.entry(p).or_default().push((e, ls));
    }
    by.into_iter()
        .map(|(p, endpoints)| {
            locality_endpoints(
                Group {
                    locality: g.locality.clone(),
                    endpoints,
                },
                p,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
