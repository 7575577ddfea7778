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

use super::crd::{BackupPhase, DeletionPolicy, FromBackup, KvBackup, KvBackupSpec, S3Destination};
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
    let dest = &spec.destination.s3;
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
            patch_status(
                api,
                &name,
                serde_json::json!({
                    "phase": BackupPhase::Succeeded,
                    "revision": up.revision,
                    "keys": up.keys,
                    "sizeBytes": up.bytes,
                    "sha256": up.sha256,
                    "completionTime": now(),
                    "durationSeconds": (seconds * 1000.0).round() / 1000.0,
                    "error": null,
                }),
            )
            .await?;
            let note = format!(
                "{} keys at revision {} ({} bytes) to {} in {seconds:.1} s",
                up.keys, up.revision, up.bytes, up.location
            );
            info!(backup = %name, namespace, %note, "backup succeeded");
            publish(ctx, kvb, false, "BackupSucceeded", note).await;
            Ok(Action::await_change())
        }
        // A cut stream or an unreachable bucket may pass; a snapshot that
        // fails its checksum or a refused request will not.
        Err(e @ (StoreError::Source { .. } | StoreError::Object { .. }))
            if attempt < MAX_ATTEMPTS =>
        {
            let error = format!("attempt {attempt} failed: {e}");
            warn!(backup = %name, namespace, %error, "backup will be retried");
            patch_status(
                api,
                &name,
                serde_json::json!({ "phase": BackupPhase::Pending, "error": error }),
            )
            .await?;
            publish(ctx, kvb, true, "BackupRetry", error).await;
            Ok(Action::requeue(RETRY))
        }
        Err(e) => fail(ctx, kvb, api, e.to_string()).await,
    }
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
    let dest = &kvb.spec.destination.s3;
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
    let (dest, key) = match (&from.kv_backup, &from.s3, &from.key) {
        (Some(name), _, _) => {
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
            let dest = backup.spec.destination.s3;
            let key = status
                .location
                .as_deref()
                .and_then(|l| key_of(l, &dest.bucket))
                .ok_or_else(|| BackupError::Invalid(format!("KvBackup {name} has no location")))?;
            (dest, key)
        }
        (None, Some(dest), Some(key)) => (dest.clone(), key.clone()),
        _ => {
            return Err(BackupError::Invalid(
                "bootstrap.fromBackup needs kvBackup, or s3 and key".into(),
            ));
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
