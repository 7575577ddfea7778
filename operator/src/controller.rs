//! Controller wiring: watches, the reconcile pipeline
//! (observe -> plan -> apply -> status) inside a finalizer, events, the
//! error policy, and leader election between operator replicas.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

use crate::apply::{self, ApplyError};
use crate::backup::{self, BackupError, KvBackup};
use crate::build::Owner;
use crate::certs;
use crate::crd::{KvCluster, RetentionPolicy};
use crate::metrics::Metrics;
use crate::names::{self, FINALIZER, LABEL_INSTANCE};
use crate::observe::{self, ObserveError, PdbSupport};
use crate::plan::{self, PlanConfig, PlanInput, Step};
use crate::reason::Reason;

/// How soon a failed reconcile is retried.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// How soon a failed restore from a backup is tried again.
const RESTORE_RETRY: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    pub plan: PlanConfig,
    /// Bound on one node status call while observing.
    pub node_timeout: Duration,
    /// Bound on one membership call (a voter change waits for its commit).
    pub step_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    /// Unique per operator replica (the pod name).
    pub identity: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("KvCluster has no name, namespace or uid")]
    MissingIdentity,
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("issuing certificates: {0}")]
    Certificates(#[from] raftkv_pki::CertError),
    #[error("{step}: {source}")]
    Step {
        step: String,
        reason: &'static str,
        #[source]
        source: kvclient::ClientError,
    },
    #[error("reading KvCluster {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("restoring from a backup: {0}")]
    Restore(#[source] BackupError),
    #[error("scheduled backups: {0}")]
    Schedule(#[source] BackupError),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Low-cardinality label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingIdentity => "missing_identity",
            Error::Observe(_) => "observe",
            Error::Apply(_) => "apply",
            Error::Certificates(_) => "certificates",
            Error::Step { .. } => "membership_step",
            Error::Read { .. } => "read",
            Error::Restore(_) => "restore",
            Error::Schedule(_) => "schedule",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("discovering the PodDisruptionBudget API: {0}")]
    Discovery(#[source] kube::Error),
    #[error("cannot list KvClusters (is the CRD installed and the RBAC granted?): {0}")]
    Crd(#[source] kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that only one replica reconciles")]
    LostLease,
}

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub pdb: PdbSupport,
    pub metrics: Arc<Metrics>,
}

/// The object an event is also about, besides the KvCluster.
enum Related<'a> {
    None,
    Pod(&'a str),
    Pvc(&'a str),
}

impl Context {
    async fn publish(
        &self,
        kvc: &KvCluster,
        warning: bool,
        reason: Reason,
        note: String,
        related: Related<'_>,
    ) {
        // The recorder folds events with the same reason into one series
        // and keeps the first note; naming the pod or PVC keeps one event
        // per member ("add kv-1", "add kv-2") instead of a count.
        let secondary = match related {
            Related::None => None,
            Related::Pod(name) => Some(("v1", "Pod", name)),
            Related::Pvc(name) => Some(("v1", "PersistentVolumeClaim", name)),
        }
        .map(|(api_version, kind, name)| ObjectReference {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
            name: Some(name.to_owned()),
            namespace: kvc.metadata.namespace.clone(),
            ..ObjectReference::default()
        });
        let event = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.as_str().to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary,
        };
        // Events are for humans; failing to record one must not fail the
        // reconcile that did the work.
        if let Err(e) = self.recorder.publish(&event, &kvc.object_ref(&())).await {
            warn!(error = %e, %reason, "could not publish event");
        }
    }
}

pub async fn reconcile(kvc: Arc<KvCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let namespace = kvc.namespace().ok_or(Error::MissingIdentity)?;
    let api = Api::<KvCluster>::namespaced(ctx.client.clone(), &namespace);
    let (context, clusters) = (ctx.as_ref(), &api);
    let result = finalizer(&api, FINALIZER, kvc, |event| async move {
        match event {
            Finalizer::Apply(kvc) => reconcile_cluster(&kvc, context, clusters).await,
            Finalizer::Cleanup(kvc) => cleanup(&kvc, context).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_cluster(
    kvc: &KvCluster,
    ctx: &Context,
    api: &Api<KvCluster>,
) -> Result<Action, Error> {
    let owner = Owner::of(kvc).ok_or(Error::MissingIdentity)?;
    let (observed, connector) = observe::observe(
        &ctx.client,
        &owner.namespace,
        &owner.name,
        plan::wanted_tls(&kvc.spec),
        kvc.spec.auth.enabled,
        ctx.settings.node_timeout,
    )
    .await?;
    // The status is the operator's memory (a disaster recovery run once per
    // request, the auth state), and the reflector's copy can lag the
    // operator's own last status write: a reconcile woken by a pod event
    // right after a write would plan from, and then write back, the older
    // status. One read from the API server per round rules that out.
    let current = api
        .get_opt(&owner.name)
        .await
        .map_err(|source| Error::Read {
            name: owner.name.clone(),
            source,
        })?;
    let Some(kvc) = current.as_ref().filter(|c| c.uid() == kvc.uid()) else {
        // Deleted (or replaced by a new object of that name) meanwhile: the
        // watch brings the change.
        return Ok(Action::await_change());
    };
    let previous = kvc.status.clone().unwrap_or_default();
    let plan = plan::plan(
        &PlanInput {
            owner: &owner,
            recovery_request: kvc
                .annotations()
                .get(names::FORCE_NEW_CLUSTER_ANNOTATION)
                .map(String::as_str),
            spec: &kvc.spec,
            generation: kvc.metadata.generation,
            previous: &previous,
            observed: &observed,
            pdb: ctx.pdb,
            now: Timestamp::now(),
        },
        &ctx.settings.plan,
    );
    info!(
        cluster = %owner.name,
        namespace = %owner.namespace,
        phase = ?plan.status.phase,
        step = plan.step.as_ref().map(|s| s.reason().as_str()),
        pvcs_to_delete = plan.delete_pvcs.len(),
        "planned"
    );

    // Certificates before the objects: a pod the StatefulSet is about to
    // create finds its own certificate in the Secret.
    if let Some(wanted) = plan.certificates.as_ref().filter(|c| c.write) {
        let tls = &observed.tls;
        let material = certs::issue(wanted, tls.ca.as_ref(), &tls.nodes, tls.client.as_ref())?;
        apply::apply_tls_secrets(&ctx.client, &owner, &material).await?;
        if wanted.new_ca || !wanted.issue.is_empty() || wanted.client.is_some() {
            let issued: Vec<String> = wanted
                .issue
                .iter()
                .chain(&wanted.client)
                .map(|r| format!("{} ({:?})", r.name, r.reason))
                .collect();
            let note = format!(
                "{}issued certificates: {}",
                if wanted.new_ca {
                    "new cluster CA; "
                } else {
                    ""
                },
                issued.join(", ")
            );
            info!(cluster = %owner.name, namespace = %owner.namespace, %note, "certificates");
            ctx.publish(kvc, false, Reason::IssuedCertificates, note, Related::None)
                .await;
        }
    }
    let owned = kvc.spec.pvc_retention_policy.when_deleted == RetentionPolicy::Delete;
    if plan.create_root_secret && apply::create_root_secret(&ctx.client, &owner, owned).await? {
        info!(cluster = %owner.name, namespace = %owner.namespace, "created Secret with root's password");
        let note = format!("created Secret {}", names::root_secret(&owner.name));
        ctx.publish(kvc, false, Reason::CreatedRootSecret, note, Related::None)
            .await;
    }
    if let Some(objects) = &plan.objects {
        apply::apply_objects(&ctx.client, &owner.namespace, objects, ctx.pdb).await?;
    }
    // Volumes first: once the StatefulSet is replaced, its new template
    // promises the new size.
    for pvc in &plan.resize_pvcs {
        apply::resize_pvc(&ctx.client, &owner.namespace, pvc, &kvc.spec.storage.size).await?;
    }
    if plan.orphan_statefulset {
        apply::orphan_statefulset(&ctx.client, &owner.namespace, &owner.name).await?;
    }
    for pvc in &plan.delete_pvcs {
        apply::delete_pvc(&ctx.client, &owner.namespace, pvc).await?;
        ctx.publish(
            kvc,
            false,
            Reason::DeletedVolume,
            format!("deleted PVC {pvc} of a removed pod"),
            Related::Pvc(pvc),
        )
        .await;
    }

    let step_result = match &plan.step {
        None => Ok(()),
        Some(step) => {
            info!(cluster = %owner.name, namespace = %owner.namespace, step = %step, "step");
            // What the event says when the step's own text is not enough.
            let mut step_note = None;
            let result = match step {
                Step::ReplacePod { pod, uid, .. } => {
                    apply::delete_pod(&ctx.client, &owner.namespace, pod, uid)
                        .await
                        .map_err(Error::from)
                }
                Step::RestoreFromBackup { pod, endpoint } => {
                    let from = kvc.spec.bootstrap.from_backup.clone().unwrap_or_default();
                    match backup::controller::restore_into(
                        ctx,
                        kvc,
                        &from,
                        pod,
                        endpoint,
                        &connector,
                        observed.root_password.as_ref(),
                    )
                    .await
                    {
                        Ok(note) => {
                            info!(cluster = %owner.name, namespace = %owner.namespace, %note, "restored");
                            step_note = Some(note);
                            Ok(())
                        }
                        Err(source) => Err(Error::Restore(source)),
                    }
                }
                _ => apply::execute_step(step, &connector, ctx.settings.step_timeout)
                    .await
                    .map_err(|source| Error::Step {
                        step: step.to_string(),
                        reason: step.reason().as_str(),
                        source,
                    }),
            };
            ctx.metrics.step(step.reason().as_str(), result.is_ok());
            let pod = Related::Pod(step.pod());
            match &result {
                Ok(()) => {
                    let note = step_note.unwrap_or_else(|| step.to_string());
                    ctx.publish(kvc, false, step.reason(), note, pod).await;
                }
                Err(e) => {
                    let note = format!("{step}: {e}");
                    let reason = match step {
                        Step::RestoreFromBackup { .. } => Reason::RestoreFailed,
                        _ => Reason::MembershipStepFailed,
                    };
                    ctx.publish(kvc, true, reason, note, pod).await;
                }
            }
            result
        }
    };

    apply::write_status(api, &owner.name, &plan.status).await?;
    for notice in &plan.notices {
        ctx.publish(
            kvc,
            notice.warning,
            notice.reason,
            notice.message.clone(),
            Related::None,
        )
        .await;
    }
    if let Err(Error::Restore(e)) = &step_result {
        // The object will not change by itself: a corrupt or missing backup
        // is not fetched again every few seconds.
        warn!(cluster = %owner.name, namespace = %owner.namespace, error = %e, "restore failed");
        return Ok(Action::requeue(RESTORE_RETRY));
    }
    step_result?;
    // Scheduled backups run beside the plan: they need a serving cluster,
    // not a converged one, and never change its members.
    let backup_wake = if kvc.spec.paused {
        None
    } else {
        backup::controller::schedule(ctx, kvc)
            .await
            .map_err(Error::Schedule)?
    };
    // After a step, look again soon: the next one depends on its effect.
    let mut requeue = if plan.step.is_some() {
        plan.requeue_after.min(Duration::from_secs(1))
    } else {
        plan.requeue_after
    };
    if let Some(wake) = backup_wake {
        requeue = requeue.min(wake);
    }
    Ok(Action::requeue(requeue))
}

/// The KvCluster is being deleted. Owned objects go with it (owner
/// references); PVCs are not owned, so they are deleted here if asked.
async fn cleanup(kvc: &KvCluster, ctx: &Context) -> Result<Action, Error> {
    let owner = Owner::of(kvc).ok_or(Error::MissingIdentity)?;
    if kvc.spec.pvc_retention_policy.when_deleted == RetentionPolicy::Delete {
        let deleted = apply::delete_all_pvcs(&ctx.client, &owner.namespace, &owner.name).await?;
        info!(cluster = %owner.name, namespace = %owner.namespace, deleted, "deleted volumes of a deleted cluster");
    } else {
        info!(cluster = %owner.name, namespace = %owner.namespace, "cluster deleted; volumes retained");
    }
    Ok(Action::await_change())
}

pub fn error_policy(kvc: Arc<KvCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.metric_label());
    warn!(
        cluster = %kvc.name_any(),
        namespace = kvc.namespace().unwrap_or_default(),
        reason = error.metric_label(),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(ERROR_REQUEUE)
}

/// Runs the controller until SIGTERM, only while holding the leader lease
/// when `election` is set.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    election: Option<LeaderElection>,
) -> Result<(), RunError> {
    let Some(election) = election else {
        return run_controller(client, settings, metrics).await;
    };
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.lease_namespace)
        .with_identity(&election.identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    info!(lease = %election.lease_name, identity = %election.identity, "waiting for the leader lease");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    return Err(match lease_task.await {
                        Ok(Err(e)) => RunError::Lease(e),
                        _ => RunError::LostLease,
                    });
                }
            }
            // A standby replica must still stop promptly on SIGTERM.
            () = &mut shutdown => {
                info!("stopping before acquiring the leader lease");
                return Ok(());
            }
        }
    }
    info!(identity = %election.identity, "acquired the leader lease");
    let controller = run_controller(client, settings, metrics);
    tokio::pin!(controller);
    loop {
        tokio::select! {
            result = &mut controller => {
                // Closing the channel makes the lease task release the
                // lease, so another replica takes over without waiting
                // for it to expire.
                drop(leading);
                if let Ok(Err(e)) = lease_task.await {
                    warn!(error = %e, "releasing the leader lease");
                }
                return result;
            }
            changed = leading.changed() => {
                // A replica that may have lost the lease must stop at once:
                // two reconcilers could take conflicting membership steps.
                if changed.is_err() || !*leading.borrow_and_update() {
                    error!("lost the leader lease");
                    return Err(RunError::LostLease);
                }
            }
        }
    }
}

/// Changes that need a reconcile: the spec (generation), finalizers, the
/// start of deletion and a disaster recovery request (an annotation).
fn spec_or_lifecycle(kvc: &KvCluster) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    (
        kvc.metadata.generation,
        kvc.finalizers(),
        kvc.metadata.deletion_timestamp.is_some(),
        kvc.annotations().get(names::FORCE_NEW_CLUSTER_ANNOTATION),
    )
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C can stop the wait.
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// One namespace, or all of them.
fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_controller(
    client: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    let pdb = apply::discover_pdb(&client)
        .await
        .map_err(RunError::Discovery)?;
    if pdb == PdbSupport::None {
        warn!("the server has no PodDisruptionBudget API; clusters get none");
    }
    let namespace = settings.namespace.as_deref();
    let clusters: Api<KvCluster> = scoped(&client, namespace);
    clusters
        .list(&ListParams::default().limit(1))
        .await
        .map_err(RunError::Crd)?;

    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        names::LABEL_MANAGED_BY,
        names::FIELD_MANAGER
    ));
    let statefulsets: Api<StatefulSet> = scoped(&client, namespace);
    let services: Api<Service> = scoped(&client, namespace);
    let pods: Api<Pod> = scoped(&client, namespace);
    let reporter = Reporter {
        controller: names::FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        settings,
        pdb,
        metrics,
    });
    info!(namespace = ?ctx.settings.namespace, ?pdb, "starting the KvCluster controller");
    // Only spec and lifecycle changes of a KvCluster trigger a reconcile,
    // not status writes: the operator's own status write (lag changes on
    // every write in a busy cluster) would otherwise trigger the next
    // reconcile at once, forever. Requeues and child events cover the rest.
    let (store, writer) = reflector::store();
    let triggers = watcher(clusters, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, PredicateConfig::default());
    let backups = Controller::new(
        scoped::<KvBackup>(&ctx.client, ctx.settings.namespace.as_deref()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        backup::controller::reconcile,
        backup::controller::error_policy,
        ctx.clone(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            warn!(error = %e, "backup controller event");
        }
    });
    let clusters = Controller::for_stream(triggers, store)
        .owns(statefulsets, managed.clone())
        .owns(services, managed)
        // Pods belong to the StatefulSet, not to the KvCluster; their
        // readiness and restarts still matter to the plan.
        .watches(
            pods,
            watcher::Config::default().labels(&format!("{}=raftkv", names::LABEL_NAME)),
            |pod| {
                let cluster = pod.labels().get(LABEL_INSTANCE)?.clone();
                let namespace = pod.namespace()?;
                Some(ObjectRef::<KvCluster>::new(&cluster).within(&namespace))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "controller event");
            }
        });
    futures::join!(clusters, backups);
    info!("controller stopped");
    Ok(())
}
