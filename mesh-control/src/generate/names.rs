//! Istio's resource names.

/// `outbound|<port>|<subset>|<fqdn>` (subset empty for the whole service).
///
/// ```
/// use mesh_control::generate::cluster_name;
/// assert_eq!(cluster_name(9080, "v1", "reviews.default.svc.cluster.local"),
///            "outbound|9080|v1|reviews.default.svc.cluster.local");
/// ```
pub fn cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// The parts of an outbound cluster name: port, subset, host.
pub fn parse_cluster_name(name: &str) -> Option<(u32, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    Some((port, parts.next()?, parts.next()?))
}

/// The listener a proxyless gRPC server asks for: `xds.istio.io/grpc/lds/inbound/<ip>:<port>`.
pub fn inbound_listener_name(ip: &str, port: u32) -> String {
    if ip.contains(':') {
        format!("xds.istio.io/grpc/lds/inbound/[{ip}]:{port}")
    } else {
        format!("xds.istio.io/grpc/lds/inbound/{ip}:{port}")
    }
}

/// The domains a service port's virtual host answers to, as istiod lists them for a client
/// in namespace `client_ns`: the host and `host:port`, the absolute `host.` forms, and for a
/// Kubernetes-style host `<name>.<ns>.svc.cluster.local` the short forms `<name>` (only in
/// the client's own namespace), `<name>.<ns>.svc` and `<name>.<ns>`, each also with the
/// port.
///
/// ```
/// use mesh_control::generate::virtual_host_domains;
/// assert_eq!(
///     virtual_host_domains("reviews.default.svc.cluster.local", 9080, Some("default")),
///     [
///         "reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080",
///         "reviews.default.svc.cluster.local.", "reviews.default.svc.cluster.local.:9080",
///         "reviews", "reviews:9080", "reviews.default.svc", "reviews.default.svc:9080",
///         "reviews.default", "reviews.default:9080",
///     ]
/// );
/// assert_eq!(virtual_host_domains("api.example.com", 443, None).len(), 4);
/// ```
pub fn virtual_host_domains(host: &str, port: u32, client_ns: Option<&str>) -> Vec<String> {
    let mut out = vec![host.to_string(), host_port(host, port)];
    let absolute = format!("{host}.");
    out.push(host_port(&absolute, port));
    out.insert(2, absolute);
    if let Some(name_ns) = host.strip_suffix(".svc.cluster.local")
        && let Some((name, ns)) = name_ns.split_once('.')
        && !name.is_empty()
        && !ns.is_empty()
        && !ns.contains('.')
    {
        let mut short = Vec::new();
        if client_ns == Some(ns) {
            short.push(name.to_string());
        }
        short.push(format!("{name_ns}.svc"));
        short.push(name_ns.to_string());
        for s in short {
            out.push(host_port(&s, port));
            out.insert(out.len() - 1, s);
        }
    }
    out
}

/// `<fqdn>:<port>`: the client listener and route configuration of a service port.
pub(crate) fn host_port(host: &str, port: u32) -> String {
    format!("{host}:{port}")
}

/// The service's virtual IPs as an authority names them: `ip` (`[ip]` for IPv6), and with
/// the port. Validation lets single addresses only through (a `/32` or `/128` is one).
pub(crate) fn vips(addresses: &[String]) -> impl Iterator<Item = String> + '_ {
    addresses.iter().filter_map(|a| {
        let ip: std::net::IpAddr = a.split('/').next()?.parse().ok()?;
        Some(match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let n = cluster_name(80, "", "a.b");
        assert_eq!(parse_cluster_name(&n), Some((80, "", "a.b")));
        assert_eq!(parse_cluster_name("inbound|80||a"), None);
        assert_eq!(
            inbound_listener_name("::1", 80),
            "xds.istio.io/grpc/lds/inbound/[::1]:80"
        );
    }
}
