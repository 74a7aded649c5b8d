//! Envoy route, virtual host, connection manager, cluster and endpoint fields on real traffic
//! (issue #16): hand-written Envoy resources served by our xDS server, applied by
//! `Mesh::client()`, and requests to real backends that record what they saw. Each test is a
//! table: listeners and clusters for one field family, one case per field (a resource tweak,
//! a request, the effect), so that each fails when the code applying its field is removed.

#![allow(deprecated)] // exact_match, append, max_grpc_timeout...: deprecated fields are read too

mod clusters;
mod dns;
mod endpoints;
mod filters;
mod harness;
mod hash_policy;
mod hashing;
mod inbound;
mod least_request;
mod outlier;
mod retries;
mod route_actions;
mod routes;
mod tls;
