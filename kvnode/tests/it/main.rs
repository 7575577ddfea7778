//! kvnode's integration tests: real kvnode processes on loopback (and
//! kvctl against them), one module per area. One test binary, so RocksDB
//! and the harness are linked once, not once per file. Run one area with
//! `cargo nextest run --workspace --all-targets -E 'test(/^cli::/)'`.

mod common;

mod auth;
mod backup;
mod bad_input;
mod cli;
mod console_api;
mod crash_points;
mod disk_full;
mod docs_examples;
mod failover;
mod faults;
mod identity;
mod jepsen;
mod lease;
mod limits;
mod membership;
mod metrics;
mod recipes;
mod replication;
mod restore_api;
mod revisions;
mod shutdown;
mod snapshot;
mod storage_suite;
mod tls;
mod watch;
