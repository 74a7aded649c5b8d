//! Criterion benches: a route match in a 1,000-route table, and one pick per LB policy over
//! 100 endpoints. Run: `cargo bench -p mesh-route --bench route_lb`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_core::model::*;
use mesh_route::{Balancer, PickContext, RequestView, Router};

fn table(routes: usize) -> RouteConfig {
    let routes = (0..routes)
        .map(|i| Route {
            name: format!("r{i}"),
            route_match: RouteMatch {
                path: PathMatch::Prefix(format!("/svc{i}/")),
                headers: if i % 3 == 0 {
                    vec![HeaderMatcher {
                        name: "x-version".into(),
                        rule: HeaderMatchRule::String(StringMatcher::Exact {
                            value: format!("v{i}"),
                            ignore_case: false,
                        }),
                        invert_match: false,
                        treat_missing_header_as_empty: false,
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            },
            action: RouteAction::Forward(Box::new(ForwardAction {
                cluster: ClusterSpecifier::Cluster(format!("c{i}")),
                ..Default::default()
            })),
            headers: HeaderOps::default(),
            filter_overrides: Default::default(),
        })
        .collect();
    RouteConfig {
        name: "bench".into(),
        virtual_hosts: vec![VirtualHost {
            name: "v".into(),
            domains: vec!["svc.example.com".into(), "*.example.com".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn routing(c: &mut Criterion) {
    let router = Router::new(&table(1000)).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-version", "v999".parse().unwrap());
    c.bench_function("route/1000 routes, match #1000", |b| {
        b.iter(|| {
            let req =
                RequestView::new("svc.example.com", black_box("/svc999/items?id=7"), &headers);
            black_box(router.route_with_random(&req, 7))
        })
    });
    c.bench_function("route/1000 routes, match #1", |b| {
        b.iter(|| {
            let req = RequestView::new("svc.example.com", black_box("/svc1/items"), &headers);
            black_box(router.route_with_random(&req, 7))
        })
    });
}

fn balancing(c: &mut Criterion) {
    let endpoints = (0..100u16)
        .map(|i| Endpoint {
            address: EndpointAddress::Socket(([10, 0, 0, i as u8], 8080).into()),
            health: HealthStatus::Healthy,
            weight: 1 + u32::from(i % 3),
            hostname: None,
            tls_mode: TlsMode::Unset,
        })
        .collect();
    let cla = Arc::new(ClusterLoadAssignment {
        cluster_name: "c".into(),
        localities: vec![LocalityEndpoints {
            locality: Arc::new(Locality::default()),
            priority: 0,
            load_balancing_weight: None,
            endpoints,
        }],
        ..Default::default()
    });
    let policies = [
        ("round_robin", LbPolicy::RoundRobin),
        ("random", LbPolicy::Random),
        ("least_request", LbPolicy::LeastRequest { choice_count: 2 }),
        (
            "ring_hash",
            LbPolicy::RingHash {
                min_ring_size: 1024,
                max_ring_size: 8 << 20,
                hash_function: HashFunction::XxHash,
            },
        ),
        ("maglev", LbPolicy::Maglev { table_size: 65537 }),
    ];
    for (name, policy) in policies {
        let lb = Balancer::new("c", &policy, &CommonLbConfig::default(), cla.clone()).unwrap();
        let mut n = 0u64;
        c.bench_function(&format!("pick/{name}/100 endpoints"), |b| {
            b.iter(|| {
                n = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
                black_box(lb.pick(&PickContext::with_random(n).hash(Some(n ^ 0xABCD))))
            })
        });
    }
}

criterion_group!(benches, routing, balancing);
criterion_main!(benches);
