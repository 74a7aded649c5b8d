//! OpenTelemetry export (feature `otlp`): the `tracing` spans of this crate's
//! [`TraceLayer`](crate::trace::TraceLayer) (and any span the application opens inside them)
//! sent over OTLP/gRPC to a collector, Jaeger, Tempo, ...
//!
//! With the exporter's layer in the subscriber, the trace layer takes its span and trace ids
//! from the OpenTelemetry span, so the ids in `traceparent` / `X-B3-*` are the ids the
//! collector receives, and a trace crossing several services links up there. Without it,
//! nothing changes: the trace layer makes its own ids.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_telemetry::otlp::{OtlpConfig, OtlpExporter};
//! use tracing_subscriber::prelude::*;
//!
//! // Inside a tokio runtime (the gRPC channel is created on it).
//! let exporter = OtlpExporter::new(&OtlpConfig {
//!     endpoint: "http://127.0.0.1:4317".into(),
//!     service_name: "productpage".into(),
//!     ..Default::default()
//! })?;
//! tracing_subscriber::registry()
//!     .with(exporter.layer())
//!     .with(tracing_subscriber::fmt::layer())
//!     .init();
//! // ... serve; at exit, send what is still buffered:
//! exporter.shutdown()?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// Where and as whom to export.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint (default `http://127.0.0.1:4317`).
    pub endpoint: String,
    /// The `service.name` resource attribute (default `unknown_service`, as OpenTelemetry).
    pub service_name: String,
    /// More resource attributes, e.g. `k8s.namespace.name`, `service.version`.
    pub resource: Vec<(String, String)>,
    /// Timeout of one export call (default 10 s).
    pub timeout: Duration,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".into(),
            service_name: "unknown_service".into(),
            resource: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why the exporter could not be built, flushed or shut down.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not a usable URI.
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SDK refused to flush or shut down.
    #[error("OTLP export: {0}")]
    Sdk(String),
}

/// An OTLP/gRPC span exporter with a batching processor. Cheap to clone (clones share the
/// provider).
#[derive(Clone, Debug)]
pub struct OtlpExporter {
    provider: SdkTracerProvider,
}

impl OtlpExporter {
    /// Builds the exporter. Call it inside a tokio runtime: the gRPC channel is created
    /// (lazily connected) on it. Spans are batched and sent from a background thread.
    pub fn new(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let endpoint_error = |reason: String| OtlpError::Endpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let uri: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| endpoint_error(e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(endpoint_error(
                "expected http://host:port or https://host:port".into(),
            ));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.timeout)
            .build()
            .map_err(|e| endpoint_error(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self { provider })
    }

    /// The `tracing-subscriber` layer that turns spans into OpenTelemetry spans for this
    /// exporter. Add it to the process's subscriber.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("mesh-telemetry"))
    }

    /// Sends every finished span still buffered (blocks until the collector answered or
    /// the export timed out).
    pub fn force_flush(&self) -> Result<(), OtlpError> {
        self.provider
            .force_flush()
            .map_err(|e| OtlpError::Sdk(e.to_string()))
    }

    /// Flushes and stops the exporter; spans ending later are dropped.
    pub fn shutdown(&self) -> Result<(), OtlpError> {
        self.provider
            .shutdown()
            .map_err(|e| OtlpError::Sdk(e.to_string()))
    }
}
