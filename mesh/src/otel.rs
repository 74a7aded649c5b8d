//! Tracing by default: OpenTelemetry export configured by OpenTelemetry's environment
//! variables (feature `otlp`, on by default), the way OpenTelemetry SDKs autoconfigure.
//!
//! When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the first [`MeshBuilder::build`] of the
//! process builds an OTLP/gRPC exporter (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, ... see [`mesh_telemetry::otlp`]) and, when the process has no
//! `tracing` subscriber yet, installs one: the exporter's layer for spans at `INFO` and
//! above, and a log formatter on stderr filtered by `RUST_LOG` (default `warn`). A process
//! with its own subscriber adds [`Mesh::otlp_exporter`]'s layer to it instead. Without the
//! variable nothing is built, nothing is installed and the request spans are never
//! allocated (no subscriber wants them).
//!
//! [`MeshBuilder::build`]: crate::MeshBuilder::build
//! [`Mesh::otlp_exporter`]: crate::Mesh::otlp_exporter

use std::sync::OnceLock;

use mesh_telemetry::otlp::{OtlpConfig, OtlpError, OtlpExporter};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

/// The process's exporter: one per process, as the global subscriber.
static EXPORTER: OnceLock<Option<OtlpExporter>> = OnceLock::new();

/// Makes `exporter` the process's (`None`: no export), in place of the one the environment
/// would ask for: later [`MeshBuilder::build`]s use it and install nothing. For a program
/// that configures export itself (the proxy's flags) and adds the exporter's layer to its
/// own subscriber. Returns `false` when the process's exporter was already chosen.
///
/// [`MeshBuilder::build`]: crate::MeshBuilder::build
pub fn set_process_exporter(exporter: Option<OtlpExporter>) -> bool {
    EXPORTER.set(exporter).is_ok()
}

/// The exporter the environment asks for (built and installed once per process).
pub(crate) fn from_env(default_service: &str) -> Result<Option<OtlpExporter>, OtlpError> {
    if let Some(e) = EXPORTER.get() {
        return Ok(e.clone());
    }
    let Some(config) = OtlpConfig::from_env(default_service)? else {
        return Ok(EXPORTER.get_or_init(|| None).clone());
    };
    let exporter = OtlpExporter::new(&config)?;
    let exporter = EXPORTER.get_or_init(|| Some(exporter)).clone();
    if let Some(e) = &exporter
        && !tracing::dispatcher::has_been_set()
    {
        let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let subscriber = tracing_subscriber::registry()
            .with(e.layer().with_filter(LevelFilter::INFO))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(logs),
            );
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but a tracing subscriber is already \
                 installed: add Mesh::otlp_exporter()'s layer to it to export spans"
            );
        }
    }
    Ok(exporter)
}
