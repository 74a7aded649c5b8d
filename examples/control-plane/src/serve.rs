//! `control-plane serve`: flags -> [`ControlPlaneOptions`], run until Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use mesh_control::server::{ControlPlane, ControlPlaneOptions};

fn parse(args: &[&str]) -> Result<ControlPlaneOptions, String> {
    let mut o = ControlPlaneOptions::default();
    let mut config_dir = None;
    let mut it = args.iter();
    let addr = |flag: &str, v: Option<&&str>| -> Result<Option<SocketAddr>, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        if *v == "off" {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| format!("{flag} {v}: not an address like 127.0.0.1:15010"))
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(|v| (*v).to_owned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match *flag {
            "--config-dir" => config_dir = Some(value()?),
            "--xds-addr" => {
                let v = value()?;
                o.xds_addr =
                    addr(flag, Some(&v.as_str()))?.ok_or("--xds-addr cannot be off".to_string())?;
            }
            "--ca-addr" => o.ca_addr = addr(flag, Some(&value()?.as_str()))?,
            "--debug-addr" => o.debug_addr = addr(flag, Some(&value()?.as_str()))?,
            "--ca-dir" => o.ca_dir = Some(value()?.into()),
            "--out-dir" => o.out_dir = Some(value()?.into()),
            "--ca-token-file" => o.ca_auth.token_file = Some(value()?.into()),
            "--ca-token-identity" => o.ca_auth.token_identity = Some(value()?),
            "--ca-no-client-certs" => o.ca_auth.no_client_certificates = true,
            "--ca-open" => o.ca_auth.open = true,
            "--trust-domain" => o.trust_domain = value()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    o.config_dir = config_dir.ok_or("--config-dir DIR is required")?.into();
    Ok(o)
}

pub(crate) fn run(args: &[&str]) -> ExitCode {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("control-plane serve: {e}\n\n{}", crate::USAGE);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("control-plane serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Restarting without --ca-dir makes a new root: every running workload's
        // certificate stops verifying. Say so where the operator looks.
        let in_memory_ca = options.ca_dir.is_none() && options.ca_addr.is_some();
        let cp = match ControlPlane::start(options).await {
            Ok(cp) => cp,
            Err(e) => {
                eprintln!("control-plane serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        // One line for scripts to wait on.
        println!(
            "serving xds={} ca={} debug={}",
            cp.xds_addr(),
            cp.ca_addr().map_or("off".into(), |a| a.to_string()),
            cp.debug_addr().map_or("off".into(), |a| a.to_string()),
        );
        if in_memory_ca {
            tracing::warn!(
                "no --ca-dir: the CA's root lives in memory and a restart makes a new one, which \
                 workloads holding certificates of this one will not trust; pass --ca-dir DIR \
                 to keep it"
            );
        }
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("control-plane serve: shutting down");
        cp.shutdown().await;
        ExitCode::SUCCESS
    })
}
