//! The Jobs behind a PVC destination: the operator cannot mount a volume,
//! so a pod that does runs `kvctl` from the cluster's own image (which
//! ships it): `snapshot save` for a backup, `snapshot restore` into node 0
//! for `spec.bootstrap.fromBackup`, `snapshot delete` for retention.
//! `kvctl --report /dev/termination-log` leaves the JSON result in the
//! pod's status, where the operator reads it: no `pods/log` access, no
//! second channel. This module builds the Jobs and reads their outcome;
//! both are pure, the calls are in `controller`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::LABEL_CLUSTER;
use crate::build::statefulset::{TLS_FILE_MODE, container_security_context, pod_security_context};
use crate::names;

/// Where the backup volume is mounted in a Job's pod.
pub const MOUNT: &str = "/backup";
/// Where the operator's client certificate Secret is mounted.
pub const CLIENT_DIR: &str = "/etc/raftkv/client";
/// The value of `app.kubernetes.io/component` on backup Jobs and their
/// pods; with `raftkv.io/cluster` it is what the cluster's NetworkPolicy
/// lets in when `clientFrom` is set.
pub const COMPONENT: &str = "backup";
/// Where kvctl writes its report: the default terminationMessagePath.
const REPORT: &str = "/dev/termination-log";
/// A Job name is also a label value on its pods: 63 characters at most.
const MAX_NAME: usize = 63;

/// What a Job does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// `kvctl snapshot save` from `endpoint` to `path` on the volume.
    Save { endpoint: String, path: String },
    /// `kvctl snapshot restore` of `path` into the node at `endpoint`.
    Restore { endpoint: String, path: String },
    /// `kvctl snapshot delete --missing-ok` of `path`.
    Delete { path: String },
}

impl Work {
    fn verb(&self) -> &'static str {
        match self {
            Work::Save { .. } => "save",
            Work::Restore { .. } => "restore",
            Work::Delete { .. } => "delete",
        }
    }
}

/// Everything a Job is built from.
#[derive(Clone, Debug)]
pub struct JobInput {
    pub name: String,
    pub namespace: String,
    pub cluster: String,
    /// The cluster's kvnode image (kvctl is in it).
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub claim: String,
    pub work: Work,
    /// Bound on the whole Job: a pod that cannot start (a claim that does
    /// not exist, one another node holds) fails the Job then.
    pub deadline_seconds: i64,
    pub owner: OwnerReference,
}

impl JobInput {
    /// A Job of `cluster` (in `namespace`) doing `work` on `claim`, from
    /// `spec`'s image, or the default image when the cluster is gone.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one field of the Job; three call sites name them all"
    )]
    pub fn new(
        name: String,
        namespace: &str,
        cluster: &str,
        spec: Option<&crate::crd::KvClusterSpec>,
        claim: &str,
        work: Work,
        deadline: std::time::Duration,
        owner: OwnerReference,
    ) -> JobInput {
        JobInput {
            name,
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
            image: spec.map_or_else(crate::crd::default_image, |s| s.image.clone()),
            image_pull_policy: spec
                .and_then(|s| s.image_pull_policy)
                .map(|p| p.as_str().to_owned()),
            claim: claim.to_owned(),
            work,
            deadline_seconds: i64::try_from(deadline.as_secs()).unwrap_or(i64::MAX),
            owner,
        }
    }
}

impl Work {
    /// The node kvctl talks to; none for a delete.
    fn endpoint(&self) -> Option<&str> {
        match self {
            Work::Save { endpoint, .. } | Work::Restore { endpoint, .. } => Some(endpoint),
            Work::Delete { .. } => None,
        }
    }

    /// Whether kvctl mounts Secret `CLUSTER-operator-client` and connects
    /// with it: the node runs TLS (its endpoint is `https://`; the
    /// certificate's CN, root, is also what auth and a restore on a TLS
    /// node need).
    fn tls(&self) -> bool {
        self.endpoint().is_some_and(|e| e.starts_with("https://"))
    }
}

/// The Job of attempt `attempt` of backup `backup`.
pub fn backup_job_name(backup: &str, attempt: i32) -> String {
    job_name(backup, &format!("backup-{attempt}"))
}

/// `base-suffix`, shortened with a hash of the whole when it would not
/// fit a Job name: distinct inputs keep distinct names.
pub fn job_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = hex8(&Sha256::digest(full.as_bytes()));
    let keep = MAX_NAME - suffix.len() - hash.len() - 2;
    let mut cut: String = base
        .char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= keep)
        .map(|(_, c)| c)
        .collect();
    while cut.ends_with(['-', '.']) {
        cut.pop();
    }
    format!("{cut}-{hash}-{suffix}")
}

fn hex8(digest: &[u8]) -> String {
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The labels every backup Job pod of `cluster` has: what the cluster's
/// NetworkPolicy selects them by.
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_owned(), cluster.to_owned()),
        (names::LABEL_COMPONENT.to_owned(), COMPONENT.to_owned()),
    ])
}

/// The labels of a backup Job and its pod. Not the cluster's selector
/// labels: its pods must never be taken for kvnode pods.
pub fn labels(cluster: &str, verb: &str) -> BTreeMap<String, String> {
    let mut labels = selector(cluster);
    labels.insert(
        names::LABEL_MANAGED_BY.to_owned(),
        names::FIELD_MANAGER.to_owned(),
    );
    labels.insert("raftkv.io/backup-job".to_owned(), verb.to_owned());
    labels
}

/// The kvctl command line of `work`.
fn args(input: &JobInput) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(endpoint) = input.work.endpoint() {
        args.extend(["--endpoints".to_owned(), endpoint.to_owned()]);
        if input.work.tls() {
            for (flag, key) in [
                ("--cacert", names::CA_CERT_KEY),
                ("--cert", names::TLS_CERT_KEY),
                ("--key", names::TLS_KEY_KEY),
            ] {
                args.extend([flag.to_owned(), format!("{CLIENT_DIR}/{key}")]);
            }
        }
    }
    args.extend(["-o", "json", "snapshot", input.work.verb()].map(str::to_owned));
    let path = match &input.work {
        Work::Save { path, .. } | Work::Restore { path, .. } | Work::Delete { path } => path,
    };
    args.push(format!("{MOUNT}/{path}"));
    if matches!(input.work, Work::Delete { .. }) {
        args.push("--missing-ok".to_owned());
    }
    args.extend(["--report".to_owned(), REPORT.to_owned()]);
    args
}

/// The Job: one pod, never restarted (the operator decides about another
/// attempt), no API token, the restricted security context of the kvnode
/// pods, the volume read-only unless the Job writes to it.
pub fn job(input: &JobInput) -> Job {
    let labels = labels(&input.cluster, input.work.verb());
    let mut mounts = vec![VolumeMount {
        name: "backup".into(),
        mount_path: MOUNT.into(),
        read_only: Some(matches!(input.work, Work::Restore { .. })),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "backup".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: input.claim.clone(),
            read_only: None,
        }),
        ..Volume::default()
    }];
    if input.work.tls() {
        mounts.push(VolumeMount {
            name: "client".into(),
            mount_path: CLIENT_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "client".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::client_secret(&input.cluster)),
                default_mode: Some(TLS_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let quantity = |s: &str| Quantity(s.to_owned());
    let container = Container {
        name: "kvctl".into(),
        image: Some(input.image.clone()),
        image_pull_policy: input.image_pull_policy.clone(),
        command: Some(vec!["kvctl".into()]),
        args: Some(args(input)),
        volume_mounts: Some(mounts),
        // kvctl writes its report; should it die before, the log's tail
        // says why.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity("100m")),
                ("memory".to_owned(), quantity("64Mi")),
            ])),
            // kvctl streams: its memory does not grow with the snapshot.
            limits: Some(BTreeMap::from([("memory".to_owned(), quantity("256Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security_context()),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(input.name.clone()),
            namespace: Some(input.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![input.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(input.deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// What kvctl reported; the fields of `snapshot save`, `restore` and
/// `delete` (each has some of them).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Report {
    pub revision: Option<u64>,
    pub keys: Option<u64>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub seconds: Option<f64>,
    pub deleted: Option<bool>,
    pub error: Option<String>,
}

/// Where a Job stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Still running, or its pod waits; the text says what it waits for
    /// when a pod is stuck (e.g. the claim does not exist).
    Running(Option<String>),
    Succeeded(Report),
    Failed(String),
}

/// Reads `job` and its `pods` (those with its `job-name`). A succeeded Job
/// without a readable report counts as failed: the operator must not
/// record a backup it cannot describe.
pub fn outcome(job: &Job, pods: &[Pod]) -> Outcome {
    let status = job.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
            .cloned()
    };
    let terminated = pods.iter().find_map(|p| {
        p.status
            .as_ref()?
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.terminated.clone())
    });
    let message = terminated.as_ref().and_then(|t| t.message.clone());
    let report = message
        .as_deref()
        .and_then(|m| serde_json::from_str::<Report>(m).ok());
    if condition("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        return match report {
            Some(r) if r.error.is_none() => Outcome::Succeeded(r),
            Some(r) => Outcome::Failed(r.error.unwrap_or_default()),
            None => Outcome::Failed(format!(
                "the Job completed without a readable report ({})",
                message.as_deref().unwrap_or("no termination message")
            )),
        };
    }
    if let Some(failed) = condition("Failed") {
        // kvctl's own words first, then the log's tail, then the Job's.
        let why = match (&report, &message, &terminated) {
            (Some(Report { error: Some(e), .. }), _, _) => e.clone(),
            (_, Some(m), _) if !m.trim().is_empty() => m.trim().to_owned(),
            (_, _, Some(t)) => format!(
                "kvctl exited with {} ({})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("no reason")
            ),
            _ => format!(
                "{}: {}",
                failed.reason.as_deref().unwrap_or("Failed"),
                failed.message.as_deref().unwrap_or("the Job failed")
            ),
        };
        return Outcome::Failed(why);
    }
    let waiting = pods.iter().find_map(|p| {
        let name = p.metadata.name.as_deref().unwrap_or("pod");
        let status = p.status.as_ref()?;
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| c.state.as_ref()?.waiting.clone());
        if let Some(w) = waiting
            && w.reason.as_deref() != Some("ContainerCreating")
        {
            return Some(format!(
                "pod {name}: {} {}",
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            ));
        }
        let unscheduled = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        Some(format!(
            "pod {name}: {} {}",
            unscheduled.reason.clone().unwrap_or_default(),
            unscheduled.message.clone().unwrap_or_default()
        ))
    });
    Outcome::Running(waiting.map(|w| w.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    fn input(work: Work) -> JobInput {
        JobInput {
            name: "kv-nightly-1".into(),
            namespace: "ns".into(),
            cluster: "kv".into(),
            image: "raftkv/kvnode:0.1.0".into(),
            image_pull_policy: None,
            claim: "backups".into(),
            work,
            deadline_seconds: 600,
            owner: OwnerReference::default(),
        }
    }

    fn pod_spec(job: &Job) -> PodSpec {
        job.spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("a pod spec")
    }

    #[test]
    fn a_save_job_runs_kvctl_with_the_client_certificate_and_reports_to_the_pod_status() {
        let save = Work::Save {
            endpoint: "https://kv-1.kv-peer.ns.svc:7379".into(),
            path: "ns/kv/kv-nightly.snap".into(),
        };
        let job = job(&input(save));
        let spec = pod_spec(&job);
        let c = &spec.containers[0];
        assert_eq!(c.command.as_deref(), Some(&["kvctl".to_owned()][..]));
        assert_eq!(
            c.args.clone().expect("set").join(" "),
            "--endpoints https://kv-1.kv-peer.ns.svc:7379 \
             --cacert /etc/raftkv/client/ca.crt --cert /etc/raftkv/client/tls.crt \
             --key /etc/raftkv/client/tls.key -o json snapshot save \
             /backup/ns/kv/kv-nightly.snap --report /dev/termination-log"
        );
        let volumes = spec.volumes.clone().expect("set");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .expect("set")
                .claim_name,
            "backups"
        );
        assert_eq!(
            volumes[1]
                .secret
                .as_ref()
                .expect("set")
                .secret_name
                .as_deref(),
            Some("kv-operator-client")
        );
        assert_eq!(
            c.volume_mounts.as_ref().expect("set")[0].read_only,
            Some(false)
        );
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(job.spec.as_ref().expect("set").backoff_limit, Some(0));
        // Never the cluster's selector: a Job pod is not a kvnode pod.
        let labels = job.metadata.labels.clone().expect("set");
        for (k, v) in names::selector_labels("kv") {
            assert_ne!(labels.get(&k), Some(&v), "{k}");
        }

        // Without TLS: no certificate flags and no Secret.
        let plain = args_and_volumes(&self::job(&input(Work::Save {
            endpoint: "http://10.0.0.7:7379".into(),
            path: "ns/kv/kv-nightly.snap".into(),
        })));
        assert!(!plain.0.contains("--cacert"), "{}", plain.0);
        assert_eq!(plain.1, 1);
    }

    /// (args, number of volumes) of a Job.
    fn args_and_volumes(job: &Job) -> (String, usize) {
        let spec = pod_spec(job);
        (
            spec.containers[0].args.clone().expect("set").join(" "),
            spec.volumes.expect("set").len(),
        )
    }

    #[test]
    fn restore_mounts_the_volume_read_only_and_delete_needs_no_node() {
        let restore = job(&input(Work::Restore {
            endpoint: "https://kv-0:7379".into(),
            path: "a/b.snap".into(),
        }));
        let spec = pod_spec(&restore);
        assert_eq!(
            spec.containers[0].volume_mounts.as_ref().expect("set")[0].read_only,
            Some(true)
        );
        assert!(
            args_and_volumes(&restore)
                .0
                .contains("snapshot restore /backup/a/b.snap")
        );
        let delete = job(&input(Work::Delete {
            path: "a/b.snap".into(),
        }));
        let (args, volumes) = args_and_volumes(&delete);
        assert_eq!(
            args,
            "-o json snapshot delete /backup/a/b.snap --missing-ok --report /dev/termination-log"
        );
        assert_eq!(volumes, 1, "delete connects to no node: no certificate");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_and_stay_distinct() {
        assert_eq!(
            job_name("kv-20261207-101500", "backup-1"),
            "kv-20261207-101500-backup-1"
        );
        let long_a = format!("{}-a", "x".repeat(80));
        let long_b = format!("{}-b", "x".repeat(80));
        let (a, b) = (job_name(&long_a, "backup-1"), job_name(&long_b, "backup-1"));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-backup-1"), "{a}");
        // A cut that lands on a dash does not leave a double dash.
        let dashed = job_name(&format!("{}-{}", "y".repeat(44), "z".repeat(40)), "delete");
        assert!(!dashed.contains("--"), "{dashed}");
    }

    fn finished(condition: &str, message: Option<&str>, exit: i32) -> (Job, Vec<Pod>) {
        let job = Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: condition.into(),
                    status: "True".into(),
                    reason: Some("BackoffLimitExceeded".into()),
                    message: Some("Job has reached the specified backoff limit".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        };
        let pod = Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: exit,
                            reason: Some("Error".into()),
                            message: message.map(str::to_owned),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        (job, vec![pod])
    }

    #[test]
    fn outcomes_come_from_the_report_then_the_log_then_the_job() {
        let report = r#"{"file":"/backup/x.snap","revision":41,"keys":7,"bytes":900,"sha256":"ab","seconds":0.5}"#;
        let (job, pods) = finished("Complete", Some(report), 0);
        assert_eq!(
            outcome(&job, &pods),
            Outcome::Succeeded(Report {
                revision: Some(41),
                keys: Some(7),
                bytes: Some(900),
                sha256: Some("ab".into()),
                seconds: Some(0.5),
                ..Report::default()
            })
        );
        // Complete but nothing to describe the backup with: not a success.
        let (job, pods) = finished("Complete", None, 0);
        assert!(
            matches!(outcome(&job, &pods), Outcome::Failed(m) if m.contains("without a readable report"))
        );

        let (job, pods) = finished(
            "Failed",
            Some(r#"{"error":"connecting to https://kv-0: refused"}"#),
            1,
        );
        assert_eq!(
            outcome(&job, &pods),
            Outcome::Failed("connecting to https://kv-0: refused".into())
        );
        let (job, pods) = finished("Failed", Some("thread 'main' panicked\n"), 101);
        assert_eq!(
            outcome(&job, &pods),
            Outcome::Failed("thread 'main' panicked".into())
        );
        let (job, pods) = finished("Failed", None, 137);
        assert_eq!(
            outcome(&job, &pods),
            Outcome::Failed("kvctl exited with 137 (Error)".into())
        );
        let (job, _) = finished("Failed", None, 1);
        assert_eq!(
            outcome(&job, &[]),
            Outcome::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
    }

    #[test]
    fn a_running_job_says_what_its_pod_waits_for() {
        let job = Job::default();
        assert_eq!(outcome(&job, &[]), Outcome::Running(None));
        let waiting = |reason: &str| Pod {
            metadata: ObjectMeta {
                name: Some("kv-backup-1-abcde".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some("image not found".into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            outcome(&job, &[waiting("ErrImagePull")]),
            Outcome::Running(Some(
                "pod kv-backup-1-abcde: ErrImagePull image not found".into()
            ))
        );
        assert_eq!(
            outcome(&job, &[waiting("ContainerCreating")]),
            Outcome::Running(None)
        );
    }
}
