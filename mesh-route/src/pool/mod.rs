//! Connection pools towards one cluster's endpoints, over hyper.
//!
//! One [`UpstreamPool`] per cluster holds, per endpoint, connections whose connector
//! always dials that endpoint whatever the request's URI says. So the request
//! keeps its own authority in the URI: HTTP/1.1 sends it as `Host`, HTTP/2 as `:authority`
//! (as Envoy does: the upstream sees the authority the caller asked for, after any host
//! rewrite, never the endpoint's address).
//!
//! - **HTTP/1.1 clusters**: per endpoint, keep-alive connections on hyper's
//!   `client::conn::http1`, each carrying one request at a time; a request takes a ready
//!   one or opens another (see `http1.rs`).
//! - **Clusters that negotiate the protocol by ALPN** (TLS with `h2` and `http/1.1`
//!   offered): both an HTTP/1.1 and an HTTP/2 set per endpoint, as below; the endpoint's
//!   first connection learns which one the server chooses, and later requests go straight
//!   to that set (see `alpn.rs`). Clusters that forward in the downstream's protocol send
//!   HTTP/1 requests as HTTP/1.1 clusters do, HTTP/2 ones as gRPC requests (below).
//! - **HTTP/2 clusters** (prior knowledge, or ALPN `h2` only): a small set of connections
//!   per endpoint, each carrying many streams. A request goes to the connection with the
//!   fewest streams in flight; it opens another connection instead when that one is busy
//!   and either
//!   - the endpoint has fewer than
//!     [`PoolConfig::http2_connections`](field@PoolConfig::http2_connections) connections
//!     and every one carries at least one stream (default: the runtime's worker threads;
//!     Envoy keeps one connection pool per worker thread, so an Envoy with N workers holds
//!     N connections to a busy endpoint, and one connection is served by one task on each
//!     side, so a single connection cannot use more than one core), or
//!   - every connection carries the cluster's HTTP/2 `max_concurrent_streams` (as Envoy's
//!     HTTP/2 pool does), or 100 streams when the cluster sets none (ztunnel's limit and
//!     the least RFC 9113 recommends servers allow), or the server's own
//!     `SETTINGS_MAX_CONCURRENT_STREAMS` when that is lower (gRFC A105), up to the cluster's
//!     circuit-breaker
//!     `max_connections` per endpoint.
//!
//!   Each connection is hyper's connection-level `http2::SendRequest` (cloned per stream),
//!   dialed by the first stream picked for it; streams picked meanwhile wait for that
//!   attempt and share its error. A connection that failed, broke or received GOAWAY takes
//!   no new stream, and a request it handed back unsent goes to another connection. A
//!   stream the server refused unprocessed (`REFUSED_STREAM`, or above a GOAWAY's last
//!   stream id) is sent again once, whatever the retry policy (gRFC A6's transparent
//!   retry), on another connection when one has room or may be opened; its body is kept
//!   for that up to 64 KiB.
//!   Beyond those limits streams share the least-loaded connection (hyper then holds
//!   streams over the server's own `SETTINGS_MAX_CONCURRENT_STREAMS` until one ends). A
//!   stream counts as in flight until its response ends: the response's [`PoolBody`]
//!   holds its place, so a long server stream keeps it. Sequential requests all use the
//!   first connection. A connection that breaks or closes is replaced by a new one to the
//!   same endpoint on its next request.
//!
//! - **gRPC requests** (`content-type: application/grpc*`) to a cluster that is not HTTP/2
//!   take HTTP/2 connections of their own, kept as for an HTTP/2 cluster (same breaker
//!   and counters): gRPC needs HTTP/2, and istiod's proxyless generator sends gRPC clusters
//!   without HTTP/2 options, leaving the protocol to the gRPC library.
//!   HTTP/2 requests to a cluster that forwards in the caller's version
//!   (`use_downstream_protocol_config`, Istio's `useClientProtocol`) take them too.
//!
//! Picking an HTTP/2 connection reads an `ArcSwap`'d list and an atomic per connection; a
//! lock is taken only to add an endpoint or a connection (HTTP/1.1 holds a short lock on
//! its endpoint's idle list per request). Idle connections (HTTP/2: carrying no stream)
//! close after the cluster's idle timeout (Envoy's default, 1 h, when the cluster sets
//! none), each connection of a set on its own, checked by one sweep task per pool.

mod alpn;
mod config;
mod connector;
mod counted;
mod fixed;
mod h2;
mod h2_conn;
mod http1;
mod response;
mod state;
mod upstream;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tower::BoxError;

pub use config::PoolConfig;
pub use counted::{Counted, PoolCounters};
pub use mesh_core::ConnectError;
pub use response::{PoolBody, ResponseFuture};
pub use upstream::{UpstreamPool, WeakPool};

/// The request body type every pool sends (any body is boxed into it).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
