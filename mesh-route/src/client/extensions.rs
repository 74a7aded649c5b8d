//! What travels in request and response extensions between [`MeshClient`](super::MeshClient),
//! the per-cluster layers around it (retries, outlier detection in mesh-resilience) and
//! the [`EndpointService`](super::EndpointService) that picks an endpoint. The types live in
//! [`mesh_core::extensions`] so that the layers need not depend on this crate.

pub use mesh_core::extensions::{
    AutoHostRewrite, EndpointError, PreviousHosts, RequestHash, UpstreamEndpoint, error_endpoint,
};
