//! The Kubernetes objects a KvCluster wants this round.

use super::storage::storage_change;
use super::{Desired, PlanConfig, PlanInput};
use crate::build::{self, ON_DELETE, StatefulSetParams, TlsMode};
use crate::crd::KvClusterSpec;
use crate::observe::PdbSupport;

pub(super) fn desired(
    input: &PlanInput,
    config: &PlanConfig,
    replicas: i32,
    tls: TlsMode,
) -> Desired {
    let owner = input.owner;
    // The StatefulSet keeps the volume template it was created with, or the
    // API server would refuse the whole apply, image and resources included
    // (a volume expansion replaces the StatefulSet to change it).
    let spec = match &input.observed.statefulset_storage {
        Some(kept) if storage_change(input).is_some() => &KvClusterSpec {
            storage: kept.clone(),
            ..input.spec.clone()
        },
        _ => input.spec,
    };
    let observed = input.observed;
    Desired {
        statefulset: (!observed.statefulset_deleting).then(|| {
            build::statefulset(
                owner,
                spec,
                &StatefulSetParams {
                    replicas,
                    cluster_domain: &config.cluster_domain,
                    tls,
                },
            )
        }),
        switch_to_on_delete: !observed.statefulset_deleting
            && observed
                .statefulset_update_strategy
                .as_deref()
                .is_some_and(|s| s != ON_DELETE),
        peer_service: build::peer_service(owner),
        client_service: build::client_service(owner),
        pdb: (input.pdb != PdbSupport::None)
            .then(|| build::pod_disruption_budget(owner, input.spec.replicas)),
        network_policy: input.spec.network_policy.enabled.then(|| {
            build::network_policy(owner, &input.spec.network_policy, &config.operator_peer)
        }),
        certificates: match (&input.spec.tls.cert_manager, tls) {
            // Absent cert-manager: applying would only fail; the
            // CertManagerMissing condition says what to do.
            (Some(cm), TlsMode::CertManager) if input.observed.tls.cert_manager != Some(false) => {
                vec![
                    build::node_certificate(owner, &cm.issuer_ref, &config.cluster_domain),
                    build::client_certificate(owner, &cm.issuer_ref),
                ]
            }
            _ => Vec::new(),
        },
        tls,
    }
}
