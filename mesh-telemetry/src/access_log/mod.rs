//! Access logs, off by default: one line per request in Envoy's default format or JSON,
//! written when the response headers are known.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use mesh_telemetry::access_log::{AccessLogConfig, AccessLogLayer, Format};
//! let lines = Arc::new(Mutex::new(Vec::<String>::new()));
//! let sink = lines.clone();
//! let layer = AccessLogLayer::new(AccessLogConfig { enabled: true, format: Format::Json })
//!     .with_sink(move |line| sink.lock().unwrap().push(line.to_string()));
//! # let _ = layer;
//! ```

mod format;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use http::{Request, Response};
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

pub use format::Entry;

/// Line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Envoy's default access log format.
    #[default]
    Envoy,
    /// One JSON object per line with Envoy's field names.
    Json,
}

/// Access log settings; `enabled` is false by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AccessLogConfig {
    /// Whether to log at all.
    pub enabled: bool,
    /// The line format.
    pub format: Format,
}

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Writes one access log line per request.
#[derive(Clone)]
pub struct AccessLogLayer {
    config: AccessLogConfig,
    sink: Sink,
}

impl std::fmt::Debug for AccessLogLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl AccessLogLayer {
    /// Lines go to `tracing` (target `access_log`, level INFO) unless a sink is set.
    pub fn new(config: AccessLogConfig) -> Self {
        Self {
            config,
            sink: Arc::new(|line: &str| tracing::info!(target: "access_log", "{line}")),
        }
    }

    /// Sends lines to `sink` instead (a file writer, a channel, a test buffer).
    pub fn with_sink(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`AccessLogLayer`].
#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    layer: AccessLogLayer,
}

impl<S> std::fmt::Debug for AccessLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, B, RB> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let pending = self.layer.config.enabled.then(|| Pending {
            entry: Entry::from_request(&req, SystemTime::now()),
            start: Instant::now(),
            format: self.layer.config.format,
            sink: self.layer.sink.clone(),
        });
        ResponseFuture {
            inner: self.inner.call(req),
            pending,
        }
    }
}

struct Pending {
    entry: Entry,
    start: Instant,
    format: Format,
    sink: Sink,
}

/// The future of [`AccessLog`].
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    pending: Option<Pending>,
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("access_log::ResponseFuture")
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Some(mut p) = this.pending.take() {
            p.entry.duration_ms = p.start.elapsed().as_millis() as u64;
            match &out {
                Ok(resp) => p.entry.fill_response(resp),
                Err(_) => p.entry.response_flags = "UF".into(),
            }
            let line = match p.format {
                Format::Envoy => p.entry.envoy_line(),
                Format::Json => p.entry.json_line(),
            };
            (p.sink)(&line);
        }
        Poll::Ready(out)
    }
}
