//! I/O of backups: the KvBackup reconciler (one backup per object, run in
//! the reconcile), the scheduler a KvCluster reconcile calls, and the
//! restore of node 0 for `spec.bootstrap.fromBackup`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::crd::{
    BackupPhase, DeletionPolicy, FromBackup, KvBackup, KvBackupSpec, KvBackupStatus,
    PvcDestination, S3Destination, Target,
};
use super::job::{self, JobInput, Outcome, Work};
use super::retention::{self, Scheduled};
use super::schedule::Schedule;
use super::store::{Bucket, StoreError};
use super::{
    BACKUP_FINALIZER, BackupError, LABEL_CLUSTER, LABEL_SCHEDULED, SCHEDULED_AT_ANNOTATION,
    credentials, key_of, object_name,
};
use crate::auth::Password;
use crate::controller::Context;
use crate::crd::KvCluster;
use crate::names;
use crate::observe::{self, NodeConnector};
use crate::plan;

/// Attempts of one KvBackup: a stream cut by a leader change or an
/// operator restart is tried again; a third failure is final.
const MAX_ATTEMPTS: i32 = 3;
/// How soon a backup waiting for a leader, or one to try again, looks.
const RETRY: Duration = Duration::from_secs(10);
/// A backup (or restore) may stream for this long; the snapshot stream's
/// own idle timeout catches a stuck node long before.
const STREAM_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// How often a running backup's status shows the bytes streamed so far.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long a restore waits for node 0 to lead again before it sets root's
/// password.
const ROOT_PASSWORD_WAIT: Duration = Duration::from_secs(90);

async fn publish(ctx: &Context, kvb: &KvBackup, warning: bool, reason: &str, note: String) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: "Backup".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &kvb.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish event");
    }
}

async fn patch_status(
    api: &Api<KvBackup>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), BackupError> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .map(drop)
    .map_err(|source| BackupError::Kube {
        what: format!("KvBackup {name} status"),
        source,
    })
}

fn now() -> Time {
    Time(Timestamp::now())
}

pub async fn reconcile(kvb: Arc<KvBackup>, ctx: Arc<Context>) -> Result<Action, BackupError> {
    let namespace = kvb
        .namespace()
        .ok_or_else(|| BackupError::Invalid("KvBackup without a namespace".into()))?;
    let api = Api::<KvBackup>::namespaced(ctx.client.clone(), &namespace);
    let wants_finalizer = kvb.spec.deletion_policy == DeletionPolicy::Delete
        || kvb.finalizers().iter().any(|f| f == BACKUP_FINALIZER);
    if !wants_finalizer {
        return run(&kvb, &ctx, &api, &namespace).await;
    }
    let (context, backups, ns) = (ctx.as_ref(), &api, namespace.as_str());
    finalizer(&api, BACKUP_FINALIZER, kvb, |event| async move {
        match event {
            Finalizer::Apply(kvb) => run(&kvb, context, backups, ns).await,
            Finalizer::Cleanup(kvb) => delete_object(&kvb, context, ns).await,
        }
    })
    .await
    .map_err(|e| BackupError::Finalizer(Box::new(e)))
}

pub fn error_policy(kvb: Arc<KvBackup>, error: &BackupError, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure("backup");
    warn!(backup = %kvb.name_any(), namespace = kvb.namespace().unwrap_or_default(), error = %error, "KvBackup reconcile failed");
    Action::requeue(RETRY)
}

/// Takes the backup unless it has ended.
async fn run(
    kvb: &KvBackup,
    ctx: &Context,
    api: &Api<KvBackup>,
    namespace: &str,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    let status = kvb.status.clone().unwrap_or_default();
    if matches!(
        status.phase,
        Some(BackupPhase::Succeeded) | Some(BackupPhase::Failed)
    ) {
        return Ok(Action::await_change());
    }
    let target = match kvb.spec.destination.target() {
        Ok(t) => t,
        Err(e) => return fail(ctx, kvb, api, e).await,
    };
    // A Job outlives an operator restart: the backup it runs is waited for,
    // never started a second time beside it.
    if let Target::Pvc(dest) = target
        && status.phase == Some(BackupPhase::Running)
        && status.attempts > 0
    {
        return pvc_wait(ctx, kvb, api, namespace, dest, &status).await;
    }
    // Running here means a run that an operator restart cut short: reconciles
    // of one object never overlap, and a run writes its end before returning.
    if status.attempts >= MAX_ATTEMPTS {
        let error = format!(
            "gave up after {} attempts; last: {}",
            status.attempts,
            status.error.as_deref().unwrap_or("interrupted")
        );
        return fail(ctx, kvb, api, error).await;
    }
    let spec = &kvb.spec;
    let cluster = Api::<KvCluster>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&spec.cluster_name)
        .await
        .map_err(|source| BackupError::Kube {
            what: format!("KvCluster {}", spec.cluster_name),
            source,
        })?;
    let Some(cluster) = cluster else {
        let error = format!(
            "KvCluster {} not found in namespace {namespace}",
            spec.cluster_name
        );
        return fail(ctx, kvb, api, error).await;
    };
    let (observed, connector) = observe::observe(
        &ctx.client,
        namespace,
        &spec.cluster_name,
        plan::wanted_tls(&cluster.spec),
        cluster.spec.auth.enabled,
        ctx.settings.node_timeout,
    )
    .await
    .map_err(|e| BackupError::Invalid(e.to_string()))?;
    let leader = observed.pods.iter().find_map(|pod| {
        let status = pod.status()?;
        let endpoint = pod.endpoint()?.to_owned();
        (status.role == kvclient::Role::Leader).then(|| (pod.name.clone(), endpoint))
    });
    let Some((pod, endpoint)) = leader else {
        let error = format!("waiting: KvCluster {} has no leader", spec.cluster_name);
        if status.error.as_deref() != Some(&error) || status.phase.is_none() {
            patch_status(
                api,
                &name,
                serde_json::json!({ "phase": BackupPhase::Pending, "error": error }),
            )
            .await?;
        }
        return Ok(Action::requeue(RETRY));
    };
    let dest = match target {
        Target::S3(dest) => dest,
        Target::Pvc(dest) => {
            return pvc_start(
                ctx, kvb, api, namespace, &cluster, &status, &pod, &endpoint, dest,
            )
            .await;
        }
    };
    let bucket = match open_bucket(ctx, namespace, dest).await {
        Ok(b) => b,
        Err(e) => return fail(ctx, kvb, api, e.to_string()).await,
    };
    let key = bucket.key(&object_name(namespace, &spec.cluster_name, &name));
    let location = bucket.location(&key);
    let attempt = status.attempts + 1;
    patch_status(
        api,
        &name,
        serde_json::json!({
            "phase": BackupPhase::Running,
            "attempts": attempt,
            "startTime": now(),
            "location": location,
            "node": pod,
            "error": null,
        }),
    )
    .await?;
    info!(backup = %name, namespace, %pod, %location, attempt, "backup started");
    publish(
        ctx,
        kvb,
        false,
        "BackupStarted",
        format!("streaming a snapshot from {pod} to {location} (attempt {attempt})"),
    )
    .await;

    let started = Instant::now();
    let streamed = Arc::new(AtomicU64::new(0));
    let result = {
        let upload = async {
            let client = connector
                .client(&endpoint, STREAM_LIMIT)
                .map_err(|source| StoreError::Source {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            let snapshot = client
                .snapshot(false)
                .await
                .map_err(|source| StoreError::Source {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            let counter = streamed.clone();
            bucket
                .upload(&key, snapshot, move |bytes| {
                    counter.store(bytes, Ordering::Relaxed)
                })
                .await
        };
        tokio::pin!(upload);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                result = &mut upload => break result,
                _ = tick.tick() => {
                    let bytes = streamed.load(Ordering::Relaxed);
                    info!(backup = %name, namespace, bytes, seconds = started.elapsed().as_secs(), "backup running");
                    // Progress is for humans: a failed write does not stop the backup.
                    let _ = patch_status(api, &name, serde_json::json!({ "sizeBytes": bytes })).await;
                }
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(up) => {
            let figures = Figures {
                revision: up.revision,
                keys: up.keys,
                bytes: up.bytes,
                sha256: up.sha256,
            };
            succeed(ctx, kvb, api, &figures, &up.location, seconds).await
        }
        // A cut stream or an unreachable bucket may pass; a snapshot that
        // fails its checksum or a refused request will not.
        Err(e @ (StoreError::Source { .. } | StoreError::Object { .. }))
            if attempt < MAX_ATTEMPTS =>
        {
            retry(ctx, kvb, api, format!("attempt {attempt} failed: {e}")).await
        }
        Err(e) => fail(ctx, kvb, api, e.to_string()).await,
    }
}

/// What a finished backup holds.
struct Figures {
    revision: u64,
    keys: u64,
    bytes: u64,
    sha256: Option<String>,
}

async fn succeed(
    ctx: &Context,
    kvb: &KvBackup,
    api: &Api<KvBackup>,
    figures: &Figures,
    location: &str,
    seconds: f64,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    patch_status(
        api,
        &name,
        serde_json::json!({
            "phase": BackupPhase::Succeeded,
            "revision": figures.revision,
            "keys": figures.keys,
            "sizeBytes": figures.bytes,
            "sha256": figures.sha256,
            "completionTime": now(),
            "durationSeconds": (seconds * 1000.0).round() / 1000.0,
            "error": null,
        }),
    )
    .await?;
    let note = format!(
        "{} keys at revision {} ({} bytes) to {location} in {seconds:.1} s",
        figures.keys, figures.revision, figures.bytes
    );
    info!(backup = %name, namespace = kvb.namespace().unwrap_or_default(), %note, "backup succeeded");
    publish(ctx, kvb, false, "BackupSucceeded", note).await;
    Ok(Action::await_change())
}

/// Back to Pending; the next reconcile starts another attempt.
async fn retry(
    ctx: &Context,
    kvb: &KvBackup,
    api: &Api<KvBackup>,
    error: String,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    warn!(backup = %name, namespace = kvb.namespace().unwrap_or_default(), %error, "backup will be retried");
    patch_status(
        api,
        &name,
        serde_json::json!({ "phase": BackupPhase::Pending, "error": error }),
    )
    .await?;
    publish(ctx, kvb, true, "BackupRetry", error).await;
    Ok(Action::requeue(RETRY))
}

async fn fail(
    ctx: &Context,
    kvb: &KvBackup,
    api: &Api<KvBackup>,
    error: String,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    warn!(backup = %name, namespace = kvb.namespace().unwrap_or_default(), %error, "backup failed");
    patch_status(
        api,
        &name,
        serde_json::json!({ "phase": BackupPhase::Failed, "completionTime": now(), "error": error }),
    )
    .await?;
    publish(ctx, kvb, true, "BackupFailed", error).await;
    Ok(Action::await_change())
}

async fn open_bucket(
    ctx: &Context,
    namespace: &str,
    dest: &S3Destination,
) -> Result<Bucket, BackupError> {
    let creds = credentials(&ctx.client, namespace, &dest.credentials_secret).await?;
    Ok(Bucket::open(dest, &creds)?)
}

/// `deletionPolicy: Delete`: the object goes with the KvBackup. Without its
/// credentials Secret nothing can be deleted; the KvBackup still goes (a
/// deletion must not hang forever) and a warning event says what stays.
async fn delete_object(
    kvb: &KvBackup,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, BackupError> {
    let dest = match kvb.spec.destination.target() {
        Ok(Target::S3(dest)) => dest,
        Ok(Target::Pvc(dest)) => return pvc_delete(ctx, kvb, namespace, dest).await,
        Err(_) => return Ok(Action::await_change()),
    };
    let Some(key) = kvb
        .status
        .as_ref()
        .and_then(|s| s.location.as_deref())
        .and_then(|l| key_of(l, &dest.bucket))
    else {
        return Ok(Action::await_change());
    };
    match open_bucket(ctx, namespace, dest).await {
        Ok(bucket) => {
            bucket.delete(&key).await?;
            info!(backup = %kvb.name_any(), namespace, key, "deleted the backup's object");
        }
        Err(e @ (BackupError::NoSecret(_) | BackupError::SecretKey { .. })) => {
            let note = format!("object s3://{}/{key} kept: {e}", dest.bucket);
            publish(ctx, kvb, true, "BackupObjectKept", note).await;
        }
        Err(e) => return Err(e),
    }
    Ok(Action::await_change())
}

/// The scheduled backups of `kvc`: creates the one that is due and
/// deletes those retention lets go. Returns when to look again.
pub async fn schedule(ctx: &Context, kvc: &KvCluster) -> Result<Option<Duration>, BackupError> {
    let Some(spec) = &kvc.spec.backup else {
        return Ok(None);
    };
    // An invalid schedule is reported by the plan (InvalidSpec).
    let Ok(cron) = spec.schedule.parse::<Schedule>() else {
        return Ok(None);
    };
    let (Some(namespace), Some(cluster)) = (kvc.namespace(), kvc.metadata.name.clone()) else {
        return Ok(None);
    };
    let api = Api::<KvBackup>::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{LABEL_CLUSTER}={cluster},{LABEL_SCHEDULED}=true");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| BackupError::Kube {
            what: "kvbackups".into(),
            source,
        })?;
    let scheduled: Vec<Scheduled> = list
        .items
        .iter()
        .filter_map(|b| {
            Some(Scheduled {
                name: b.metadata.name.clone()?,
                scheduled_at: b.annotations().get(SCHEDULED_AT_ANNOTATION)?.parse().ok()?,
                phase: b.status.as_ref().and_then(|s| s.phase),
                deleting: b.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect();
    let since = kvc
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let keep = usize::try_from(spec.keep).unwrap_or(1).max(1);
    let decision = retention::decide(&cron, keep, &scheduled, since, Timestamp::now());
    if let Some(at) = decision.create {
        let name = retention::backup_name(&cluster, at);
        let mut backup = KvBackup::new(
            &name,
            KvBackupSpec {
                cluster_name: cluster.clone(),
                destination: spec.destination.clone(),
                deletion_policy: DeletionPolicy::Delete,
            },
        );
        backup.metadata.namespace = Some(namespace.clone());
        backup.metadata.labels = Some(BTreeMap::from([
            (LABEL_CLUSTER.to_owned(), cluster.clone()),
            (LABEL_SCHEDULED.to_owned(), "true".to_owned()),
            (
                names::LABEL_MANAGED_BY.to_owned(),
                names::FIELD_MANAGER.to_owned(),
            ),
        ]));
        backup.metadata.annotations = Some(BTreeMap::from([(
            SCHEDULED_AT_ANNOTATION.to_owned(),
            at.to_string(),
        )]));
        match api.create(&PostParams::default(), &backup).await {
            Ok(_) => info!(cluster, namespace, backup = name, %at, "created a scheduled backup"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                return Err(BackupError::Kube {
                    what: format!("creating KvBackup {name}"),
                    source,
                });
            }
        }
    }
    for name in &decision.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => info!(
                cluster,
                namespace,
                backup = name,
                "retention deleted a scheduled backup"
            ),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(BackupError::Kube {
                    what: format!("deleting KvBackup {name}"),
                    source,
                });
            }
        }
    }
    Ok(decision.wake_in)
}

/// `spec.bootstrap.fromBackup`: streams the backup into node 0, which
/// checks it, answers, and restarts as the only voter of a new cluster
/// holding it. Returns what to report.
pub async fn restore_into(
    ctx: &Context,
    kvc: &KvCluster,
    from: &FromBackup,
    pod: &str,
    endpoint: &str,
    connector: &NodeConnector,
    root_password: Option<&Password>,
) -> Result<String, BackupError> {
    let namespace = kvc.namespace().unwrap_or_default();
    let source = match (&from.kv_backup, &from.s3, &from.pvc, &from.key) {
        (Some(name), _, _, _) => {
            let backup = Api::<KvBackup>::namespaced(ctx.client.clone(), &namespace)
                .get_opt(name)
                .await
                .map_err(|source| BackupError::Kube {
                    what: format!("KvBackup {name}"),
                    source,
                })?
                .ok_or_else(|| BackupError::Invalid(format!("KvBackup {name} not found")))?;
            let status = backup.status.unwrap_or_default();
            if status.phase != Some(BackupPhase::Succeeded) {
                return Err(BackupError::Invalid(format!(
                    "KvBackup {name} has not succeeded (phase {:?})",
                    status.phase
                )));
            }
            let no_location = || BackupError::Invalid(format!("KvBackup {name} has no location"));
            let location = status.location.as_deref().ok_or_else(no_location)?;
            match backup
                .spec
                .destination
                .target()
                .map_err(BackupError::Invalid)?
            {
                Target::S3(dest) => {
                    let key = key_of(location, &dest.bucket).ok_or_else(no_location)?;
                    Source::S3(dest.clone(), key)
                }
                Target::Pvc(dest) => {
                    let path = pvc_path_of(location, &dest.claim_name).ok_or_else(no_location)?;
                    Source::Pvc(dest.clone(), path)
                }
            }
        }
        (None, Some(dest), None, Some(key)) => Source::S3(dest.clone(), key.clone()),
        (None, None, Some(dest), Some(key)) => Source::Pvc(dest.clone(), key.clone()),
        _ => {
            return Err(BackupError::Invalid(
                "bootstrap.fromBackup needs kvBackup, or key with one of s3 and pvc".into(),
            ));
        }
    };
    let (dest, key) = match source {
        Source::S3(dest, key) => (dest, key),
        Source::Pvc(dest, path) => {
            let mut note = pvc_restore(ctx, kvc, &dest, &path, pod, endpoint).await?;
            if let Some(password) = root_password {
                note.push_str(&adopt_root_password(endpoint, connector, password).await);
            }
            return Ok(note);
        }
    };
    let bucket = open_bucket(ctx, &namespace, &dest).await?;
    let location = bucket.location(&key);
    let (size, stream) = bucket.download(&key).await?;
    info!(cluster = %kvc.name_any(), namespace, %pod, %location, size, "restoring node 0 from a backup");
    let client = connector
        .client(endpoint, STREAM_LIMIT)
        .map_err(|source| StoreError::Source {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let restored = client
        .restore(reqwest::Body::wrap_stream(stream))
        .await
        .map_err(|source| StoreError::Source {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let mut note = format!(
        "restored {} keys at revision {} ({size} bytes) from {location} into {pod}; it restarts as the only voter of a new cluster",
        restored.keys, restored.revision
    );
    if let Some(password) = root_password {
        note.push_str(&adopt_root_password(endpoint, connector, password).await);
    }
    Ok(note)
}

/// The users of a restored cluster are the backup's, root's password
/// included; this cluster's Secret `NAME-root` is the one its users read,
/// so root's password becomes the Secret's once node 0 is back. The
/// operator itself is root by its client certificate and needs neither.
async fn adopt_root_password(
    endpoint: &str,
    connector: &NodeConnector,
    password: &Password,
) -> String {
    let deadline = Instant::now() + ROOT_PASSWORD_WAIT;
    let mut last = String::from("node 0 did not come back");
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(node) = connector.client(endpoint, Duration::from_secs(5)) else {
            continue;
        };
        match node.status().await {
            Ok(s) if s.role == kvclient::Role::Leader => {}
            Ok(s) => {
                last = format!("node 0 is {:?}", s.role);
                continue;
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        }
        match node.auth_status().await {
            Ok(a) if !a.enabled => return String::new(),
            Ok(_) => {}
            Err(e) => {
                last = e.to_string();
                continue;
            }
        }
        let request = kvclient::PasswordRequest {
            password: Some(password.expose().to_owned()),
        };
        match node.user_change_password(kvclient::ROOT, &request).await {
            Ok(_) => return "; root's password is now the one in this cluster's Secret".into(),
            // The backup had no user root: the usual auth step makes it.
            Err(e) if e.code() == Some(kvclient::ErrorCode::NotFound) => return String::new(),
            Err(e) => last = e.to_string(),
        }
    }
    warn!(endpoint, error = %last, "could not set root's password after a restore");
    format!("; root's password is still the backup's ({last})")
}

/// Where a restore reads from.
enum Source {
    S3(S3Destination, String),
    Pvc(PvcDestination, String),
}

/// `pvc://CLAIM/PATH` -> `PATH` when the claim matches.
fn pvc_path_of(location: &str, claim: &str) -> Option<String> {
    super::path_in(location, "pvc", claim)
}

/// How long a backup or restore Job may run (its `activeDeadlineSeconds`).
const JOB_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// How long a delete Job may take before the file is reported as kept.
const DELETE_DEADLINE: Duration = Duration::from_secs(300);
/// How often a Job's state is read while the operator waits for it.
const JOB_POLL: Duration = Duration::from_secs(2);
/// A Job whose pod cannot start (no such claim, an image that cannot be
/// pulled) for this long has failed this attempt.
const JOB_STUCK: Duration = Duration::from_secs(300);

/// Owner reference to a Job's owner without `blockOwnerDeletion`, which
/// would need the update verb on the owner's finalizers.
fn owned_by<K: Resource<DynamicType = ()>>(
    owner: &K,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference, BackupError> {
    let mut reference = owner
        .controller_owner_ref(&())
        .ok_or_else(|| BackupError::Invalid(format!("{} without a uid", K::kind(&()))))?;
    reference.block_owner_deletion = None;
    Ok(reference)
}

/// Starts attempt `status.attempts + 1` of a backup to a volume: a Job
/// running `kvctl snapshot save` from the leader onto the claim.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the parts of one backup run"
)]
async fn pvc_start(
    ctx: &Context,
    kvb: &KvBackup,
    api: &Api<KvBackup>,
    namespace: &str,
    cluster: &KvCluster,
    status: &KvBackupStatus,
    pod: &str,
    endpoint: &str,
    dest: &PvcDestination,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    let path = match dest.path(&object_name(namespace, &kvb.spec.cluster_name, &name)) {
        Ok(p) => p,
        Err(e) => return fail(ctx, kvb, api, e).await,
    };
    let location = dest.location(&path);
    let attempt = status.attempts + 1;
    let job_name = job::backup_job_name(&name, attempt);
    let input = JobInput::new(
        job_name.clone(),
        namespace,
        &kvb.spec.cluster_name,
        Some(&cluster.spec),
        &dest.claim_name,
        Work::Save {
            endpoint: endpoint.to_owned(),
            path,
        },
        JOB_DEADLINE,
        owned_by(kvb)?,
    );
    let started = now();
    patch_status(
        api,
        &name,
        serde_json::json!({
            "phase": BackupPhase::Running,
            "attempts": attempt,
            "startTime": started,
            "location": location,
            "node": pod,
            "error": null,
        }),
    )
    .await?;
    create_job(ctx, namespace, &job::job(&input)).await?;
    info!(backup = %name, namespace, %pod, %location, attempt, job = %job_name, "backup started");
    publish(
        ctx,
        kvb,
        false,
        "BackupStarted",
        format!("Job {job_name} saves a snapshot from {pod} to {location} (attempt {attempt})"),
    )
    .await;
    let status = KvBackupStatus {
        attempts: attempt,
        start_time: Some(started),
        location: Some(location),
        ..status.clone()
    };
    pvc_wait(ctx, kvb, api, namespace, dest, &status).await
}

/// Waits for the Job of attempt `status.attempts` and writes its end.
async fn pvc_wait(
    ctx: &Context,
    kvb: &KvBackup,
    api: &Api<KvBackup>,
    namespace: &str,
    dest: &PvcDestination,
    status: &KvBackupStatus,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    let attempt = status.attempts;
    let job_name = job::backup_job_name(&name, attempt);
    let location = status
        .location
        .clone()
        .unwrap_or_else(|| format!("pvc://{}", dest.claim_name));
    let outcome = wait_job(ctx, namespace, &job_name, JOB_DEADLINE, Some((api, &name))).await?;
    delete_job(ctx, namespace, &job_name).await;
    let seconds = status.start_time.as_ref().map_or(0.0, |t| {
        (Timestamp::now().as_millisecond() - t.0.as_millisecond()) as f64 / 1000.0
    });
    match outcome {
        // A report without the figures fails below: a backup is recorded
        // only with what it holds.
        Outcome::Succeeded(job::Report {
            revision: Some(revision),
            keys: Some(keys),
            bytes: Some(bytes),
            sha256: Some(sha256),
            ..
        }) => {
            let figures = Figures {
                revision,
                keys,
                bytes,
                sha256: Some(sha256),
            };
            succeed(ctx, kvb, api, &figures, &location, seconds).await
        }
        Outcome::Succeeded(r) => {
            fail(
                ctx,
                kvb,
                api,
                format!("kvctl's report lacks the backup's figures: {r:?}"),
            )
            .await
        }
        Outcome::Failed(e) if attempt < MAX_ATTEMPTS => {
            retry(ctx, kvb, api, format!("attempt {attempt} failed: {e}")).await
        }
        Outcome::Failed(e) => fail(ctx, kvb, api, format!("attempt {attempt} failed: {e}")).await,
        Outcome::Running(w) => {
            let error = format!(
                "Job {job_name} did not finish in {} s{}",
                JOB_DEADLINE.as_secs(),
                w.map(|w| format!(": {w}")).unwrap_or_default()
            );
            fail(ctx, kvb, api, error).await
        }
    }
}

/// `deletionPolicy: Delete` of a backup on a volume: a Job deletes the
/// file. If it cannot (the claim is gone, the pod never starts), the
/// KvBackup still goes and an event says the file stays.
async fn pvc_delete(
    ctx: &Context,
    kvb: &KvBackup,
    namespace: &str,
    dest: &PvcDestination,
) -> Result<Action, BackupError> {
    let name = kvb.name_any();
    let Some(path) = kvb
        .status
        .as_ref()
        .and_then(|s| s.location.as_deref())
        .and_then(|l| pvc_path_of(l, &dest.claim_name))
    else {
        return Ok(Action::await_change());
    };
    let cluster = Api::<KvCluster>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&kvb.spec.cluster_name)
        .await
        .ok()
        .flatten();
    let job_name = job::job_name(&name, "delete");
    let input = JobInput::new(
        job_name.clone(),
        namespace,
        &kvb.spec.cluster_name,
        cluster.as_ref().map(|c| &c.spec),
        &dest.claim_name,
        Work::Delete { path: path.clone() },
        DELETE_DEADLINE,
        owned_by(kvb)?,
    );
    create_job(ctx, namespace, &job::job(&input)).await?;
    let outcome = wait_job(ctx, namespace, &job_name, DELETE_DEADLINE, None).await?;
    delete_job(ctx, namespace, &job_name).await;
    let location = dest.location(&path);
    match outcome {
        Outcome::Succeeded(r) => {
            info!(backup = %name, namespace, %location, deleted = r.deleted.unwrap_or(false), "deleted the backup's file");
        }
        Outcome::Failed(e) | Outcome::Running(Some(e)) => {
            let note = format!("file {location} kept: {e}");
            publish(ctx, kvb, true, "BackupObjectKept", note).await;
        }
        Outcome::Running(None) => {
            let note = format!("file {location} kept: Job {job_name} did not finish");
            publish(ctx, kvb, true, "BackupObjectKept", note).await;
        }
    }
    Ok(Action::await_change())
}

/// `spec.bootstrap.fromBackup` from a volume: a Job streams the file into
/// node 0 with `kvctl snapshot restore`.
async fn pvc_restore(
    ctx: &Context,
    kvc: &KvCluster,
    dest: &PvcDestination,
    path: &str,
    pod: &str,
    endpoint: &str,
) -> Result<String, BackupError> {
    let namespace = kvc.namespace().unwrap_or_default();
    let cluster = kvc.name_any();
    let job_name = job::job_name(&cluster, "restore");
    let location = dest.location(path);
    let input = JobInput::new(
        job_name.clone(),
        &namespace,
        &cluster,
        Some(&kvc.spec),
        &dest.claim_name,
        Work::Restore {
            endpoint: endpoint.to_owned(),
            path: path.to_owned(),
        },
        JOB_DEADLINE,
        owned_by(kvc)?,
    );
    info!(cluster, namespace, %pod, %location, job = %job_name, "restoring node 0 from a backup on a volume");
    create_job(ctx, &namespace, &job::job(&input)).await?;
    let outcome = wait_job(ctx, &namespace, &job_name, JOB_DEADLINE, None).await?;
    // Also after a failure: the next try starts a fresh Job.
    delete_job(ctx, &namespace, &job_name).await;
    match outcome {
        Outcome::Succeeded(r) => Ok(format!(
            "restored {} keys at revision {} ({} bytes) from {location} into {pod} (Job {job_name}); it restarts as the only voter of a new cluster",
            r.keys.unwrap_or_default(),
            r.revision.unwrap_or_default(),
            r.bytes.unwrap_or_default()
        )),
        Outcome::Failed(e) => Err(BackupError::Job(format!(
            "Job {job_name} restoring {location}: {e}"
        ))),
        Outcome::Running(w) => Err(BackupError::Job(format!(
            "Job {job_name} restoring {location} did not finish{}",
            w.map(|w| format!(": {w}")).unwrap_or_default()
        ))),
    }
}

/// Creates `job`; one of that name already there (an operator restart
/// between its creation and its end) is the same work, and waited for.
async fn create_job(ctx: &Context, namespace: &str, job: &Job) -> Result<(), BackupError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    match Api::<Job>::namespaced(ctx.client.clone(), namespace)
        .create(&PostParams::default(), job)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(BackupError::Kube {
            what: format!("creating Job {name}"),
            source,
        }),
    }
}

/// Its pod goes with it (background propagation). A failure is only
/// logged: the Job is owned, and goes with its owner at the latest.
async fn delete_job(ctx: &Context, namespace: &str, name: &str) {
    let api = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => warn!(job = name, namespace, error = %e, "could not delete a finished Job"),
    }
}

/// Polls Job `name` until it ends or `limit` passes (then `Running`).
/// With `progress`, a stuck pod's reason is shown in the KvBackup's
/// status as it changes.
async fn wait_job(
    ctx: &Context,
    namespace: &str,
    name: &str,
    limit: Duration,
    progress: Option<(&Api<KvBackup>, &str)>,
) -> Result<Outcome, BackupError> {
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), namespace);
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let deadline = Instant::now() + limit + Duration::from_secs(60);
    let mut shown: Option<String> = None;
    let mut stuck_since: Option<Instant> = None;
    loop {
        let kube_err = |what: String| move |source| BackupError::Kube { what, source };
        let Some(job) = jobs
            .get_opt(name)
            .await
            .map_err(kube_err(format!("Job {name}")))?
        else {
            return Ok(Outcome::Failed(format!("Job {name} disappeared")));
        };
        let list = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await
            .map_err(kube_err(format!("pods of Job {name}")))?;
        match job::outcome(&job, &list.items) {
            Outcome::Running(waiting) => {
                if Instant::now() > deadline {
                    return Ok(Outcome::Running(waiting));
                }
                match &waiting {
                    Some(w) => {
                        let since = *stuck_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > JOB_STUCK {
                            let secs = since.elapsed().as_secs();
                            return Ok(Outcome::Failed(format!("{w} (for {secs} s)")));
                        }
                    }
                    None => stuck_since = None,
                }
                if let Some((api, backup)) = progress
                    && waiting != shown
                {
                    let error = waiting.as_ref().map(|w| format!("waiting: {w}"));
                    // For humans: a failed write does not stop the wait.
                    let _ = patch_status(api, backup, serde_json::json!({ "error": error })).await;
                    shown = waiting;
                }
            }
            done => return Ok(done),
        }
        tokio::time::sleep(JOB_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths_come_back_from_locations() {
        assert_eq!(
            pvc_path_of("pvc://backups/ns/kv/x.snap", "backups").as_deref(),
            Some("ns/kv/x.snap")
        );
        assert_eq!(pvc_path_of("pvc://backups2/ns/kv/x.snap", "backups"), None);
        assert_eq!(pvc_path_of("s3://backups/ns/kv/x.snap", "backups"), None);
        assert_eq!(pvc_path_of("pvc://backups/", "backups"), None);
    }
}
