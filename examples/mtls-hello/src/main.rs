//! mTLS hello: an axum server and a client on the dev CA, each printing the peer's SPIFFE ID.
fn main() {}
