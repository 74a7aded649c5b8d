//! `demo`: Bookinfo in one process (see the crate docs of `demo` and docs/getting-started.md).

use std::process::ExitCode;

use demo::{DemoOptions, parse_args};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let opts: DemoOptions = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", demo::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e}\n\n{}", demo::USAGE);
            return ExitCode::from(2);
        }
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match demo::run(opts, ctrl_c).await {
        Ok(summary) => {
            println!("{}", summary.render());
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
