//! Who may read a node's config. When the server authenticates callers (served behind the
//! CA port's mTLS acceptor, which puts a [`CaPeer`] in every request), a stream may only
//! ask for the config of the node its client certificate names: the node's namespace and
//! service account, as Istio derives them, must be those of the caller's SPIFFE ID
//! (istiod's `checkConnectionIdentity`, stricter: the namespace must be claimed).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use tonic::Status;

use crate::ca::CaPeer;

/// What the transport said about the caller.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// Plaintext or a transport that does not authenticate: no check (loopback use).
    Unauthenticated,
    /// The mTLS acceptor ran: the verified SPIFFE ID, if the caller presented one.
    Authenticated(Option<mesh_core::SpiffeId>),
}

impl Caller {
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Self {
        match request.extensions().get::<CaPeer>() {
            Some(peer) => Caller::Authenticated(peer.identity().cloned()),
            None => Caller::Unauthenticated,
        }
    }

    /// `Ok` when the caller may read `node`'s config; else `PERMISSION_DENIED` naming the
    /// mismatch.
    pub(crate) fn check(&self, node: &Node) -> Result<(), Status> {
        let Caller::Authenticated(id) = self else {
            return Ok(());
        };
        let Some(id) = id else {
            return Err(Status::permission_denied(
                "this xDS server authenticates callers: present a client certificate of the mesh",
            ));
        };
        let (Some(id_ns), Some(id_sa)) = (id.istio_namespace(), id.istio_service_account()) else {
            return Err(Status::permission_denied(format!(
                "caller {id} is not an Istio workload identity (spiffe://<td>/ns/<ns>/sa/<sa>)"
            )));
        };
        let ns = metadata(node, "NAMESPACE").or_else(|| id_namespace(&node.id));
        match ns {
            None => {
                return Err(Status::permission_denied(format!(
                    "node {:?} claims no namespace (metadata NAMESPACE or node id); caller is {id}",
                    node.id
                )));
            }
            Some(ns) if ns != id_ns => {
                return Err(Status::permission_denied(format!(
                    "node {:?} claims namespace {ns:?} but the caller is {id}",
                    node.id
                )));
            }
            Some(_) => {}
        }
        if let Some(sa) = metadata(node, "SERVICE_ACCOUNT")
            && sa != id_sa
        {
            return Err(Status::permission_denied(format!(
                "node {:?} claims service account {sa:?} but the caller is {id}",
                node.id
            )));
        }
        Ok(())
    }
}

fn metadata<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The namespace in an Istio node id, `type~ip~pod.ns~ns.svc.cluster.local`.
fn id_namespace(id: &str) -> Option<&str> {
    let domain = id.split('~').nth(3)?;
    domain.split('.').next().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_from_the_node_id() {
        assert_eq!(
            id_namespace("sidecar~10.0.0.1~a.prod~prod.svc.cluster.local"),
            Some("prod")
        );
        assert_eq!(id_namespace("n"), None);
    }
}
