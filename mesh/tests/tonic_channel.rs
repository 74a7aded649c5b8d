//! MeshClient is a tonic channel: generated clients take any `GrpcService`.

use mesh::MeshClient;

fn is_grpc_service<S: tonic::client::GrpcService<tonic::body::Body>>(_: &S) {}

#[allow(dead_code)]
fn mesh_client_is_a_tonic_channel(client: MeshClient) {
    is_grpc_service(&client);
    // What a generated client does with its channel.
    let _grpc = tonic::client::Grpc::new(client);
}

#[test]
fn compiles() {}
