//! kvnode: a replicated key-value node (openraft + RocksDB + axum).
//!
//! Layout: `config` (flags), `crash` (crash points for tests), `store` (RocksDB: log, state machine,
//! snapshots), `raft` (types, identity, peer network), `node` (the running
//! node and its operations), `api` (HTTP routers), `server` (process
//! lifecycle: listeners, signals, graceful shutdown).

pub mod api;
pub mod config;
pub mod crash;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod server;
pub mod store;
