//! `cargo run -p grpc-hello [CALLS]`: see the crate docs.

#[tokio::main]
async fn main() -> Result<(), grpc_hello::BoxError> {
    let calls = std::env::args().nth(1).map_or(Ok(3), |n| n.parse())?;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for line in grpc_hello::run(&config, calls).await? {
        println!("{line}");
    }
    Ok(())
}
