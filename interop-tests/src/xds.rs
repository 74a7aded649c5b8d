//! What every suite's xDS clients share: quick reconnects, and waiting until a client has
//! everything it asked for.

use std::time::Duration;

use mesh_xds::client::{BackoffConfig, ClientStatus, ResourceState, XdsClient};

/// Reconnect pacing for tests: 100 ms doubling to 1 s.
pub fn fast_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// Waits until `client` is ready and no resource is still requested (resources subscribed
/// after the first answers, like the endpoints of later clusters, arrive too), within
/// `wait`; the status then, or `Err` with the status when it is not ready in time.
pub async fn settled(client: &XdsClient, wait: Duration) -> Result<ClientStatus, ClientStatus> {
    let deadline = tokio::time::Instant::now() + wait;
    let status = || async { client.status().await.unwrap_or_default() };
    if tokio::time::timeout(wait, client.ready()).await.is_err() {
        return Err(status().await);
    }
    let mut now = status().await;
    while now
        .resources
        .iter()
        .any(|r| r.state == ResourceState::Requested)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = status().await;
    }
    Ok(now)
}

/// Every resource of `status` that is not ACKed, one line each with its state and error.
pub fn not_acked(status: &ClientStatus) -> Vec<String> {
    status
        .resources
        .iter()
        .filter(|r| r.state != ResourceState::Acked)
        .map(|r| {
            format!(
                "{} {} {}: {:?}",
                r.kind.short_name(),
                r.name,
                r.state,
                r.last_error
            )
        })
        .collect()
}
