//! End-to-end scenarios for raftkv on a real Kubernetes cluster: the one
//! KUBECONFIG points at, with the operator installed from the Helm chart
//! (tests/e2e/run.sh does both; docs/e2e.md explains the suite). The
//! scenarios are in `tests/scenarios.rs`; this library holds what they share.

pub mod creds;
pub mod kv;
pub mod kvc;
pub mod monitor;
pub mod operator;
pub mod s3;
pub mod scenario;
pub mod tls;

pub use kv::{Kv, Target};
pub use scenario::Scenario;
