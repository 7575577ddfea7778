//! Rules the CRD schema cannot express; a spec that breaks one is held
//! (condition `Degraded`, reason `InvalidSpec`) and nothing is applied.

use crate::build::reserved_env;
use crate::crd::{KvClusterSpec, MAX_REPLICAS, TlsIssuer};

/// A spec that passed every rule, with the numbers the decisions use. Made
/// once per round by [`validate`]; nothing downstream re-checks or clamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Valid {
    /// `spec.replicas`, known to be within 1..=MAX_REPLICAS.
    pub(super) replicas: u32,
}

pub(super) fn validate(spec: &KvClusterSpec) -> Result<Valid, String> {
    let replicas = u32::try_from(spec.replicas)
        .ok()
        .filter(|_| (1..=MAX_REPLICAS).contains(&spec.replicas))
        .ok_or_else(|| {
            format!(
                "replicas must be between 1 and {MAX_REPLICAS}, got {}",
                spec.replicas
            )
        })?;
    if spec.image.trim().is_empty() {
        return Err("image must not be empty".into());
    }
    if let (Some(heartbeat), Some(election)) = (
        spec.raft.heartbeat_interval_ms,
        spec.raft.election_timeout_ms,
    ) && i64::from(election) < 3 * i64::from(heartbeat)
    {
        return Err(format!(
            "raft.electionTimeoutMs ({election}) must be at least three times raft.heartbeatIntervalMs ({heartbeat})"
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
    if let Some(why) = spec.pod.env.iter().find_map(|e| reserved_env(&e.name)) {
        return Err(format!("pod.env: {why}; remove it"));
    }
    if let Some(backup) = &spec.backup {
        if let Err(e) = backup.schedule.parse::<crate::backup::schedule::Schedule>() {
            return Err(format!("backup.schedule {:?}: {e}", backup.schedule));
        }
        match backup.destination.target() {
            Err(e) => return Err(format!("backup.{e}")),
            Ok(crate::backup::crd::Target::Pvc(pvc)) => {
                pvc.path("x")
                    .map_err(|e| format!("backup.destination.pvc.prefix: {e}"))?;
            }
            Ok(_) => {}
        }
    }
    if let Some(from) = &spec.bootstrap.from_backup {
        match (&from.kv_backup, &from.s3, &from.pvc, &from.key) {
            (Some(_), None, None, None) | (None, Some(_), None, Some(_)) => {}
            (None, None, Some(_), Some(key)) => {
                crate::backup::crd::check_path(key)
                    .map_err(|e| format!("bootstrap.fromBackup.key: {e}"))?;
            }
            _ => {
                return Err(
                    "bootstrap.fromBackup needs either kvBackup (a KvBackup in this \
                            namespace), or key with one of s3 and pvc"
                        .into(),
                );
            }
        }
    }
    Ok(Valid { replicas })
}
