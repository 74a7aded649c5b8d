//! The example as a user runs it: the greeter serves, the client's health checks and watch
//! succeed over mTLS through the mesh.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_hello_runs() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let seen = grpc_hello::run(&config, 3).await.unwrap();
    assert_eq!(
        seen,
        [
            "check 1: Serving",
            "check 2: Serving",
            "check 3: Serving",
            "watch: Serving"
        ]
    );
}

#[test]
fn help_prints_the_usage() {
    for arg in ["--help", "-h", "help"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_grpc-hello"))
            .arg(arg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{arg}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("usage: grpc-hello [CALLS]"),
            "{arg}"
        );
    }
}
