//! Typed HTTP client for the raftkv API, shared by kvctl, the operator and
//! the tests. The JSON shapes are kvapi's, re-exported here so a client
//! needs one dependency.

pub mod client;

pub use client::{Client, ClientError, Consistency, GetResponse, RangeOptions, TlsOptions};
pub use kvapi::*;
