//! OpenTelemetry export (feature `otlp`): the `tracing` spans of this crate's
//! [`TraceLayer`](crate::trace::TraceLayer) (and any span the application opens inside them)
//! sent over OTLP/gRPC to a collector, Jaeger, Tempo, ...
//!
//! With the exporter's layer in the subscriber, the trace layer takes its span and trace ids
//! from the OpenTelemetry span, so the ids in `traceparent` / `X-B3-*` are the ids the
//! collector receives, and a trace crossing several services links up there. Without it,
//! nothing changes: the trace layer makes its own ids.
//!
//! Configured from OpenTelemetry's environment variables ([`OtlpConfig::from_env`]):
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` | the collector (unset: nothing is exported) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | `grpc` only; anything else is refused |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` | export timeout in ms |
//! | `OTEL_SERVICE_NAME` | `service.name` (else `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, else the default given) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,k=v` resource attributes |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | [`TraceSampler`] (default `parentbased_always_on`) |
//! | `OTEL_TRACES_EXPORTER` | `otlp` (default) or `none` |
//! | `OTEL_SDK_DISABLED` | `true`: nothing is exported |
//! | `OTEL_BSP_*` | read by the SDK's batch processor |
//!
//! A value this crate cannot honour is an error that names the variable, never ignored.
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
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
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
    /// Which traces are recorded and exported.
    pub sampler: TraceSampler,
}

/// OpenTelemetry's samplers (`OTEL_TRACES_SAMPLER`); ratios are in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum TraceSampler {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio`: this fraction of new traces, whatever the caller decided.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default): follow the caller, sample new traces.
    #[default]
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: follow the caller, drop new traces.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: follow the caller, this fraction of new traces.
    ParentBasedTraceIdRatio(f64),
}

impl TraceSampler {
    /// Parses `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (a ratio; default 1.0).
    ///
    /// ```
    /// use mesh_telemetry::otlp::TraceSampler;
    /// assert_eq!(TraceSampler::parse("parentbased_traceidratio", Some("0.25")).unwrap(),
    ///     TraceSampler::ParentBasedTraceIdRatio(0.25));
    /// assert!(TraceSampler::parse("traceidratio", Some("2")).is_err());
    /// assert!(TraceSampler::parse("jaeger_remote", None).is_err());
    /// ```
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, OtlpError> {
        let ratio = || -> Result<f64, OtlpError> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(env_error(
                    SAMPLER_ARG,
                    arg,
                    "expected a ratio between 0 and 1",
                )),
            }
        };
        Ok(match name.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(env_error(
                    SAMPLER,
                    other,
                    "supported: always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off, parentbased_traceidratio",
                ));
            }
        })
    }

    fn sdk(self) -> Sampler {
        let parent = |s| Sampler::ParentBased(Box::new(s));
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => parent(Sampler::AlwaysOn),
            Self::ParentBasedAlwaysOff => parent(Sampler::AlwaysOff),
            Self::ParentBasedTraceIdRatio(r) => parent(Sampler::TraceIdRatioBased(r)),
        }
    }
}

const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

fn env_error(var: &'static str, value: &str, reason: &str) -> OtlpError {
    OtlpError::Env {
        var,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl OtlpConfig {
    /// The configuration OpenTelemetry's environment variables describe (see the module
    /// docs), or `None` when they ask for no export (no endpoint, `OTEL_SDK_DISABLED=true`,
    /// `OTEL_TRACES_EXPORTER=none`). `default_service` names the service when neither
    /// `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` does.
    pub fn from_env(default_service: &str) -> Result<Option<Self>, OtlpError> {
        Self::from_vars(default_service, |k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) over any variable lookup.
    ///
    /// ```
    /// use mesh_telemetry::otlp::{OtlpConfig, TraceSampler};
    /// let vars = |k: &str| match k {
    ///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".to_string()),
    ///     "OTEL_SERVICE_NAME" => Some("reviews".to_string()),
    ///     "OTEL_TRACES_SAMPLER" => Some("traceidratio".to_string()),
    ///     "OTEL_TRACES_SAMPLER_ARG" => Some("0.1".to_string()),
    ///     _ => None,
    /// };
    /// let c = OtlpConfig::from_vars("app", vars).unwrap().unwrap();
    /// assert_eq!((c.endpoint.as_str(), c.service_name.as_str()), ("http://collector:4317", "reviews"));
    /// assert_eq!(c.sampler, TraceSampler::TraceIdRatio(0.1));
    /// assert!(OtlpConfig::from_vars("app", |_| None).unwrap().is_none());
    /// ```
    pub fn from_vars(
        default_service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, OtlpError> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("OTEL_SDK_DISABLED") {
            match v.trim().to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => return Err(env_error("OTEL_SDK_DISABLED", &v, "expected true or false")),
            }
        }
        if let Some(v) = get("OTEL_TRACES_EXPORTER") {
            match v.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                _ => {
                    return Err(env_error(
                        "OTEL_TRACES_EXPORTER",
                        &v,
                        "supported: otlp, none",
                    ));
                }
            }
        }
        let Some(endpoint) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        else {
            return Ok(None);
        };
        for key in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = get(key)
                && p.trim() != "grpc"
            {
                return Err(env_error(key, &p, "only grpc (OTLP/gRPC) is supported"));
            }
        }
        let mut config = Self {
            endpoint: endpoint.trim().to_string(),
            service_name: default_service.to_string(),
            ..Self::default()
        };
        for key in [
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            if let Some(t) = get(key) {
                let ms = t
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| env_error(key, &t, "expected milliseconds"))?;
                config.timeout = Duration::from_millis(ms);
            }
        }
        if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for kv in attrs.split(',').filter(|kv| !kv.trim().is_empty()) {
                let Some((k, v)) = kv.split_once('=') else {
                    return Err(env_error(
                        "OTEL_RESOURCE_ATTRIBUTES",
                        &attrs,
                        "expected key=value,...",
                    ));
                };
                let (k, v) = (k.trim(), v.trim());
                if k == "service.name" {
                    config.service_name = v.to_string();
                } else {
                    config.resource.push((k.to_string(), v.to_string()));
                }
            }
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            config.service_name = name.trim().to_string();
        }
        if let Some(s) = get(SAMPLER) {
            config.sampler = TraceSampler::parse(&s, get(SAMPLER_ARG).as_deref())?;
        } else if let Some(arg) = get(SAMPLER_ARG) {
            return Err(env_error(
                SAMPLER_ARG,
                &arg,
                "set without OTEL_TRACES_SAMPLER",
            ));
        }
        Ok(Some(config))
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4317".into(),
            service_name: "unknown_service".into(),
            resource: Vec::new(),
            timeout: Duration::from_secs(10),
            sampler: TraceSampler::default(),
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
    /// An OpenTelemetry environment variable holds a value this crate cannot honour.
    #[error("{var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
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
            .with_sampler(config.sampler.sdk())
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
