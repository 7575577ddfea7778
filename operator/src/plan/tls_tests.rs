//! The TLS, cert-manager and NetworkPolicy decisions of `plan`.

use serde_json::json;

use super::*;
use crate::build::fixtures;
use crate::observe::ObservedTls;
use crate::reason::Reason;

fn config() -> PlanConfig {
    PlanConfig {
        stabilization: Duration::from_secs(10),
        max_lag: 100,
        cluster_domain: "cluster.local".into(),
        operator_peer: OperatorPeer::default(),
        rollout_deadline: Duration::from_secs(300),
    }
}

fn run(spec: serde_json::Value, observed: &Observed, previous: &KvClusterStatus) -> Plan {
    let kvc = fixtures::kvc(spec);
    let owner = Owner::of(&kvc).expect("identity");
    plan(
        &PlanInput {
            recovery_request: None,
            owner: &owner,
            spec: &kvc.spec,
            generation: kvc.metadata.generation,
            previous,
            observed,
            pdb: PdbSupport::V1,
            now: Timestamp::from_second(1_800_000_000).expect("time"),
        },
        &config(),
    )
}

fn degraded(plan: &Plan) -> String {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| format!("{}/{}", c.status, c.reason))
        .unwrap_or_default()
}

fn initialized() -> KvClusterStatus {
    KvClusterStatus {
        cluster_id: Some("c1".into()),
        ..KvClusterStatus::default()
    }
}

#[test]
fn a_new_cluster_gets_operator_tls_certificates_and_a_network_policy() {
    let plan = run(json!({}), &Observed::default(), &KvClusterStatus::default());
    let objects = plan.objects.as_ref().expect("objects");
    assert_eq!(objects.tls, TlsMode::Operator);
    assert!(objects.network_policy.is_some());
    assert!(objects.certificates.is_empty(), "no cert-manager objects");
    let certs = plan.certificates.as_ref().expect("certificate plan");
    assert!(certs.new_ca && certs.write);
    assert_eq!(
        certs.issue.len(),
        3,
        "all of spec.replicas, ahead of the pods"
    );
}

#[test]
fn an_initialized_cluster_keeps_the_tls_mode_it_runs() {
    // A plaintext cluster from before spec.tls existed: its spec now
    // defaults to TLS, but its members advertise http:// URLs.
    let observed = Observed {
        statefulset_replicas: Some(3),
        statefulset_tls: Some(TlsMode::Plaintext),
        ..Observed::default()
    };
    let plan = run(json!({}), &observed, &initialized());
    let objects = plan.objects.as_ref().expect("objects");
    assert_eq!(objects.tls, TlsMode::Plaintext);
    assert!(plan.certificates.is_none());
    assert_eq!(degraded(&plan), "True/TlsChangeNotApplied");
    assert_eq!(
        plan.notices.first().map(|n| n.reason),
        Some(Reason::TlsChangeNotApplied)
    );

    // Acknowledged in the spec: healthy again.
    let plan = run(
        json!({"tls": {"enabled": false}, "auth": {"enabled": false}}),
        &observed,
        &initialized(),
    );
    assert_eq!(
        plan.objects.as_ref().map(|o| o.tls),
        Some(TlsMode::Plaintext)
    );
    assert_ne!(degraded(&plan), "True/TlsChangeNotApplied");

    // Before initialization nothing is lost by switching.
    let plan = run(json!({}), &observed, &KvClusterStatus::default());
    assert_eq!(
        plan.objects.as_ref().map(|o| o.tls),
        Some(TlsMode::Operator)
    );
}

#[test]
fn cert_manager_gets_certificate_objects_or_a_clear_condition() {
    let spec = json!({"tls": {"issuer": "certManager",
                              "certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}});
    let mut observed = Observed {
        tls: ObservedTls {
            cert_manager: Some(true),
            ..ObservedTls::default()
        },
        ..Observed::default()
    };
    let plan = run(spec.clone(), &observed, &KvClusterStatus::default());
    let objects = plan.objects.as_ref().expect("objects");
    assert_eq!(objects.tls, TlsMode::CertManager);
    let names: Vec<_> = objects
        .certificates
        .iter()
        .map(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["kv-tls", "kv-operator-client"]);
    assert!(
        plan.certificates.is_none(),
        "cert-manager issues, not the operator"
    );

    observed.tls.cert_manager = Some(false);
    let plan = run(spec, &observed, &KvClusterStatus::default());
    assert!(
        plan.objects
            .as_ref()
            .is_some_and(|o| o.certificates.is_empty())
    );
    assert_eq!(degraded(&plan), "True/CertManagerMissing");
    assert!(
        plan.notices
            .iter()
            .any(|n| n.warning && n.reason == Reason::CertManagerMissing)
    );

    let plan = run(
        json!({"tls": {"issuer": "certManager"}}),
        &Observed::default(),
        &KvClusterStatus::default(),
    );
    assert_eq!(degraded(&plan), "True/InvalidSpec");
    assert!(plan.objects.is_none());
}

#[test]
fn a_disabled_network_policy_is_not_built() {
    let plan = run(
        json!({"networkPolicy": {"enabled": false}}),
        &Observed::default(),
        &KvClusterStatus::default(),
    );
    assert!(
        plan.objects
            .as_ref()
            .is_some_and(|o| o.network_policy.is_none())
    );
}

#[test]
fn certificates_cover_the_pod_the_statefulset_grows_to() {
    let kvc = fixtures::kvc(json!({"replicas": 3}));
    let owner = Owner::of(&kvc).expect("identity");
    let observed = Observed {
        statefulset_replicas: Some(1),
        ..Observed::default()
    };
    let none = KvClusterStatus::default();
    let input = PlanInput {
        recovery_request: None,
        owner: &owner,
        spec: &kvc.spec,
        generation: None,
        previous: &none,
        observed: &observed,
        pdb: PdbSupport::V1,
        now: Timestamp::from_second(1_800_000_000).expect("time"),
    };
    assert_eq!(
        certificate_pods(&input, 2),
        3,
        "spec.replicas ahead of the growth"
    );
    let mut shrinking = kvc.spec.clone();
    shrinking.replicas = 1;
    let observed = Observed {
        statefulset_replicas: Some(5),
        ..Observed::default()
    };
    let input = PlanInput {
        recovery_request: None,
        spec: &shrinking,
        observed: &observed,
        ..input
    };
    assert_eq!(
        certificate_pods(&input, 4),
        5,
        "pods still running keep theirs"
    );
}
