//! raftkv-operator: turns KvCluster objects into running raft clusters.
//!
//! Reconcile is a pipeline: [`observe`] reads the Kubernetes objects and
//! each node's own status, [`plan`] (pure) decides the objects, at most one
//! membership step and the status, [`apply`] writes them. [`controller`]
//! wires it to the watches; [`build`] holds the pure object builders and
//! [`crd`] the custom resource types. [`backup`] runs KvBackups, scheduled
//! backups and restores through object storage.

pub mod apply;
pub mod auth;
pub mod backup;
pub mod build;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod plan;
pub mod reason;
