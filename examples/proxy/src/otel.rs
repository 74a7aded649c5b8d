//! Span export: the in-process mesh's (OpenTelemetry's `OTEL_*` variables, read by
//! [`OtlpConfig::from_vars`]) with the tracing flags laid over them, so the proxy and a
//! linked service are configured alike and a flag wins over its variable.

use mesh_telemetry::otlp::{OtlpConfig, OtlpError, OtlpExporter};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

use crate::options::{NodeOptions, TracingFlags};

/// The variables each flag stands for.
const FLAGS: [(&str, &[&str]); 4] = [
    (
        "otlp-endpoint",
        &[
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ],
    ),
    ("service-name", &["OTEL_SERVICE_NAME"]),
    ("trace-sampler", &["OTEL_TRACES_SAMPLER"]),
    ("trace-sampler-arg", &["OTEL_TRACES_SAMPLER_ARG"]),
];

fn flag_value<'a>(flags: &'a TracingFlags, flag: &str) -> Option<&'a String> {
    match flag {
        "otlp-endpoint" => flags.otlp_endpoint.as_ref(),
        "service-name" => flags.service_name.as_ref(),
        "trace-sampler" => flags.trace_sampler.as_ref(),
        _ => flags.trace_sampler_arg.as_ref(),
    }
}

/// The export `flags` over `env` ask for (`None`: no export). The default `service.name`
/// is the node's `app` label, else its service account (Istio names a proxy's traces by
/// its app). A refused value names the flag it came from, else its variable.
pub fn otlp_config(
    flags: &TracingFlags,
    node: &NodeOptions,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, String> {
    let var = |k: &str| {
        FLAGS
            .iter()
            .find(|(_, vars)| vars.contains(&k))
            .and_then(|(flag, _)| flag_value(flags, flag).cloned())
            .or_else(|| env(k))
    };
    let default_service = [node.labels.get("app"), Some(&node.service_account)]
        .into_iter()
        .flatten()
        .find(|v| !v.is_empty())
        .map_or("mesh-proxy", String::as_str);
    OtlpConfig::from_vars(default_service, var).map_err(|e| match e {
        OtlpError::Env { var, value, reason } => {
            let flag = FLAGS
                .iter()
                .find(|(flag, vars)| vars.contains(&var) && flag_value(flags, flag).is_some());
            match flag {
                Some((flag, _)) => format!("--{flag} {value:?}: {reason}"),
                None => format!("{var}={value:?}: {reason}"),
            }
        }
        e => e.to_string(),
    })
}

/// Installs the process's subscriber: logs on stderr filtered by `RUST_LOG` (default
/// `info`) and, with `config`, the exporter's layer for spans at `INFO` and above. Call it
/// inside the runtime (the exporter's gRPC channel is created on it). The exporter is also
/// handed to the facade, whose outbound client must not build a second one from the
/// environment.
pub fn install(config: Option<&OtlpConfig>) -> Result<Option<OtlpExporter>, String> {
    let exporter = config
        .map(OtlpExporter::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    mesh::otel::set_process_exporter(exporter.clone());
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            exporter
                .as_ref()
                .map(|e| e.layer().with_filter(LevelFilter::INFO)),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(logs),
        )
        .init();
    Ok(exporter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_telemetry::otlp::TraceSampler;

    fn env(k: &str) -> Option<String> {
        match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://env:4317".into()),
            "OTEL_SERVICE_NAME" => Some("from-env".into()),
            "OTEL_TRACES_SAMPLER" => Some("always_off".into()),
            _ => None,
        }
    }

    #[test]
    fn flags_win_over_variables() {
        let node = NodeOptions::default();
        let c = otlp_config(&TracingFlags::default(), &node, env)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.service_name.as_str(), c.sampler),
            ("http://env:4317", "from-env", TraceSampler::AlwaysOff)
        );
        let flags = TracingFlags {
            otlp_endpoint: Some("http://flag:4317".into()),
            service_name: Some("from-flag".into()),
            trace_sampler: Some("traceidratio".into()),
            trace_sampler_arg: Some("0.5".into()),
        };
        let c = otlp_config(&flags, &node, env).unwrap().unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.service_name.as_str(), c.sampler),
            (
                "http://flag:4317",
                "from-flag",
                TraceSampler::TraceIdRatio(0.5)
            )
        );
    }

    #[test]
    fn no_endpoint_no_export_and_the_app_label_names_the_service() {
        let mut node = NodeOptions::default();
        let none = |_: &str| None;
        assert!(
            otlp_config(&TracingFlags::default(), &node, none)
                .unwrap()
                .is_none()
        );
        node.service_account = "web-sa".into();
        let flags = TracingFlags {
            otlp_endpoint: Some("http://c:4317".into()),
            ..Default::default()
        };
        let c = otlp_config(&flags, &node, none).unwrap().unwrap();
        assert_eq!(c.service_name, "web-sa");
        node.labels.insert("app".into(), "web".into());
        let c = otlp_config(&flags, &node, none).unwrap().unwrap();
        assert_eq!(c.service_name, "web");
    }

    #[test]
    fn refused_values_name_their_flag_or_variable() {
        let node = NodeOptions::default();
        let flags = TracingFlags {
            otlp_endpoint: Some("http://c:4317".into()),
            trace_sampler: Some("jaeger_remote".into()),
            ..Default::default()
        };
        let e = otlp_config(&flags, &node, |_| None).unwrap_err();
        assert!(e.starts_with("--trace-sampler \"jaeger_remote\""), "{e}");
        let e = otlp_config(&TracingFlags::default(), &node, |k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4317".into()),
            "OTEL_TRACES_SAMPLER_ARG" => Some("2".into()),
            "OTEL_TRACES_SAMPLER" => Some("traceidratio".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(e.starts_with("OTEL_TRACES_SAMPLER_ARG=\"2\""), "{e}");
    }
}
