//! The end-to-end scenarios of issue 4, each in its own namespace. They need a
//! cluster (KUBECONFIG) with the operator installed from the Helm chart:
//! run them with tests/e2e/run.sh (docs/e2e.md).
//!
//! Timeouts are generous (a slow machine must not fail a test); what is
//! asserted is the end state, checked from several sides (the KvCluster's
//! status, the StatefulSet, the pods and each node's own report).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Resource as _, ResourceExt};
use kvclient::{Consistency, ErrorCode, NodeId, Role};
use raftkv_e2e::kv::{self, WriteStream};
use raftkv_e2e::kvc;
use raftkv_e2e::monitor::{MembershipMonitor, ReplacementMonitor};
use raftkv_e2e::operator;
use raftkv_e2e::{Scenario, Target, creds, tls};
use serde_json::json;

/// A new cluster: pods start, bootstrap, learners catch up and get promoted.
const FORM: Duration = Duration::from_secs(300);
/// A scale step or a member replacement.
const CHANGE: Duration = Duration::from_secs(300);
/// Writing or reading a batch of keys, retrying what may be retried.
const WRITE_WITHIN: Duration = Duration::from_secs(120);
const CONCURRENCY: usize = 16;

fn ensure_no_problems(what: &str, problems: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(
        problems.is_empty(),
        "{what}: {} problem(s), first: {:?}",
        problems.len(),
        problems.iter().take(10).collect::<Vec<_>>()
    );
    Ok(())
}

/// Waits until `pod` serves every key of `keys` from its own state
/// (serializable reads: no forwarding to the leader), i.e. it caught up.
async fn wait_pod_has(s: &Scenario, pod: &str, keys: &[String]) -> anyhow::Result<()> {
    let want: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    let prefixes: BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.rsplit_once('-').map(|(p, _)| p))
        .collect();
    s.wait(
        &format!("{pod} to hold all {} keys in its own state", keys.len()),
        CHANGE,
        async || {
            let mut have = BTreeSet::new();
            for prefix in &prefixes {
                let listed =
                    s.kv.keys(
                        &Target::pod(pod),
                        &format!("{prefix}-"),
                        Consistency::Serializable,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                have.extend(listed);
            }
            let missing = want.iter().filter(|k| !have.contains(**k)).count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} of {} keys missing", want.len()))
            }
        },
    )
    .await?;
    let problems =
        s.kv.check_all(
            &Target::pod(pod),
            keys,
            Consistency::Serializable,
            CONCURRENCY,
        )
        .await?;
    ensure_no_problems(&format!("serializable reads on {pod}"), &problems)
}

async fn write_keys(
    s: &Scenario,
    service: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let keys = kv::keys(prefix, n);
    let t = Instant::now();
    s.kv.write_all(&Target::service(service), &keys, CONCURRENCY, WRITE_WITHIN)
        .await?;
    s.record(
        &format!("write {n} keys through Service {service}"),
        t.elapsed(),
    );
    Ok(keys)
}

async fn check_keys(s: &Scenario, service: &str, keys: &[String]) -> anyhow::Result<()> {
    let t = Instant::now();
    let problems =
        s.kv.check_all(
            &Target::service(service),
            keys,
            Consistency::Linearizable,
            CONCURRENCY,
        )
        .await?;
    ensure_no_problems(
        &format!("linearizable reads through Service {service}"),
        &problems,
    )?;
    s.record(
        &format!("read {} keys back (linearizable)", keys.len()),
        t.elapsed(),
    );
    Ok(())
}

/// Waits until `kv` has converged again with 3 voters, and checks that
/// every pod kept its node id.
async fn converged_with_same_ids(
    s: &Scenario,
    c: &kvc::Converged,
) -> anyhow::Result<kvc::Converged> {
    let c2 = kvc::wait_converged(s, "kv", 3, CHANGE).await?;
    anyhow::ensure!(
        c2.ids == c.ids,
        "node ids changed: {:?} -> {:?}",
        c.ids,
        c2.ids
    );
    Ok(c2)
}

async fn pod_uid(s: &Scenario, pod: &str) -> anyhow::Result<Option<String>> {
    let p = s
        .api::<Pod>()
        .get_opt(pod)
        .await
        .map_err(|e| anyhow::anyhow!("reading pod {pod}: {e}"))?;
    Ok(p.and_then(|p| p.metadata.uid))
}

async fn delete_pod(s: &Scenario, pod: &str) -> anyhow::Result<String> {
    let uid = pod_uid(s, pod)
        .await?
        .ok_or_else(|| anyhow::anyhow!("pod {pod} does not exist"))?;
    s.api::<Pod>()
        .delete(pod, &DeleteParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("deleting pod {pod}: {e}"))?;
    s.log(format_args!("deleted pod {pod} (uid {uid})"));
    Ok(uid)
}

async fn pvc_names(s: &Scenario) -> Result<Vec<String>, String> {
    let list = s
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing PVCs: {e}"))?;
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    names.sort();
    Ok(names)
}

/// The PodDisruptionBudget API the server offers (policy/v1 from 1.21 on).
async fn pdb_api(s: &Scenario) -> Api<DynamicObject> {
    let version = match s.client.list_api_group_resources("policy/v1").await {
        Ok(list)
            if list
                .resources
                .iter()
                .any(|r| r.name == "poddisruptionbudgets") =>
        {
            "v1"
        }
        _ => "v1beta1",
    };
    let resource = ApiResource {
        group: "policy".into(),
        version: version.into(),
        api_version: format!("policy/{version}"),
        kind: "PodDisruptionBudget".into(),
        plural: "poddisruptionbudgets".into(),
    };
    Api::namespaced_with(s.client.clone(), &s.namespace, &resource)
}

// ---------------------------------------------------------------- scenarios

/// `kubectl apply -f examples/kvcluster.yaml` → Available, 3 healthy voters
/// and a leader, the documented objects, 1,000 keys written and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_example_then_write_and_read_1000_keys() -> anyhow::Result<()> {
    Scenario::run("apply", async |s| {
        let manifest = kvc::example()?;
        let t0 = Instant::now();
        let created = kvc::apply(s, &manifest).await?;
        s.log("applied examples/kvcluster.yaml");
        s.wait("condition Available=True", FORM, async || {
            let (_, st) = kvc::status(s, "kv").await?;
            if st.is_true("Available") && st.leader.is_some() {
                Ok(())
            } else {
                Err(st.describe())
            }
        })
        .await?;
        s.record("MEASURED apply -> Available", t0.elapsed());
        let c = kvc::wait_converged(s, "kv", 3, FORM).await?;
        s.record(
            "MEASURED apply -> 3 healthy voters, phase Running",
            t0.elapsed(),
        );

        // The objects docs/api.md lists, owned by the KvCluster.
        let uid = created.meta().uid.clone().unwrap_or_default();
        let owned_by_kvc =
            |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
                refs.into_iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.kind == "KvCluster" && r.controller == Some(true))
            };
        let services = s.api::<Service>();
        let client_svc = services.get("kv").await?;
        let spec = client_svc.spec.clone().unwrap_or_default();
        let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
        anyhow::ensure!(
            ports == [7379],
            "Service kv exposes {ports:?}, want only 7379"
        );
        anyhow::ensure!(
            owned_by_kvc(client_svc.metadata.owner_references.as_ref()),
            "Service kv is not owned by the KvCluster"
        );
        let peer = services.get("kv-peer").await?;
        let peer_spec = peer.spec.clone().unwrap_or_default();
        anyhow::ensure!(
            peer_spec.cluster_ip.as_deref() == Some("None")
                && peer_spec.publish_not_ready_addresses == Some(true),
            "Service kv-peer must be headless and publish not-ready addresses: {peer_spec:?}"
        );
        anyhow::ensure!(
            owned_by_kvc(peer.metadata.owner_references.as_ref()),
            "Service kv-peer is not owned by the KvCluster"
        );
        let sts = s
            .api::<k8s_openapi::api::apps::v1::StatefulSet>()
            .get("kv")
            .await?;
        anyhow::ensure!(
            owned_by_kvc(sts.metadata.owner_references.as_ref()),
            "StatefulSet kv is not owned by the KvCluster"
        );
        let pdb = pdb_api(s).await.get("kv").await?;
        anyhow::ensure!(
            pdb.data["spec"]["minAvailable"] == 2,
            "PodDisruptionBudget kv: minAvailable {} (want 2, the quorum of 3)",
            pdb.data["spec"]["minAvailable"]
        );
        anyhow::ensure!(
            owned_by_kvc(pdb.metadata.owner_references.as_ref()),
            "PodDisruptionBudget kv is not owned by the KvCluster"
        );
        let pvcs = pvc_names(s).await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            pvcs == ["data-kv-0", "data-kv-1", "data-kv-2"],
            "PVCs {pvcs:?}"
        );
        let policy = s
            .api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
            .get("kv")
            .await?;
        anyhow::ensure!(
            owned_by_kvc(policy.metadata.owner_references.as_ref()),
            "NetworkPolicy kv is not owned by the KvCluster"
        );
        let secrets = s.api::<k8s_openapi::api::core::v1::Secret>();
        for name in ["kv-ca", "kv-tls", "kv-operator-client"] {
            let secret = secrets.get(name).await?;
            anyhow::ensure!(
                owned_by_kvc(secret.metadata.owner_references.as_ref()),
                "Secret {name} is not owned by the KvCluster"
            );
        }
        let pod = s.api::<Pod>().get("kv-0").await?;
        let pod_spec = pod.spec.unwrap_or_default();
        let psc = pod_spec.security_context.unwrap_or_default();
        let csc = pod_spec
            .containers
            .first()
            .and_then(|c| c.security_context.clone())
            .unwrap_or_default();
        anyhow::ensure!(
            psc.run_as_non_root == Some(true)
                && csc.allow_privilege_escalation == Some(false)
                && csc.read_only_root_filesystem == Some(true)
                && pod_spec.automount_service_account_token == Some(false),
            "kv-0 is not restricted: {psc:?} {csc:?}"
        );
        s.log(format_args!(
            "objects as documented; leader {}",
            c.leader_pod
        ));

        let keys = write_keys(s, "kv", "apply", 1000).await?;
        check_keys(s, "kv", &keys).await?;
        let listed =
            s.kv.keys(&Target::service("kv"), "apply-", Consistency::Linearizable)
                .await?;
        anyhow::ensure!(
            listed == keys,
            "a range scan lists {} keys, want the 1000 written in order",
            listed.len()
        );
        for pod in c.ids.keys() {
            wait_pod_has(s, pod, &keys).await?;
        }

        // Volume expansion (the local StorageClass allows it; its
        // directory provisioner plays the resizer, so what can be checked is
        // each PVC's request and status.capacity, not a grown filesystem):
        // the PVCs grow, the StatefulSet is replaced by one with the new
        // template, and no pod is restarted.
        let uids_before = pod_revisions(s, "kv").await?;
        let sts_uid = s.api::<StatefulSet>().get("kv").await?.metadata.uid;
        let mut bigger = manifest.clone();
        bigger["spec"]["storage"]["size"] = json!("2Gi");
        let t = Instant::now();
        let generation = kvc::apply(s, &bigger).await?.metadata.generation;
        s.wait(
            "PVCs at 2Gi (request and capacity), StatefulSet template at 2Gi",
            CHANGE,
            async || {
                let pvcs = s
                    .api::<PersistentVolumeClaim>()
                    .list(&ListParams::default().labels(&kvc::pod_selector("kv")))
                    .await
                    .map_err(|e| e.to_string())?;
                let sizes: Vec<(Option<String>, Option<String>)> = pvcs
                    .items
                    .iter()
                    .map(|p| {
                        let req = p
                            .spec
                            .as_ref()
                            .and_then(|s| s.resources.as_ref())
                            .and_then(|r| r.requests.as_ref())
                            .and_then(|r| r.get("storage"))
                            .map(|q| q.0.clone());
                        let cap = p
                            .status
                            .as_ref()
                            .and_then(|s| s.capacity.as_ref())
                            .and_then(|c| c.get("storage"))
                            .map(|q| q.0.clone());
                        (req, cap)
                    })
                    .collect();
                let two = Some("2Gi".to_owned());
                if sizes.len() != 3 || sizes.iter().any(|(r, c)| *r != two || *c != two) {
                    return Err(format!("PVC (request, capacity): {sizes:?}"));
                }
                let sts = s
                    .api::<StatefulSet>()
                    .get_opt("kv")
                    .await
                    .map_err(|e| e.to_string())?;
                let size = sts.as_ref().and_then(statefulset_volume_size);
                let same = sts.as_ref().map(|s| s.metadata.uid.clone()) == Some(sts_uid.clone());
                if size.as_deref() == Some("2Gi") && !same {
                    Ok(())
                } else {
                    Err(format!(
                        "StatefulSet template size {size:?} (same object as before: {same})"
                    ))
                }
            },
        )
        .await?;
        s.record(
            "MEASURED storage 1Gi -> 2Gi: PVCs and StatefulSet template",
            t.elapsed(),
        );
        converged_with_same_ids(s, &c).await?;
        let uids_after = pod_revisions(s, "kv").await?;
        let restarted: Vec<&String> = uids_after
            .iter()
            .filter(|(pod, (uid, _, _))| uids_before.get(*pod).is_none_or(|(u, _, _)| u != uid))
            .map(|(pod, _)| pod)
            .collect();
        anyhow::ensure!(
            restarted.is_empty(),
            "a volume expansion restarted {restarted:?}"
        );
        let (_, st) = kvc::status(s, "kv").await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            st.observed_generation == generation && !st.is_true("Degraded"),
            "after the expansion: {}",
            st.describe()
        );

        // A shrink is refused with a reason; the StatefulSet keeps 2Gi and the
        // rest of the spec is still reconciled (status for the new generation).
        let generation = kvc::apply(s, &manifest).await?.metadata.generation;
        s.wait(
            "Degraded=True/StorageChangeNotApplied for 2Gi -> 1Gi",
            CHANGE,
            async || {
                let (_, st) = kvc::status(s, "kv").await?;
                let degraded = st.condition("Degraded");
                match degraded {
                    Some(c)
                        if c.status == "True"
                            && c.reason.as_deref() == Some("StorageChangeNotApplied")
                            && c.message
                                .as_deref()
                                .is_some_and(|m| m.contains("cannot shrink"))
                            && st.observed_generation == generation =>
                    {
                        Ok(())
                    }
                    _ => Err(format!(
                        "Degraded {degraded:?}, observedGeneration {:?} of {generation:?}",
                        st.observed_generation
                    )),
                }
            },
        )
        .await?;
        let sts = s.api::<StatefulSet>().get("kv").await?;
        let size = statefulset_volume_size(&sts);
        anyhow::ensure!(
            size.as_deref() == Some("2Gi"),
            "StatefulSet volume template size {size:?}"
        );
        Ok(())
    })
    .await
}

fn statefulset_volume_size(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .first()?
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// Deleting a follower pod: it comes back with the same node id and its
/// data, catches up with what was written meanwhile, and the status is
/// healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_follower_comes_back_with_same_id_and_data() -> anyhow::Result<()> {
    Scenario::run("follower", async |s| {
        let c = kvc::create(s, &kvc::example()?, FORM).await?;
        let before = write_keys(s, "kv", "before", 200).await?;
        let victim = c
            .followers()
            .into_iter()
            .max()
            .ok_or_else(|| anyhow::anyhow!("no follower"))?;
        let old_id = c.ids[&victim];
        let old_uid = delete_pod(s, &victim).await?;
        let t0 = Instant::now();
        let during = write_keys(s, "kv", "during", 100).await?;
        let back = s
            .wait(
                &format!("a new pod {victim} whose node serves"),
                CHANGE,
                async || {
                    match pod_uid(s, &victim).await.map_err(|e| e.to_string())? {
                        Some(uid) if uid != old_uid => {}
                        _ => return Err("the old pod is still there or no new one yet".into()),
                    }
                    let st =
                        s.kv.status(&Target::pod(&victim))
                            .await
                            .map_err(|e| e.to_string())?;
                    if matches!(st.role, Role::Follower | Role::Leader) {
                        Ok(st)
                    } else {
                        Err(format!("node role {:?}", st.role))
                    }
                },
            )
            .await?;
        anyhow::ensure!(
            back.id == old_id,
            "{victim} came back as node {} instead of {old_id}",
            back.id
        );
        anyhow::ensure!(
            back.cluster_id.as_deref() == Some(c.cluster_id.as_str()),
            "{victim} reports cluster {:?}, want {}",
            back.cluster_id,
            c.cluster_id
        );
        s.record(
            "follower pod deleted -> serving again with the same id",
            t0.elapsed(),
        );
        converged_with_same_ids(s, &c).await?;
        s.record(
            "follower pod deleted -> cluster healthy again",
            t0.elapsed(),
        );
        let all: Vec<String> = before.iter().chain(&during).cloned().collect();
        wait_pod_has(s, &victim, &all).await?;
        check_keys(s, "kv", &all).await
    })
    .await
}

/// Deleting the leader pod while clients write: another node leads, writes
/// continue, and every acknowledged write is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_leader_under_writes_loses_no_acknowledged_write() -> anyhow::Result<()> {
    Scenario::run("leader", async |s| {
        let c = kvc::create(s, &kvc::example()?, FORM).await?;
        let pods = kvc::pod_names("kv", 3);
        let stream = WriteStream::start(&s.kv, &Target::service("kv"), "stream", 2);
        s.wait("the write stream to get going (50 acknowledged writes)", WRITE_WITHIN, async || {
            let n = stream.acked_count();
            if n >= 50 { Ok(()) } else { Err(format!("{n} acknowledged")) }
        })
        .await?;
        delete_pod(s, &c.leader_pod).await?;
        let deleted_at = Instant::now();
        let acked_at_delete = stream.acked_count();
        let (new_leader, _) = s
            .wait(&format!("a leader other than node {} ({})", c.leader_id, c.leader_pod), CHANGE, async || {
                match kvc::node_leader(&s.kv, &pods).await {
                    Some((pod, st)) if st.id != c.leader_id => Ok((pod, st.id)),
                    Some((pod, _)) => Err(format!("{pod} still leads")),
                    None => Err("no node claims leadership".into()),
                }
            })
            .await?;
        s.record("leader pod deleted -> new leader", deleted_at.elapsed());
        s.log(format_args!("new leader {new_leader}"));
        let base = stream.acked_count();
        s.wait("writes to continue (100 more acknowledged under the new leader)", WRITE_WITHIN, async || {
            let n = stream.acked_count() - base;
            if n >= 100 { Ok(()) } else { Err(format!("{n} acknowledged")) }
        })
        .await?;
        // Keep writing while the old leader's pod comes back and rejoins.
        converged_with_same_ids(s, &c).await?;
        let report = stream.stop().await?;
        s.log(format_args!(
            "write stream: {} acknowledged ({} before the deletion, {} after), {} failed attempts (last: {:?})",
            report.acked.len(),
            acked_at_delete,
            report.acked_after(deleted_at),
            report.failed_attempts,
            report.last_error
        ));
        s.record("longest pause between acknowledged writes", report.longest_pause());
        anyhow::ensure!(report.acked_after(deleted_at) >= 100, "writes did not continue after the leader's deletion");
        check_keys(s, "kv", &report.acked).await?;
        // The old leader's node has every acknowledged write too.
        wait_pod_has(s, &c.leader_pod, &report.acked).await
    })
    .await
}

/// The second kvnode image of the local node (tests/real-node/images.sh): the
/// kvnode image under another name and label, so an upgrade changes the image.
const NEXT_IMAGE: &str = "raftkv/kvnode-next:0.1.0";

/// Each pod's uid and its StatefulSet template revision (label
/// `controller-revision-hash`), by pod name.
async fn pod_revisions(
    s: &Scenario,
    name: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, (String, Option<String>, Option<String>)>> {
    let pods = s
        .api::<Pod>()
        .list(&ListParams::default().labels(&kvc::pod_selector(name)))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter_map(|p| {
            let image = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone());
            let revision = p.labels().get("controller-revision-hash").cloned();
            Some((p.metadata.name?, (p.metadata.uid?, revision, image)))
        })
        .collect())
}

/// The notes of the operator's Normal events about KvCluster `kv` whose
/// reason is a rollout step, oldest first.
async fn operator_steps(s: &Scenario) -> anyhow::Result<Vec<String>> {
    let mut events: Vec<k8s_openapi::api::core::v1::Event> = s
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("KvCluster")
                && matches!(
                    e.reason.as_deref(),
                    Some("ReplacePod" | "TransferLeadership")
                )
        })
        .collect();
    events.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
    });
    Ok(events.into_iter().filter_map(|e| e.message).collect())
}

/// `spec.image` changes while 2 writers write through the client Service:
/// the operator replaces one pod at a time, the leader's pod last (after
/// handing leadership over), each comes back as the same node on the new
/// revision, and no acknowledged write is lost. The longest time without
/// an acknowledged write is measured and printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_of_a_new_image_replaces_one_pod_at_a_time_leader_last_under_writes()
-> anyhow::Result<()> {
    Scenario::run("rollout", async |s| {
        let manifest = kvc::example()?;
        let c = kvc::create(s, &manifest, FORM).await?;
        let pods = kvc::pod_names("kv", 3);
        let before = write_keys(s, "kv", "before", 200).await?;
        let old = pod_revisions(s, "kv").await?;
        let sts = s.api::<StatefulSet>().get("kv").await?;
        let strategy = sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.clone());
        anyhow::ensure!(
            strategy.as_deref() == Some("OnDelete"),
            "StatefulSet updateStrategy {strategy:?}, want OnDelete"
        );
        // A StatefulSet made by an older operator (RollingUpdate, with the
        // partition the API server defaults) is switched back to OnDelete
        // without a pod restart.
        let uids_before = pod_revisions(s, "kv").await?;
        let rolling = json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}});
        s.api::<StatefulSet>()
            .patch("kv", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&rolling))
            .await?;
        s.wait("the operator to switch the StatefulSet back to OnDelete", CHANGE, async || {
            let sts = s.api::<StatefulSet>().get("kv").await.map_err(|e| e.to_string())?;
            let strategy = sts.spec.and_then(|s| s.update_strategy);
            match strategy.as_ref().and_then(|u| u.type_.as_deref()) {
                Some("OnDelete") if strategy.as_ref().is_some_and(|u| u.rolling_update.is_none()) => Ok(()),
                _ => Err(format!("updateStrategy {strategy:?}")),
            }
        })
        .await?;
        let uids_after = pod_revisions(s, "kv").await?;
        anyhow::ensure!(
            uids_before.iter().all(|(p, (uid, _, _))| uids_after.get(p).is_some_and(|(u, _, _)| u == uid)),
            "switching the update strategy restarted pods: {uids_before:?} -> {uids_after:?}"
        );
        let old_revision = sts.status.and_then(|s| s.update_revision);
        anyhow::ensure!(
            old.values()
                .all(|(_, r, _)| r.is_some() && *r == old_revision),
            "pods before the rollout: {old:?}, StatefulSet revision {old_revision:?}"
        );
        let (leader_pod, _) = kvc::node_leader(&s.kv, &pods)
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader before the rollout"))?;
        s.log(format_args!("leader before the rollout: {leader_pod}"));

        let stream = WriteStream::start(&s.kv, &Target::service("kv"), "stream", 2);
        s.wait(
            "the write stream to get going (50 acknowledged writes)",
            WRITE_WITHIN,
            async || {
                let n = stream.acked_count();
                if n >= 50 {
                    Ok(())
                } else {
                    Err(format!("{n} acknowledged"))
                }
            },
        )
        .await?;
        let uids = old
            .iter()
            .map(|(p, (uid, _, _))| (p.clone(), uid.clone()))
            .collect();
        let monitor = ReplacementMonitor::start(s, "kv", uids);
        let mut next = manifest.clone();
        next["spec"]["image"] = json!(NEXT_IMAGE);
        let t0 = Instant::now();
        kvc::apply(s, &next).await?;
        s.log(format_args!("image -> {NEXT_IMAGE}"));
        s.wait(
            "every pod replaced and on the StatefulSet's update revision",
            CHANGE,
            async || {
                let (_, st) = kvc::status(s, "kv").await?;
                let now = pod_revisions(s, "kv").await.map_err(|e| e.to_string())?;
                let rollout = st.rollout.clone().ok_or("no status.rollout")?;
                let on_new = now.values().filter(|(_, r, image)| {
                    r.as_deref() == Some(rollout.update_revision.as_str())
                        && image.as_deref() == Some(NEXT_IMAGE)
                });
                if Some(&rollout.update_revision) != old_revision.as_ref()
                    && on_new.count() == 3
                    && rollout.updated == 3
                    && rollout.total == 3
                    && rollout.waiting_for.is_none()
                {
                    Ok(())
                } else {
                    Err(format!("rollout {rollout:?}; {}", st.describe()))
                }
            },
        )
        .await?;
        let c2 = converged_with_same_ids(s, &c).await?;
        s.record(
            "MEASURED image change -> all 3 pods replaced, phase Running",
            t0.elapsed(),
        );
        let replaced = monitor.stop().await?;
        let report = stream.stop().await?;
        s.log(format_args!("replacement order: {replaced:?}"));
        s.log(format_args!(
            "write stream: {} acknowledged, {} failed attempts (last: {:?})",
            report.acked.len(),
            report.failed_attempts,
            report.last_error
        ));
        s.record(
            "MEASURED longest write outage during the rollout",
            report.longest_pause(),
        );

        let order: Vec<&str> = replaced.iter().map(|r| r.pod.as_str()).collect();
        anyhow::ensure!(
            order.len() == 3 && order.last() == Some(&leader_pod.as_str()),
            "pods went away in the order {order:?}; the leader {leader_pod} must be last"
        );
        // The operator's own account: it handed leadership away from the
        // leader's pod before deleting it, and deleted each pod once.
        let steps = operator_steps(s).await?;
        s.log(format_args!("operator steps: {steps:?}"));
        let deletes: Vec<&String> = steps.iter().filter(|m| m.starts_with("delete pod")).collect();
        let transfer = steps.iter().position(|m| {
            m.starts_with(&format!("transfer leadership from {leader_pod} "))
        });
        let leader_delete = steps
            .iter()
            .position(|m| m.starts_with(&format!("delete pod {leader_pod} ")));
        anyhow::ensure!(
            deletes.len() == 3
                && transfer.zip(leader_delete).is_some_and(|(t, d)| t < d)
                && leader_delete == steps.iter().rposition(|m| m.starts_with("delete pod")),
            "want one delete per pod, the leader's last and after a transfer away from it: {steps:?}"
        );
        let now = pod_revisions(s, "kv").await?;
        for (pod, (uid, _, _)) in &now {
            anyhow::ensure!(
                old.get(pod).is_some_and(|(old_uid, _, _)| old_uid != uid),
                "{pod} was not replaced"
            );
        }
        let all: Vec<String> = before.iter().chain(&report.acked).cloned().collect();
        check_keys(s, "kv", &all).await?;
        for pod in c2.ids.keys() {
            wait_pod_has(s, pod, &all).await?;
        }
        Ok(())
    })
    .await
}

/// `kubectl scale kvc kv --replicas=5`, then back to 3. The membership and the
/// StatefulSet match at each step (watched throughout), data stays, and the
/// PVCs of removed pods go as `whenScaled: Delete` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_5_and_back_to_3() -> anyhow::Result<()> {
    Scenario::run("scale", async |s| {
        let manifest = kvc::example()?;
        anyhow::ensure!(
            kvc::policy(&manifest).0 == "Delete",
            "the example no longer sets whenScaled: Delete"
        );
        let c3 = kvc::create(s, &manifest, FORM).await?;
        let keys = write_keys(s, "kv", "scale", 300).await?;
        let monitor = MembershipMonitor::start(s, "kv", 5);

        let t0 = Instant::now();
        kvc::scale(s, "kv", 5).await?;
        s.log("scaled to 5 (scale subresource)");
        let c5 = kvc::wait_converged(s, "kv", 5, CHANGE).await?;
        s.record(
            "MEASURED scale 3 -> 5 (patch -> 5 healthy voters, phase Running)",
            t0.elapsed(),
        );
        for (pod, id) in &c3.ids {
            anyhow::ensure!(
                c5.ids.get(pod) == Some(id),
                "{pod} changed id during the scale-up"
            );
        }
        let pvcs = pvc_names(s).await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            pvcs == (0..5).map(|i| format!("data-kv-{i}")).collect::<Vec<_>>(),
            "PVCs at 5: {pvcs:?}"
        );
        check_keys(s, "kv", &keys).await?;
        wait_pod_has(s, "kv-4", &keys).await?;

        // Let the highest pod lead, so the scale-down must hand leadership
        // over before it removes that voter.
        if c5.leader_pod != "kv-4" {
            let to = c5.ids["kv-4"];
            s.kv.transfer_leader(&Target::pod(&c5.leader_pod), to)
                .await?;
        }
        let term = s
            .wait("kv-4 to lead", CHANGE, async || {
                match kvc::node_leader(&s.kv, &kvc::pod_names("kv", 5)).await {
                    Some((pod, st)) if pod == "kv-4" => Ok(st.term),
                    other => Err(format!("leader {:?}", other.map(|(p, _)| p))),
                }
            })
            .await?;
        s.log(format_args!("kv-4 leads in term {term}"));

        let t1 = Instant::now();
        kvc::scale(s, "kv", 3).await?;
        s.log("scaled to 3 (scale subresource)");
        let back = kvc::wait_converged(s, "kv", 3, CHANGE).await?;
        s.record(
            "scale 5 -> 3 (patch -> 3 healthy voters, phase Running)",
            t1.elapsed(),
        );
        anyhow::ensure!(
            back.ids == c3.ids,
            "the remaining members changed: {:?} -> {:?}",
            c3.ids,
            back.ids
        );
        s.wait(
            "PVCs data-kv-3 and data-kv-4 deleted (whenScaled: Delete)",
            CHANGE,
            async || {
                let pvcs = pvc_names(s).await?;
                if pvcs == ["data-kv-0", "data-kv-1", "data-kv-2"] {
                    Ok(())
                } else {
                    Err(format!("PVCs {pvcs:?}"))
                }
            },
        )
        .await?;
        check_keys(s, "kv", &keys).await?;
        let st = s.kv.status(&Target::service("kv")).await?;
        s.log(format_args!(
            "after the scale-down: leader {:?} in term {} (kv-4 led in term {term})",
            st.leader.map(|l| l.info.name),
            st.term
        ));

        let report = monitor.stop().await?;
        s.log(format_args!(
            "membership vs StatefulSet, {} samples:",
            report.samples
        ));
        for t in &report.transitions {
            eprintln!("    {t}");
        }
        anyhow::ensure!(
            report.samples >= 10,
            "the monitor saw only {} samples",
            report.samples
        );
        anyhow::ensure!(
            report.violations.is_empty(),
            "the StatefulSet shrank past voters: {:#?}",
            report.violations
        );
        Ok(())
    })
    .await
}

/// Waits until `victim`, whose PVC and pod were deleted, serves again on a
/// new PVC as a new node (not `old_id`), and returns its id. Kubernetes <
/// 1.27: when the StatefulSet recreated the pod while the old PVC was still
/// terminating, it made no new PVC and the pod waits forever; deleting it
/// again (what a person does) gets a new PVC. See docs/testing.md.
async fn back_on_new_volume(
    s: &Scenario,
    victim: &str,
    old_id: NodeId,
    old_pvc_uid: &str,
    deleted_uids: &mut Vec<String>,
) -> anyhow::Result<NodeId> {
    let pvc = format!("data-{victim}");
    let pvcs = s.api::<PersistentVolumeClaim>();
    let mut stuck_since: Option<Instant> = None;
    s.wait(
        &format!("{victim} back on a new volume as a new node"),
        CHANGE,
        async || {
            let pod = s
                .api::<Pod>()
                .get_opt(victim)
                .await
                .map_err(|e| e.to_string())?;
            let claim = pvcs.get_opt(&pvc).await.map_err(|e| e.to_string())?;
            let new_claim = claim
                .as_ref()
                .is_some_and(|c| c.metadata.uid.as_deref() != Some(old_pvc_uid));
            let Some(pod) = pod else {
                return Err("no pod".into());
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if deleted_uids.contains(&uid) {
                return Err("the old pod is still terminating".into());
            }
            let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
            if pending && !new_claim {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    s.log(format_args!(
                        "{victim} is Pending without a new PVC {pvc}: deleting the pod once more"
                    ));
                    s.api::<Pod>()
                        .delete(victim, &DeleteParams::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    deleted_uids.push(uid);
                    stuck_since = None;
                }
                return Err(format!("{victim} Pending, PVC {pvc} not recreated yet"));
            }
            stuck_since = None;
            let st =
                s.kv.status(&Target::pod(victim))
                    .await
                    .map_err(|e| e.to_string())?;
            if st.id == old_id {
                return Err(format!("{victim} still reports the old id {old_id}"));
            }
            Ok(st.id)
        },
    )
    .await
}

/// A pod loses its volume (pod and PVC deleted): the pod comes back as a new,
/// empty node; the operator removes the stale member and adds the new node,
/// which catches up. Writes go on throughout and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_volume_member_is_replaced_and_catches_up() -> anyhow::Result<()> {
    Scenario::run("lost-volume", async |s| {
        let c = kvc::create(s, &kvc::example()?, FORM).await?;
        let keys = write_keys(s, "kv", "lost", 300).await?;
        let victim = c
            .followers()
            .into_iter()
            .max()
            .ok_or_else(|| anyhow::anyhow!("no follower"))?;
        let old_id = c.ids[&victim];
        let pvc = format!("data-{victim}");
        let pvcs = s.api::<PersistentVolumeClaim>();
        let old_pvc_uid = pvcs.get(&pvc).await?.metadata.uid.unwrap_or_default();
        let stream = WriteStream::start(&s.kv, &Target::service("kv"), "lost-stream", 1);

        pvcs.delete(&pvc, &DeleteParams::default()).await?;
        s.log(format_args!(
            "deleted PVC {pvc} (stays Terminating while {victim} uses it)"
        ));
        let t0 = Instant::now();
        let mut deleted_uids = vec![delete_pod(s, &victim).await?];
        let new_id =
            back_on_new_volume(s, &victim, old_id, &old_pvc_uid, &mut deleted_uids).await?;
        s.record("volume lost -> pod serving as a new node", t0.elapsed());
        s.log(format_args!(
            "{victim}: node {old_id} replaced by node {new_id}"
        ));
        let c2 = kvc::wait_converged(s, "kv", 3, CHANGE).await?;
        s.record(
            "volume lost -> replaced member is a healthy voter",
            t0.elapsed(),
        );
        anyhow::ensure!(
            c2.ids[&victim] == new_id,
            "{victim} is member {} in the end, want {new_id}",
            c2.ids[&victim]
        );
        anyhow::ensure!(
            !c2.ids.values().any(|id| *id == old_id),
            "the stale id {old_id} is still a member"
        );
        for (pod, id) in &c.ids {
            if *pod != victim {
                anyhow::ensure!(c2.ids[pod] == *id, "{pod} changed id");
            }
        }
        let claim = pvcs.get(&pvc).await?;
        anyhow::ensure!(
            claim.metadata.uid.as_deref() != Some(old_pvc_uid.as_str()),
            "{victim} runs on the old PVC {pvc}"
        );
        wait_pod_has(s, &victim, &keys).await?;
        let report = stream.stop().await?;
        s.log(format_args!(
            "write stream: {} acknowledged, {} failed attempts, longest pause {:.1}s",
            report.acked.len(),
            report.failed_attempts,
            report.longest_pause().as_secs_f64()
        ));
        check_keys(s, "kv", &keys).await?;
        check_keys(s, "kv", &report.acked).await
    })
    .await
}

/// Two of three volumes are lost at once (PVCs and pods deleted): the
/// quorum is gone for good. The operator reports it (`QuorumLost`, naming
/// the survivor) and does nothing until the KvCluster is annotated
/// `raftkv.io/force-new-cluster`; then the survivor becomes the only voter,
/// keeps its node id and data, and the two new nodes join it. Every write
/// acknowledged before the loss is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_recovers_from_the_survivor_when_annotated() -> anyhow::Result<()> {
    Scenario::run("disaster-recovery", async |s| {
        let c = kvc::create(s, &kvc::example()?, FORM).await?;
        let keys = write_keys(s, "kv", "dr", 300).await?;
        for pod in c.ids.keys() {
            wait_pod_has(s, pod, &keys).await?;
        }
        // The leader and one follower go: the survivor is a follower that
        // sees no leader.
        let survivor = c
            .followers()
            .into_iter()
            .min()
            .ok_or_else(|| anyhow::anyhow!("no follower"))?;
        let survivor_id = c.ids[&survivor];
        let victims: Vec<String> = c.ids.keys().filter(|p| **p != survivor).cloned().collect();
        let pvcs = s.api::<PersistentVolumeClaim>();
        let mut old = Vec::new();
        for victim in &victims {
            let pvc = format!("data-{victim}");
            let uid = pvcs.get(&pvc).await?.metadata.uid.unwrap_or_default();
            pvcs.delete(&pvc, &DeleteParams::default()).await?;
            old.push((victim, uid));
        }
        let t0 = Instant::now();
        let mut deleted_uids = Vec::new();
        for victim in &victims {
            deleted_uids.push(delete_pod(s, victim).await?);
        }
        for (victim, pvc_uid) in &old {
            back_on_new_volume(s, victim, c.ids[*victim], pvc_uid, &mut deleted_uids).await?;
        }
        let message = s
            .wait(
                "Degraded=True/QuorumLost naming the survivor",
                CHANGE,
                async || {
                    let (_, st) = kvc::status(s, "kv").await?;
                    match st.condition("Degraded") {
                        Some(c)
                            if c.status == "True" && c.reason.as_deref() == Some("QuorumLost") =>
                        {
                            let message = c.message.clone().unwrap_or_default();
                            if message.contains(&format!("from {survivor} (node {survivor_id}")) {
                                Ok(message)
                            } else {
                                Err(format!(
                                    "QuorumLost without the survivor {survivor}: {message}"
                                ))
                            }
                        }
                        _ => Err(st.describe()),
                    }
                },
            )
            .await?;
        s.record("volumes lost -> QuorumLost reported", t0.elapsed());
        s.log(format_args!("Degraded: {message}"));

        let t1 = Instant::now();
        let annotate =
            json!({"metadata": {"annotations": {"raftkv.io/force-new-cluster": "e2e-1"}}});
        kvc::api(s)
            .patch(
                "kv",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&annotate),
            )
            .await?;
        let c2 = kvc::wait_converged(s, "kv", 3, CHANGE).await?;
        let recovery_took = t1.elapsed();
        s.record("annotated -> 3 healthy voters", recovery_took);
        s.log(format_args!(
            "recovery took {:.1}s",
            recovery_took.as_secs_f64()
        ));
        anyhow::ensure!(
            c2.ids[&survivor] == survivor_id,
            "{survivor} is member {} after the recovery, want {survivor_id}",
            c2.ids[&survivor]
        );
        let (object, _) = kvc::status(s, "kv").await.map_err(|e| anyhow::anyhow!(e))?;
        let recovery = &object.data["status"]["recovery"];
        let node_id = survivor_id.to_string();
        anyhow::ensure!(
            recovery["request"] == "e2e-1" && recovery["nodeId"] == node_id.as_str(),
            "status.recovery: {recovery}"
        );
        check_keys(s, "kv", &keys).await
    })
    .await
}

/// The operator pod is deleted in the middle of a scale-up: its replacement
/// takes the lease and finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_during_scale_up_converges() -> anyhow::Result<()> {
    Scenario::run("operator-restart", async |s| {
        let c3 = kvc::create(s, &kvc::example()?, FORM).await?;
        let keys = write_keys(s, "kv", "restart", 200).await?;
        let old: Vec<Pod> = operator::pods(&s.client).await?;
        anyhow::ensure!(
            !old.is_empty(),
            "no operator pod found ({} in {})",
            operator::selector(),
            operator::namespace()
        );
        let old_uids: Vec<String> = old.iter().filter_map(|p| p.metadata.uid.clone()).collect();

        let t0 = Instant::now();
        kvc::scale(s, "kv", 5).await?;
        s.log("scaled to 5");
        let pods = kvc::pod_names("kv", 5);
        let mid = s
            .wait(
                "the scale-up to be under way (a 4th member)",
                CHANGE,
                async || match kvc::node_leader(&s.kv, &pods).await {
                    Some((_, st))
                        if st.membership.voters.len() + st.membership.learners.len() > 3 =>
                    {
                        Ok(format!(
                            "voters {:?}, learners {:?}",
                            st.membership
                                .voters
                                .iter()
                                .map(|m| &m.info.name)
                                .collect::<Vec<_>>(),
                            st.membership
                                .learners
                                .iter()
                                .map(|m| &m.info.name)
                                .collect::<Vec<_>>()
                        ))
                    }
                    Some((_, st)) => Err(format!("{} members", st.membership.voters.len())),
                    None => Err("no leader".into()),
                },
            )
            .await?;
        let sts = kvc::statefulset_replicas(s, "kv").await?;
        s.log(format_args!(
            "restarting the operator now: StatefulSet {sts:?}, {mid}"
        ));
        let api = operator::pods_api(&s.client);
        for p in &old {
            api.delete(&p.name_any(), &DeleteParams::default()).await?;
            s.log(format_args!("deleted operator pod {}", p.name_any()));
        }
        let t1 = Instant::now();
        s.wait(
            "a new operator pod, ready and holding the lease",
            CHANGE,
            async || {
                let pods = operator::pods(&s.client).await.map_err(|e| e.to_string())?;
                let fresh: Vec<String> = pods
                    .iter()
                    .filter(|p| {
                        !old_uids.contains(p.metadata.uid.as_ref().unwrap_or(&String::new()))
                            && p.metadata.deletion_timestamp.is_none()
                            && kvc::pod_ready(p)
                    })
                    .map(|p| p.name_any())
                    .collect();
                let holder = operator::lease_holder(&s.client)
                    .await
                    .map_err(|e| e.to_string())?;
                match holder {
                    Some(h) if fresh.contains(&h) => Ok(()),
                    _ => Err(format!("ready new pods {fresh:?}, lease holder {holder:?}")),
                }
            },
        )
        .await?;
        s.record(
            "operator pod deleted -> new operator holds the lease",
            t1.elapsed(),
        );
        let c5 = kvc::wait_converged(s, "kv", 5, CHANGE).await?;
        s.record("scale 3 -> 5 with an operator restart", t0.elapsed());
        for (pod, id) in &c3.ids {
            anyhow::ensure!(c5.ids.get(pod) == Some(id), "{pod} changed id");
        }
        check_keys(s, "kv", &keys).await
    })
    .await
}

/// The API server itself refuses invalid KvClusters (the CRD's schema); valid
/// ones at the limits pass (server-side dry run), so the refusals are not an
/// accident of a broken setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_rejected_by_the_api_server() -> anyhow::Result<()> {
    Scenario::run("invalid", async |s| {
        let api = kvc::api(s);
        let object = |name: &str, change: serde_json::Value| -> anyhow::Result<DynamicObject> {
            let mut m = kvc::example_named(name, change)?;
            m["metadata"]["namespace"] = json!(s.namespace);
            Ok(serde_json::from_value(m)?)
        };
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        for (what, change) in [
            ("the example", json!({})),
            ("replicas 1", json!({"replicas": 1})),
            ("replicas 9", json!({"replicas": 9})),
            ("storage.size 500Mi", json!({"storage": {"size": "500Mi"}})),
        ] {
            api.create(&dry_run, &object("ok", change)?)
                .await
                .map_err(|e| anyhow::anyhow!("{what} must be accepted (dry run): {e}"))?;
            s.log(format_args!("accepted (dry run): {what}"));
        }
        let bad = [
            ("replicas 0", json!({"replicas": 0}), "spec.replicas"),
            ("replicas 12", json!({"replicas": 12}), "spec.replicas"),
            (
                "storage.size \"lots\"",
                json!({"storage": {"size": "lots"}}),
                "spec.storage.size",
            ),
            (
                "resources.requests.cpu \"two\"",
                json!({"resources": {"requests": {"cpu": "two"}}}),
                "spec.resources.requests",
            ),
            (
                "pvcRetentionPolicy.whenScaled \"Sometimes\"",
                json!({"pvcRetentionPolicy": {"whenScaled": "Sometimes"}}),
                "spec.pvcRetentionPolicy.whenScaled",
            ),
        ];
        for (i, (what, change, field)) in bad.into_iter().enumerate() {
            match api
                .create(
                    &PostParams::default(),
                    &object(&format!("bad-{i}"), change)?,
                )
                .await
            {
                Ok(_) => anyhow::bail!("the API server accepted {what}"),
                Err(kube::Error::Api(status)) => {
                    anyhow::ensure!(
                        status.code == 422 && status.message.contains(field),
                        "{what}: expected 422 Invalid naming {field}, got {} {}: {}",
                        status.code,
                        status.reason,
                        status.message
                    );
                    s.log(format_args!("rejected {what}: {}", status.message));
                }
                Err(e) => anyhow::bail!("{what}: {e}"),
            }
        }
        let left = api.list(&ListParams::default()).await?;
        anyhow::ensure!(
            left.items.is_empty(),
            "KvClusters exist after the refusals: {:?}",
            left.items.iter().map(|k| k.name_any()).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await
}

/// Deleting a KvCluster removes everything it owns; PVCs stay or go as
/// `whenDeleted` says, and retained volumes bring the data back when the
/// KvCluster is created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_kvcluster_removes_what_it_owned() -> anyhow::Result<()> {
    Scenario::run("delete", async |s| {
        let kv_manifest = kvc::example()?;
        anyhow::ensure!(
            kvc::policy(&kv_manifest).1 == "Retain",
            "the example no longer sets whenDeleted: Retain"
        );
        let solo = kvc::example_named(
            "solo",
            json!({"replicas": 1, "pvcRetentionPolicy": {"whenDeleted": "Delete"}}),
        )?;
        kvc::apply(s, &solo).await?;
        let c = kvc::create(s, &kv_manifest, FORM).await?;
        kvc::wait_converged(s, "solo", 1, FORM).await?;
        let keys = write_keys(s, "kv", "kept", 100).await?;
        let pdbs = pdb_api(s).await;
        anyhow::ensure!(
            pdbs.get_opt("kv").await?.is_some() && pdbs.get_opt("solo").await?.is_some(),
            "PodDisruptionBudgets missing"
        );

        let t0 = Instant::now();
        for name in ["kv", "solo"] {
            kvc::api(s).delete(name, &DeleteParams::default()).await?;
        }
        s.log("deleted KvClusters kv and solo");
        s.wait(
            "both KvClusters gone (finalizer done)",
            CHANGE,
            async || {
                let left = kvc::api(s)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                if left.items.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{:?}",
                        left.items
                            .iter()
                            .map(|k| (k.name_any(), k.finalizers().to_vec()))
                            .collect::<Vec<_>>()
                    ))
                }
            },
        )
        .await?;
        s.wait(
            "StatefulSets, Services, PodDisruptionBudgets and pods gone",
            CHANGE,
            async || {
                let e = |e: kube::Error| e.to_string();
                let mut left = Vec::new();
                let sts = s
                    .api::<k8s_openapi::api::apps::v1::StatefulSet>()
                    .list(&ListParams::default())
                    .await
                    .map_err(e)?;
                left.extend(
                    sts.items
                        .iter()
                        .map(|o| format!("statefulset/{}", o.name_any())),
                );
                let svcs = s
                    .api::<Service>()
                    .list(&ListParams::default())
                    .await
                    .map_err(e)?;
                left.extend(
                    svcs.items
                        .iter()
                        .map(|o| format!("service/{}", o.name_any())),
                );
                let budgets = pdbs.list(&ListParams::default()).await.map_err(e)?;
                left.extend(
                    budgets
                        .items
                        .iter()
                        .map(|o| format!("pdb/{}", o.name_any())),
                );
                let pods = s
                    .api::<Pod>()
                    .list(&ListParams::default())
                    .await
                    .map_err(e)?;
                left.extend(pods.items.iter().map(|o| format!("pod/{}", o.name_any())));
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left.join(", "))
                }
            },
        )
        .await?;
        s.record("KvClusters deleted -> owned objects gone", t0.elapsed());
        s.wait(
            "PVC data-solo-0 deleted (whenDeleted: Delete), data-kv-* kept (Retain)",
            CHANGE,
            async || {
                let pvcs = pvc_names(s).await?;
                if pvcs == ["data-kv-0", "data-kv-1", "data-kv-2"] {
                    Ok(())
                } else {
                    Err(format!("PVCs {pvcs:?}"))
                }
            },
        )
        .await?;

        // root's password stays with the volumes that hold it.
        let root = s
            .api::<k8s_openapi::api::core::v1::Secret>()
            .get_opt(&creds::root_secret("kv"))
            .await?;
        anyhow::ensure!(
            root.is_some(),
            "kv-root went with the KvCluster, its volumes stay"
        );

        // Retained volumes are the cluster: the same KvCluster again finds it.
        let t1 = Instant::now();
        let again = kvc::create(s, &kv_manifest, FORM).await?;
        s.record(
            "KvCluster re-created on retained volumes -> 3 healthy voters",
            t1.elapsed(),
        );
        anyhow::ensure!(
            again.cluster_id == c.cluster_id,
            "re-created cluster has id {}, the retained volumes hold {}",
            again.cluster_id,
            c.cluster_id
        );
        anyhow::ensure!(
            again.ids == c.ids,
            "node ids changed: {:?} -> {:?}",
            c.ids,
            again.ids
        );
        check_keys(s, "kv", &keys).await
    })
    .await
}

/// The pod's IP and the node certificate the cluster's Secret holds for it.
async fn pod_ip(s: &Scenario, pod: &str) -> anyhow::Result<std::net::IpAddr> {
    let ip = s
        .api::<Pod>()
        .get(pod)
        .await?
        .status
        .and_then(|st| st.pod_ip)
        .ok_or_else(|| anyhow::anyhow!("{pod} has no IP"))?;
    Ok(ip.parse()?)
}

async fn secret_certificate(s: &Scenario, cluster: &str, pod: &str) -> Result<Vec<u8>, String> {
    let data = s.kv.creds().secret(&creds::tls_secret(cluster)).await?;
    let pem = data
        .get(&format!("{pod}.crt"))
        .ok_or_else(|| format!("no {pod}.crt in the Secret"))?;
    tls::pem_to_der(&String::from_utf8_lossy(pem)).ok_or_else(|| format!("{pod}.crt is no PEM"))
}

/// kvctl from the build the suite runs with (tests/e2e/run.sh builds the
/// workspace into `$CARGO_TARGET_DIR`).
fn kvctl_path() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/raftkv/target")
        });
    target.join("debug/kvctl")
}

/// Runs kvctl with `args`; (success, stdout + stderr).
async fn kvctl(args: &[&str]) -> anyhow::Result<(bool, String)> {
    kvctl_env(args, &[]).await
}

/// kvctl with extra environment (`KVCTL_USER`, `KVCTL_PASSWORD`: a
/// password never goes on a command line).
async fn kvctl_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<(bool, String)> {
    let out = tokio::process::Command::new(kvctl_path())
        .args(args)
        .env_remove("KVCTL_ENDPOINTS")
        .envs(env.iter().copied())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("running {}: {e}", kvctl_path().display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text.trim().to_owned()))
}

/// TLS is on by default. The operator re-issues the node certificates when
/// their Secret goes (what an administrator does to force a renewal): under
/// a stream of writes every node starts serving its new certificate without
/// a restart and no write fails. Then kvctl, given the operator's client
/// Secret and a loopback relay to a pod (what `kubectl port-forward` is),
/// verifies the node and reads and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_renewal_under_writes_fails_no_request() -> anyhow::Result<()> {
    Scenario::run("renewal", async |s| {
        let c = kvc::create(s, &kvc::example()?, FORM).await?;
        let pods = kvc::pod_names("kv", 3);
        let sts = s.api::<StatefulSet>().get("kv").await?;
        let args: Vec<String> = sts
            .spec
            .and_then(|sp| sp.template.spec)
            .map(|p| p.containers.into_iter().flat_map(|c| c.args.unwrap_or_default()).collect())
            .unwrap_or_default();
        for flag in ["--cert-file=", "--key-file=", "--trusted-ca-file=", "--peer-cert-file=", "--peer-key-file=", "--peer-trusted-ca-file="] {
            anyhow::ensure!(args.iter().any(|a| a.starts_with(flag)), "kvnode runs without {flag}: {args:?}");
        }
        anyhow::ensure!(
            args.iter().any(|a| a.starts_with("--advertise-client-url=https://")),
            "advertised client URL is not https: {args:?}"
        );
        // The API server's https proxy form reaches the node.
        let plain = s
            .kv
            .call(&Target::pod("kv-0"), http::Method::GET, "/readyz", Vec::new(), kv::Auth::Anonymous)
            .await;
        anyhow::ensure!(plain.is_ok(), "https through the proxy: {plain:?}");

        let ip0 = pod_ip(s, "kv-0").await?;
        let direct = tls::reachable(std::net::SocketAddr::new(ip0, kv::CLIENT_PORT)).await;
        if !direct {
            s.log("pod IPs are not reachable from here: the served certificates and kvctl are not checked");
        }
        let mut before = std::collections::BTreeMap::new();
        for pod in &pods {
            let stored = secret_certificate(s, "kv", pod).await.map_err(anyhow::Error::msg)?;
            if direct {
                let served = tls::served_certificate(&s.kv, pod, kv::CLIENT_PORT, false)
                    .await
                    .map_err(anyhow::Error::msg)?;
                anyhow::ensure!(served == stored, "{pod} serves a certificate other than its Secret's");
                let peer = tls::served_certificate(&s.kv, pod, tls::PEER_PORT, true)
                    .await
                    .map_err(anyhow::Error::msg)?;
                anyhow::ensure!(peer == stored, "{pod}'s raft port serves another certificate");
            }
            before.insert(pod.clone(), stored);
        }

        let stream = WriteStream::start(&s.kv, &Target::service("kv"), "renew", 2);
        s.wait("the write stream to get going (50 acknowledged writes)", WRITE_WITHIN, async || {
            let n = stream.acked_count();
            if n >= 50 { Ok(()) } else { Err(format!("{n} acknowledged")) }
        })
        .await?;
        let secrets = s.api::<k8s_openapi::api::core::v1::Secret>();
        secrets.delete(&creds::tls_secret("kv"), &DeleteParams::default()).await?;
        let deleted_at = Instant::now();
        s.log("deleted Secret kv-tls");
        s.wait("the operator to issue new node certificates", CHANGE, async || {
            let mut renewed = 0;
            for pod in &pods {
                match secret_certificate(s, "kv", pod).await {
                    Ok(cert) if cert != before[pod] => renewed += 1,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            if renewed == pods.len() { Ok(()) } else { Err(format!("{renewed} of {} renewed", pods.len())) }
        })
        .await?;
        s.record("MEASURED Secret deleted -> new certificates in it", deleted_at.elapsed());
        if direct {
            s.wait("every node to serve its new certificate on new connections", CHANGE, async || {
                let mut stale = Vec::new();
                for pod in &pods {
                    let stored = secret_certificate(s, "kv", pod).await?;
                    for (port, identity) in [(kv::CLIENT_PORT, false), (tls::PEER_PORT, true)] {
                        match tls::served_certificate(&s.kv, pod, port, identity).await {
                            Ok(served) if served == stored => {}
                            Ok(_) => stale.push(format!("{pod}:{port}: old certificate")),
                            Err(e) => stale.push(format!("{pod}:{port}: {e}")),
                        }
                    }
                }
                if stale.is_empty() { Ok(()) } else { Err(stale.join("; ")) }
            })
            .await?;
            s.record("MEASURED Secret deleted -> nodes serve the new certificates", deleted_at.elapsed());
        }
        let renewed_at = Instant::now();
        let base = stream.acked_count();
        s.wait("writes to continue (100 more acknowledged on the new certificates)", WRITE_WITHIN, async || {
            let n = stream.acked_count() - base;
            if n >= 100 { Ok(()) } else { Err(format!("{n} acknowledged")) }
        })
        .await?;
        let report = stream.stop().await?;
        s.log(format_args!(
            "write stream: {} acknowledged ({} after the renewal), {} failed attempts (last: {:?})",
            report.acked.len(),
            report.acked_after(renewed_at),
            report.failed_attempts,
            report.last_error
        ));
        s.record("longest pause between acknowledged writes", report.longest_pause());
        anyhow::ensure!(
            report.failed_attempts == 0,
            "{} writes failed during the renewal, last: {:?}",
            report.failed_attempts,
            report.last_error
        );
        check_keys(s, "kv", &report.acked).await?;
        converged_with_same_ids(s, &c).await?;
        for pod in &pods {
            let restarts: i32 = s
                .api::<Pod>()
                .get(pod)
                .await?
                .status
                .and_then(|st| st.container_statuses)
                .into_iter()
                .flatten()
                .map(|cs| cs.restart_count)
                .sum();
            anyhow::ensure!(restarts == 0, "{pod} restarted {restarts} times");
        }

        if !direct {
            return Ok(());
        }
        // kvctl with the operator's client Secret, through a relay on
        // localhost (a name every node certificate carries).
        let dir = std::env::temp_dir().join(format!("{}-kvctl", s.namespace));
        std::fs::create_dir_all(&dir)?;
        let data = s.kv.creds().secret(&creds::client_secret("kv")).await.map_err(anyhow::Error::msg)?;
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            let bytes = data.get(key).ok_or_else(|| anyhow::anyhow!("kv-operator-client has no {key}"))?;
            std::fs::write(dir.join(key), bytes)?;
        }
        let relay = tls::Relay::start(std::net::SocketAddr::new(ip0, kv::CLIENT_PORT)).await?;
        let endpoint = format!("https://localhost:{}", relay.port);
        let file = |k: &str| dir.join(k).display().to_string();
        let (ca, cert, key) = (file("ca.crt"), file("tls.crt"), file("tls.key"));
        let tls_args = ["--endpoints", &endpoint, "--cacert", &ca, "--cert", &cert, "--key", &key];
        let run = async |extra: &[&str]| {
            let args: Vec<&str> = tls_args.iter().copied().chain(extra.iter().copied()).collect();
            kvctl(&args).await
        };
        let (ok, out) = run(&["put", "kvctl-key", "from kvctl"]).await?;
        anyhow::ensure!(ok, "kvctl put: {out}");
        let (ok, out) = run(&["get", "kvctl-key"]).await?;
        anyhow::ensure!(ok && out.contains("from kvctl"), "kvctl get: {out}");
        let (ok, out) = run(&["status"]).await?;
        anyhow::ensure!(ok, "kvctl status: {out}");
        // Without the CA, the node's certificate is not trusted.
        let (ok, out) = kvctl(&["--endpoints", &endpoint, "get", "kvctl-key"]).await?;
        anyhow::ensure!(!ok, "kvctl without --cacert succeeded: {out}");
        s.log(format_args!("kvctl via {endpoint} with the kv-operator-client Secret: put, get, status"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    })
    .await
}

/// `spec.auth` is on by default: the operator makes root (password in
/// Secret `kv-root`) and turns auth on. Then a request without credentials
/// is 401, a user without the root role may not change the membership
/// (403), and root may, by token through the API server's proxy
/// (`x-raftkv-token`), by the operator's client certificate, and with
/// kvctl given kv-root's password through a real port-forward, through
/// which the web console's page and cluster view also work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_on_and_refuses_strangers() -> anyhow::Result<()> {
    Scenario::run("auth", async |s| {
        let t0 = Instant::now();
        kvc::create(s, &kvc::example()?, FORM).await?;
        s.wait("status.auth Enabled", CHANGE, async || {
            let (_, st) = kvc::status(s, "kv").await?;
            match st.auth.as_deref() {
                Some("Enabled") => Ok(()),
                other => Err(format!("auth {other:?}; {}", st.describe())),
            }
        })
        .await?;
        s.record("MEASURED apply -> auth Enabled", t0.elapsed());
        let root = s.kv.creds().secret(&creds::root_secret("kv")).await.map_err(anyhow::Error::msg)?;
        let text = |k: &str| String::from_utf8_lossy(root.get(k).map(Vec::as_slice).unwrap_or_default()).into_owned();
        anyhow::ensure!(text("username") == "root", "kv-root username {:?}", text("username"));
        let password = text("password");
        anyhow::ensure!(
            password.len() == 32 && password.chars().all(|c| c.is_ascii_alphanumeric()),
            "kv-root password is not 32 letters and digits"
        );

        let service = Target::service("kv");
        let anonymous = |method: http::Method, path: &'static str, body: &'static str| {
            s.kv.call(&service, method, path, body.as_bytes().to_vec(), kv::Auth::Anonymous)
        };
        let refused = |what: &str, r: Result<bytes::Bytes, kv::KvError>, status: u16, code: ErrorCode| match r {
            Err(e) if e.status == Some(status) && e.code == Some(code) => {
                s.log(format_args!("{what}: refused as expected ({})", e.message));
                Ok(())
            }
            other => Err(anyhow::anyhow!("{what}: want {status} {code:?}, got {other:?}")),
        };
        refused("anonymous PUT", anonymous(http::Method::PUT, "/v1/kv/open", "x").await, 401, ErrorCode::Unauthenticated)?;
        refused("anonymous GET", anonymous(http::Method::GET, "/v1/kv/open", "").await, 401, ErrorCode::Unauthenticated)?;
        let learner = r#"{"id":4242,"name":"intruder","peer_url":"https://intruder:7380","client_url":"https://intruder:7379"}"#;
        refused(
            "anonymous add-learner",
            anonymous(http::Method::POST, "/v1/cluster/learners", learner).await,
            401,
            ErrorCode::Unauthenticated,
        )?;
        let health = anonymous(http::Method::GET, "/readyz", "").await;
        anyhow::ensure!(health.is_ok(), "/readyz must stay open: {health:?}");

        // A user without the root role: may authenticate, may not touch
        // the membership.
        let user = r#"{"name":"alice","password":"alice-password-1","roles":[]}"#;
        s.kv.call(&service, http::Method::POST, "/v1/auth/users", user.as_bytes().to_vec(), kv::Auth::Root).await?;
        let alice = s.kv.authenticate(&service, "alice", "alice-password-1").await?;
        refused(
            "alice's add-learner",
            s.kv.call(&service, http::Method::POST, "/v1/cluster/learners", learner.as_bytes().to_vec(), kv::Auth::Token(alice))
                .await,
            403,
            ErrorCode::PermissionDenied,
        )?;
        let bad = s.kv.authenticate(&service, "root", "not-the-password").await;
        anyhow::ensure!(
            bad.as_ref().is_err_and(|e| e.status == Some(401)),
            "a wrong password: {bad:?}"
        );

        // root, as the harness is: writes and reads work, membership is
        // intact.
        let keys = write_keys(s, "kv", "auth", 100).await?;
        check_keys(s, "kv", &keys).await?;
        let c = kvc::wait_converged(s, "kv", 3, CHANGE).await?;
        anyhow::ensure!(!c.ids.values().any(|id| *id == 4242), "the intruder joined: {:?}", c.ids);

        // What a user does: `kubectl port-forward` to a pod (API server ->
        // kubelet -> containerd), then kvctl and the web console on
        // localhost. Without a client certificate kvctl is a stranger.
        {
            let dir = std::env::temp_dir().join(format!("{}-kvctl", s.namespace));
            std::fs::create_dir_all(&dir)?;
            let data = s.kv.creds().secret(&creds::client_secret("kv")).await.map_err(anyhow::Error::msg)?;
            for key in ["ca.crt", "tls.crt", "tls.key"] {
                std::fs::write(dir.join(key), data.get(key).cloned().unwrap_or_default())?;
            }
            let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.namespace);
            let forward = tls::PortForward::start(pods, "kv-0", kv::CLIENT_PORT).await?;
            let endpoint = format!("https://localhost:{}", forward.port);
            let ca = dir.join("ca.crt").display().to_string();
            let (cert, key) = (dir.join("tls.crt").display().to_string(), dir.join("tls.key").display().to_string());
            let (ok, out) = kvctl(&["--endpoints", &endpoint, "--cacert", &ca, "get", "auth-000000"]).await?;
            anyhow::ensure!(!ok, "kvctl without credentials read a key: {out}");
            let (ok, out) =
                kvctl(&["--endpoints", &endpoint, "--cacert", &ca, "--cert", &cert, "--key", &key, "get", "auth-000000"]).await?;
            anyhow::ensure!(ok, "kvctl with the root client certificate: {out}");
            // The kv-root Secret as a user has it: name and password, TLS
            // verified with the CA; kvctl trades them for a token.
            let as_root = [("KVCTL_USER", "root"), ("KVCTL_PASSWORD", password.as_str())];
            let (ok, out) =
                kvctl_env(&["--endpoints", &endpoint, "--cacert", &ca, "put", "kvctl-root", "by-password"], &as_root).await?;
            anyhow::ensure!(ok, "kvctl with kv-root's password: {out}");
            let (ok, out) = kvctl_env(&["--endpoints", &endpoint, "--cacert", &ca, "get", "kvctl-root"], &as_root).await?;
            anyhow::ensure!(ok && out == "by-password", "kvctl get with kv-root's password: {out}");
            let wrong = [("KVCTL_USER", "root"), ("KVCTL_PASSWORD", "not-the-password")];
            let (ok, out) = kvctl_env(&["--endpoints", &endpoint, "--cacert", &ca, "get", "kvctl-root"], &wrong).await?;
            anyhow::ensure!(
                !ok && out.lines().count() == 1 && out.contains("authenticating as \"root\"") && !out.contains("not-the-password"),
                "kvctl with a wrong password must fail in one line: {out}"
            );
            // The web console through the same port-forward: its page, then
            // what it shows after signing in as root.
            let ca_pem = std::fs::read(dir.join("ca.crt"))?;
            let http = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
                .build()?;
            let page = http.get(format!("{endpoint}/ui/")).send().await?;
            anyhow::ensure!(page.status().is_success(), "GET /ui/: {}", page.status());
            anyhow::ensure!(
                page.headers().contains_key("content-security-policy"),
                "the console page has no CSP: {:?}",
                page.headers()
            );
            let html = page.text().await?;
            anyhow::ensure!(html.contains("console.js"), "not the console page: {html}");
            let login: serde_json::Value = http
                .post(format!("{endpoint}/v1/auth/authenticate"))
                .json(&json!({"name": "root", "password": password}))
                .send()
                .await?
                .json()
                .await?;
            let token = login["token"].as_str().unwrap_or_default();
            let health: serde_json::Value = http
                .get(format!("{endpoint}/v1/cluster/health"))
                .header("x-raftkv-token", token)
                .send()
                .await?
                .json()
                .await?;
            let members = health["members"].as_array().cloned().unwrap_or_default();
            anyhow::ensure!(
                members.len() == 3 && members.iter().all(|m| m["healthy"] == true && m["ready"] == true),
                "the console's cluster view through the port-forward: {health}"
            );
            s.log("kubectl port-forward to kv-0: kvctl with root's client certificate and kv-root's password; the console page and its cluster view as root");
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    })
    .await
}

const BACKUP_BUCKET: &str = "raftkv-e2e";

fn kvbackup_api(s: &Scenario) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "raftkv.io".into(),
        version: "v1alpha1".into(),
        api_version: "raftkv.io/v1alpha1".into(),
        kind: "KvBackup".into(),
        plural: "kvbackups".into(),
    };
    Api::namespaced_with(s.client.clone(), &s.namespace, &resource)
}

/// Warning or Normal events of `reason` about KvCluster `name`.
/// Every key of `keys` reads back through `service`, and none of the 5
/// keys under `after` (written after the backup) exists there.
async fn holds_exactly_the_backup(
    s: &Scenario,
    service: &str,
    keys: &[String],
    after: &str,
) -> anyhow::Result<()> {
    check_keys(s, service, keys).await?;
    for key in kv::keys(after, 5) {
        let got =
            s.kv.get(&Target::service(service), &key, Consistency::Linearizable)
                .await
                .map_err(|e| anyhow::anyhow!("reading {key}: {e:?}"))?;
        anyhow::ensure!(
            got.is_none(),
            "{key}, written after the backup, was restored"
        );
    }
    Ok(())
}

/// Applies KvCluster manifest `bad` (1 replica, `fromBackup` naming a
/// damaged backup): a `RestoreFailed` event containing `why` comes, node 0
/// is never initialized; then deletes it.
async fn restore_is_refused(
    s: &Scenario,
    bad: &serde_json::Value,
    why: &str,
) -> anyhow::Result<()> {
    let name = kvc::name_of(bad)?;
    kvc::apply(s, bad).await?;
    let refused = s
        .wait(
            &format!("RestoreFailed event for KvCluster {name}"),
            FORM,
            async || {
                let events = kvc_events(s, &name, "RestoreFailed")
                    .await
                    .map_err(|e| e.to_string())?;
                events
                    .into_iter()
                    .next()
                    .ok_or_else(|| "no event yet".to_owned())
            },
        )
        .await?;
    s.log(format_args!("{name}: {refused}"));
    anyhow::ensure!(refused.contains(why), "RestoreFailed: {refused}");
    let (object, _) = kvc::status(s, &name)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let id = &object.data["status"]["clusterId"];
    anyhow::ensure!(id.is_null(), "a refused restore initialized {id}");
    kvc::api(s).delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

/// Creates KvBackup `name` with `spec` and returns its status once it has
/// succeeded; the timeout's message shows the last status seen.
async fn backup_succeeded(
    s: &Scenario,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let backup: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "raftkv.io/v1alpha1", "kind": "KvBackup",
        "metadata": {"name": name},
        "spec": spec,
    }))?;
    kvbackup_api(s)
        .create(&PostParams::default(), &backup)
        .await?;
    s.wait(&format!("KvBackup {name} Succeeded"), CHANGE, async || {
        let b = kvbackup_api(s).get(name).await.map_err(|e| e.to_string())?;
        let st = b.data["status"].clone();
        match st["phase"].as_str() {
            Some("Succeeded") => Ok(st),
            Some("Failed") => Err(format!("failed: {st}")),
            _ => Err(st.to_string()),
        }
    })
    .await
}

async fn kvc_events(s: &Scenario, name: &str, reason: &str) -> anyhow::Result<Vec<String>> {
    Ok(s.api::<k8s_openapi::api::core::v1::Event>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("KvCluster")
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect())
}

/// Backups into a real S3-compatible server (moto, on the host's pod
/// network address): a KvBackup streams the whole store into the bucket
/// with its figures in status; a new KvCluster with
/// `bootstrap.fromBackup` gets back every key of it (and nothing written
/// after), its root password the one in its own Secret; a corrupt object
/// is refused and leaves the new cluster empty; a `* * * * *` schedule with
/// `keep: 1` creates backups every minute and retention deletes the older
/// one together with its object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_to_s3_restore_into_a_new_cluster_and_keep_the_newest() -> anyhow::Result<()> {
    Scenario::run("backup", async |s| {
        let s3 = raftkv_e2e::s3::S3::start(&[BACKUP_BUCKET]).await?;
        s.log(format_args!("S3 server (moto) at {}", s3.endpoint));
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": "s3-creds"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": raftkv_e2e::s3::ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": raftkv_e2e::s3::SECRET_KEY,
            },
        }))?;
        s.api().create(&PostParams::default(), &secret).await?;
        let s3_spec = json!({
            "endpoint": s3.endpoint, "bucket": BACKUP_BUCKET, "prefix": "e2e/",
            "credentialsSecret": "s3-creds",
        });
        let manifest = kvc::example_named(
            "kv",
            json!({"backup": {"schedule": "* * * * *", "keep": 1, "destination": {"s3": s3_spec}}}),
        )?;
        let source = kvc::create(s, &manifest, FORM).await?;
        let keys = write_keys(s, "kv", "bk", 300).await?;

        let t0 = Instant::now();
        let status = backup_succeeded(
            s,
            "manual",
            json!({"clusterName": "kv", "destination": {"s3": s3_spec}}),
        )
        .await?;
        s.record("KvBackup created -> Succeeded", t0.elapsed());
        s.log(format_args!("KvBackup manual: {status}"));
        let key = format!("e2e/{}/kv/manual.snap", s.namespace);
        anyhow::ensure!(
            status["location"] == format!("s3://{BACKUP_BUCKET}/{key}").as_str(),
            "location {}",
            status["location"]
        );
        let (revision, size) = (
            status["revision"].as_u64().unwrap_or(0),
            status["sizeBytes"].as_u64().unwrap_or(0),
        );
        anyhow::ensure!(
            revision >= 300 && status["keys"].as_u64() >= Some(300),
            "status {status}"
        );
        anyhow::ensure!(
            status["sha256"].as_str().is_some_and(|h| h.len() == 64),
            "status {status}"
        );
        let object = s3.get(BACKUP_BUCKET, &key).await?;
        anyhow::ensure!(
            object.len() as u64 == size && size > 0,
            "object of {} bytes, status says {size}",
            object.len()
        );
        // Not in the backup: must not appear in the restored cluster.
        write_keys(s, "kv", "after", 5).await?;

        // A damaged object: refused, and the new cluster stays empty.
        let mut damaged = object.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x20;
        s3.put(BACKUP_BUCKET, "e2e/damaged.snap", damaged).await?;
        let bad = kvc::example_named(
            "bad",
            json!({"replicas": 1, "bootstrap": {"fromBackup": {"s3": s3_spec, "key": "e2e/damaged.snap"}}}),
        )?;
        restore_is_refused(s, &bad, "checksum").await?;

        let t1 = Instant::now();
        let restored = kvc::example_named(
            "restored",
            json!({"bootstrap": {"fromBackup": {"kvBackup": "manual"}}}),
        )?;
        let c = kvc::create(s, &restored, FORM).await?;
        s.record("KvCluster from a backup -> 3 healthy voters", t1.elapsed());
        anyhow::ensure!(
            c.cluster_id != source.cluster_id,
            "restored cluster id {} is the source's",
            c.cluster_id
        );
        // Through the Service as root with restored-root's password.
        holds_exactly_the_backup(s, "restored", &keys, "after").await?;
        let steps = kvc_events(s, "restored", "RestoreFromBackup").await?;
        s.log(format_args!("restored: {steps:?} (leader {})", c.leader_pod));

        // The schedule: one backup a minute, the older deleted with its object.
        let t2 = Instant::now();
        let mut seen = BTreeSet::new();
        let prefix = format!("e2e/{}/kv/", s.namespace);
        let kept = s
            .wait(
                "two scheduled backups succeeded, the older one deleted with its object",
                Duration::from_secs(400),
                async || {
                    let list = kvbackup_api(s)
                        .list(&ListParams::default().labels("raftkv.io/cluster=kv,raftkv.io/scheduled=true"))
                        .await
                        .map_err(|e| e.to_string())?;
                    let succeeded: Vec<String> = list
                        .items
                        .iter()
                        .filter(|b| b.data["status"]["phase"] == "Succeeded")
                        .map(|b| b.name_any())
                        .collect();
                    seen.extend(succeeded.iter().cloned());
                    let objects = s3.list(BACKUP_BUCKET, &prefix).await.map_err(|e| e.to_string())?;
                    let want: Vec<String> = ["manual".to_owned()]
                        .iter()
                        .chain(&succeeded)
                        .map(|n| format!("{prefix}{n}.snap"))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if seen.len() >= 2 && list.items.len() == 1 && succeeded.len() == 1 && objects == want {
                        Ok(succeeded[0].clone())
                    } else {
                        Err(format!("seen {seen:?}, now {:?} succeeded {succeeded:?}, objects {objects:?}",
                            list.items.iter().map(|b| b.name_any()).collect::<Vec<_>>()))
                    }
                },
            )
            .await?;
        s.record("schedule: second backup and retention", t2.elapsed());
        s.log(format_args!("retention kept {kept} of {seen:?}"));
        Ok(())
    })
    .await
}

/// The host directory behind claim `claim` (the local class's provisioner,
/// tests/real-node/addons, makes hostPath PVs): where a backup Job's file lands.
async fn claim_dir(s: &Scenario, claim: &str) -> anyhow::Result<std::path::PathBuf> {
    let pvc = s.api::<PersistentVolumeClaim>().get(claim).await?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| anyhow::anyhow!("claim {claim} is not bound"))?;
    let pv = Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(s.client.clone())
        .get(&volume)
        .await?;
    pv.spec
        .and_then(|s| s.host_path)
        .map(|h| h.path.into())
        .ok_or_else(|| anyhow::anyhow!("volume {volume} has no hostPath"))
}

#[tokio::test]
async fn backups_to_a_pvc_run_as_jobs_restore_into_a_new_cluster_and_are_deleted_with_their_file()
-> anyhow::Result<()> {
    Scenario::run("pvc-backup", async |s| {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "backups"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }))?;
        s.api::<PersistentVolumeClaim>().create(&PostParams::default(), &claim).await?;
        let source = kvc::create(s, &kvc::example_named("kv", json!({"replicas": 1}))?, FORM).await?;
        let keys = write_keys(s, "kv", "vol", 200).await?;

        let t0 = Instant::now();
        let status = backup_succeeded(
            s,
            "vol",
            json!({"clusterName": "kv", "deletionPolicy": "Delete",
                   "destination": {"pvc": {"claimName": "backups", "prefix": "e2e/"}}}),
        )
        .await?;
        s.record("KvBackup to a PVC created -> Succeeded", t0.elapsed());
        s.log(format_args!("KvBackup vol: {status}"));
        let path = format!("e2e/{}/kv/vol.snap", s.namespace);
        anyhow::ensure!(
            status["location"] == format!("pvc://backups/{path}").as_str(),
            "location {}",
            status["location"]
        );
        // The file on the volume is a whole snapshot, and the status (read
        // from the Job's termination message) describes it.
        let file = claim_dir(s, "backups").await?.join(&path);
        let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let mut decoder = kvclient::snapshot::Decoder::new();
        decoder.feed(&bytes, |_, _, _| {})?;
        let (header, trailer) = decoder.finish()?;
        anyhow::ensure!(
            status["sizeBytes"].as_u64() == Some(bytes.len() as u64)
                && status["keys"].as_u64() == Some(trailer.records)
                && status["sha256"].as_str() == trailer.sha256.as_deref()
                && status["revision"].as_u64() == header.store_revision
                && trailer.records >= 200,
            "status {status}, file: {} bytes, {} keys, revision {:?}",
            bytes.len(),
            trailer.records,
            header.store_revision
        );
        // The Job is deleted once its result is recorded.
        let jobs = s.api::<k8s_openapi::api::batch::v1::Job>();
        s.wait("the backup Job deleted", CHANGE, async || {
            match jobs.get_opt("vol-backup-1").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_owned()),
            }
        })
        .await?;
        write_keys(s, "kv", "after", 5).await?;

        // A claim that does not exist: the status says what the Job waits for.
        let nowhere: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "raftkv.io/v1alpha1", "kind": "KvBackup",
            "metadata": {"name": "nowhere"},
            "spec": {"clusterName": "kv", "destination": {"pvc": {"claimName": "missing"}}},
        }))?;
        kvbackup_api(s).create(&PostParams::default(), &nowhere).await?;
        let waiting = s
            .wait("KvBackup nowhere names the missing claim", CHANGE, async || {
                let b = kvbackup_api(s).get("nowhere").await.map_err(|e| e.to_string())?;
                let st = &b.data["status"];
                match st["error"].as_str() {
                    Some(e) if e.contains("\"missing\" not found") && st["phase"] == "Running" => Ok(e.to_owned()),
                    _ => Err(st.to_string()),
                }
            })
            .await?;
        s.log(format_args!("nowhere: {waiting}"));
        kvbackup_api(s).delete("nowhere", &DeleteParams::default()).await?;

        // A damaged file: kvctl refuses it before sending; node 0 stays empty.
        let mut damaged = bytes.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x20;
        std::fs::write(file.with_file_name("damaged.snap"), damaged)?;
        let bad = kvc::example_named(
            "bad",
            json!({"replicas": 1, "bootstrap": {"fromBackup": {"pvc": {"claimName": "backups"},
                "key": format!("e2e/{}/kv/damaged.snap", s.namespace)}}}),
        )?;
        restore_is_refused(s, &bad, "checksum").await?;

        let t1 = Instant::now();
        let restored = kvc::example_named(
            "restored",
            json!({"replicas": 1, "bootstrap": {"fromBackup": {"kvBackup": "vol"}}}),
        )?;
        let c = kvc::create(s, &restored, FORM).await?;
        s.record("KvCluster from a PVC backup -> healthy", t1.elapsed());
        anyhow::ensure!(c.cluster_id != source.cluster_id, "restored cluster id is the source's");
        holds_exactly_the_backup(s, "restored", &keys, "after").await?;
        let events = kvc_events(s, "restored", "RestoreFromBackup").await?;
        s.log(format_args!("restored: {events:?}"));
        anyhow::ensure!(
            events.iter().any(|e| e.contains("pvc://backups/")),
            "no RestoreFromBackup event naming the volume: {events:?}"
        );

        // deletionPolicy Delete: the file goes with the KvBackup, by a Job.
        let t2 = Instant::now();
        kvbackup_api(s).delete("vol", &DeleteParams::default()).await?;
        s.wait("KvBackup vol and its file gone", CHANGE, async || {
            let gone = kvbackup_api(s).get_opt("vol").await.map_err(|e| e.to_string())?.is_none();
            match (gone, file.exists()) {
                (true, false) => Ok(()),
                state => Err(format!("(KvBackup gone, file exists) = {state:?}")),
            }
        })
        .await?;
        s.record("KvBackup deleted -> file deleted", t2.elapsed());
        Ok(())
    })
    .await
}
