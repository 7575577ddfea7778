//! kvnode: a replicated key-value node (openraft + RocksDB + axum).
//!
//! Layout: `config` (flags), `crash` (crash points for tests), `store` (RocksDB: log, state machine,
//! snapshots), `raft` (types, identity, peer network), `node` (the running
//! node and its operations), `offline` (restore, force-new-cluster), `api` (HTTP routers), `server` (process
//! lifecycle: listeners, signals, graceful shutdown).

/// The kvnode version: `--version`, `GET /version`, `raftkv_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod api;
pub mod auth;
pub mod certs;
pub mod config;
pub mod crash;
pub mod lease;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod offline;
pub mod raft;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;
