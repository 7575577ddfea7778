//! Leases: keys that disappear when their owner stops renewing
//! (etcd's leases over HTTP, docs/api.md "Leases").

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantRequest {
    /// Seconds; raised to the node's minimum (1.5 election timeouts) if
    /// lower, as etcd does.
    pub ttl: u64,
    /// An id of the caller's choosing (1 to 2^53 - 1); absent: generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

/// Answer of a grant and of a keep-alive: the lease and the TTL it now
/// has in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub id: u64,
    pub ttl: u64,
}

/// `GET /v1/leases/{id}` (`?keys=true` lists the attached keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: u64,
    /// The TTL it was granted.
    pub ttl: u64,
    /// Seconds until it expires unless kept alive, as the leader sees it.
    pub remaining: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// `GET /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    pub leases: Vec<LeaseGrant>,
}

/// `DELETE /v1/leases/{id}`: the lease and its keys are gone at `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevoked {
    pub revision: u64,
    /// Keys deleted with it.
    pub deleted: u64,
}
