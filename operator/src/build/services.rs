use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use crate::names::{self, CLIENT_PORT, PEER_PORT};

/// Headless Service that gives each pod its stable DNS name
/// (`<pod>.<name>-peer.<ns>.svc`), used in the advertised URLs.
pub fn peer_service(owner: &Owner) -> Service {
    Service {
        metadata: owner.meta(names::peer_service(&owner.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // A node is not ready until it is a member, but its peers (and a
            // joining learner) must resolve it before that.
            publish_not_ready_addresses: Some(true),
            selector: Some(names::selector_labels(&owner.name)),
            ports: Some(vec![port("client", CLIENT_PORT), port("peer", PEER_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Service clients use. Only the client port: the raft port accepts
/// log entries and must never be reachable through it.
pub fn client_service(owner: &Owner) -> Service {
    let mut metadata = owner.meta(owner.name.clone());
    metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(names::LABEL_METRICS.to_owned(), "true".to_owned());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::selector_labels(&owner.name)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::kvc;

    fn ports(svc: &Service) -> Vec<i32> {
        svc.spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| p.port)
            .collect()
    }

    #[test]
    fn client_service_exposes_only_the_client_port() {
        let owner = Owner::of(&kvc(json!({}))).expect("identity");
        let svc = client_service(&owner);
        assert_eq!(svc.metadata.name.as_deref(), Some("kv"));
        assert_eq!(ports(&svc), [7379]);
        let spec = svc.spec.as_ref().expect("spec");
        assert_ne!(spec.cluster_ip.as_deref(), Some("None"));
        assert_ne!(
            spec.publish_not_ready_addresses,
            Some(true),
            "clients reach members only"
        );
        assert_eq!(spec.selector, Some(names::selector_labels("kv")));
    }

    #[test]
    fn only_the_client_service_is_labelled_for_scraping() {
        // The chart's kvnode ServiceMonitor selects this label; on the peer
        // Service too it would scrape every node twice.
        let owner = Owner::of(&kvc(json!({}))).expect("identity");
        let label = |svc: Service| {
            svc.metadata
                .labels
                .and_then(|l| l.get(names::LABEL_METRICS).cloned())
        };
        assert_eq!(label(client_service(&owner)).as_deref(), Some("true"));
        assert_eq!(label(peer_service(&owner)), None);
    }

    #[test]
    fn peer_service_is_headless_and_publishes_not_ready_pods() {
        let owner = Owner::of(&kvc(json!({}))).expect("identity");
        let svc = peer_service(&owner);
        assert_eq!(svc.metadata.name.as_deref(), Some("kv-peer"));
        let spec = svc.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(ports(&svc), [7379, 7380]);
        assert_eq!(
            svc.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
    }
}
