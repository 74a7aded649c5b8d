//! The inbound port's policy from the config source (the xDS client, or the embedded
//! control plane in process in static mode): its server listener
//! (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`) gives the mTLS mode (TLS filter chains:
//! STRICT) and the RBAC filters of its connection manager give the authorization policies
//! (mapped by `mesh::inbound::policy`). Without a usable listener it refuses connections and
//! denies requests.

use std::sync::Arc;

use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction};
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_core::model::{ListenerKind, Permission, Principal, RbacPolicy, ServerListener};
use mesh_tls::server::PeerAuthMode;
use tokio::sync::watch;

use crate::options::MtlsMode;

/// What the accept loop and the authorization layer read.
#[derive(Clone, Debug)]
pub(crate) struct InboundPolicy {
    /// The mTLS mode of new connections; `None`: refuse them (accept and close, as
    /// `mesh::inbound`'s NOT_SERVING) because no usable listener is known.
    pub(crate) mode: watch::Receiver<Option<PeerAuthMode>>,
    /// The authorization policies of new requests.
    pub(crate) authz: watch::Receiver<Arc<AuthzPolicies>>,
}

/// A fixed mode (`--mtls`) with no authorization policies.
pub(crate) fn fixed(mode: MtlsMode) -> InboundPolicy {
    let mode = match mode {
        MtlsMode::Strict => PeerAuthMode::Strict,
        MtlsMode::Permissive => PeerAuthMode::Permissive,
        MtlsMode::Disable => PeerAuthMode::Disable,
    };
    InboundPolicy {
        mode: watch::channel(Some(mode)).1,
        authz: watch::channel(Arc::new(AuthzPolicies::default())).1,
    }
}

/// Follows `listener` in `source`, failing closed: connections are refused and requests
/// denied until a usable listener arrives, and again when it is removed or was never sent
/// (a listener the xDS client NACKed before accepting any version is absent from the
/// snapshot). An unusable version (not a server listener, no chains, match fields we
/// cannot honour) keeps the last accepted one, as a NACK does. The task keeps `source`
/// alive.
pub(crate) fn from_source(source: Arc<dyn ConfigSource>, listener: String) -> InboundPolicy {
    source.demand(&listener);
    let (mode_tx, mode) = watch::channel(None);
    let (authz_tx, authz) = watch::channel(Arc::new(deny_all()));
    let mut snapshots = source.snapshots();
    tokio::spawn(async move {
        let _source = source;
        let mut last: Option<Derived> = None;
        loop {
            let snapshot: Arc<ConfigSnapshot> = snapshots.borrow_and_update().clone();
            let now = match derive(&snapshot, &listener) {
                Ok(now) => Some(now),
                Err(Unusable::Absent) => None,
                Err(Unusable::Invalid(reason)) => {
                    if last.is_some() {
                        tracing::error!(%listener, %reason, "unusable inbound listener; keeping the last accepted one");
                    } else {
                        tracing::error!(%listener, %reason, "unusable inbound listener; refusing connections");
                    }
                    last.clone()
                }
            };
            if now != last {
                match &now {
                    Some((mode, policies)) => {
                        tracing::info!(%listener, ?mode, "inbound policy");
                        authz_tx.send_replace(Arc::new(policies.clone()));
                        mode_tx.send_replace(Some(*mode));
                    }
                    None => {
                        tracing::warn!(%listener, "no inbound listener: refusing connections");
                        mode_tx.send_replace(None);
                        authz_tx.send_replace(Arc::new(deny_all()));
                    }
                }
                last = now;
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return },
                _ = mode_tx.closed() => return,
            }
        }
    });
    InboundPolicy { mode, authz }
}

/// The mode and policies of an accepted listener.
type Derived = (PeerAuthMode, AuthzPolicies);

/// Why a snapshot gives no policy.
#[derive(Debug, PartialEq)]
enum Unusable {
    /// No such listener (not answered yet, does not exist, removed, or NACKed before any
    /// version was accepted).
    Absent,
    /// A listener we cannot serve as it says.
    Invalid(String),
}

/// Policies that deny every request: what requests get while the policy is unknown.
fn deny_all() -> AuthzPolicies {
    let name = "no inbound listener accepted: denying all";
    AuthzPolicies::new([AuthzPolicy::new(
        name,
        PolicyAction::Deny,
        RbacPolicy {
            name: name.into(),
            permissions: vec![Permission::Any],
            principals: vec![Principal::Any],
        },
    )])
}

fn derive(s: &ConfigSnapshot, listener: &str) -> Result<Derived, Unusable> {
    let server = match s.listeners.get(listener).map(|l| &l.kind) {
        None => return Err(Unusable::Absent),
        Some(ListenerKind::Client(_)) => {
            return Err(Unusable::Invalid(
                "is a client (API) listener, not a server listener".into(),
            ));
        }
        Some(ListenerKind::Server(server)) => server,
    };
    if server.filter_chains.is_empty() && server.default_filter_chain.is_none() {
        return Err(Unusable::Invalid("has no filter chains".into()));
    }
    if let Some(reason) = mesh::inbound::chain::unsupported(server) {
        return Err(Unusable::Invalid(reason));
    }
    Ok((mode_of(server), policies_of(server)))
}

/// The RBAC filters of the first chain (Istio gives every chain the same ones), through the
/// facade's mapping (DENY, then ALLOW; unmodelled rules deny all).
fn policies_of(l: &ServerListener) -> AuthzPolicies {
    l.filter_chains
        .first()
        .or(l.default_filter_chain.as_ref())
        .map(|c| mesh::inbound::policy::authz_policies(&c.http_connection_manager))
        .unwrap_or_default()
}

/// Every chain requires TLS: STRICT. Otherwise PERMISSIVE: we sniff, so mTLS clients keep
/// their identity (DISABLE is not told apart from PERMISSIVE by the listener).
fn mode_of(l: &ServerListener) -> PeerAuthMode {
    let chains: Vec<_> = l
        .filter_chains
        .iter()
        .chain(&l.default_filter_chain)
        .collect();
    if !chains.is_empty() && chains.iter().all(|c| c.tls.is_some()) {
        PeerAuthMode::Strict
    } else {
        PeerAuthMode::Permissive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::model::{
        FilterChain, FilterChainMatch, HttpConnectionManager, HttpFilter, HttpFilterConfig,
        Permission, Principal, RbacAction, RbacFilter, RbacPolicy, RbacRequest, RbacRuleSet,
        RbacRules, RouteSource, StringMatcher,
    };

    fn listener(tls: bool, filters: Vec<HttpFilterConfig>) -> ServerListener {
        let hcm = HttpConnectionManager {
            route_source: RouteSource::Rds("r".into()),
            http_filters: filters
                .into_iter()
                .map(|config| HttpFilter {
                    name: "envoy.filters.http.rbac".into(),
                    config,
                })
                .collect(),
            max_stream_duration: None,
            idle_timeout: None,
            xff_num_trusted_hops: 0,
            path_normalization: Default::default(),
        };
        ServerListener {
            address: "127.0.0.1:1".parse().unwrap(),
            filter_chains: vec![FilterChain {
                name: "c".into(),
                filter_chain_match: FilterChainMatch::default(),
                tls: tls.then(|| mesh_core::model::DownstreamTls {
                    require_client_certificate: true,
                    ..Default::default()
                }),
                http_connection_manager: hcm,
            }],
            default_filter_chain: None,
        }
    }

    #[test]
    fn tls_chains_mean_strict() {
        assert_eq!(mode_of(&listener(true, vec![])), PeerAuthMode::Strict);
        assert_eq!(mode_of(&listener(false, vec![])), PeerAuthMode::Permissive);
    }

    fn request(peer: &str) -> RbacRequest<'_> {
        RbacRequest {
            headers: vec![(":path", "/"), (":method", "GET")],
            authenticated: true,
            peer_names: vec![peer],
            peer_ip: None,
            remote_ip: None,
            destination: None,
            server_name: None,
        }
    }

    fn allowed(filters: Vec<HttpFilterConfig>, peer: &str) -> bool {
        policies_of(&listener(true, filters))
            .evaluate(&request(peer))
            .is_allowed()
    }

    #[test]
    fn rbac_filters_become_policies_failing_closed() {
        let web = "spiffe://cluster.local/ns/default/sa/web";
        let other = "spiffe://cluster.local/ns/default/sa/other";
        let only_web = RbacPolicy {
            name: "allow-web".into(),
            permissions: vec![Permission::Any],
            principals: vec![Principal::Authenticated(Some(StringMatcher::Exact {
                value: web.into(),
                ignore_case: false,
            }))],
        };
        let rules = |action, policies| {
            HttpFilterConfig::Rbac(RbacRuleSet::Rules(RbacRules { action, policies }).into())
        };
        // ALLOW: only what a policy matches.
        let allow = || rules(RbacAction::Allow, vec![only_web.clone()]);
        assert!(allowed(vec![allow()], web));
        assert!(!allowed(vec![allow()], other));
        // DENY then ALLOW, as Istio emits them: DENY wins.
        let deny = rules(RbacAction::Deny, vec![only_web.clone()]);
        assert!(!allowed(vec![deny, allow()], web));
        // LOG never decides.
        assert!(allowed(
            vec![rules(RbacAction::Log, vec![only_web.clone()])],
            other
        ));
        // An ALLOW filter without policies and unmodelled rules allow nothing.
        assert!(!allowed(vec![rules(RbacAction::Allow, vec![])], web));
        let unmodelled = HttpFilterConfig::Rbac(
            RbacRuleSet::Unmodelled {
                action: RbacAction::Allow,
                policy_names: vec![],
                reason: "metadata".into(),
            }
            .into(),
        );
        assert!(!allowed(vec![unmodelled], web));
        assert!(allowed(
            vec![HttpFilterConfig::Rbac(RbacFilter::default())],
            other
        ));
    }

    fn named(name: &str, l: ServerListener) -> mesh_core::model::Listener {
        mesh_core::model::Listener {
            name: name.into(),
            kind: ListenerKind::Server(Box::new(l)),
        }
    }

    async fn settled(p: &mut InboundPolicy) -> (Option<PeerAuthMode>, Arc<AuthzPolicies>) {
        // The task publishes off this thread's turn: let it run.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        (
            *p.mode.borrow_and_update(),
            p.authz.borrow_and_update().clone(),
        )
    }

    #[tokio::test]
    async fn fails_closed_until_a_usable_listener_and_keeps_it_on_a_bad_update() {
        use mesh_core::config::StaticSource;
        const NAME: &str = "xds.istio.io/grpc/lds/inbound/127.0.0.1:1";
        let web = "spiffe://cluster.local/ns/default/sa/web";
        let source = StaticSource::new(ConfigSnapshot::default());
        let mut p = from_source(Arc::new(source.clone()), NAME.into());
        // Missing: refused, and requests denied.
        let (mode, authz) = settled(&mut p).await;
        assert_eq!(mode, None);
        assert!(!authz.evaluate(&request(web)).is_allowed());
        // A client listener under our name is unusable: still refused.
        source.update(|s| {
            s.insert_listener(mesh_core::model::Listener {
                name: NAME.into(),
                kind: ListenerKind::Client(
                    listener(false, vec![]).filter_chains[0]
                        .http_connection_manager
                        .clone(),
                ),
            });
        });
        assert_eq!(settled(&mut p).await.0, None);
        // A usable one: served as it says (STRICT, ALLOW nobody).
        let allow_none = HttpFilterConfig::Rbac(
            RbacRuleSet::Rules(RbacRules {
                action: RbacAction::Allow,
                policies: vec![],
            })
            .into(),
        );
        source.update(|s| {
            s.insert_listener(named(NAME, listener(true, vec![allow_none.clone()])));
        });
        let (mode, authz) = settled(&mut p).await;
        assert_eq!(mode, Some(PeerAuthMode::Strict));
        assert!(!authz.evaluate(&request(web)).is_allowed());
        // An unusable update keeps it.
        let mut bad = listener(false, vec![]);
        bad.filter_chains[0].filter_chain_match.server_names = vec!["x".into()];
        source.update(|s| {
            s.insert_listener(named(NAME, bad));
        });
        let (mode, _) = settled(&mut p).await;
        assert_eq!(mode, Some(PeerAuthMode::Strict));
        // Removal: refused again.
        source.update(|s| {
            Arc::make_mut(&mut s.listeners).remove(NAME);
        });
        let (mode, authz) = settled(&mut p).await;
        assert_eq!(mode, None);
        assert!(!authz.evaluate(&request(web)).is_allowed());
    }
}
