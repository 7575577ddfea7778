//! Consensus: openraft types, node identity and the peer network client.

pub mod identity;
pub mod network;
pub mod proposer;
pub mod types;
