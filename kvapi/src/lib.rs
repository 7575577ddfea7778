//! Wire types of the raftkv HTTP API (docs/api.md). The node serialises
//! these and every client (kvctl, the operator, the tests) parses them, so
//! this crate is the single definition of the JSON shapes. It holds data
//! only: no HTTP, no I/O, and nothing the raft log stores (kvnode owns its
//! on-disk types, so a change here cannot change the log's format). The
//! one exception is `snapshot`: the snapshot stream is both a backup and
//! what nodes send each other, versioned by its magic, old versions readable.

pub mod auth;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod lease;
pub mod snapshot;
pub mod watch;

pub use auth::*;
pub use cluster::*;
pub use error::*;
pub use kv::*;
pub use lease::*;
pub use watch::*;

/// Raft node id.
pub type NodeId = u64;
