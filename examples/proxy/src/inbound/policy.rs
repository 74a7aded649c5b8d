//! The inbound port's policy from the config source (the xDS client, or the embedded
//! control plane in process in static mode): its server listener
//! (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`) gives the mTLS mode (TLS filter chains:
//! STRICT) and the RBAC filters of its connection manager give the authorization policies
//! (mapped by `mesh::inbound::policy`).

use std::sync::Arc;

use mesh_authz::AuthzPolicies;
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_core::model::{ListenerKind, ServerListener};
use mesh_tls::server::PeerAuthMode;
use tokio::sync::watch;

use crate::options::MtlsMode;

/// What the accept loop and the authorization layer read.
#[derive(Clone, Debug)]
pub(crate) struct InboundPolicy {
    /// The mTLS mode of new connections.
    pub(crate) mode: watch::Receiver<PeerAuthMode>,
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
        mode: watch::channel(mode).1,
        authz: watch::channel(Arc::new(AuthzPolicies::default())).1,
    }
}

/// Follows `listener` in `source`: STRICT with no policies until the source is ready
/// (fail closed), then what the listener says; PERMISSIVE with no policies when the
/// control plane has no such listener (Istio's default). The task keeps `source` alive.
pub(crate) fn from_source(source: Arc<dyn ConfigSource>, listener: String) -> InboundPolicy {
    source.demand(&listener);
    let (mode_tx, mode) = watch::channel(PeerAuthMode::Strict);
    let (authz_tx, authz) = watch::channel(Arc::new(AuthzPolicies::default()));
    let mut snapshots = source.snapshots();
    let mut ready = source.readiness();
    tokio::spawn(async move {
        let _source = source;
        let mut last = None;
        loop {
            let snapshot: Arc<ConfigSnapshot> = snapshots.borrow_and_update().clone();
            if *ready.borrow_and_update() {
                let now = derive(&snapshot, &listener);
                if last.as_ref() != Some(&now) {
                    tracing::info!(%listener, mode = ?now.0, "inbound policy");
                    mode_tx.send_replace(now.0);
                    authz_tx.send_replace(Arc::new(now.1.clone()));
                    last = Some(now);
                }
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return },
                // Readiness can follow the last snapshot change.
                r = ready.changed() => if r.is_err() { return },
                _ = mode_tx.closed() => return,
            }
        }
    });
    InboundPolicy { mode, authz }
}

fn derive(s: &ConfigSnapshot, listener: &str) -> (PeerAuthMode, AuthzPolicies) {
    match s.listeners.get(listener).map(|l| &l.kind) {
        Some(ListenerKind::Server(server)) => (mode_of(server), policies_of(server)),
        _ => (PeerAuthMode::Permissive, AuthzPolicies::default()),
    }
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
                tls: tls.then(Default::default),
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
}
