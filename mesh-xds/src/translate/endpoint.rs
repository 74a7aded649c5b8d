//! `ClusterLoadAssignment` (EDS, and the inline assignment of STATIC / LOGICAL_DNS clusters).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as pb;
use envoy_types::pb::google::protobuf::value::Kind;
use mesh_core::model::{
    ClusterLoadAssignment, DEFAULT_OVERPROVISIONING_FACTOR, Endpoint, EndpointAddress,
    HealthStatus, Locality, LocalityEndpoints, TlsMode,
};

use super::{At, Invalid, Res, bail};
use crate::resource::Rejection;

/// Decodes and validates an EDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<ClusterLoadAssignment>, Rejection> {
    let cla: pb::ClusterLoadAssignment =
        super::decode_message(bytes, "envoy.config.endpoint.v3.ClusterLoadAssignment")?;
    if cla.cluster_name.is_empty() {
        return Err(Rejection {
            name: None,
            reason: "cluster_load_assignment has an empty cluster_name".into(),
        });
    }
    cluster_load_assignment(&cla, AddressKind::Ip)
        .map(Arc::new)
        .map_err(|e| e.reject("cluster_load_assignment", &cla.cluster_name))
}

/// Which endpoint addresses are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// IP addresses only (EDS).
    Ip,
    /// IP addresses or DNS names (STATIC, LOGICAL_DNS).
    IpOrDns,
}

/// Translates a `ClusterLoadAssignment`.
pub fn cluster_load_assignment(
    cla: &pb::ClusterLoadAssignment,
    addresses: AddressKind,
) -> Res<ClusterLoadAssignment> {
    let mut overprovisioning_factor = DEFAULT_OVERPROVISIONING_FACTOR;
    if let Some(policy) = &cla.policy {
        if !policy.drop_overloads.is_empty() {
            let cats: Vec<&str> = policy
                .drop_overloads
                .iter()
                .map(|d| d.category.as_str())
                .collect();
            return bail(format!(
                "drop_overloads ({}) are not supported: dropping requests would silently differ",
                cats.join(", ")
            ))
            .at("policy");
        }
        if let Some(f) = &policy.overprovisioning_factor {
            if f.value == 0 {
                return bail("overprovisioning_factor must be greater than 0").at("policy");
            }
            overprovisioning_factor = f.value;
        }
        if policy.weighted_priority_health {
            return bail("weighted_priority_health is not supported").at("policy");
        }
        if policy.endpoint_stale_after.is_some() {
            return bail("endpoint_stale_after is not supported").at("policy");
        }
    }
    if !cla.named_endpoints.is_empty() {
        return bail("named_endpoints are not supported");
    }
    let mut localities = Vec::with_capacity(cla.endpoints.len());
    let mut interned: HashMap<(&str, &str, &str), Arc<Locality>> = HashMap::new();
    let mut priorities = BTreeSet::new();
    for (i, lle) in cla.endpoints.iter().enumerate() {
        let l = locality_endpoints(lle, addresses, &mut interned)
            .at_with(|| format!("endpoints[{i}]"))?;
        priorities.insert(l.priority);
        localities.push(l);
    }
    // gRPC A27: priorities must be contiguous from 0.
    if let Some(max) = priorities.last()
        && *max as usize + 1 != priorities.len()
    {
        return bail(format!(
            "priorities {priorities:?} are not contiguous from 0"
        ));
    }
    Ok(ClusterLoadAssignment {
        cluster_name: cla.cluster_name.clone(),
        localities,
        overprovisioning_factor,
    })
}

fn locality_endpoints<'a>(
    lle: &'a pb::LocalityLbEndpoints,
    addresses: AddressKind,
    interned: &mut HashMap<(&'a str, &'a str, &'a str), Arc<Locality>>,
) -> Res<LocalityEndpoints> {
    if lle.lb_config.is_some() {
        return bail("load_balancer_endpoints / leds_cluster_locality_config are not supported");
    }
    let (region, zone, sub_zone) = lle.locality.as_ref().map_or(("", "", ""), |l| {
        (l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str())
    });
    let locality = interned
        .entry((region, zone, sub_zone))
        .or_insert_with(|| {
            Arc::new(Locality {
                region: region.to_owned(),
                zone: zone.to_owned(),
                sub_zone: sub_zone.to_owned(),
            })
        })
        .clone();
    let mut endpoints = Vec::with_capacity(lle.lb_endpoints.len());
    let mut total: u64 = 0;
    for (i, e) in lle.lb_endpoints.iter().enumerate() {
        let ep = lb_endpoint(e, addresses).at_with(|| format!(".lb_endpoints[{i}]"))?;
        total += u64::from(ep.weight);
        endpoints.push(ep);
    }
    if total > u64::from(u32::MAX) {
        return bail("sum of lb_endpoints weights exceeds 4294967295");
    }
    Ok(LocalityEndpoints {
        locality,
        priority: lle.priority,
        load_balancing_weight: lle.load_balancing_weight.as_ref().map(|w| w.value),
        endpoints,
    })
}

fn lb_endpoint(e: &pb::LbEndpoint, addresses: AddressKind) -> Res<Endpoint> {
    use pb::lb_endpoint::HostIdentifier;
    let ep = match &e.host_identifier {
        Some(HostIdentifier::Endpoint(ep)) => ep,
        Some(HostIdentifier::EndpointName(n)) => {
            return bail(format!(
                "endpoint_name {n:?} (named endpoints) is not supported"
            ));
        }
        None => return bail("endpoint is required"),
    };
    // Envoy connects to them happy-eyeballs style; one address per endpoint here.
    if !ep.additional_addresses.is_empty() {
        return bail("endpoint.additional_addresses are not supported");
    }
    let tls_mode = tls_mode(e.metadata.as_ref());
    let address = match &ep.address {
        Some(a) if tls_mode == TlsMode::Hbone && is_connect_originate(a) => {
            hbone_destination(e.metadata.as_ref()).at(".metadata")?
        }
        Some(a) => address(a, addresses).at(".endpoint.address")?,
        None => return bail("endpoint.address is required"),
    };
    let weight = match &e.load_balancing_weight {
        None => 1,
        Some(w) if w.value == 0 => return bail("load_balancing_weight must be at least 1"),
        Some(w) => w.value,
    };
    let health = health_status(e.health_status).at(".health_status")?;
    Ok(Endpoint {
        address,
        health,
        weight,
        hostname: (!ep.hostname.is_empty()).then(|| Arc::from(ep.hostname.as_str())),
        tls_mode,
    })
}

/// Translates an Envoy `HealthStatus` value.
pub fn health_status(v: i32) -> Res<HealthStatus> {
    use core::HealthStatus as H;
    Ok(match H::try_from(v) {
        Ok(H::Unknown) => HealthStatus::Unknown,
        Ok(H::Healthy) => HealthStatus::Healthy,
        Ok(H::Unhealthy) => HealthStatus::Unhealthy,
        Ok(H::Draining) => HealthStatus::Draining,
        Ok(H::Timeout) => HealthStatus::Timeout,
        Ok(H::Degraded) => HealthStatus::Degraded,
        Err(_) => return bail(format!("unknown health status {v}")),
    })
}

/// Translates a socket `Address`.
pub fn address(a: &core::Address, kind: AddressKind) -> Res<EndpointAddress> {
    use core::address::Address as A;
    use core::socket_address::PortSpecifier as P;
    let sa = match &a.address {
        Some(A::SocketAddress(sa)) => sa,
        Some(A::Pipe(_)) => return bail("pipe addresses are not supported"),
        Some(A::EnvoyInternalAddress(_)) => {
            return bail("envoy_internal_address is not supported");
        }
        None => return bail("socket_address is required"),
    };
    if sa.protocol != core::socket_address::Protocol::Tcp as i32 {
        return bail("socket_address.protocol must be TCP");
    }
    if !sa.resolver_name.is_empty() {
        return bail(format!(
            "socket_address.resolver_name {:?} is not supported",
            sa.resolver_name
        ));
    }
    let port = match &sa.port_specifier {
        Some(P::PortValue(p)) => u16::try_from(*p)
            .map_err(|_| Invalid::new(format!("socket_address.port_value {p} is out of range")))?,
        Some(P::NamedPort(n)) => {
            return bail(format!("socket_address.named_port {n:?} is not supported"));
        }
        None => return bail("socket_address.port_value is required"),
    };
    match sa.address.parse::<IpAddr>() {
        Ok(ip) => Ok(EndpointAddress::Socket(SocketAddr::new(ip, port))),
        Err(_) if kind == AddressKind::IpOrDns && valid_hostname(&sa.address) => {
            Ok(EndpointAddress::Dns {
                host: Arc::from(sa.address.as_str()),
                port,
            })
        }
        Err(_) => bail(format!(
            "socket_address.address {:?} is not an IP address",
            sa.address
        )),
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Istio marks endpoints that accept mTLS with `filter_metadata["envoy.transport_socket_match"]
/// ["tlsMode"] = "istio"`, and endpoints reached over HBONE with `["tunnel"] = "http"` in
/// its place (istiod's `endpoint_builder.go`).
fn tls_mode(md: Option<&core::Metadata>) -> TlsMode {
    let fields = md
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
        .map(|s| &s.fields);
    let string = |key: &str| {
        fields
            .and_then(|f| f.get(key))
            .and_then(|v| v.kind.as_ref())
    };
    if matches!(string("tunnel"), Some(Kind::StringValue(s)) if s == "http") {
        return TlsMode::Hbone;
    }
    match string("tlsMode") {
        Some(Kind::StringValue(s)) if s == "istio" => TlsMode::Istio,
        Some(Kind::StringValue(s)) if s == "disabled" => TlsMode::Disabled,
        _ => TlsMode::Unset,
    }
}

/// The internal listener istiod's sidecar generator points HBONE endpoints at: Envoy's
/// `connect_originate` listener, which opens the tunnel.
const CONNECT_ORIGINATE: &str = "connect_originate";

fn is_connect_originate(a: &core::Address) -> bool {
    use core::address::Address as A;
    use core::envoy_internal_address::AddressNameSpecifier as N;
    matches!(&a.address, Some(A::EnvoyInternalAddress(i))
        if matches!(&i.address_name_specifier, Some(N::ServerListenerName(n)) if n == CONNECT_ORIGINATE))
}

/// The workload behind an HBONE endpoint that istiod addressed to `connect_originate`: its
/// `ip:port` is in `filter_metadata["envoy.filters.listener.original_dst"]["local"]`.
fn hbone_destination(md: Option<&core::Metadata>) -> Res<EndpointAddress> {
    let local = md
        .and_then(|m| m.filter_metadata.get("envoy.filters.listener.original_dst"))
        .and_then(|s| s.fields.get("local"))
        .and_then(|v| v.kind.as_ref());
    match local {
        Some(Kind::StringValue(s)) => match s.parse::<SocketAddr>() {
            Ok(a) => Ok(EndpointAddress::Socket(a)),
            Err(_) => bail(format!(
                "envoy.filters.listener.original_dst.local {s:?} is not an ip:port"
            )),
        },
        _ => bail(
            "an HBONE endpoint addressed to connect_originate needs \
             envoy.filters.listener.original_dst.local (the workload's ip:port)",
        ),
    }
}
