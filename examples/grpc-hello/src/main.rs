//! `cargo run -p grpc-hello [CALLS]`: see the crate docs.

const USAGE: &str = "usage: grpc-hello [CALLS]
  serves the greeter (gRPC health behind Mesh::serve) and calls it CALLS times (default 3)
  through mesh.channel, over mTLS, configured by the embedded control plane from config/";

#[tokio::main]
async fn main() -> Result<(), grpc_hello::BoxError> {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("--help" | "-h" | "help")) {
        println!("{USAGE}");
        return Ok(());
    }
    let calls = arg
        .map_or(Ok(3), |n| n.parse())
        .map_err(|e| format!("CALLS: {e}\n{USAGE}"))?;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for line in grpc_hello::run(&config, calls).await? {
        println!("{line}");
    }
    Ok(())
}
