//! `quickstart hello` and `quickstart call`: the two services of docs/getting-started.md.

use std::process::ExitCode;

const USAGE: &str = "usage:
  quickstart hello    serve `hello` on 127.0.0.1:18480 (mTLS, policies from the control plane)
  quickstart call     call hello through the mesh once and print its answer
The control plane (`control-plane serve`, see docs/getting-started.md) is found through
  MESH_XDS_ADDR   default http://127.0.0.1:15010
  MESH_CA_ADDR    default https://127.0.0.1:15012
  MESH_ROOT_CERT  default .mesh/root-cert.pem
  MESH_TOKEN_FILE a bearer token for the CA (unset: the CA must run with --ca-open)
  MESH_READY_TIMEOUT seconds to wait for the first certificate (default 10)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let command = match args.as_slice() {
        ["hello"] | ["call"] => args[0],
        [_, "--help" | "-h"] | ["help" | "--help" | "-h", ..] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("quickstart: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = quickstart::Settings::from_env();
    let result = runtime.block_on(async {
        match command {
            // Ctrl-C (SIGINT) stops it gracefully: requests in flight are answered.
            "hello" => {
                quickstart::hello(&settings, async { drop(tokio::signal::ctrl_c().await) }).await
            }
            _ => quickstart::call(&settings)
                .await
                .map(|body| print!("{body}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
