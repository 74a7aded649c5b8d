//! The ADS task: opens the stream (SotW or delta), feeds responses to the state, sends what
//! the state owes, runs does-not-exist timers, and reconnects with backoff. Everything
//! between the task and the handles is bounded: commands through an `mpsc` of
//! [`COMMAND_QUEUE`], requests through one of [`REQUEST_QUEUE`], output through `watch`.

use std::future::Future;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::backoff::Backoff;
use super::state::{Codec, State, Verdict};
use super::status::ClientStatus;
use super::{Protocol, XdsClientConfig, delta, sotw};

/// Capacity of the handle -> task command queue.
pub(crate) const COMMAND_QUEUE: usize = 64;
/// Capacity of the task -> gRPC request queue. Requests are few (at most a handful per
/// response), and the task waits when it is full.
const REQUEST_QUEUE: usize = 32;

/// What the handles ask of the task.
pub(crate) enum Command {
    AddTarget(String),
    RemoveTarget(String),
    Status(oneshot::Sender<ClientStatus>),
    /// Stop now; the sender is dropped once the stream and channel are.
    Close(oneshot::Sender<()>),
}

/// How a stream ended.
enum Ended {
    /// Every handle is gone: stop.
    Closed,
    /// The stream failed or the server closed it.
    Stream { got_response: bool },
}

/// The two ADS wire formats.
trait Wire {
    type Request: Send + 'static;
    type Response: Send + 'static;
    fn requests<C: Codec>(
        state: &mut State<C>,
        node: &Node,
        node_sent: &mut bool,
    ) -> Vec<Self::Request>;
    fn apply<C: Codec>(
        state: &mut State<C>,
        response: &Self::Response,
        now: Instant,
    ) -> Option<Verdict>;
    fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        request: tonic::Request<ReceiverStream<Self::Request>>,
    ) -> impl Future<Output = Result<tonic::Response<Streaming<Self::Response>>, tonic::Status>>
    + Send
    + '_;
}

struct Sotw;
struct Delta;

impl Wire for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    fn requests<C: Codec>(s: &mut State<C>, node: &Node, sent: &mut bool) -> Vec<Self::Request> {
        sotw::requests(s, node, sent)
    }
    fn apply<C: Codec>(s: &mut State<C>, r: &Self::Response, now: Instant) -> Option<Verdict> {
        sotw::apply(s, r, now).map(|(_, v)| v)
    }
    fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        request: tonic::Request<ReceiverStream<Self::Request>>,
    ) -> impl Future<Output = Result<tonic::Response<Streaming<Self::Response>>, tonic::Status>>
    + Send
    + '_ {
        client.stream_aggregated_resources(request)
    }
}

impl Wire for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn requests<C: Codec>(s: &mut State<C>, node: &Node, sent: &mut bool) -> Vec<Self::Request> {
        delta::requests(s, node, sent)
    }
    fn apply<C: Codec>(s: &mut State<C>, r: &Self::Response, now: Instant) -> Option<Verdict> {
        delta::apply(s, r, now).map(|(_, v)| v)
    }
    fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        request: tonic::Request<ReceiverStream<Self::Request>>,
    ) -> impl Future<Output = Result<tonic::Response<Streaming<Self::Response>>, tonic::Status>>
    + Send
    + '_ {
        client.delta_aggregated_resources(request)
    }
}

/// The task's state.
pub(crate) struct Driver<C: Codec> {
    pub(crate) state: State<C>,
    pub(crate) config: XdsClientConfig,
    pub(crate) channel: super::XdsChannel,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) snapshot_tx: watch::Sender<Arc<C::Snapshot>>,
    pub(crate) ready_tx: watch::Sender<bool>,
    /// Held from [`Command::Close`] until the driver (stream, channel) is dropped.
    pub(crate) closing: Option<oneshot::Sender<()>>,
}

impl<C: Codec> Driver<C> {
    /// Runs until every handle is dropped or the client is closed.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff.clone());
        loop {
            // Nothing to ask for yet: wait for a subscription before opening a stream.
            while !self.state.wants_anything() {
                let Some(cmd) = self.commands.recv().await else {
                    return;
                };
                if !self.handle(cmd) {
                    return;
                }
            }
            let ended = match self.config.protocol {
                Protocol::StateOfTheWorld => self.stream::<Sotw>().await,
                Protocol::Delta => self.stream::<Delta>().await,
            };
            self.state.on_stream_end();
            self.publish();
            match ended {
                Ended::Closed => return,
                Ended::Stream { got_response } => {
                    if got_response {
                        backoff.reset();
                    }
                }
            }
            let delay = backoff.next_delay();
            tracing::info!(?delay, "xDS stream ended; reconnecting after backoff");
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = self.commands.recv() => {
                        let Some(cmd) = cmd else { return };
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Applies `cmd`; `false` when it asks the client to stop.
    fn handle(&mut self, cmd: Command) -> bool {
        let now = Instant::now();
        match cmd {
            Command::Close(done) => {
                self.closing = Some(done);
                return false;
            }
            Command::AddTarget(name) => self.state.add_target(&name, now),
            Command::RemoveTarget(name) => self.state.remove_target(&name, now),
            Command::Status(reply) => {
                let _ = reply.send(self.state.status());
            }
        }
        self.publish();
        true
    }

    fn publish(&mut self) {
        if let Some(snapshot) = self.state.take_snapshot() {
            self.snapshot_tx.send_replace(snapshot);
        }
        let ready = self.state.ready();
        self.ready_tx.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }

    async fn flush<W: Wire>(
        &mut self,
        tx: &mpsc::Sender<W::Request>,
        node_sent: &mut bool,
    ) -> Result<(), ()> {
        for request in W::requests(&mut self.state, &self.config.node, node_sent) {
            tx.send(request).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// One ADS stream, from open to end.
    async fn stream<W: Wire>(&mut self) -> Ended {
        let (tx, rx) = mpsc::channel::<W::Request>(REQUEST_QUEUE);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(path) = &self.config.token_file {
            if !self.channel.is_secure() {
                tracing::error!(path = %path.display(), "{}", super::TOKEN_RULE);
                return Ended::Stream {
                    got_response: false,
                };
            }
            // Re-read per stream: the token is rotated on disk.
            match read_bearer(path).await {
                Ok(value) => {
                    request.metadata_mut().insert("authorization", value);
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), "xDS call credentials: {why}");
                    return Ended::Stream {
                        got_response: false,
                    };
                }
            }
        }
        self.state.on_stream_start(Instant::now());
        let mut node_sent = false;
        if self.flush::<W>(&tx, &mut node_sent).await.is_err() {
            return Ended::Stream {
                got_response: false,
            };
        }
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel.channel.clone())
            .max_decoding_message_size(self.config.max_message_size)
            .max_encoding_message_size(self.config.max_message_size);
        let mut inbound = {
            let open = W::open(&mut client, request);
            tokio::pin!(open);
            loop {
                let deadline = self.state.next_deadline();
                tokio::select! {
                    opened = &mut open => match opened {
                        Ok(response) => break response.into_inner(),
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "xDS stream failed to open");
                            return Ended::Stream { got_response: false };
                        }
                    },
                    cmd = self.commands.recv() => match cmd {
                        Some(cmd) => {
                            if !self.handle(cmd) {
                                return Ended::Closed;
                            }
                            if self.flush::<W>(&tx, &mut node_sent).await.is_err() {
                                return Ended::Stream { got_response: false };
                            }
                        }
                        None => return Ended::Closed,
                    },
                    _ = sleep_until(deadline), if deadline.is_some() => {
                        self.state.on_timer(Instant::now());
                        self.publish();
                    }
                }
            }
        };
        tracing::info!("xDS stream open");
        let mut got_response = false;
        loop {
            let deadline = self.state.next_deadline();
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(response)) => {
                        got_response = true;
                        W::apply(&mut self.state, &response, Instant::now());
                        self.publish();
                        if self.flush::<W>(&tx, &mut node_sent).await.is_err() {
                            return Ended::Stream { got_response };
                        }
                    }
                    Ok(None) => {
                        tracing::info!("xDS stream closed by the server");
                        return Ended::Stream { got_response };
                    }
                    Err(status) => {
                        // With every handle dropped the process is stopping and may be
                        // tearing the connection down under us: not worth a warning.
                        if self.commands.is_closed() {
                            tracing::debug!(code = ?status.code(), "xDS stream ended while the client stops");
                            return Ended::Closed;
                        }
                        tracing::warn!(code = ?status.code(), message = status.message(), "xDS stream failed");
                        return Ended::Stream { got_response };
                    }
                },
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        if !self.handle(cmd) {
                            return Ended::Closed;
                        }
                        if self.flush::<W>(&tx, &mut node_sent).await.is_err() {
                            return Ended::Stream { got_response };
                        }
                    }
                    None => return Ended::Closed,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.state.on_timer(Instant::now());
                    self.publish();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads a bearer token file into an `authorization` value. Errors never include the token.
async fn read_bearer(
    path: &std::path::Path,
) -> Result<MetadataValue<tonic::metadata::Ascii>, String> {
    let token = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read the token file: {e}"))?;
    let token = token.trim();
    if token.is_empty() {
        return Err("the token file is empty".into());
    }
    let mut value = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "the token contains characters not allowed in a header".to_string())?;
    value.set_sensitive(true);
    Ok(value)
}
