//! Typed client for the raftkv HTTP API, shared by kvctl, the operator and
//! the tests. `types` holds the wire format; `client` the HTTP calls.

pub mod client;
pub mod types;

pub use client::{Client, ClientError, Consistency, GetResponse, RangeOptions, TlsOptions};
pub use types::*;
