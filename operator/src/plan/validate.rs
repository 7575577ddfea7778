//! Rules the CRD schema cannot express; a spec that breaks one is held
//! (condition `Degraded`, reason `InvalidSpec`) and nothing is applied.

use crate::crd::{KvClusterSpec, MAX_REPLICAS, TlsIssuer};

pub(super) fn validate(spec: &KvClusterSpec) -> Result<(), String> {
    if !(1..=MAX_REPLICAS).contains(&spec.replicas) {
        return Err(format!(
            "replicas must be between 1 and {MAX_REPLICAS}, got {}",
            spec.replicas
        ));
    }
    if spec.image.trim().is_empty() {
        return Err("image must not be empty".into());
    }
    if let (Some(heartbeat), Some(election)) = (
        spec.raft.heartbeat_interval_ms,
        spec.raft.election_timeout_ms,
    ) && i64::from(election) <= 2 * i64::from(heartbeat)
    {
        return Err(format!(
            "raft.electionTimeoutMs ({election}) must exceed twice raft.heartbeatIntervalMs ({heartbeat})"
        ));
    }
    let tls = &spec.tls;
    if tls.enabled && tls.issuer == TlsIssuer::CertManager && tls.cert_manager.is_none() {
        return Err("tls.issuer certManager needs tls.certManager.issuerRef".into());
    }
    if spec.auth.enabled && !tls.enabled {
        return Err(
            "auth.enabled needs tls.enabled: the operator is root on the nodes by its client \
             certificate; set auth.enabled: false for a cluster without TLS"
                .into(),
        );
    }
    Ok(())
}
