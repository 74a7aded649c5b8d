//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`, gRPC A40) fed by the xDS
//! client's status. Serve it on an admin gRPC port:
//!
//! ```no_run
//! # async fn run(cache: std::sync::Arc<mesh_admin::XdsStatusCache>) {
//! use mesh_admin::csds::CsdsService;
//! tonic::transport::Server::builder()
//!     .add_service(CsdsService::new(cache, None).into_server())
//!     .serve("127.0.0.1:15010".parse().unwrap())
//!     .await
//!     .unwrap();
//! # }
//! ```

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse,
};
use envoy_types::pb::google::protobuf::Timestamp;
use futures::{Stream, StreamExt};
use mesh_xds::client::{ClientStatus, ResourceState};
use tonic::{Request, Response, Status, Streaming};

use crate::xds::XdsStatusSource;

/// The CSDS service.
#[derive(Clone)]
pub struct CsdsService {
    source: Arc<dyn XdsStatusSource>,
    node: Option<Node>,
}

impl std::fmt::Debug for CsdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsdsService")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl CsdsService {
    /// Reports `source`'s status as the client `node` (the bootstrap's node).
    pub fn new(source: Arc<dyn XdsStatusSource>, node: Option<Node>) -> Self {
        Self { source, node }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    fn response(&self) -> ClientStatusResponse {
        let status = self.source.client_status().unwrap_or_default();
        ClientStatusResponse {
            config: vec![client_config(&status, self.node.clone())],
        }
    }
}

fn state(s: ResourceState) -> ClientResourceStatus {
    match s {
        ResourceState::Requested => ClientResourceStatus::Requested,
        ResourceState::Acked => ClientResourceStatus::Acked,
        ResourceState::Nacked => ClientResourceStatus::Nacked,
        ResourceState::DoesNotExist => ClientResourceStatus::DoesNotExist,
    }
}

/// The CSDS view of a client status: one `GenericXdsConfig` per resource. Resource
/// contents are not included (the client keeps the translated model, not the protos).
pub fn client_config(status: &ClientStatus, node: Option<Node>) -> ClientConfig {
    ClientConfig {
        node,
        generic_xds_configs: status
            .resources
            .iter()
            .map(|r| GenericXdsConfig {
                type_url: r.kind.type_url().to_string(),
                name: r.name.clone(),
                version_info: r.version.clone(),
                last_updated: r.last_update.map(|t| {
                    let p = prost_types::Timestamp::from(t);
                    Timestamp {
                        seconds: p.seconds,
                        nanos: p.nanos,
                    }
                }),
                client_status: state(r.state) as i32,
                error_state: r.last_error.as_ref().map(|e| UpdateFailureState {
                    details: e.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = ResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let this = self.clone();
        let out = request
            .into_inner()
            .map(move |req| req.map(|_| this.response()));
        Ok(Response::new(Box::pin(out)))
    }

    async fn fetch_client_status(
        &self,
        _request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        Ok(Response::new(self.response()))
    }
}
