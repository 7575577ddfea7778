//! Backups and restores of KvClusters, to object storage or a volume.
//!
//! For S3 the operator itself moves the data: it streams `GET /v1/snapshot`
//! from the cluster's leader straight into a multipart upload, and for
//! `spec.bootstrap.fromBackup` streams the object into node 0's
//! `POST /v1/cluster/restore`. It already holds what that needs (the
//! cluster's root client certificate, the nodes' addresses), a backup's
//! status is written by the code that knows it, and memory stays at a few
//! upload parts whatever the store's size. A volume the operator cannot
//! mount: for a PVC, [`job`] builds Jobs that run kvctl with the claim
//! mounted and report through their termination message. Why: see
//! docs/operator.md, "Backups".
//!
//! [`crd`] has the types, [`store`] the bucket side, [`job`] the Jobs,
//! [`schedule`] and [`retention`] the pure scheduling decisions,
//! [`controller`] the KvBackup reconciler and the scheduler a KvCluster
//! reconcile calls.

pub mod controller;
pub mod crd;
pub mod job;
pub mod retention;
pub mod schedule;
pub mod store;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

pub use crd::{KvBackup, KvBackupSpec, KvBackupStatus};
use store::Credentials;

/// Finalizer of KvBackups with `deletionPolicy: Delete`: the object goes
/// before the KvBackup does.
pub const BACKUP_FINALIZER: &str = "raftkv.io/backup-object";
/// Label naming the KvCluster a KvBackup is of.
pub const LABEL_CLUSTER: &str = "raftkv.io/cluster";
/// Label on the KvBackups the schedule created.
pub const LABEL_SCHEDULED: &str = "raftkv.io/scheduled";
/// Annotation with the schedule time a scheduled KvBackup is for.
pub const SCHEDULED_AT_ANNOTATION: &str = "raftkv.io/scheduled-at";

pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("Secret {0} not found")]
    NoSecret(String),
    #[error("Secret {secret} has no {key}")]
    SecretKey { secret: String, key: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Job(String),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<BackupError>>),
}

/// The S3 credentials in Secret `name`. Their values never reach a log or
/// an event: only the Secret's name and the key names do.
pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Credentials, BackupError> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| BackupError::Kube {
            what: format!("Secret {name}"),
            source,
        })?
        .ok_or_else(|| BackupError::NoSecret(name.to_owned()))?;
    let text = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let required = |key| {
        text(key).ok_or_else(|| BackupError::SecretKey {
            secret: name.to_owned(),
            key,
        })
    };
    Ok(Credentials {
        access_key_id: required(ACCESS_KEY_ID)?,
        secret_access_key: required(SECRET_ACCESS_KEY)?,
        session_token: text(SESSION_TOKEN),
    })
}

/// The object name of a backup: namespace and cluster keep clusters that
/// share a bucket (and prefix) apart.
pub fn object_name(namespace: &str, cluster: &str, backup: &str) -> String {
    format!("{namespace}/{cluster}/{backup}.snap")
}

/// `s3://BUCKET/KEY` -> `KEY` when the bucket matches.
pub fn key_of(location: &str, bucket: &str) -> Option<String> {
    path_in(location, "s3", bucket)
}

/// `SCHEME://CONTAINER/PATH` -> `PATH` when scheme and container (a
/// bucket, a claim) match: how a backup's `location` is read back.
pub fn path_in(location: &str, scheme: &str, container: &str) -> Option<String> {
    location
        .strip_prefix(scheme)?
        .strip_prefix("://")?
        .strip_prefix(container)?
        .strip_prefix('/')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_from_locations() {
        assert_eq!(
            key_of("s3://b/ns/kv/x.snap", "b").as_deref(),
            Some("ns/kv/x.snap")
        );
        assert_eq!(key_of("s3://bb/ns/kv/x.snap", "b"), None);
        assert_eq!(key_of("s3://b/", "b"), None);
        assert_eq!(object_name("ns", "kv", "kv-1"), "ns/kv/kv-1.snap");
    }
}
