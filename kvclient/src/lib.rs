//! Typed HTTP client for the raftkv API, shared by kvctl, the operator and
//! the tests. The JSON shapes are kvapi's, re-exported here so a client
//! needs one dependency.

pub mod client;
pub mod lease;
pub mod recipes;
pub mod snapshot;
pub mod watch;

pub use client::{Client, ClientError, Consistency, GetResponse, RangeOptions, TlsOptions};
pub use kvapi::*;
pub use lease::{KeepAlive, LeaseLost, LeaseStatus};
pub use watch::{
    DEFAULT_MAX_LINE_BYTES, WatchFilter, WatchItem, WatchOptions, WatchRetry, WatchStream,
    WatchTarget,
};
