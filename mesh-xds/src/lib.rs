//! Placeholder: see the project's issues.

pub mod bootstrap;
pub mod client;
pub mod resource;
pub mod server;
pub mod translate;

pub use resource::{Rejection, Resource, ResourceType, decode};
