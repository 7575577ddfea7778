//! Writes: server-side apply of the owned objects and the status with one
//! field manager, PVC deletions, and the membership step sent to the nodes
//! through kvclient.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions,
};
use kvclient::{ClientError, ErrorCode, InitRequest};
use serde::Serialize;
use tracing::info;

use crate::auth::{self, Password};
use crate::build::{self, CERTIFICATE_API_VERSION, Owner};
use crate::certs::TlsMaterial;
use crate::crd::{KvCluster, KvClusterStatus};
use crate::names::{self, FIELD_MANAGER};
use crate::observe::{NodeConnector, PdbSupport};
use crate::plan::{Desired, Step};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing PVCs of {cluster}: {source}")]
    ListPvcs {
        cluster: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding {kind}: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// `force`: the operator is the only intended owner of these fields; a
/// conflicting manager (someone's `kubectl apply`) is overridden, as any
/// controller would revert a manual edit of the objects it owns.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply<K>(api: &Api<K>, kind: &'static str, object: &K) -> Result<(), ApplyError>
where
    K: kube::Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map(drop)
        .map_err(|source| ApplyError::Apply { kind, name, source })
}

pub async fn apply_objects(
    client: &kube::Client,
    namespace: &str,
    desired: &Desired,
    pdb: PdbSupport,
) -> Result<(), ApplyError> {
    // Services first: the StatefulSet's pods advertise names of the peer
    // Service, which should exist when they start. The NetworkPolicy and
    // the certificates before the pods too: they start guarded and with
    // their Secret.
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    apply(&services, "Service", &desired.peer_service).await?;
    apply(&services, "Service", &desired.client_service).await?;
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), namespace);
    match &desired.network_policy {
        Some(policy) => apply(&policies, "NetworkPolicy", policy).await?,
        None => {
            let name = desired
                .client_service
                .metadata
                .name
                .as_deref()
                .unwrap_or_default();
            delete_if_present(&policies, "NetworkPolicy", name, &DeleteParams::default()).await?;
        }
    }
    for certificate in &desired.certificates {
        apply_certificate(client, namespace, certificate).await?;
    }
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    if let Some(sts) = &desired.statefulset {
        if desired.switch_to_on_delete {
            switch_to_on_delete(&statefulsets, sts).await?;
        }
        apply(&statefulsets, "StatefulSet", sts).await?;
    }
    if let Some(budget) = &desired.pdb {
        apply_pdb(client, namespace, budget, pdb).await?;
    }
    Ok(())
}

/// `updateStrategy: OnDelete` on a StatefulSet made with RollingUpdate.
/// A merge patch, not the apply: the API server defaulted
/// `rollingUpdate.partition`, which nobody owns, so an apply of the new
/// type alone would keep it and be refused ("only allowed for
/// updateStrategy 'RollingUpdate'"). Changing the strategy restarts no pod.
async fn switch_to_on_delete(api: &Api<StatefulSet>, sts: &StatefulSet) -> Result<(), ApplyError> {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({
        "spec": {"updateStrategy": {"type": build::ON_DELETE, "rollingUpdate": null}}
    });
    merge_patch(api, "StatefulSet", &name, &patch).await?;
    info!(statefulset = %name, "switched updateStrategy to OnDelete");
    Ok(())
}

/// A JSON merge patch (not an apply: for the few fields the operator
/// changes on objects it does not build whole).
async fn merge_patch<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), ApplyError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(patch))
        .await
        .map(drop)
        .map_err(|source| ApplyError::Apply {
            kind,
            name: name.to_owned(),
            source,
        })
}

/// Raises a PVC's requested size (volume expansion); the storage class's
/// resizer grows the volume, `status.capacity` follows.
pub async fn resize_pvc(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    size: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<(), ApplyError> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
    merge_patch(&api, "PersistentVolumeClaim", name, &patch).await?;
    info!(pvc = name, size = %size.0, "requested a larger volume");
    Ok(())
}

/// Deletes the StatefulSet but not its pods (`propagationPolicy:
/// Orphan`): they keep serving until the StatefulSet made again with the
/// new volume template adopts them. Already gone is fine.
pub async fn orphan_statefulset(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), ApplyError> {
    let api = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    delete_if_present(&api, "StatefulSet", name, &DeleteParams::orphan()).await
}

/// Deletes the pod `name` if it still is the one with `uid`: after a crash
/// the step may run again, and must not hit the pod that replaced it (that
/// answers 409, the old one gone answers 404; both mean done).
pub async fn delete_pod(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), ApplyError> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => Ok(()),
        Err(source) => Err(ApplyError::Delete {
            kind: "Pod",
            name: name.to_owned(),
            source,
        }),
    }
}

/// Deletes `name`; absent is fine. Used for the NetworkPolicy once
/// `networkPolicy.enabled` is false (each reconcile: the policy is not
/// read first, which would need one more permission), for PVCs (the
/// previous reconcile may have deleted one before crashing), and for a
/// StatefulSet replaced with its pods orphaned.
async fn delete_if_present<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), ApplyError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => {
            info!(kind, name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(ApplyError::Delete {
            kind,
            name: name.to_owned(),
            source,
        }),
    }
}

fn certificate_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: CERTIFICATE_API_VERSION.into(),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    }
}

async fn apply_certificate(
    client: &kube::Client,
    namespace: &str,
    certificate: &serde_json::Value,
) -> Result<(), ApplyError> {
    let api =
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &certificate_resource());
    let name = certificate["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.patch(&name, &apply_params(), &Patch::Apply(certificate))
        .await
        .map(drop)
        .map_err(|source| ApplyError::Apply {
            kind: "Certificate",
            name,
            source,
        })
}

/// Whether the server serves cert-manager.io/v1 Certificates (the
/// cert-manager CRDs are installed). Asked on every reconcile of a cluster
/// that uses cert-manager, so installing it later needs no restart.
pub async fn serves_cert_manager(client: &kube::Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources(CERTIFICATE_API_VERSION)
        .await
    {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "certificates")),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The Secrets of `tls.issuer: operator`, CA first: a crash after it is
/// repaired next round (certificates not signed by the CA in `NAME-ca`
/// are re-issued). The objects carry keys: errors name them, never print
/// them.
pub async fn apply_tls_secrets(
    client: &kube::Client,
    owner: &Owner,
    material: &TlsMaterial,
) -> Result<(), ApplyError> {
    let api = Api::<Secret>::namespaced(client.clone(), &owner.namespace);
    apply(&api, "Secret", &build::ca_secret(owner, &material.ca)).await?;
    apply(&api, "Secret", &build::node_secret(owner, material)).await?;
    apply(&api, "Secret", &build::client_secret(owner, material)).await
}

/// Creates `NAME-root` with a new password unless it exists: a create, not
/// an apply, so a password the nodes already hold is never replaced (a
/// Secret made meanwhile by another round answers 409, which is fine).
pub async fn create_root_secret(
    client: &kube::Client,
    owner: &Owner,
    owned: bool,
) -> Result<bool, ApplyError> {
    let api = Api::<Secret>::namespaced(client.clone(), &owner.namespace);
    let secret = build::root_secret(owner, &Password::generate(), owned);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(ApplyError::Apply {
            kind: "Secret",
            name: names::root_secret(&owner.name),
            source,
        }),
    }
}

async fn apply_pdb(
    client: &kube::Client,
    namespace: &str,
    budget: &PodDisruptionBudget,
    support: PdbSupport,
) -> Result<(), ApplyError> {
    match support {
        PdbSupport::V1 => {
            let api = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
            apply(&api, "PodDisruptionBudget", budget).await
        }
        PdbSupport::V1Beta1 => {
            // k8s-openapi has no v1beta1 type; the fields the builder sets
            // are identical there, only the group version differs.
            let mut value = serde_json::to_value(budget).map_err(|source| ApplyError::Encode {
                kind: "PodDisruptionBudget",
                source,
            })?;
            value["apiVersion"] = "policy/v1beta1".into();
            let resource = ApiResource {
                group: "policy".into(),
                version: "v1beta1".into(),
                api_version: "policy/v1beta1".into(),
                kind: "PodDisruptionBudget".into(),
                plural: "poddisruptionbudgets".into(),
            };
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
            let name = budget.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &apply_params(), &Patch::Apply(value))
                .await
                .map(drop)
                .map_err(|source| ApplyError::Apply {
                    kind: "PodDisruptionBudget",
                    name,
                    source,
                })
        }
        PdbSupport::None => Ok(()),
    }
}

/// Status through server-side apply on the status subresource: the whole
/// status is ours, so fields the plan leaves out are removed.
pub async fn write_status(
    api: &Api<KvCluster>,
    name: &str,
    status: &KvClusterStatus,
) -> Result<(), ApplyError> {
    let patch = serde_json::json!({
        "apiVersion": "raftkv.io/v1alpha1",
        "kind": "KvCluster",
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(patch))
        .await
        .map(drop)
        .map_err(|source| ApplyError::Apply {
            kind: "KvCluster status",
            name: name.to_owned(),
            source,
        })
}

/// Deletes a PVC; one already gone is fine.
pub async fn delete_pvc(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), ApplyError> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    delete_if_present(
        &api,
        "PersistentVolumeClaim",
        name,
        &DeleteParams::default(),
    )
    .await
}

/// All data volumes of a cluster (finalizer with `whenDeleted: Delete`).
/// The pods may still be terminating: Kubernetes' PVC protection keeps each
/// volume until its pod is gone.
pub async fn delete_all_pvcs(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
) -> Result<usize, ApplyError> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&names::selector_string(cluster)))
        .await
        .map_err(|source| ApplyError::ListPvcs {
            cluster: cluster.to_owned(),
            source,
        })?;
    let mut deleted = 0;
    for pvc in &list.items {
        let Some(name) = pvc.metadata.name.as_deref() else {
            continue;
        };
        // Only volumes the StatefulSet made for this cluster, whatever else
        // carries the same labels.
        if names::pvc_ordinal(cluster, name).is_some() {
            delete_pvc(client, namespace, name).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Sends the membership step to the node that must execute it, through
/// the same connector (TLS trust, client certificate) the observer used.
pub async fn execute_step(
    step: &Step,
    connector: &NodeConnector,
    timeout: Duration,
) -> Result<(), ClientError> {
    let node = |endpoint: &str| connector.client(endpoint, timeout);
    match step {
        Step::Initialize { endpoint, .. } => node(endpoint)?
            .init(&InitRequest::default())
            .await
            .map(drop),
        Step::AddLearner {
            leader, request, ..
        } => node(leader)?.add_learner(request).await.map(drop),
        Step::Promote { leader, voters, .. } | Step::Demote { leader, voters, .. } => {
            node(leader)?.set_voters(voters).await.map(drop)
        }
        Step::TransferLeadership { leader, to, .. } => {
            node(leader)?.transfer_leader(*to).await.map(drop)
        }
        Step::Remove { leader, id, .. } => match node(leader)?.remove_member(*id).await {
            // Already gone: the previous attempt succeeded before a crash
            // or a timeout hid its answer.
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
            result => result.map(drop),
        },
        Step::EnableAuth {
            leader, password, ..
        } => auth::enable_root(&node(leader)?, password).await,
        Step::ForceNewCluster {
            endpoint,
            cluster_id,
            ..
        } => node(endpoint)?
            .force_new_cluster(cluster_id)
            .await
            .map(drop),
        // Not a node call: the controller deletes the pod (`delete_pod`)
        // and never sends this step here; nothing to send to a node.
        Step::ReplacePod { .. } => Ok(()),
        // Not a node call alone: the controller streams the backup
        // (`backup::controller::restore_into`).
        Step::RestoreFromBackup { .. } => Ok(()),
    }
}

/// Which PodDisruptionBudget API the server serves. Absent group versions
/// answer 404; anything else is a real error (retry at startup).
pub async fn discover_pdb(client: &kube::Client) -> Result<PdbSupport, kube::Error> {
    for (group_version, support) in [
        ("policy/v1", PdbSupport::V1),
        ("policy/v1beta1", PdbSupport::V1Beta1),
    ] {
        match client.list_api_group_resources(group_version).await {
            Ok(list)
                if list
                    .resources
                    .iter()
                    .any(|r| r.name == "poddisruptionbudgets") =>
            {
                return Ok(support);
            }
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(PdbSupport::None)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{delete, get, post, put};
    use kvclient::{AddLearnerRequest, Membership, MembershipResponse};

    use super::*;
    use crate::plan::Removal;

    type Calls = Arc<Mutex<Vec<String>>>;

    fn ok() -> axum::Json<MembershipResponse> {
        axum::Json(MembershipResponse {
            membership: Membership::default(),
            log_index: Some(1),
        })
    }

    /// A fake kvnode admin API on loopback that records each call.
    async fn fake_node() -> (String, Calls) {
        let calls = Calls::default();
        let app = Router::new()
            .route(
                "/v1/cluster/learners",
                post(|State(c): State<Calls>, body: String| async move {
                    c.lock().expect("lock").push(format!("learners {body}"));
                    ok()
                }),
            )
            .route(
                "/v1/cluster/voters",
                put(|State(c): State<Calls>, body: String| async move {
                    c.lock().expect("lock").push(format!("voters {body}"));
                    ok()
                }),
            )
            .route(
                "/v1/cluster/members/{id}",
                delete(|State(c): State<Calls>, Path(id): Path<u64>| async move {
                    c.lock().expect("lock").push(format!("remove {id}"));
                    let body = r#"{"error":{"code":"not_found","message":"no member"}}"#;
                    (StatusCode::NOT_FOUND, body)
                }),
            )
            .route(
                "/v1/cluster/force-new-cluster",
                post(|State(c): State<Calls>, body: String| async move {
                    c.lock().expect("lock").push(format!("force {body}"));
                    r#"{"node_id":12,"cluster_id":"c1","restarting":true,"message":"exits"}"#
                }),
            )
            .route(
                "/v1/auth/status",
                get(|State(c): State<Calls>| async move {
                    let enabled = c.lock().expect("lock").iter().any(|l| l == "enable");
                    format!(r#"{{"enabled":{enabled},"revision":1}}"#)
                }),
            )
            .route(
                "/v1/auth/users",
                post(|State(c): State<Calls>, body: String| async move {
                    let mut calls = c.lock().expect("lock");
                    let again = calls.iter().any(|l| l.starts_with("user "));
                    calls.push(format!("user {body}"));
                    if again {
                        let body = r#"{"error":{"code":"already_exists","message":"user root"}}"#;
                        (StatusCode::CONFLICT, body)
                    } else {
                        // kvnode answers a change with the auth revision.
                        (StatusCode::OK, r#"{"revision":1}"#)
                    }
                }),
            )
            .route(
                "/v1/auth/enable",
                post(|State(c): State<Calls>| async move {
                    c.lock().expect("lock").push("enable".into());
                    r#"{"enabled":true,"revision":2}"#
                }),
            )
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), calls)
    }

    #[tokio::test]
    async fn steps_map_to_the_admin_api_and_removal_is_idempotent() {
        let (leader, calls) = fake_node().await;
        let timeout = Duration::from_secs(5);
        let add = Step::AddLearner {
            leader: leader.clone(),
            pod: "kv-1".into(),
            request: AddLearnerRequest {
                id: 11,
                name: "kv-1".into(),
                peer_url: "http://kv-1.kv-peer:7380".into(),
                client_url: "http://kv-1.kv-peer:7379".into(),
            },
        };
        let plain = NodeConnector::default();
        execute_step(&add, &plain, timeout)
            .await
            .expect("add learner");
        let promote = Step::Promote {
            leader: leader.clone(),
            pod: "kv-1".into(),
            id: 11,
            voters: vec![10, 11],
        };
        execute_step(&promote, &plain, timeout)
            .await
            .expect("promote");
        let remove = Step::Remove {
            leader: leader.clone(),
            pod: "kv-2".into(),
            id: 12,
            why: Removal::ScaleDown,
        };
        execute_step(&remove, &plain, timeout)
            .await
            .expect("a member already gone counts as removed");
        // Sent to the survivor itself (here the same fake node), never
        // forwarded: its data is what survives.
        let force = Step::ForceNewCluster {
            endpoint: leader,
            pod: "kv-2".into(),
            id: 12,
            cluster_id: "c1".into(),
            applied_index: Some(7),
        };
        execute_step(&force, &plain, timeout)
            .await
            .expect("force-new-cluster");
        let calls = calls.lock().expect("lock").clone();
        assert_eq!(
            calls,
            [
                r#"learners {"id":11,"name":"kv-1","peer_url":"http://kv-1.kv-peer:7380","client_url":"http://kv-1.kv-peer:7379"}"#,
                r#"voters {"voters":[10,11]}"#,
                "remove 12",
                r#"force {"cluster_id":"c1"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn enabling_auth_makes_root_then_turns_it_on_once() {
        let (leader, calls) = fake_node().await;
        let step = Step::EnableAuth {
            leader,
            pod: "kv-0".into(),
            password: Password::new("pw".into()),
        };
        let plain = NodeConnector::default();
        let timeout = Duration::from_secs(5);
        execute_step(&step, &plain, timeout)
            .await
            .expect("enable auth");
        // Again, as after a lost answer: the node says auth is on, nothing
        // else is sent.
        execute_step(&step, &plain, timeout).await.expect("repeat");
        assert_eq!(
            calls.lock().expect("lock").clone(),
            [
                r#"user {"name":"root","password":"pw","roles":["root"]}"#,
                "enable"
            ]
        );
    }

    #[tokio::test]
    async fn an_existing_root_user_is_not_an_error() {
        let (leader, calls) = fake_node().await;
        calls
            .lock()
            .expect("lock")
            .push("user (made by hand)".into());
        let step = Step::EnableAuth {
            leader,
            pod: "kv-0".into(),
            password: Password::new("pw".into()),
        };
        execute_step(&step, &NodeConnector::default(), Duration::from_secs(5))
            .await
            .expect("409 already_exists is fine");
        assert_eq!(
            calls.lock().expect("lock").last().map(String::as_str),
            Some("enable")
        );
    }
}
