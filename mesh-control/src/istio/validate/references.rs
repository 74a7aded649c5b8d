//! Rules across resources: duplicates, hosts, subsets, ports and workloads.

use std::collections::{BTreeMap, BTreeSet};

use super::super::api::{Destination, Origin, Resource, ResourceKey, Spec};
use super::super::error::ConfigError;
use super::super::snapshot::{Service, build_services, qualify_host};
use super::Errs;

pub(crate) fn check(resources: &[Resource], out: &mut Vec<ConfigError>) {
    duplicates(resources, out);
    let services = build_services(resources);
    hosts_defined_once(resources, out);
    duplicate_endpoints(&services, out);

    // Subsets defined per host, and which rule owns each host.
    let mut subsets: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut dr_for_host: BTreeMap<String, ResourceKey> = BTreeMap::new();
    let mut vs_for_host: BTreeMap<String, ResourceKey> = BTreeMap::new();
    let mut ns_wide_pa: BTreeMap<&str, ResourceKey> = BTreeMap::new();

    for r in resources {
        let ns = r.metadata.namespace.as_str();
        let mut errs = Errs::new(&r.origin, r.key(), out);
        match &r.spec {
            Spec::DestinationRule(dr) => {
                let host = qualify_host(&dr.host, ns);
                let Some(svc) = lookup(&services, &host, ns, "spec.host", &mut errs) else {
                    continue;
                };
                if let Some(first) = dr_for_host.get(&host) {
                    errs.push(
                        "spec.host",
                        format!("host `{host}` already has a DestinationRule ({first})"),
                    );
                    continue;
                }
                dr_for_host.insert(host.clone(), r.key());
                let set = subsets.entry(host.clone()).or_default();
                for (i, s) in dr.subsets.iter().enumerate() {
                    set.insert(s.name.as_str());
                    if !svc.workloads.iter().any(|w| w.matches(&s.labels)) {
                        errs.push(
                            format!("spec.subsets[{i}]"),
                            format!(
                                "subset `{}` selects no workload of `{host}` (labels {})",
                                s.name,
                                fmt_labels(&s.labels)
                            ),
                        );
                    }
                }
            }
            Spec::PeerAuthentication(pa) => {
                let ns_wide = pa
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.is_empty());
                if ns_wide {
                    if let Some(first) = ns_wide_pa.get(ns) {
                        errs.push(
                            "spec.selector",
                            format!(
                                "namespace `{ns}` already has a namespace-wide \
                                 PeerAuthentication ({first})"
                            ),
                        );
                    } else {
                        ns_wide_pa.insert(ns, r.key());
                    }
                }
            }
            _ => {}
        }
    }

    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let ns = r.metadata.namespace.as_str();
        let mut errs = Errs::new(&r.origin, r.key(), out);
        for (i, h) in vs.hosts.iter().enumerate() {
            let host = qualify_host(h, ns);
            let field = format!("spec.hosts[{i}]");
            if lookup(&services, &host, ns, &field, &mut errs).is_none() {
                continue;
            }
            if let Some(first) = vs_for_host.get(&host) {
                errs.push(
                    field,
                    format!("host `{host}` already has a VirtualService ({first})"),
                );
            } else {
                vs_for_host.insert(host, r.key());
            }
        }
        for (i, route) in vs.http.iter().enumerate() {
            for (j, d) in route.route.iter().enumerate() {
                let f = format!("spec.http[{i}].route[{j}].destination");
                destination(&f, &d.destination, ns, &services, &subsets, &mut errs);
            }
            if let Some(m) = &route.mirror {
                let f = format!("spec.http[{i}].mirror");
                destination(&f, m, ns, &services, &subsets, &mut errs);
            }
        }
    }
}

fn fmt_labels(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn lookup<'s>(
    services: &'s BTreeMap<String, Service>,
    host: &str,
    ns: &str,
    field: &str,
    errs: &mut Errs<'_>,
) -> Option<&'s Service> {
    match services.get(host) {
        Some(s) if s.visible_from(ns) => Some(s),
        Some(s) => {
            errs.push(
                field,
                format!(
                    "unknown host `{host}`: {} does not export it to namespace `{ns}`",
                    s.defined_by
                ),
            );
            None
        }
        None => {
            errs.push(
                field,
                format!("unknown host `{host}`: no ServiceEntry defines it"),
            );
            None
        }
    }
}

fn destination(
    f: &str,
    d: &Destination,
    ns: &str,
    services: &BTreeMap<String, Service>,
    subsets: &BTreeMap<String, BTreeSet<&str>>,
    errs: &mut Errs<'_>,
) {
    let host = qualify_host(&d.host, ns);
    let Some(svc) = lookup(services, &host, ns, &format!("{f}.host"), errs) else {
        return;
    };
    match &d.port {
        None if svc.ports.len() > 1 => errs.push(
            format!("{f}.port"),
            format!(
                "port missing: `{host}` has {} ports, say which one",
                svc.ports.len()
            ),
        ),
        Some(p) if svc.port(p.number).is_none() => errs.push(
            format!("{f}.port.number"),
            format!("`{host}` has no port {}", p.number),
        ),
        _ => {}
    }
    if !d.subset.is_empty()
        && !subsets
            .get(&host)
            .is_some_and(|s| s.contains(d.subset.as_str()))
    {
        errs.push(
            format!("{f}.subset"),
            format!(
                "subset `{}` is not defined by a DestinationRule for `{host}`",
                d.subset
            ),
        );
    }
}

fn duplicates(resources: &[Resource], out: &mut Vec<ConfigError>) {
    let mut seen: BTreeMap<ResourceKey, &Origin> = BTreeMap::new();
    for r in resources {
        let key = r.key();
        if let Some(first) = seen.get(&key) {
            out.push(ConfigError::new(
                &r.origin,
                Some(&key),
                "metadata.name",
                format!("duplicate name: {key} is also defined at {first}"),
            ));
        } else {
            seen.insert(key, &r.origin);
        }
    }
}

fn hosts_defined_once(resources: &[Resource], out: &mut Vec<ConfigError>) {
    let mut seen: BTreeMap<String, ResourceKey> = BTreeMap::new();
    for r in resources {
        let Spec::ServiceEntry(se) = &r.spec else {
            continue;
        };
        for (i, h) in se.hosts.iter().enumerate() {
            let host = qualify_host(h, &r.metadata.namespace);
            match seen.get(&host) {
                Some(first) if *first != r.key() => out.push(ConfigError::new(
                    &r.origin,
                    Some(&r.key()),
                    format!("spec.hosts[{i}]"),
                    format!("host `{host}` is already defined by {first}"),
                )),
                Some(_) => out.push(ConfigError::new(
                    &r.origin,
                    Some(&r.key()),
                    format!("spec.hosts[{i}]"),
                    format!("host `{host}` is listed twice"),
                )),
                None => {
                    seen.insert(host, r.key());
                }
            }
        }
    }
}

/// Two workloads of one service answering on the same address and port are a config
/// mistake (typically a copy-paste of a local WorkloadEntry on 127.0.0.1).
fn duplicate_endpoints(services: &BTreeMap<String, Service>, out: &mut Vec<ConfigError>) {
    let mut reported = BTreeSet::new();
    for svc in services.values() {
        for port in &svc.ports {
            let mut seen: BTreeMap<(&str, u32), &str> = BTreeMap::new();
            for w in &svc.workloads {
                let ep = (w.entry.address.as_str(), w.port_for(port));
                if let Some(first) = seen.get(&ep) {
                    if reported.insert((svc.defined_by.clone(), ep.0.to_string(), ep.1)) {
                        out.push(ConfigError::new(
                            &svc.origin,
                            Some(&svc.defined_by),
                            format!("spec.ports[name={}]", port.name),
                            format!(
                                "workloads {first} and {} both serve {}:{}",
                                w.name, ep.0, ep.1
                            ),
                        ));
                    }
                } else {
                    seen.insert(ep, &w.name);
                }
            }
        }
    }
}
