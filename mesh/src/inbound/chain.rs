//! Choosing a server listener's filter chain for a connection, in Envoy's order (gRPC
//! A36): destination port, destination IP, server name, transport protocol, application
//! protocol, source type, source IP, source port. At each step the chains with the most
//! specific match stay; chains that leave the field empty stay only when none matches.

use std::net::{IpAddr, SocketAddr};

use mesh_core::model::{CidrRange, FilterChain, FilterChainMatch, ServerListener, SourceType};

/// What is known about a connection when its chain is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Our address.
    pub local: SocketAddr,
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the first bytes were a TLS ClientHello (`None`: not sniffed).
    pub tls: Option<bool>,
}

/// How one chain's field relates to the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The field is empty: the chain applies when no chain matches specifically.
    Wildcard,
    /// The field does not match.
    No,
    /// The field matches; higher is more specific (prefix length).
    Yes(u8),
}

/// Whether any chain matches on the transport protocol, so connections must be sniffed
/// before a chain can be chosen.
pub fn needs_sniff(listener: &ServerListener) -> bool {
    listener
        .filter_chains
        .iter()
        .any(|c| c.filter_chain_match.transport_protocol.is_some())
}

/// Match fields this server cannot evaluate (it does not parse the ClientHello for SNI or
/// ALPN): a listener using them is refused rather than served with a wrong choice.
pub fn unsupported(listener: &ServerListener) -> Option<String> {
    let all = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref());
    for c in all {
        let m = &c.filter_chain_match;
        if !m.server_names.is_empty() {
            return Some(format!(
                "filter chain {:?}: server_names matching is not supported",
                c.name
            ));
        }
        if !m.application_protocols.is_empty() {
            return Some(format!(
                "filter chain {:?}: application_protocols matching is not supported",
                c.name
            ));
        }
        // One acceptor serves every chain: the handshake ends before a chain is chosen.
        if let (Some(tls), Some(first)) = (&c.tls, chains_tls(listener))
            && tls.params != first.params
        {
            return Some(format!(
                "filter chain {:?}: tls_params differing between TLS filter chains are not supported",
                c.name
            ));
        }
        if let Some(tls) = &c.tls
            && !tls.require_client_certificate
        {
            return Some(format!(
                "filter chain {:?}: TLS without client certificates is not supported (mTLS only)",
                c.name
            ));
        }
    }
    None
}

/// The TLS context of the listener's first TLS chain.
fn chains_tls(listener: &ServerListener) -> Option<&mesh_core::model::DownstreamTls> {
    listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref())
        .find_map(|c| c.tls.as_ref())
}

/// The index of the chain for `conn` in `listener.filter_chains`, `None` for the default
/// chain (which may be absent: then the connection is closed).
pub fn select(listener: &ServerListener, conn: &ConnectionInfo) -> Option<usize> {
    let local = canonical(conn.local.ip());
    let remote = canonical(conn.remote.ip());
    let steps: [&dyn Fn(&FilterChainMatch) -> Fit; 8] = [
        &|m| match m.destination_port {
            None => Fit::Wildcard,
            Some(p) => yes_if(p == conn.local.port()),
        },
        &|m| longest(&m.prefix_ranges, local),
        &|m| {
            if m.server_names.is_empty() {
                Fit::Wildcard
            } else {
                Fit::No
            }
        },
        &|m| match (m.transport_protocol.as_deref(), conn.tls) {
            (None, _) => Fit::Wildcard,
            (Some("tls"), Some(true)) | (Some("raw_buffer"), Some(false)) => Fit::Yes(0),
            _ => Fit::No,
        },
        &|m| {
            if m.application_protocols.is_empty() {
                Fit::Wildcard
            } else {
                Fit::No
            }
        },
        &|m| {
            let same = remote == local || remote.is_loopback();
            match m.source_type {
                SourceType::Any => Fit::Wildcard,
                SourceType::SameIpOrLoopback => yes_if(same),
                SourceType::External => yes_if(!same),
            }
        },
        &|m| longest(&m.source_prefix_ranges, remote),
        &|m| {
            if m.source_ports.is_empty() {
                Fit::Wildcard
            } else {
                yes_if(m.source_ports.contains(&conn.remote.port()))
            }
        },
    ];
    let mut candidates: Vec<usize> = (0..listener.filter_chains.len()).collect();
    for step in steps {
        let fits: Vec<(usize, Fit)> = candidates
            .iter()
            .map(|&i| (i, step(&listener.filter_chains[i].filter_chain_match)))
            .collect();
        let best = fits
            .iter()
            .filter_map(|(_, f)| match f {
                Fit::Yes(s) => Some(*s),
                _ => None,
            })
            .max();
        candidates = match best {
            Some(best) => fits
                .iter()
                .filter(|(_, f)| *f == Fit::Yes(best))
                .map(|(i, _)| *i)
                .collect(),
            None => fits
                .iter()
                .filter(|(_, f)| *f == Fit::Wildcard)
                .map(|(i, _)| *i)
                .collect(),
        };
        if candidates.is_empty() {
            return None;
        }
    }
    // Equal matches are rejected when the listener is translated; the first wins anyway.
    candidates.first().copied()
}

/// The chain [`select`] picks, or the default chain.
pub fn chain_for<'a>(
    listener: &'a ServerListener,
    conn: &ConnectionInfo,
) -> Option<&'a FilterChain> {
    match select(listener, conn) {
        Some(i) => listener.filter_chains.get(i),
        None => listener.default_filter_chain.as_ref(),
    }
}

fn yes_if(b: bool) -> Fit {
    if b { Fit::Yes(0) } else { Fit::No }
}

fn longest(ranges: &[CidrRange], ip: IpAddr) -> Fit {
    if ranges.is_empty() {
        return Fit::Wildcard;
    }
    ranges
        .iter()
        .filter(|r| r.contains(ip))
        .map(|r| r.prefix_len)
        .max()
        .map_or(Fit::No, Fit::Yes)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::model::{HttpConnectionManager, RouteSource};
    use std::sync::Arc;

    fn chain(name: &str, m: FilterChainMatch) -> FilterChain {
        FilterChain {
            name: name.into(),
            filter_chain_match: m,
            tls: None,
            http_connection_manager: HttpConnectionManager {
                route_source: RouteSource::Inline(Arc::new(Default::default())),
                http_filters: vec![],
                max_stream_duration: None,
                idle_timeout: None,
                xff_num_trusted_hops: 0,
                path_normalization: Default::default(),
            },
        }
    }

    fn listener(chains: Vec<FilterChain>, default: bool) -> ServerListener {
        ServerListener {
            address: "10.0.0.1:8080".parse().unwrap(),
            filter_chains: chains,
            default_filter_chain: default.then(|| chain("default", Default::default())),
        }
    }

    fn conn(remote: &str, tls: Option<bool>) -> ConnectionInfo {
        ConnectionInfo {
            local: "10.0.0.1:8080".parse().unwrap(),
            remote: remote.parse().unwrap(),
            tls,
        }
    }

    fn cidr(s: &str, len: u8) -> CidrRange {
        CidrRange::new(s.parse().unwrap(), len).unwrap()
    }

    fn name(l: &ServerListener, c: &ConnectionInfo) -> Option<String> {
        chain_for(l, c).map(|c| c.name.clone())
    }

    #[test]
    fn transport_protocol_splits_permissive() {
        let tp = |p: &str| FilterChainMatch {
            transport_protocol: Some(p.into()),
            ..Default::default()
        };
        let l = listener(
            vec![chain("mtls", tp("tls")), chain("plain", tp("raw_buffer"))],
            false,
        );
        assert!(needs_sniff(&l));
        assert_eq!(
            name(&l, &conn("10.0.0.2:5000", Some(true))).as_deref(),
            Some("mtls")
        );
        assert_eq!(
            name(&l, &conn("10.0.0.2:5000", Some(false))).as_deref(),
            Some("plain")
        );
        assert_eq!(name(&l, &conn("10.0.0.2:5000", None)), None);
    }

    #[test]
    fn specific_beats_wildcard_and_longest_prefix_wins() {
        let l = listener(
            vec![
                chain("any", Default::default()),
                chain(
                    "net8",
                    FilterChainMatch {
                        source_prefix_ranges: vec![cidr("10.0.0.0", 8)],
                        ..Default::default()
                    },
                ),
                chain(
                    "net24",
                    FilterChainMatch {
                        source_prefix_ranges: vec![cidr("10.0.0.0", 24)],
                        ..Default::default()
                    },
                ),
            ],
            false,
        );
        assert!(!needs_sniff(&l));
        assert_eq!(
            name(&l, &conn("10.0.0.9:1", None)).as_deref(),
            Some("net24")
        );
        assert_eq!(name(&l, &conn("10.1.0.9:1", None)).as_deref(), Some("net8"));
        assert_eq!(
            name(&l, &conn("192.168.0.1:1", None)).as_deref(),
            Some("any")
        );
    }

    #[test]
    fn earlier_steps_decide_first_and_default_catches_the_rest() {
        let l = listener(
            vec![
                chain(
                    "port",
                    FilterChainMatch {
                        destination_port: Some(8080),
                        source_ports: vec![1],
                        ..Default::default()
                    },
                ),
                chain(
                    "local",
                    FilterChainMatch {
                        source_type: SourceType::SameIpOrLoopback,
                        ..Default::default()
                    },
                ),
            ],
            true,
        );
        // The destination port match removes "local" before source ports are looked at.
        assert_eq!(
            name(&l, &conn("127.0.0.1:1", None)).as_deref(),
            Some("port")
        );
        assert_eq!(
            name(&l, &conn("127.0.0.1:2", None)).as_deref(),
            Some("default")
        );
        let no_default = listener(l.filter_chains.clone(), false);
        assert_eq!(name(&no_default, &conn("127.0.0.1:2", None)), None);
        let external = listener(
            vec![chain(
                "ext",
                FilterChainMatch {
                    source_type: SourceType::External,
                    ..Default::default()
                },
            )],
            false,
        );
        assert_eq!(name(&external, &conn("127.0.0.1:2", None)), None);
        assert_eq!(
            name(&external, &conn("10.9.9.9:2", None)).as_deref(),
            Some("ext")
        );
        assert_eq!(
            name(&external, &conn("[::ffff:10.0.0.1]:2", None)),
            None,
            "an IPv4-mapped source equal to the destination is local"
        );
    }

    #[test]
    fn sni_alpn_and_server_only_tls_are_refused() {
        let l = listener(
            vec![chain(
                "sni",
                FilterChainMatch {
                    server_names: vec!["a".into()],
                    ..Default::default()
                },
            )],
            false,
        );
        assert!(unsupported(&l).unwrap().contains("server_names"));
        assert!(unsupported(&listener(vec![], true)).is_none());
    }

    /// One acceptor handshakes before a chain is chosen, so TLS chains must agree on
    /// `tls_params`.
    #[test]
    fn tls_chains_with_different_tls_params_are_refused() {
        let tls = |max| {
            let mut c = chain("tls", Default::default());
            c.tls = Some(mesh_core::model::DownstreamTls {
                require_client_certificate: true,
                params: mesh_core::model::TlsParams {
                    max_version: max,
                    ..Default::default()
                },
                ..Default::default()
            });
            c
        };
        use mesh_core::model::TlsVersion::Tls12;
        let same = listener(vec![tls(Some(Tls12)), tls(Some(Tls12))], true);
        assert!(unsupported(&same).is_none());
        let differ = listener(vec![tls(Some(Tls12)), tls(None)], true);
        assert!(unsupported(&differ).unwrap().contains("tls_params"));
    }
}
