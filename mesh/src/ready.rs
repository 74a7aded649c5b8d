//! [`Mesh::ready`]: wait for the identity and the first routes, for a bounded time, and
//! say why when they do not come (a silent hang is the worst first experience).

use std::time::Duration;

use mesh_route::client::MeshClientError;
use mesh_xds::client::{ClientStatus, ResourceState};
use mesh_xds::resource::ResourceType;
use tokio::time::Instant;

use crate::Mesh;

/// Why [`Mesh::ready`] gave up; the message carries the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// No workload certificate in time.
    #[error("no workload certificate after {timeout:?}: {cause}")]
    Identity {
        /// How long it waited.
        timeout: Duration,
        /// The identity source's last error (e.g. the CA's refusal), or that it never
        /// answered.
        cause: String,
    },
    /// A target's listener, routes, clusters or endpoints did not arrive in time.
    #[error("{target}: no routes after {timeout:?}: {cause}")]
    Config {
        /// The target (`host:port`).
        target: String,
        /// How long it waited.
        timeout: Duration,
        /// What the config source says: the xDS server unreachable, the resource does not
        /// exist, or was rejected (and why).
        cause: String,
    },
}

impl Mesh {
    /// Waits, at most `timeout` in all, for the workload certificate and for the routes of
    /// each of `targets` (`host:port` or `xds:///host:port`, as [`Mesh::resolve`]). The
    /// targets are asked for while the certificate is being issued (the CSR and the xDS
    /// requests go out at once), unless the xDS channel is TLS with that certificate
    /// (then after it). On timeout the error says why: the CA's refusal (first), the xDS
    /// server unreachable, a resource that does not exist or was rejected.
    ///
    /// ```no_run
    /// # async fn f(mesh: mesh::Mesh) -> Result<(), mesh::NotReady> {
    /// mesh.ready(std::time::Duration::from_secs(10), &["reviews.default.svc.cluster.local:9080"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self, timeout: Duration, targets: &[&str]) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        let identity = async {
            tokio::time::timeout_at(deadline, self.identity.ready())
                .await
                .is_ok()
        };
        let routes = self.routes_ready(deadline, timeout, targets);
        let (issued, routes) = if self.xds_needs_identity {
            if identity.await {
                (true, routes.await)
            } else {
                (false, Ok(()))
            }
        } else {
            tokio::join!(identity, routes)
        };
        if !issued {
            let cause = self.identity.stats().last_error.unwrap_or_else(|| {
                "the identity source has not answered (is the CA reachable?)".into()
            });
            return Err(NotReady::Identity { timeout, cause });
        }
        routes
    }

    /// Waits until `deadline` for the routes of each of `targets`.
    async fn routes_ready(
        &self,
        deadline: Instant,
        timeout: Duration,
        targets: &[&str],
    ) -> Result<(), NotReady> {
        for target in targets {
            let name = target.strip_prefix("xds:///").unwrap_or(target);
            let result = tokio::time::timeout_at(deadline, self.mesh_client.resolve(target)).await;
            let cause = match result {
                Ok(Ok(())) => continue,
                Ok(Err(MeshClientError::NotResolved { .. })) | Err(_) => {
                    self.config_cause(name).await
                }
                Ok(Err(e)) => e.to_string(),
            };
            return Err(NotReady::Config {
                target: (*target).to_owned(),
                timeout,
                cause,
            });
        }
        Ok(())
    }

    /// What the source says about listener `name` and what it refers to.
    async fn config_cause(&self, name: &str) -> String {
        let Some(xds) = &self.xds else {
            return "the config source has not delivered it".into();
        };
        match xds.status().await {
            Ok(status) => explain(&status, name),
            Err(e) => format!("the xDS client has stopped: {e}"),
        }
    }
}

/// The first reason in `status` that `listener` is not usable.
fn explain(status: &ClientStatus, listener: &str) -> String {
    if !status.connected && status.resources.iter().all(|r| !r.has_value) {
        return "the xDS server is unreachable or refused the stream (no answer yet; \
                RUST_LOG=mesh_xds=debug shows the connection errors)"
            .into();
    }
    if let Some(l) = status.get(ResourceType::Listener, listener)
        && l.state == ResourceState::DoesNotExist
    {
        return format!(
            "the control plane has no listener {listener:?} (DOES_NOT_EXIST: no such \
             service and port in its config?)"
        );
    }
    for r in &status.resources {
        match r.state {
            ResourceState::Nacked if !r.has_value => {
                return format!(
                    "{:?} {:?} was rejected: {}",
                    r.kind,
                    r.name,
                    r.last_error.as_deref().unwrap_or("no reason given")
                );
            }
            ResourceState::DoesNotExist => {
                return format!("{:?} {:?} does not exist", r.kind, r.name);
            }
            _ => {}
        }
    }
    let waiting: Vec<String> = status
        .resources
        .iter()
        .filter(|r| r.state == ResourceState::Requested)
        .map(|r| format!("{:?} {:?}", r.kind, r.name))
        .collect();
    if waiting.is_empty() {
        "the control plane has not answered".into()
    } else {
        // An xDS server may just omit what it does not have; the client calls it
        // DOES_NOT_EXIST only after `XdsClientConfig::resource_timeout` (15 s).
        format!(
            "no answer yet for {} (connected: {}; a service or port the control plane does \
             not have is reported DOES_NOT_EXIST after the xDS resource timeout)",
            waiting.join(", "),
            status.connected
        )
    }
}
