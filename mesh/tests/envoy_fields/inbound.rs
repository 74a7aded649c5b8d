//! Server listeners on real connections: hand-written Envoy `Listener`s (filter chains,
//! their match fields, the default chain, RBAC filters) served by our xDS server to an
//! `InboundServer`, and plain HTTP/1.1 clients that connect from a chosen source address
//! and port. Which chain a connection got shows in what the server answers: the chains
//! differ only in their RBAC filter (one lets every request through, one denies all).

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, filter, filter_chain_match,
};
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3::NonForwardingAction;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, path_matcher};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use mesh::inbound::{InboundServer, ServingStatus};
use mesh::tls::IdentityStore;

use crate::harness::*;

/// What a connection got.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The request reached the application.
    Allowed,
    /// An RBAC filter answered 403.
    Denied,
    /// The connection was closed without an answer (no chain matched).
    Closed,
}

/// What a chain does with requests: `true` lets all through, `false` denies all.
pub fn chain(allow: bool, m: FilterChainMatch) -> FilterChain {
    let rules = (!allow).then(|| rbac::Rbac {
        action: rbac::rbac::Action::Allow as i32,
        ..Default::default()
    });
    chain_with(rules, Some(m))
}

/// A plaintext chain whose connection manager runs an RBAC filter with `rules` (none: no
/// RBAC filter), then the router; its one route hands every request to the application.
pub fn chain_with(rules: Option<rbac::Rbac>, m: Option<FilterChainMatch>) -> FilterChain {
    let mut hcm = hcm(routes(VirtualHost {
        routes: vec![Route {
            r#match: Some(prefix("/")),
            action: Some(route::Action::NonForwardingAction(
                NonForwardingAction::default(),
            )),
            ..Default::default()
        }],
        ..Default::default()
    }));
    if let Some(rules) = rules {
        hcm.http_filters.insert(
            0,
            HttpFilter {
                name: "envoy.filters.http.rbac".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(RbacFilter {
                    rules: Some(rules),
                    ..Default::default()
                }))),
                ..Default::default()
            },
        );
    }
    FilterChain {
        name: "chain".into(),
        filter_chain_match: m,
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
        }],
        ..Default::default()
    }
}

pub fn cidr(ip: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: ip.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

/// A server on `addr` (port 0: a free one) whose listener is `make(port)`.
pub struct Server {
    pub addr: SocketAddr,
    pub status: watch::Receiver<ServingStatus>,
    _config: watch::Sender<Arc<Scenario>>,
}

/// A free port on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts a server on `ip` whose inbound listener (served by our xDS server) is
    /// `make(port)`'s chains and default chain; returns once it serves or refused the
    /// listener.
    pub async fn start(
        ip: &str,
        make: impl FnOnce(u16) -> (Vec<FilterChain>, Option<FilterChain>),
    ) -> Server {
        let ip: IpAddr = ip.parse().unwrap();
        let port = free_port(ip);
        let addr = SocketAddr::new(ip, port);
        let (filter_chains, default_filter_chain) = make(port);
        let l = Listener {
            name: "inbound".into(),
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
                    ..Default::default()
                })),
            }),
            filter_chains,
            default_filter_chain,
            ..Default::default()
        };
        let (config, rx) = watch::channel(Arc::new(Scenario {
            listeners: vec![l],
            ..Default::default()
        }));
        let xds = XdsServer::new(Serve, rx, ServerOptions::default());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", tcp.local_addr().unwrap());
        tokio::spawn(xds.serve(tcp, std::future::pending()));
        let node = IstioNode {
            pod_name: "web".into(),
            service_account: "web".into(),
            ..Default::default()
        };
        let client = XdsClient::new(
            XdsClientConfig {
                node: Bootstrap::istio_proxyless(node, &uri).node_proto(),
                ..Default::default()
            },
            channel::insecure(&uri).unwrap(),
        );
        let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
        let id = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        let identity =
            IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap())
                .unwrap();
        let server = InboundServer::new(client, identity, addr, "inbound");
        let mut status = server.status();
        let app = tower::service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("app"))))
        });
        tokio::spawn(server.serve_with_shutdown(app, std::future::pending()));
        // Serving, or refused with a reason (anything but the initial wait).
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| match s {
                ServingStatus::Serving(_) => true,
                ServingStatus::NotServing(why) => why != "waiting for the listener",
            }),
        )
        .await;
        Server {
            addr,
            status,
            _config: config,
        }
    }

    /// One GET of `path` over a new connection from `from` (port 0: any).
    pub async fn get_from(&self, from: SocketAddr, path: &str) -> Outcome {
        let sock = match from {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(from).unwrap();
        let Ok(io) = sock.connect(self.addr).await else {
            return Outcome::Closed;
        };
        let Ok((mut send, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)).await
        else {
            return Outcome::Closed;
        };
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "web")
            .body(Empty::new())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req)).await;
        match resp {
            Ok(Ok(r)) if r.status() == 200 => Outcome::Allowed,
            Ok(Ok(r)) if r.status() == 403 => Outcome::Denied,
            Ok(Ok(r)) => panic!("unexpected status {}", r.status()),
            _ => Outcome::Closed,
        }
    }

    pub async fn get(&self, path: &str) -> Outcome {
        self.get_from("127.0.0.1:0".parse().unwrap(), path).await
    }
}

/// Each FilterChainMatch field (and CidrRange, the default chain) picks the chain the
/// connection gets: the chain that lets requests through is chosen only when the field is
/// read as Envoy reads it. With a field dropped, the two chains match alike (the listener is
/// refused and connections are closed) or the denying chain wins.
#[tokio::test]
async fn filter_chain_match_fields_choose_the_chain() {
    use Outcome::*;
    let m = FilterChainMatch::default;
    // destination_port: the chain for our port beats the chain for any port.
    let s = Server::start("127.0.0.1", |port| {
        let mine = FilterChainMatch {
            destination_port: Some(UInt32Value { value: port.into() }),
            ..m()
        };
        (vec![chain(false, m()), chain(true, mine)], None)
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "destination_port");
    // ... and a chain for another port never matches.
    let s = Server::start("127.0.0.1", |port| {
        let other = FilterChainMatch {
            destination_port: Some(UInt32Value {
                value: u32::from(port) + 1,
            }),
            ..m()
        };
        (vec![chain(false, other), chain(true, m())], None)
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "destination_port, another port");

    // prefix_ranges (CidrRange.address_prefix, prefix_len): the longest prefix that holds
    // our address wins; a /8 and a /32 of it, and a range that does not hold it.
    let s = Server::start("127.0.0.3", |_| {
        let wide = FilterChainMatch {
            prefix_ranges: vec![cidr("127.0.0.0", 8)],
            ..m()
        };
        let exact = FilterChainMatch {
            prefix_ranges: vec![cidr("127.0.0.3", 32)],
            ..m()
        };
        (vec![chain(false, wide), chain(true, exact)], None)
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "prefix_ranges, longest");
    let s = Server::start("127.0.0.3", |_| {
        let wide = FilterChainMatch {
            prefix_ranges: vec![cidr("127.0.0.0", 8)],
            ..m()
        };
        let other = FilterChainMatch {
            prefix_ranges: vec![cidr("127.0.0.4", 31)],
            ..m()
        };
        (vec![chain(true, wide), chain(false, other)], None)
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "prefix_ranges, prefix_len 31");

    // source_prefix_ranges: by the client's address.
    let s = Server::start("127.0.0.1", |_| {
        let nine = FilterChainMatch {
            source_prefix_ranges: vec![cidr("127.0.0.9", 32)],
            ..m()
        };
        let any = FilterChainMatch {
            source_prefix_ranges: vec![cidr("127.0.0.0", 8)],
            ..m()
        };
        (vec![chain(false, any), chain(true, nine)], None)
    })
    .await;
    let from = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 0);
    assert_eq!(s.get_from(from("127.0.0.9"), "/").await, Allowed);
    assert_eq!(s.get_from(from("127.0.0.8"), "/").await, Denied);

    // source_ports: by the client's port.
    let src = free_port("127.0.0.1".parse().unwrap());
    let s = Server::start("127.0.0.1", |_| {
        let mine = FilterChainMatch {
            source_ports: vec![src.into()],
            ..m()
        };
        (vec![chain(false, m()), chain(true, mine)], None)
    })
    .await;
    assert_eq!(
        s.get_from(SocketAddr::new("127.0.0.1".parse().unwrap(), src), "/")
            .await,
        Allowed,
        "source_ports"
    );
    assert_eq!(s.get("/").await, Denied, "source_ports, another port");

    // source_type: a loopback client is SAME_IP_OR_LOOPBACK, never EXTERNAL.
    let typed = |t: filter_chain_match::ConnectionSourceType| FilterChainMatch {
        source_type: t as i32,
        ..m()
    };
    let s = Server::start("127.0.0.1", |_| {
        let same = typed(filter_chain_match::ConnectionSourceType::SameIpOrLoopback);
        (vec![chain(false, m()), chain(true, same)], None)
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "source_type SAME_IP_OR_LOOPBACK");
    let s = Server::start("127.0.0.1", |_| {
        let external = typed(filter_chain_match::ConnectionSourceType::External);
        (vec![chain(false, external), chain(true, m())], None)
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "source_type EXTERNAL");

    // default_filter_chain: taken when no chain matches; without it the connection closes.
    let other_port = |port: u16| FilterChainMatch {
        destination_port: Some(UInt32Value {
            value: u32::from(port) + 1,
        }),
        ..m()
    };
    let s = Server::start("127.0.0.1", |port| {
        (
            vec![chain(false, other_port(port))],
            Some(chain_with(None, None)),
        )
    })
    .await;
    assert_eq!(s.get("/").await, Allowed, "default_filter_chain");
    let s = Server::start("127.0.0.1", |port| {
        (vec![chain(false, other_port(port))], None)
    })
    .await;
    assert_eq!(s.get("/").await, Closed, "no chain and no default");
}

/// server_names and application_protocols: the server does not read the ClientHello, so a
/// listener matching on them is refused (not served, the reason names the field) rather
/// than served with a wrong choice of chain.
#[tokio::test]
async fn sni_and_alpn_chain_matches_are_refused() {
    for (field, m) in [
        (
            "server_names",
            FilterChainMatch {
                server_names: vec!["web.example".into()],
                ..Default::default()
            },
        ),
        (
            "application_protocols",
            FilterChainMatch {
                application_protocols: vec!["h2".into()],
                ..Default::default()
            },
        ),
    ] {
        let s = Server::start("127.0.0.1", |_| {
            (
                vec![chain(true, m), chain(true, FilterChainMatch::default())],
                None,
            )
        })
        .await;
        let why = match &*s.status.borrow() {
            ServingStatus::NotServing(why) => why.clone(),
            other => panic!("{field}: {other:?}"),
        };
        assert!(why.contains(field), "{why}");
        assert_eq!(s.get("/").await, Outcome::Closed, "{field}");
    }
}

fn any_principal() -> rbac::Principal {
    rbac::Principal {
        identifier: Some(rbac::principal::Identifier::Any(true)),
    }
}

fn any_permission() -> rbac::Permission {
    rbac::Permission {
        rule: Some(rbac::permission::Rule::Any(true)),
    }
}

/// An ALLOW rule set of one policy.
fn allow(permission: rbac::Permission, principal: rbac::Principal) -> rbac::Rbac {
    rbac::Rbac {
        action: rbac::rbac::Action::Allow as i32,
        policies: [(
            "p".to_owned(),
            rbac::Policy {
                permissions: vec![permission],
                principals: vec![principal],
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

/// RBAC permissions and principals on real requests: each row is one policy (an ALLOW
/// rule set: what it does not match is denied), a request, and the decision.
#[tokio::test]
async fn rbac_permissions_and_principals_decide_requests() {
    use Outcome::*;
    use rbac::permission::Rule;
    use rbac::principal::Identifier;
    let perm = |r: Rule| allow(rbac::Permission { rule: Some(r) }, any_principal());
    let princ = |i: Identifier| {
        allow(
            any_permission(),
            rbac::Principal {
                identifier: Some(i),
            },
        )
    };
    let path = |p: &str| PathMatcher {
        rule: Some(path_matcher::Rule::Path(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(p.into())),
            ignore_case: false,
        })),
    };
    // (row, rules made knowing the server's port, path requested, decision)
    type Rules = Box<dyn Fn(u16) -> rbac::Rbac>;
    let rows: Vec<(&str, Rules, &str, Outcome)> = vec![
        (
            "destination_ip, holds",
            Box::new(move |_| perm(Rule::DestinationIp(cidr("127.0.0.0", 8)))),
            "/",
            Allowed,
        ),
        (
            "destination_ip, does not hold",
            Box::new(move |_| perm(Rule::DestinationIp(cidr("10.0.0.0", 8)))),
            "/",
            Denied,
        ),
        (
            "destination_port_range, start inclusive",
            Box::new(move |p| {
                perm(Rule::DestinationPortRange(Int32Range {
                    start: p.into(),
                    end: i32::from(p) + 1,
                }))
            }),
            "/",
            Allowed,
        ),
        (
            "destination_port_range, end exclusive",
            Box::new(move |p| {
                perm(Rule::DestinationPortRange(Int32Range {
                    start: i32::from(p) - 1,
                    end: p.into(),
                }))
            }),
            "/",
            Denied,
        ),
        (
            "remote_ip, holds",
            Box::new(move |_| princ(Identifier::RemoteIp(cidr("127.0.0.1", 32)))),
            "/",
            Allowed,
        ),
        (
            "remote_ip, does not hold",
            Box::new(move |_| princ(Identifier::RemoteIp(cidr("127.0.0.2", 32)))),
            "/",
            Denied,
        ),
        (
            "source_ip, holds",
            Box::new(move |_| princ(Identifier::SourceIp(cidr("127.0.0.0", 24)))),
            "/",
            Allowed,
        ),
        (
            "source_ip, does not hold",
            Box::new(move |_| princ(Identifier::SourceIp(cidr("127.0.1.0", 24)))),
            "/",
            Denied,
        ),
        (
            "requested_server_name (the SNI is not read): fails closed",
            Box::new(move |_| {
                perm(Rule::RequestedServerName(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                        regex: ".*".into(),
                        ..Default::default()
                    })),
                    ignore_case: false,
                }))
            }),
            "/",
            Denied,
        ),
        (
            "url_path, same path",
            Box::new(move |_| princ(Identifier::UrlPath(path("/open")))),
            "/open",
            Allowed,
        ),
        (
            "url_path, another path",
            Box::new(move |_| princ(Identifier::UrlPath(path("/open")))),
            "/closed",
            Denied,
        ),
    ];
    for (row, rules, req, want) in rows {
        let s = Server::start("127.0.0.1", |port| {
            (vec![chain_with(Some(rules(port)), None)], None)
        })
        .await;
        assert!(
            s.status.borrow().is_serving(),
            "{row}: {:?}",
            s.status.borrow()
        );
        assert_eq!(s.get(req).await, want, "{row}");
    }
}
