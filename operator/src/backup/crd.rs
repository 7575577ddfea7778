//! The KvBackup custom resource (raftkv.io/v1alpha1) and the backup
//! settings a KvCluster shares with it. `raftkv-operator crd kvbackups`
//! prints `crds/kvbackups.raftkv.io.yaml` from these types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One backup of a KvCluster: a snapshot of the whole store, streamed by
/// the operator from a node into object storage, or written to a volume by
/// a Job.
#[expect(
    clippy::duplicated_attributes,
    reason = "printcolumn(...) entries legitimately repeat `type_ = ...`"
)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "raftkv.io",
    version = "v1alpha1",
    kind = "KvBackup",
    plural = "kvbackups",
    shortname = "kvb",
    namespaced,
    status = "KvBackupStatus",
    doc = "One backup of a raftkv KvCluster into object storage or a volume",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Location", type_ = "string", json_path = ".status.location"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KvBackupSpec {
    /// The KvCluster to back up, in the same namespace.
    #[schemars(length(min = 1))]
    pub cluster_name: String,
    /// Where the snapshot goes.
    pub destination: BackupDestination,
    /// What deleting this KvBackup does to the object it wrote: `Retain`
    /// (the default for a KvBackup you create) keeps it; `Delete` removes
    /// it too. Scheduled backups are created with `Delete`, which is how
    /// retention frees the bucket.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Where backups are written: exactly one of `s3` and `pvc`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    /// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...); the operator
    /// streams the snapshot into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A PersistentVolumeClaim in the same namespace; a Job running
    /// `kvctl snapshot save` with the claim mounted writes the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcDestination>,
}

/// Which destination a [`BackupDestination`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    S3(&'a S3Destination),
    Pvc(&'a PvcDestination),
}

impl BackupDestination {
    /// The one destination set, or why there is none. The CRD cannot say
    /// "exactly one" to a 1.20 API server (no CEL rules), so this does.
    pub fn target(&self) -> Result<Target<'_>, String> {
        match (&self.s3, &self.pvc) {
            (Some(s3), None) => Ok(Target::S3(s3)),
            (None, Some(pvc)) => Ok(Target::Pvc(pvc)),
            (Some(_), Some(_)) => Err("destination: set one of s3 and pvc, not both".into()),
            (None, None) => Err("destination: set s3 or pvc".into()),
        }
    }
}

/// A volume for backups. Nothing but the backup Jobs should mount it
/// while they run when its access mode is ReadWriteOnce.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcDestination {
    /// The PersistentVolumeClaim's name.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
    /// Directory on the volume the snapshots go under, e.g. `raftkv/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// A relative path on a volume: no empty, `.` or `..` components, since
/// it ends up in a Job's command.
pub fn check_path(path: &str) -> Result<(), String> {
    if path
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(format!(
            "pvc path {path:?}: no empty, `.` or `..` components allowed"
        ));
    }
    Ok(())
}

impl PvcDestination {
    /// `prefix` + `name` as a relative path on the volume ([`check_path`]).
    pub fn path(&self, name: &str) -> Result<String, String> {
        let prefix = self.prefix.trim_matches('/');
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        check_path(&path)?;
        Ok(path)
    }

    /// `pvc://CLAIM/PATH`, as a backup's status shows it.
    pub fn location(&self, path: &str) -> String {
        format!("pvc://{}/{path}", self.claim_name)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The S3 API endpoint, e.g. `https://minio.backup:9000`; AWS S3 of the
    /// region when unset. `http://` is allowed (an in-cluster server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Prepended to the object names, e.g. `prod/kv/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// A Secret in the KvBackup's namespace with `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
    /// Virtual-hosted-style requests (`BUCKET.endpoint`) instead of
    /// path-style (`endpoint/BUCKET`), which most S3-compatible servers
    /// expect and is the default.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for the cluster to have a leader.
    Pending,
    Running,
    /// The object is complete and its checksum was verified as it streamed.
    Succeeded,
    /// See `error`; a failed backup is not retried (create a new KvBackup).
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KvBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// `s3://BUCKET/KEY` of the object, or `pvc://CLAIM/PATH` of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The store revision the snapshot holds every write up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// SHA-256 of the whole object, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The pod whose node streamed the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Attempts started; an operator restart during a run starts another.
    #[serde(default)]
    pub attempts: i32,
    /// Why the backup failed, or why it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `spec.backup` of a KvCluster: scheduled backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSchedule {
    /// Standard 5-field cron expression in UTC (as a CronJob's), or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. Each run
    /// creates a KvBackup `NAME-YYYYMMDD-HHMMSS` owned by the KvCluster.
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// How many succeeded scheduled backups to keep; older ones are
    /// deleted with their objects. Failed ones beyond the newest 3 are
    /// deleted too.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: i32,
    pub destination: BackupDestination,
}

fn default_keep() -> i32 {
    7
}

/// `spec.bootstrap` of a KvCluster: how its first node starts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start node 0 from a backup instead of an empty store; the operator
    /// then grows the cluster as usual. Read once, when the cluster is
    /// created: changing it later does nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// A backup to restore: a succeeded KvBackup in the same namespace, or an
/// object or file named directly (another namespace's or another Kubernetes
/// cluster's backup): `kvBackup`, or `key` with one of `s3` and `pvc`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// Name of a KvBackup in this namespace whose phase is Succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_backup: Option<String>,
    /// The bucket (and credentials) holding `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// The volume holding `key` (its `prefix` is not used: `key` is the
    /// whole path on the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcDestination>,
    /// The object's key in the bucket (with the prefix), with `s3`; the
    /// file's path on the volume, with `pvc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc(prefix: &str) -> PvcDestination {
        PvcDestination {
            claim_name: "backups".into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn exactly_one_destination() {
        let s3: S3Destination =
            serde_json::from_str(r#"{"bucket": "b", "credentialsSecret": "c"}"#).expect("s3");
        let both = BackupDestination {
            s3: Some(s3.clone()),
            pvc: Some(pvc("")),
        };
        assert!(both.target().expect_err("both").contains("not both"));
        let neither = BackupDestination {
            s3: None,
            pvc: None,
        };
        assert!(neither.target().expect_err("neither").contains("s3 or pvc"));
        let only = BackupDestination {
            s3: None,
            pvc: Some(pvc("")),
        };
        assert_eq!(only.target(), Ok(Target::Pvc(&pvc(""))));
        // The S3 form of the first release still reads.
        let old: BackupDestination =
            serde_json::from_str(r#"{"s3": {"bucket": "b", "credentialsSecret": "c"}}"#)
                .expect("s3 only");
        assert_eq!(old.target(), Ok(Target::S3(&s3)));
    }

    #[test]
    fn volume_paths_stay_on_the_volume() {
        assert_eq!(pvc("").path("ns/kv/b.snap").as_deref(), Ok("ns/kv/b.snap"));
        assert_eq!(
            pvc("/raftkv/").path("ns/kv/b.snap").as_deref(),
            Ok("raftkv/ns/kv/b.snap")
        );
        for bad in ["../etc", "a/../../b", "a//b", "./x"] {
            assert!(pvc(bad).path("b.snap").is_err(), "{bad}");
            assert!(pvc("").path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            pvc("").location("ns/kv/b.snap"),
            "pvc://backups/ns/kv/b.snap"
        );
    }
}
