//! Per-resource rules for `VirtualService`.

use super::super::api::{
    Destination, Headers, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry,
    HttpRewrite, HttpRoute, VirtualService,
};
use super::Errs;
use super::names::{
    check_duration, check_export_to, check_header_name, check_host, check_labels, check_percent,
    check_port, check_regex, check_string_match, is_dns_label,
};

/// `retryOn` conditions Envoy (and so Istio) accepts, besides HTTP status codes.
const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names accepted by `fault.abort.grpcStatus`.
const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(crate) fn virtual_service(vs: &VirtualService, errs: &mut Errs<'_>) {
    if vs.hosts.is_empty() {
        errs.push("spec.hosts", "at least one host is required");
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        check_host(&format!("spec.hosts[{i}]"), h, errs);
    }
    for (i, g) in vs.gateways.iter().enumerate() {
        if g != "mesh" {
            errs.push(
                format!("spec.gateways[{i}]"),
                format!("gateway `{g}` is not supported (only `mesh`)"),
            );
        }
    }
    errs.unsupported("spec.tls", &vs.tls);
    errs.unsupported("spec.tcp", &vs.tcp);
    check_export_to("spec.exportTo", &vs.export_to, errs);
    if vs.http.is_empty() {
        errs.push("spec.http", "at least one http route is required");
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(&format!("spec.http[{i}]"), r, errs);
    }
}

fn http_route(f: &str, r: &HttpRoute, errs: &mut Errs<'_>) {
    errs.unsupported(&format!("{f}.directResponse"), &r.direct_response);
    errs.unsupported(&format!("{f}.delegate"), &r.delegate);
    errs.unsupported(&format!("{f}.mirrorPercent"), &r.mirror_percent);
    errs.unsupported(&format!("{f}.mirrors"), &r.mirrors);
    errs.unsupported(&format!("{f}.corsPolicy"), &r.cors_policy);
    for (i, m) in r.matches.iter().enumerate() {
        http_match(&format!("{f}.match[{i}]"), m, errs);
    }
    match (r.route.is_empty(), &r.redirect) {
        (true, None) => errs.push(f, "a route needs `route` destinations or a `redirect`"),
        (false, Some(_)) => errs.push(
            format!("{f}.redirect"),
            "`route` and `redirect` are mutually exclusive",
        ),
        _ => {}
    }
    if let Some(rd) = &r.redirect {
        errs.unsupported(&format!("{f}.redirect.prefixRewrite"), &rd.prefix_rewrite);
        redirect(&format!("{f}.redirect"), rd, errs);
        if r.rewrite.is_some() {
            errs.push(
                format!("{f}.rewrite"),
                "`rewrite` cannot be used with `redirect`",
            );
        }
    }
    for (i, d) in r.route.iter().enumerate() {
        let g = format!("{f}.route[{i}]");
        destination(&format!("{g}.destination"), &d.destination, errs);
        if d.weight < 0 {
            errs.push(
                format!("{g}.weight"),
                format!("weight {} is negative", d.weight),
            );
        }
        if let Some(h) = &d.headers {
            headers(&format!("{g}.headers"), h, errs);
        }
    }
    // Istio: with one destination the weight may be omitted; with several, they add up to 100.
    if r.route.len() > 1 || r.route.iter().any(|d| d.weight != 0) {
        let sum: i64 = r.route.iter().map(|d| i64::from(d.weight)).sum();
        if sum != 100 {
            errs.push(
                format!("{f}.route"),
                format!("weights add up to {sum}, not 100"),
            );
        }
    }
    if let Some(rw) = &r.rewrite {
        rewrite(&format!("{f}.rewrite"), rw, errs);
    }
    check_duration(&format!("{f}.timeout"), &r.timeout, errs);
    if let Some(rt) = &r.retries {
        retries(&format!("{f}.retries"), rt, errs);
    }
    if let Some(fault) = &r.fault {
        fault_injection(&format!("{f}.fault"), fault, errs);
    }
    if let Some(m) = &r.mirror {
        destination(&format!("{f}.mirror"), m, errs);
    } else if r.mirror_percentage.is_some() {
        errs.push(format!("{f}.mirrorPercentage"), "needs `mirror`");
    }
    check_percent(&format!("{f}.mirrorPercentage"), &r.mirror_percentage, errs);
    if let Some(h) = &r.headers {
        headers(&format!("{f}.headers"), h, errs);
    }
}

fn http_match(f: &str, m: &HttpMatchRequest, errs: &mut Errs<'_>) {
    errs.unsupported(&format!("{f}.gateways"), &m.gateways);
    errs.unsupported(&format!("{f}.statPrefix"), &m.stat_prefix);
    for (name, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(&format!("{f}.{name}"), sm, errs);
        }
    }
    if let Some(uri) = &m.uri {
        let path = uri.exact.as_deref().or(uri.prefix.as_deref());
        if path.is_some_and(|p| !p.starts_with('/')) {
            errs.push(format!("{f}.uri"), "a path must start with `/`");
        }
    }
    for (field, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let g = format!("{f}.{field}.{name}");
            check_header_name(&g, name, errs);
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                errs.push(&g, format!("header name `{name}` must be lowercase"));
            }
            check_string_match(&g, sm, errs);
        }
    }
    for (name, sm) in &m.query_params {
        let g = format!("{f}.queryParams.{name}");
        if name.is_empty() {
            errs.push(&g, "query parameter name is required");
        }
        check_string_match(&g, sm, errs);
    }
    if let Some(p) = m.port {
        check_port(&format!("{f}.port"), p, errs);
    }
    check_labels(&format!("{f}.sourceLabels"), &m.source_labels, errs);
    if let Some(ns) = &m.source_namespace
        && !is_dns_label(ns)
    {
        errs.push(
            format!("{f}.sourceNamespace"),
            format!("`{ns}` is not a valid namespace"),
        );
    }
}

fn destination(f: &str, d: &Destination, errs: &mut Errs<'_>) {
    check_host(&format!("{f}.host"), &d.host, errs);
    if !d.subset.is_empty() && !is_dns_label(&d.subset) {
        errs.push(
            format!("{f}.subset"),
            format!("`{}` is not a valid subset name", d.subset),
        );
    }
    if let Some(p) = &d.port {
        check_port(&format!("{f}.port.number"), p.number, errs);
    }
}

fn redirect(f: &str, r: &HttpRedirect, errs: &mut Errs<'_>) {
    if r.uri.is_none()
        && r.authority.is_none()
        && r.port.is_none()
        && r.scheme.is_none()
        && r.derive_port.is_none()
    {
        errs.push(
            f,
            "a redirect must change at least one of uri, authority, port or scheme",
        );
    }
    if let Some(uri) = &r.uri
        && !uri.starts_with('/')
    {
        errs.push(format!("{f}.uri"), "a path must start with `/`");
    }
    if let Some(p) = r.port {
        check_port(&format!("{f}.port"), p, errs);
        if r.derive_port.is_some() {
            errs.push(f, "port and derivePort are mutually exclusive");
        }
    }
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        errs.push(
            format!("{f}.scheme"),
            format!("scheme `{s}` must be http or https"),
        );
    }
    if let Some(code) = r.redirect_code
        && ![301, 302, 303, 307, 308].contains(&code)
    {
        errs.push(
            format!("{f}.redirectCode"),
            format!("{code} is not a redirect code (301, 302, 303, 307 or 308)"),
        );
    }
}

fn rewrite(f: &str, r: &HttpRewrite, errs: &mut Errs<'_>) {
    if r.uri.is_some() && r.uri_regex_rewrite.is_some() {
        errs.push(f, "uri and uriRegexRewrite are mutually exclusive");
    }
    if r.uri.is_none() && r.authority.is_none() && r.uri_regex_rewrite.is_none() {
        errs.push(f, "a rewrite must set uri, authority or uriRegexRewrite");
    }
    if let Some(a) = &r.authority
        && a.is_empty()
    {
        errs.push(format!("{f}.authority"), "must not be empty");
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        check_regex(&format!("{f}.uriRegexRewrite.match"), &rr.pattern, errs);
    }
}

fn retries(f: &str, r: &HttpRetry, errs: &mut Errs<'_>) {
    errs.unsupported(
        &format!("{f}.retryRemoteLocalities"),
        &r.retry_remote_localities,
    );
    errs.unsupported(
        &format!("{f}.retryIgnorePreviousHosts"),
        &r.retry_ignore_previous_hosts,
    );
    errs.unsupported(&format!("{f}.backoff"), &r.backoff);
    if r.attempts < 0 {
        errs.push(format!("{f}.attempts"), "attempts must not be negative");
    }
    if r.attempts == 0 && (r.per_try_timeout.is_some() || r.retry_on.is_some()) {
        errs.push(
            format!("{f}.attempts"),
            "perTryTimeout or retryOn set while attempts is 0 (retries disabled)",
        );
    }
    check_duration(&format!("{f}.perTryTimeout"), &r.per_try_timeout, errs);
    if let Some(on) = &r.retry_on {
        for cond in on.split(',').map(str::trim) {
            let is_status = cond.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
            if !is_status && !RETRY_ON.contains(&cond) {
                errs.push(
                    format!("{f}.retryOn"),
                    format!("unknown retry condition `{cond}`"),
                );
            }
        }
    }
}

fn fault_injection(f: &str, fault: &HttpFaultInjection, errs: &mut Errs<'_>) {
    if fault.delay.is_none() && fault.abort.is_none() {
        errs.push(f, "a fault needs a delay or an abort");
    }
    if let Some(d) = &fault.delay {
        let g = format!("{f}.delay");
        errs.unsupported(&format!("{g}.percent"), &d.percent);
        errs.unsupported(&format!("{g}.exponentialDelay"), &d.exponential_delay);
        if d.fixed_delay.is_none() {
            errs.push(format!("{g}.fixedDelay"), "fixedDelay is required");
        }
        check_duration(&format!("{g}.fixedDelay"), &d.fixed_delay, errs);
        check_percent(&format!("{g}.percentage"), &d.percentage, errs);
    }
    if let Some(a) = &fault.abort {
        let g = format!("{f}.abort");
        errs.unsupported(&format!("{g}.http2Error"), &a.http2_error);
        match (a.http_status, &a.grpc_status) {
            (None, None) => errs.push(&g, "httpStatus or grpcStatus is required"),
            (Some(_), Some(_)) => errs.push(&g, "httpStatus and grpcStatus are mutually exclusive"),
            _ => {}
        }
        if let Some(s) = a.http_status
            && !(200..=599).contains(&s)
        {
            errs.push(
                format!("{g}.httpStatus"),
                format!("HTTP status {s} is out of range 200..=599"),
            );
        }
        if let Some(s) = &a.grpc_status
            && !GRPC_STATUS.contains(&s.as_str())
        {
            errs.push(
                format!("{g}.grpcStatus"),
                format!("`{s}` is not a gRPC status name (such as UNAVAILABLE)"),
            );
        }
        check_percent(&format!("{g}.percentage"), &a.percentage, errs);
    }
}

fn headers(f: &str, h: &Headers, errs: &mut Errs<'_>) {
    for (dir, ops) in [("request", &h.request), ("response", &h.response)] {
        let Some(ops) = ops else { continue };
        let g = format!("{f}.{dir}");
        for (op, names) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in names {
                check_header_name(&format!("{g}.{op}.{name}"), name, errs);
                if http::HeaderValue::from_str(value).is_err() {
                    errs.push(
                        format!("{g}.{op}.{name}"),
                        "value is not a valid header value",
                    );
                }
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            check_header_name(&format!("{g}.remove[{i}]"), name, errs);
        }
    }
}
