//! The authorization middleware: [`AuthzLayer`] -> [`Authz`] -> [`ResponseFuture`].

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::AuthzLayer;
pub use service::Authz;

/// The response body: the inner service's, or the denial's.
pub type AuthzBody<B> = http_body_util::Either<B, http_body_util::Full<bytes::Bytes>>;
