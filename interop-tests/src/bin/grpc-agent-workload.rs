//! A proxyless gRPC workload as a user writes it under Istio's agent (`grpc-agent` mode):
//! `Mesh::builder().bootstrap_from_env()?.build()?` and nothing else. The agent's bootstrap
//! (`GRPC_XDS_BOOTSTRAP`) gives the xDS server (the agent's socket) and the certificate files
//! the agent keeps renewed. Run by `interop-tests/tests/istiod_grpc_agent.rs`.
//!
//! - `grpc-agent-workload serve ADDR`: a tonic health server behind `Mesh::serve`; prints
//!   `SERVING` once its inbound listener has arrived.
//! - `grpc-agent-workload client`: reads commands from stdin, one per line, and prints one
//!   line for each: `check TARGET` (a new channel, one `Health/Check`: `check OK` or
//!   `check CODE: message`), `watch TARGET` (a new channel, the first `Health/Watch`
//!   message: `watch OK` / `watch CODE: message`), `identity` (`identity GENERATION
//!   SPIFFE-ID SECONDS-LEFT`: how many certificates the workload has loaded).

use std::time::{Duration, SystemTime};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long one call may take.
const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mesh = mesh::Mesh::builder().bootstrap_from_env()?.build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr] => serve(&mesh, addr.parse()?).await,
        ["client"] => client(&mesh).await,
        _ => Err("usage: grpc-agent-workload serve ADDR | client".into()),
    }
}

async fn serve(
    mesh: &mesh::Mesh,
    addr: std::net::SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = mesh.inbound_server(addr)?;
    let mut status = server.status();
    tokio::spawn(async move {
        if status.wait_for(|s| s.is_serving()).await.is_ok() {
            println!("SERVING");
        }
    });
    server.serve(tonic::service::Routes::new(health)).await?;
    Ok(())
}

async fn client(mesh: &mesh::Mesh) -> Result<(), Box<dyn std::error::Error>> {
    // Blocking stdin on a thread of its own (tokio's `io-std` is not among the features).
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let out = match words[..] {
            ["check", target] => format!("check {}", check(mesh, target).await),
            ["watch", target] => format!("watch {}", watch(mesh, target).await),
            ["identity"] => match mesh.identity().current() {
                Some(c) => format!(
                    "identity {} {} {}",
                    mesh.identity().generation(),
                    c.id,
                    c.not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .as_secs()
                ),
                None => "identity none".into(),
            },
            _ => format!("unknown command {line:?}"),
        };
        println!("{out}");
    }
    Ok(())
}

/// One `Health/Check` on a channel of its own (dropped after the call).
async fn check(mesh: &mesh::Mesh, target: &str) -> String {
    let mut health = HealthClient::new(mesh.channel(target));
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.set_timeout(DEADLINE);
    match health.check(req).await {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// The first message of a `Health/Watch` on a channel of its own.
async fn watch(mesh: &mesh::Mesh, target: &str) -> String {
    let mut health = HealthClient::new(mesh.channel(target));
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.set_timeout(DEADLINE);
    match health.watch(req).await {
        Ok(resp) => match resp.into_inner().message().await {
            Ok(Some(_)) => "OK".into(),
            Ok(None) => "ended".into(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        },
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}
