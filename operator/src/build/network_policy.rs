use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use crate::crd::NetworkPolicySpec as Wanted;
use crate::names::{self, CLIENT_PORT, PEER_PORT};

/// The operator's own pods, which must reach the client (admin) port of
/// every cluster whatever `clientFrom` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorPeer {
    /// The operator's namespace (matched by the `kubernetes.io/metadata.name`
    /// label, which Kubernetes sets from 1.21 on).
    pub namespace: Option<String>,
    pub pod_labels: BTreeMap<String, String>,
}

impl OperatorPeer {
    fn peer(&self) -> Option<NetworkPolicyPeer> {
        if self.pod_labels.is_empty() {
            return None;
        }
        Some(NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(self.pod_labels.clone()),
                ..LabelSelector::default()
            }),
            namespace_selector: self.namespace.as_ref().map(|ns| LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    ns.clone(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        })
    }
}

/// Ingress to the kvnode pods: the raft port only from the cluster's own
/// pods (a raft RPC can rewrite the log), the client port from anywhere or
/// from `clientFrom`, plus the cluster's own pods (forwarding to the leader)
/// and the operator. Egress is left alone: nodes only call each other and
/// the cluster DNS, and a policy on egress would need the DNS service's
/// address, which differs per distribution.
pub fn network_policy(owner: &Owner, wanted: &Wanted, operator: &OperatorPeer) -> NetworkPolicy {
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(names::selector_labels(&owner.name)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let peer_rule = NetworkPolicyIngressRule {
        from: Some(vec![own_pods.clone()]),
        ports: Some(vec![port(PEER_PORT), port(CLIENT_PORT)]),
    };
    let client_rule = NetworkPolicyIngressRule {
        // No `from`: every source. Otherwise the listed peers, the
        // cluster's own pods and the operator.
        from: (!wanted.client_from.is_empty()).then(|| {
            let mut from = wanted.client_from.clone();
            from.extend(operator.peer());
            from.push(backup_jobs(&owner.name));
            from
        }),
        ports: Some(vec![port(CLIENT_PORT)]),
    };
    NetworkPolicy {
        metadata: owner.meta(owner.name.clone()),
        spec: Some(NetworkPolicySpec {
            // Required by Kubernetes before 1.31 (optional only since).
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::selector_labels(&owner.name)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![peer_rule, client_rule]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The pods of the cluster's backup and restore Jobs (kvctl), in its
/// namespace: the labels `backup::job` gives them.
fn backup_jobs(cluster: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(crate::backup::job::selector(cluster)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::kvc;

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    }

    fn operator() -> OperatorPeer {
        OperatorPeer {
            namespace: Some("raftkv-system".into()),
            pod_labels: BTreeMap::from([(
                "app.kubernetes.io/name".into(),
                "raftkv-operator".into(),
            )]),
        }
    }

    /// Sources allowed to reach `port` (None = anyone).
    fn sources(policy: &NetworkPolicy, port: i32) -> Option<Vec<NetworkPolicyPeer>> {
        let rules = policy
            .spec
            .as_ref()
            .and_then(|s| s.ingress.clone())
            .unwrap_or_default();
        let mut from = Vec::new();
        for rule in rules.iter().filter(|r| ports(r).contains(&port)) {
            match &rule.from {
                None => return None,
                Some(peers) => from.extend(peers.clone()),
            }
        }
        Some(from)
    }

    #[test]
    fn the_peer_port_is_open_only_to_the_cluster_s_own_pods() {
        let kvc = kvc(json!({}));
        let owner = Owner::of(&kvc).expect("identity");
        let policy = network_policy(&owner, &kvc.spec.network_policy, &operator());
        assert_eq!(policy.metadata.name.as_deref(), Some("kv"));
        assert_eq!(
            policy.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let spec = policy.spec.as_ref().expect("spec");
        assert_eq!(
            spec.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(names::selector_labels("kv"))
        );
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );

        let peer = sources(&policy, 7380).expect("the peer port is never open to all");
        assert_eq!(peer.len(), 1);
        assert_eq!(
            peer[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(names::selector_labels("kv"))
        );
        assert!(peer[0].namespace_selector.is_none(), "same namespace only");
        assert!(peer[0].ip_block.is_none());
        assert_eq!(
            sources(&policy, 7379),
            None,
            "clients from anywhere by default"
        );
    }

    #[test]
    fn client_from_limits_the_client_port_but_keeps_the_operator_and_the_peers() {
        let kvc = kvc(json!({"networkPolicy": {"clientFrom": [
            {"namespaceSelector": {"matchLabels": {"team": "app"}}},
            {"ipBlock": {"cidr": "10.1.0.0/16"}}
        ]}}));
        let owner = Owner::of(&kvc).expect("identity");
        let policy = network_policy(&owner, &kvc.spec.network_policy, &operator());
        let client = sources(&policy, 7379).expect("limited");
        assert_eq!(
            client.len(),
            5,
            "own pods, two listed peers, the operator, the backup Jobs: {client:?}"
        );
        let jobs = client
            .iter()
            .filter_map(|p| p.pod_selector.as_ref()?.match_labels.clone())
            .find(|l| l.get("app.kubernetes.io/component").map(String::as_str) == Some("backup"))
            .expect("backup Job pods may reach the client port");
        assert_eq!(
            jobs.get("raftkv.io/cluster").map(String::as_str),
            Some("kv")
        );
        assert_eq!(jobs.len(), 2, "{jobs:?}");
        // The Job builder labels its pods so that this selects them.
        for (k, v) in &jobs {
            assert_eq!(crate::backup::job::labels("kv", "save").get(k), Some(v));
        }
        assert!(
            client
                .iter()
                .any(|p| p.ip_block.as_ref().is_some_and(|b| b.cidr == "10.1.0.0/16"))
        );
        let op = client
            .iter()
            .find(|p| {
                p.namespace_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|l| {
                        l.get("kubernetes.io/metadata.name").map(String::as_str)
                            == Some("raftkv-system")
                    })
            })
            .expect("the operator may reach the admin API");
        assert_eq!(
            op.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(operator().pod_labels)
        );
        assert_eq!(
            sources(&policy, 7380).map(|p| p.len()),
            Some(1),
            "the peer port is unchanged"
        );
    }
}
