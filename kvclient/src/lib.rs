//! Typed client for the raftkv HTTP API, shared by kvctl, the operator and
//! the tests. `types` holds the wire format; `client` the HTTP calls.

pub mod auth;
pub mod client;
pub mod types;

pub use auth::*;
pub use client::{Client, ClientError, Consistency, GetResponse, RangeOptions, TlsOptions};
pub use types::*;
