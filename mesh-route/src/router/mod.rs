//! The router: a [`RouteConfig`] compiled once per snapshot, then matched per request
//! without locks and with allocations only where the decision needs new strings (a rewritten
//! path, a redirect location, a cluster named by a header).

mod headers;
mod matching;
mod rewrite;
mod vhost;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderName;
use mesh_core::model::{
    ClusterSpecifier, FilterOverrides, ForwardAction, Fraction, HeaderOps, HostRewrite, Redirect,
    RegexRewrite, Route, RouteAction, RouteConfig, VirtualHost,
};

pub use headers::HeaderPlan;
pub use vhost::HostPortMode;

use crate::{BuildError, RequestView};
use matching::{Conditions, fraction_hit};
use vhost::VhostIndex;

/// Envoy's route timeout when a forwarding route sets none.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Router settings that are not part of the route configuration.
#[derive(Clone, Debug, Default)]
pub struct RouterOptions {
    /// How the authority's port takes part in virtual host selection.
    pub host_port_mode: HostPortMode,
    /// The connection manager's own HTTP filter configs (a listener-level fault filter),
    /// by filter name: what a route gets when neither it, its virtual host nor its
    /// weighted cluster overrides the filter (Envoy's `typed_per_filter_config`).
    pub filter_defaults: FilterOverrides,
    /// The connection manager's `common_http_protocol_options.max_stream_duration`: the
    /// limit of routes that set none (Envoy, gRPC A31).
    pub max_stream_duration: Option<Duration>,
    /// The listener's router filter's `suppress_envoy_headers`.
    pub suppress_envoy_headers: bool,
}

pub use mesh_core::extensions::RoutePolicy;

/// How the authority is rewritten before forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRewriteDecision {
    /// Set `:authority` to this value.
    Set(String),
    /// Set it to the picked endpoint's hostname (`auto_host_rewrite`).
    FromEndpoint,
}

/// A forwarding decision.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The cluster to send to. With `cluster_header` it is whatever the header said, and
    /// empty when the header is absent: Envoy answers 503 when no such cluster exists.
    pub cluster: Arc<str>,
    /// The new `:path` (with query) when the route rewrites it.
    pub path: Option<String>,
    /// The authority rewrite.
    pub host: Option<HostRewriteDecision>,
    /// Where a copy of the request goes (their fractions already applied).
    pub mirrors: Vec<Mirror>,
    /// The route's policies.
    pub policy: Arc<RoutePolicy>,
}

/// What to do with the request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Forward upstream.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// Answer directly.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body.
        body: Option<Bytes>,
    },
    /// Hand the request to the local application (server listeners, gRPC A36).
    NonForwarding,
}

/// The result of routing one request.
#[derive(Clone, Debug)]
pub struct RouteDecision {
    /// The virtual host's name.
    pub virtual_host: Arc<str>,
    /// The route's name (may be empty).
    pub route_name: Arc<str>,
    /// What to do.
    pub action: Action,
    /// Header edits for the request and the response, in Envoy's order.
    pub headers: Arc<HeaderPlan>,
    /// For a redirect or direct response: the route's HTTP filter configs (listener,
    /// virtual host and route levels merged), which act before the answer as Envoy's
    /// filters run before its router. `None` for the other actions (a forward carries its
    /// own policy).
    pub local_policy: Option<Arc<RoutePolicy>>,
}

#[derive(Debug)]
struct Target {
    cluster: Arc<str>,
    headers: Arc<HeaderPlan>,
    policy: Arc<RoutePolicy>,
}

#[derive(Debug)]
enum Clusters {
    Single(Target),
    /// Cumulative upper bounds of the weights, and the targets.
    Weighted {
        ends: Vec<u64>,
        targets: Vec<Target>,
    },
    Header {
        name: HeaderName,
        headers: Arc<HeaderPlan>,
        policy: Arc<RoutePolicy>,
    },
}

/// A copy of the request for a shadow cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// The shadow cluster.
    pub cluster: Arc<str>,
    /// Keep the request's host instead of appending `-shadow` (Envoy's
    /// `disable_shadow_host_suffix_append`).
    pub keep_host: bool,
}

#[derive(Debug)]
struct CompiledForward {
    clusters: Clusters,
    prefix_rewrite: Option<String>,
    regex_rewrite: Option<RegexRewrite>,
    host_rewrite: Option<HostRewrite>,
    mirrors: Vec<(Mirror, Option<Fraction>)>,
}

#[derive(Debug)]
enum CompiledAction {
    Forward(Box<CompiledForward>),
    Redirect(Box<Redirect>, Arc<HeaderPlan>, Arc<RoutePolicy>),
    Direct(u16, Option<Bytes>, Arc<HeaderPlan>, Arc<RoutePolicy>),
    NonForwarding(Arc<HeaderPlan>),
}

#[derive(Debug)]
struct CompiledRoute {
    name: Arc<str>,
    conditions: Conditions,
    action: CompiledAction,
}

#[derive(Debug)]
struct CompiledVhost {
    name: Arc<str>,
    routes: Vec<CompiledRoute>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    vhosts: Vec<CompiledVhost>,
    index: VhostIndex,
    options: RouterOptions,
}

/// A compiled route table. Cheap to clone (one `Arc`); share it in a config snapshot.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// Compiles a route configuration with default options.
    pub fn new(config: &RouteConfig) -> Result<Self, BuildError> {
        Self::with_options(config, RouterOptions::default())
    }

    /// Compiles a route configuration.
    pub fn with_options(config: &RouteConfig, options: RouterOptions) -> Result<Self, BuildError> {
        let mut vhosts = Vec::with_capacity(config.virtual_hosts.len());
        for vh in &config.virtual_hosts {
            let mut routes = Vec::with_capacity(vh.routes.len());
            for (i, r) in vh.routes.iter().enumerate() {
                let location = format!("virtual_host {:?} route[{i}] {:?}", vh.name, r.name);
                routes.push(compile_route(config, vh, r, &location, &options)?);
            }
            vhosts.push(CompiledVhost {
                name: vh.name.as_str().into(),
                routes,
            });
        }
        let index = VhostIndex::new(
            config
                .virtual_hosts
                .iter()
                .enumerate()
                .map(|(i, vh)| (i, vh.domains.as_slice())),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                vhosts,
                index,
                options,
            }),
        })
    }

    /// The route configuration's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Routes a request with a fresh random value (for runtime fractions, weighted clusters
    /// and mirror fractions). `None`: no virtual host or no route matched (Envoy answers 404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<RouteDecision> {
        self.route_with_random(req, rand::random())
    }

    /// Routes a request with the given random value, as Envoy's `route(headers, random)`.
    pub fn route_with_random(&self, req: &RequestView<'_>, random: u64) -> Option<RouteDecision> {
        let vi = self
            .inner
            .index
            .find(req.authority, self.inner.options.host_port_mode)?;
        let vhost = &self.inner.vhosts[vi];
        let path = req.path_only();
        let (route, matched) = vhost
            .routes
            .iter()
            .find_map(|r| r.conditions.matches(req, path, random).map(|m| (r, m)))?;
        let mut local_policy = None;
        let (action, headers) = match &route.action {
            CompiledAction::Forward(f) => forward(f, req, matched, random),
            CompiledAction::Redirect(r, h, p) => {
                local_policy = Some(p.clone());
                (
                    Action::Redirect {
                        status: r.response_code,
                        location: rewrite::location(r, req, matched),
                    },
                    h.clone(),
                )
            }
            CompiledAction::Direct(status, body, h, p) => {
                local_policy = Some(p.clone());
                (
                    Action::DirectResponse {
                        status: *status,
                        body: body.clone(),
                    },
                    h.clone(),
                )
            }
            CompiledAction::NonForwarding(h) => (Action::NonForwarding, h.clone()),
        };
        Some(RouteDecision {
            virtual_host: vhost.name.clone(),
            route_name: route.name.clone(),
            action,
            headers,
            local_policy,
        })
    }
}

fn forward(
    f: &CompiledForward,
    req: &RequestView<'_>,
    matched: &str,
    random: u64,
) -> (Action, Arc<HeaderPlan>) {
    let (cluster, headers, policy) = match &f.clusters {
        Clusters::Single(t) => (t.cluster.clone(), t.headers.clone(), t.policy.clone()),
        Clusters::Weighted { ends, targets } => {
            // Envoy: random % total, then the first cluster whose cumulative weight exceeds it.
            let total = ends.last().copied().unwrap_or(1).max(1);
            let pick = random % total;
            let i = ends
                .partition_point(|&end| end <= pick)
                .min(targets.len() - 1);
            let t = &targets[i];
            (t.cluster.clone(), t.headers.clone(), t.policy.clone())
        }
        Clusters::Header {
            name,
            headers,
            policy,
        } => {
            let cluster: Arc<str> = req
                .headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .unwrap_or("")
                .into();
            (cluster, headers.clone(), policy.clone())
        }
    };
    let path = rewrite::rewrite_path(
        req.path,
        matched,
        f.prefix_rewrite.as_deref(),
        f.regex_rewrite.as_ref(),
    );
    let host = f.host_rewrite.as_ref().and_then(|h| match h {
        HostRewrite::Literal(v) => Some(HostRewriteDecision::Set(v.clone())),
        HostRewrite::Auto => Some(HostRewriteDecision::FromEndpoint),
        HostRewrite::Header(name) => req
            .first_header(name)
            .filter(|v| !v.is_empty())
            .map(|v| HostRewriteDecision::Set(v.to_owned())),
    });
    let mirrors = f
        .mirrors
        .iter()
        .filter(|(_, fraction)| fraction.is_none_or(|fr| fraction_hit(fr, random)))
        .map(|(m, _)| m.clone())
        .collect();
    (
        Action::Forward(Forward {
            cluster,
            path,
            host,
            mirrors,
            policy,
        }),
        headers,
    )
}

fn compile_route(
    config: &RouteConfig,
    vh: &VirtualHost,
    r: &Route,
    location: &str,
    options: &RouterOptions,
) -> Result<CompiledRoute, BuildError> {
    let plan = |extra: Option<&HeaderOps>| -> Result<Arc<HeaderPlan>, BuildError> {
        let mut levels: Vec<&HeaderOps> = Vec::with_capacity(4);
        levels.extend(extra);
        levels.extend([&r.headers, &vh.headers, &config.headers]);
        HeaderPlan::compile(&levels, location).map(Arc::new)
    };
    let action = match &r.action {
        RouteAction::Forward(fwd) => {
            CompiledAction::Forward(Box::new(compile_forward(vh, r, fwd, &plan, options)?))
        }
        RouteAction::Redirect(red) => CompiledAction::Redirect(
            Box::new(red.clone()),
            plan(None)?,
            local_policy(vh, r, options),
        ),
        RouteAction::DirectResponse(d) => CompiledAction::Direct(
            d.status,
            d.body.clone().map(Bytes::from),
            plan(None)?,
            local_policy(vh, r, options),
        ),
        RouteAction::NonForwarding => CompiledAction::NonForwarding(plan(None)?),
    };
    Ok(CompiledRoute {
        name: r.name.as_str().into(),
        conditions: Conditions::new(&r.route_match),
        action,
    })
}

/// Compiles the header plan of a route, with an optional weighted-cluster level first.
type PlanFn<'a> = dyn Fn(Option<&HeaderOps>) -> Result<Arc<HeaderPlan>, BuildError> + 'a;

/// The filter configs of a route, its virtual host's where it has none, then the
/// listener's: the most specific level wins, as for a forward's policy.
fn merged_overrides(vh: &VirtualHost, r: &Route, options: &RouterOptions) -> FilterOverrides {
    let mut overrides = r.filter_overrides.clone();
    for (k, v) in vh.filter_overrides.iter().chain(&options.filter_defaults) {
        overrides.entry(k.clone()).or_insert_with(|| v.clone());
    }
    overrides
}

/// The policy of a route answered locally: only its filter configs.
fn local_policy(vh: &VirtualHost, r: &Route, options: &RouterOptions) -> Arc<RoutePolicy> {
    Arc::new(RoutePolicy {
        filter_overrides: merged_overrides(vh, r, options),
        ..Default::default()
    })
}

fn compile_forward(
    vh: &VirtualHost,
    r: &Route,
    fwd: &ForwardAction,
    plan: &PlanFn<'_>,
    options: &RouterOptions,
) -> Result<CompiledForward, BuildError> {
    let overrides = merged_overrides(vh, r, options);
    let base = RoutePolicy {
        timeout: match fwd.timeout {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        },
        timeout_is_default: fwd.timeout.is_none(),
        idle_timeout: fwd.idle_timeout,
        retry_policy: fwd
            .retry_policy
            .clone()
            .or_else(|| vh.retry_policy.clone())
            .map(Arc::new),
        hash_policies: fwd.hash_policies.clone(),
        filter_overrides: overrides,
        max_stream_duration: {
            let mut m = fwd.max_stream_duration.clone();
            m.max_stream_duration = m.max_stream_duration.or(options.max_stream_duration);
            m
        },
        include_attempt_count: vh.include_request_attempt_count,
        suppress_envoy_headers: options.suppress_envoy_headers,
    };
    let base = Arc::new(base);
    let clusters = match &fwd.cluster {
        ClusterSpecifier::Cluster(name) => Clusters::Single(Target {
            cluster: name.as_str().into(),
            headers: plan(None)?,
            policy: base.clone(),
        }),
        ClusterSpecifier::Weighted(ws) => {
            let mut ends = Vec::with_capacity(ws.len());
            let mut targets = Vec::with_capacity(ws.len());
            let mut total = 0u64;
            for w in ws {
                total += u64::from(w.weight);
                ends.push(total);
                let policy = if w.filter_overrides.is_empty() {
                    base.clone()
                } else {
                    let mut p = (*base).clone();
                    for (k, v) in &w.filter_overrides {
                        p.filter_overrides.insert(k.clone(), v.clone());
                    }
                    Arc::new(p)
                };
                targets.push(Target {
                    cluster: w.name.as_str().into(),
                    headers: plan(Some(&w.headers))?,
                    policy,
                });
            }
            if targets.is_empty() {
                return Err(BuildError::InvalidRoute {
                    location: format!("route {:?}", r.name),
                    reason: "weighted_clusters must not be empty".into(),
                });
            }
            Clusters::Weighted { ends, targets }
        }
        ClusterSpecifier::Header(name) => Clusters::Header {
            name: HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                BuildError::InvalidHeader {
                    location: format!("route {:?} cluster_header", r.name),
                    name: name.clone(),
                    reason: "invalid header name",
                }
            })?,
            headers: plan(None)?,
            policy: base.clone(),
        },
    };
    Ok(CompiledForward {
        clusters,
        prefix_rewrite: fwd.prefix_rewrite.clone(),
        regex_rewrite: fwd.regex_rewrite.clone(),
        host_rewrite: fwd.host_rewrite.clone(),
        mirrors: fwd
            .mirror_policies
            .iter()
            .map(|m| {
                let mirror = Mirror {
                    cluster: Arc::from(m.cluster.as_str()),
                    keep_host: m.keep_host,
                };
                (mirror, m.fraction)
            })
            .collect(),
    })
}
