//! Per-resource rules for the registry kinds and `DestinationRule`; dispatches the others.

use std::collections::BTreeSet;

use super::super::api::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
    OutlierDetection, Resolution, Resource, ServiceEntry, SimpleLb, Spec, TlsMode, TrafficPolicy,
    WorkloadEntry,
};
use super::names::{
    check_duration, check_export_to, check_header_name, check_host, check_ip_or_cidr, check_labels,
    check_metadata, check_port, is_dns_subdomain, is_ip,
};
use super::{Errs, routes, security};

/// Protocols this data plane can serve on a service port.
const PROTOCOLS: [&str; 4] = ["HTTP", "HTTP2", "GRPC", "TCP"];

pub(crate) fn check(r: &Resource, errs: &mut Errs<'_>) {
    check_metadata(&r.metadata.name, &r.metadata.namespace, errs);
    match &r.spec {
        Spec::ServiceEntry(se) => service_entry(se, errs),
        Spec::WorkloadEntry(we) => workload_entry("spec", we, Resolution::Static, errs),
        Spec::VirtualService(vs) => routes::virtual_service(vs, errs),
        Spec::DestinationRule(dr) => destination_rule(dr, errs),
        Spec::PeerAuthentication(pa) => security::peer_authentication(pa, errs),
        Spec::AuthorizationPolicy(ap) => security::authorization_policy(ap, errs),
    }
}

fn service_entry(se: &ServiceEntry, errs: &mut Errs<'_>) {
    if se.hosts.is_empty() {
        errs.push("spec.hosts", "at least one host is required");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        check_host(&format!("spec.hosts[{i}]"), h, errs);
    }
    for (i, a) in se.addresses.iter().enumerate() {
        check_ip_or_cidr(&format!("spec.addresses[{i}]"), a, errs);
        // istiod matches a range only in TCP listeners, by destination IP; clients here
        // route HTTP by authority, where a range matches nothing.
        if let Some((ip, len)) = a.split_once('/')
            && let Ok(ip) = ip.parse::<std::net::IpAddr>()
            && len
                .parse::<u32>()
                .is_ok_and(|l| l < if ip.is_ipv4() { 32 } else { 128 })
        {
            errs.push(
                format!("spec.addresses[{i}]"),
                format!(
                    "CIDR range `{a}` is not supported: istiod matches ranges only on TCP \
                     listeners by destination IP, and requests here are routed by their \
                     authority; list single addresses"
                ),
            );
        }
    }
    if se.ports.is_empty() {
        errs.push("spec.ports", "ports missing: at least one port is required");
    }
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        check_port(&format!("{f}.number"), p.number, errs);
        if let Some(t) = p.target_port {
            check_port(&format!("{f}.targetPort"), t, errs);
        }
        if p.name.is_empty() {
            errs.push(format!("{f}.name"), "port name is required");
        } else if !names.insert(p.name.as_str()) {
            errs.push(
                format!("{f}.name"),
                format!("duplicate port name `{}`", p.name),
            );
        }
        if !numbers.insert(p.number) {
            errs.push(
                format!("{f}.number"),
                format!("duplicate port {}", p.number),
            );
        }
        if !PROTOCOLS.contains(&p.protocol.to_ascii_uppercase().as_str()) {
            errs.push(
                format!("{f}.protocol"),
                format!(
                    "protocol `{}` is not supported (use HTTP, HTTP2, GRPC or TCP)",
                    p.protocol
                ),
            );
        }
    }
    match se.resolution {
        Resolution::None => errs.push(
            "spec.resolution",
            "resolution NONE (pass-through) is not supported: use STATIC or DNS",
        ),
        Resolution::Static if se.endpoints.is_empty() && se.workload_selector.is_none() => errs
            .push(
                "spec.endpoints",
                "resolution STATIC needs endpoints or a workloadSelector",
            ),
        _ => {}
    }
    if !se.endpoints.is_empty() && se.workload_selector.is_some() {
        errs.push(
            "spec.workloadSelector",
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if let Some(sel) = &se.workload_selector {
        if sel.labels.is_empty() {
            errs.push(
                "spec.workloadSelector.labels",
                "at least one label is required",
            );
        }
        check_labels("spec.workloadSelector.labels", &sel.labels, errs);
    }
    for (i, e) in se.endpoints.iter().enumerate() {
        workload_entry(&format!("spec.endpoints[{i}]"), e, se.resolution, errs);
        for name in e.ports.keys() {
            if !names.contains(name.as_str()) {
                errs.push(
                    format!("spec.endpoints[{i}].ports.{name}"),
                    format!("no service port is named `{name}`"),
                );
            }
        }
    }
    check_export_to("spec.exportTo", &se.export_to, errs);
    for (i, san) in se.subject_alt_names.iter().enumerate() {
        if san.is_empty() {
            errs.push(format!("spec.subjectAltNames[{i}]"), "must not be empty");
        }
    }
}

fn workload_entry(field: &str, we: &WorkloadEntry, resolution: Resolution, errs: &mut Errs<'_>) {
    let addr = &we.address;
    if addr.is_empty() {
        errs.push(format!("{field}.address"), "address is required");
    } else if resolution == Resolution::Static && !is_ip(addr) {
        errs.push(
            format!("{field}.address"),
            format!("`{addr}` is not an IP address (required for STATIC resolution)"),
        );
    } else if !is_ip(addr) && !is_dns_subdomain(&addr.to_ascii_lowercase()) {
        errs.push(
            format!("{field}.address"),
            format!("`{addr}` is neither an IP address nor a DNS name"),
        );
    }
    for (name, port) in &we.ports {
        check_port(&format!("{field}.ports.{name}"), *port, errs);
    }
    check_labels(&format!("{field}.labels"), &we.labels, errs);
    errs.unsupported(&format!("{field}.network"), &we.network);
    if !we.service_account.is_empty() && !super::names::is_dns_subdomain(&we.service_account) {
        errs.push(
            format!("{field}.serviceAccount"),
            format!(
                "`{}` is not a valid service account name",
                we.service_account
            ),
        );
    }
    if !we.locality.is_empty() && we.locality.split('/').count() > 3 {
        errs.push(
            format!("{field}.locality"),
            "locality is region/zone/subzone (at most three parts)",
        );
    }
    if we.weight == Some(0) {
        errs.push(format!("{field}.weight"), "weight must be positive");
    }
}

fn destination_rule(dr: &DestinationRule, errs: &mut Errs<'_>) {
    check_host("spec.host", &dr.host, errs);
    errs.unsupported("spec.workloadSelector", &dr.workload_selector);
    check_export_to("spec.exportTo", &dr.export_to, errs);
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy("spec.trafficPolicy", tp, errs);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let f = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            errs.push(format!("{f}.name"), "subset name is required");
        } else if !super::names::is_dns_label(&s.name) {
            errs.push(
                format!("{f}.name"),
                format!(
                    "`{}` is not a valid subset name (an RFC 1123 label)",
                    s.name
                ),
            );
        } else if !names.insert(s.name.as_str()) {
            errs.push(
                format!("{f}.name"),
                format!("duplicate subset `{}`", s.name),
            );
        }
        check_labels(&format!("{f}.labels"), &s.labels, errs);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(&format!("{f}.trafficPolicy"), tp, errs);
        }
    }
}

fn traffic_policy(f: &str, tp: &TrafficPolicy, errs: &mut Errs<'_>) {
    errs.unsupported(&format!("{f}.portLevelSettings"), &tp.port_level_settings);
    errs.unsupported(&format!("{f}.tunnel"), &tp.tunnel);
    errs.unsupported(&format!("{f}.proxyProtocol"), &tp.proxy_protocol);
    errs.unsupported(&format!("{f}.retryBudget"), &tp.retry_budget);
    if let Some(lb) = &tp.load_balancer {
        load_balancer(&format!("{f}.loadBalancer"), lb, errs);
    }
    if let Some(cp) = &tp.connection_pool {
        connection_pool(&format!("{f}.connectionPool"), cp, errs);
    }
    if let Some(od) = &tp.outlier_detection {
        outlier_detection(&format!("{f}.outlierDetection"), od, errs);
    }
    if let Some(tls) = &tp.tls {
        client_tls(&format!("{f}.tls"), tls, errs);
    }
}

fn load_balancer(f: &str, lb: &LoadBalancerSettings, errs: &mut Errs<'_>) {
    errs.unsupported(&format!("{f}.warmupDurationSecs"), &lb.warmup_duration_secs);
    errs.unsupported(&format!("{f}.warmup"), &lb.warmup);
    errs.unsupported(
        &format!("{f}.zoneAwareLbSetting"),
        &lb.zone_aware_lb_setting,
    );
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        errs.push(f, "simple and consistentHash are mutually exclusive");
    }
    if lb.simple == Some(SimpleLb::Passthrough) {
        errs.push(format!("{f}.simple"), "PASSTHROUGH is not supported");
    }
    if let Some(ch) = &lb.consistent_hash {
        let f = format!("{f}.consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip == Some(true),
            ch.http_query_parameter_name.is_some(),
        ]
        .into_iter()
        .filter(|k| *k)
        .count();
        if keys != 1 {
            errs.push(
                &f,
                "exactly one of httpHeaderName, httpCookie, useSourceIp or \
                 httpQueryParameterName must be set",
            );
        }
        if let Some(h) = &ch.http_header_name {
            check_header_name(&format!("{f}.httpHeaderName"), h, errs);
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                errs.push(format!("{f}.httpCookie.name"), "cookie name is required");
            }
            check_duration(&format!("{f}.httpCookie.ttl"), &c.ttl, errs);
            errs.unsupported(&format!("{f}.httpCookie.attributes"), &c.attributes);
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            errs.push(&f, "ringHash and maglev are mutually exclusive");
        }
    }
    if let Some(loc) = &lb.locality_lb_setting {
        let f = format!("{f}.localityLbSetting");
        if !loc.distribute.is_empty() && !loc.failover.is_empty() {
            errs.push(&f, "distribute and failover are mutually exclusive");
        }
        for (i, d) in loc.distribute.iter().enumerate() {
            let sum: u64 = d.to.values().map(|w| u64::from(*w)).sum();
            if sum != 100 {
                errs.push(
                    format!("{f}.distribute[{i}].to"),
                    format!("weights add up to {sum}, not 100"),
                );
            }
            if d.from.is_empty() {
                errs.push(format!("{f}.distribute[{i}].from"), "locality is required");
            }
        }
        for (i, fo) in loc.failover.iter().enumerate() {
            if fo.from.is_empty() || fo.to.is_empty() {
                errs.push(
                    format!("{f}.failover[{i}]"),
                    "from and to regions are required",
                );
            } else if fo.from == fo.to {
                errs.push(
                    format!("{f}.failover[{i}]"),
                    "failover must go to a different region",
                );
            }
        }
    }
}

fn non_negative(f: &str, v: Option<i32>, errs: &mut Errs<'_>) {
    if let Some(v) = v
        && v < 0
    {
        errs.push(f, format!("{v} must not be negative"));
    }
}

fn connection_pool(f: &str, cp: &ConnectionPoolSettings, errs: &mut Errs<'_>) {
    if let Some(tcp) = &cp.tcp {
        non_negative(
            &format!("{f}.tcp.maxConnections"),
            tcp.max_connections,
            errs,
        );
        check_duration(
            &format!("{f}.tcp.connectTimeout"),
            &tcp.connect_timeout,
            errs,
        );
        check_duration(
            &format!("{f}.tcp.maxConnectionDuration"),
            &tcp.max_connection_duration,
            errs,
        );
        check_duration(&format!("{f}.tcp.idleTimeout"), &tcp.idle_timeout, errs);
        errs.unsupported(&format!("{f}.tcp.tcpKeepalive"), &tcp.tcp_keepalive);
    }
    if let Some(h) = &cp.http {
        let g = |n: &str| format!("{f}.http.{n}");
        non_negative(
            &g("http1MaxPendingRequests"),
            h.http1_max_pending_requests,
            errs,
        );
        non_negative(&g("http2MaxRequests"), h.http2_max_requests, errs);
        non_negative(
            &g("maxRequestsPerConnection"),
            h.max_requests_per_connection,
            errs,
        );
        non_negative(&g("maxRetries"), h.max_retries, errs);
        non_negative(&g("maxConcurrentStreams"), h.max_concurrent_streams, errs);
        check_duration(&g("idleTimeout"), &h.idle_timeout, errs);
        errs.unsupported(&g("http2KeepAlive"), &h.http2_keep_alive);
    }
}

fn outlier_detection(f: &str, od: &OutlierDetection, errs: &mut Errs<'_>) {
    errs.unsupported(&format!("{f}.consecutiveErrors"), &od.consecutive_errors);
    errs.unsupported(
        &format!("{f}.outlierDetectionHttpErrorCodes"),
        &od.outlier_detection_http_error_codes,
    );
    check_duration(&format!("{f}.interval"), &od.interval, errs);
    check_duration(
        &format!("{f}.baseEjectionTime"),
        &od.base_ejection_time,
        errs,
    );
    for (name, v) in [
        ("maxEjectionPercent", od.max_ejection_percent),
        ("minHealthPercent", od.min_health_percent),
    ] {
        if let Some(v) = v
            && !(0..=100).contains(&v)
        {
            errs.push(
                format!("{f}.{name}"),
                format!("percentage {v} is out of range 0..=100"),
            );
        }
    }
    if od.consecutive_local_origin_failures.is_some()
        && od.split_external_local_origin_errors != Some(true)
    {
        errs.push(
            format!("{f}.consecutiveLocalOriginFailures"),
            "needs splitExternalLocalOriginErrors: true",
        );
    }
}

fn client_tls(f: &str, tls: &ClientTlsSettings, errs: &mut Errs<'_>) {
    match tls.mode {
        TlsMode::Disable | TlsMode::IstioMutual => {}
        TlsMode::Simple | TlsMode::Mutual => errs.push(
            format!("{f}.mode"),
            format!(
                "mode {} is not supported: use ISTIO_MUTUAL (mesh certificates) or DISABLE",
                if tls.mode == TlsMode::Simple {
                    "SIMPLE"
                } else {
                    "MUTUAL"
                }
            ),
        ),
    }
    errs.unsupported(&format!("{f}.clientCertificate"), &tls.client_certificate);
    errs.unsupported(&format!("{f}.privateKey"), &tls.private_key);
    errs.unsupported(&format!("{f}.caCertificates"), &tls.ca_certificates);
    errs.unsupported(&format!("{f}.credentialName"), &tls.credential_name);
    errs.unsupported(&format!("{f}.subjectAltNames"), &tls.subject_alt_names);
    errs.unsupported(
        &format!("{f}.insecureSkipVerify"),
        &tls.insecure_skip_verify,
    );
    errs.unsupported(&format!("{f}.caCrl"), &tls.ca_crl);
    if let Some(sni) = &tls.sni
        && !is_dns_subdomain(&sni.to_ascii_lowercase())
    {
        errs.push(
            format!("{f}.sni"),
            format!("`{sni}` is not a valid DNS name"),
        );
    }
}
