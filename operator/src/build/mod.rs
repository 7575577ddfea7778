//! PURE builders of the objects a KvCluster owns. No Kubernetes client here:
//! each takes the cluster and returns the object to server-side apply, with
//! only fields that kube-apiserver 1.20 knows (unknown fields are rejected
//! by server-side apply there).

mod certificate;
mod network_policy;
mod pdb;
mod secrets;
mod services;
pub(crate) mod statefulset;

pub use certificate::{CERTIFICATE_API_VERSION, client_certificate, node_certificate};
pub use network_policy::{OperatorPeer, network_policy};
pub use pdb::pod_disruption_budget;
pub use secrets::{ca_secret, client_secret, node_secret, root_secret};
pub use services::{client_service, peer_service};
pub use statefulset::{ON_DELETE, StatefulSetParams, reserved_env, statefulset};

use k8s_openapi::api::apps::v1::StatefulSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::KvCluster;
use crate::names;

/// Identity of the KvCluster the built objects belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub reference: OwnerReference,
}

impl Owner {
    /// `None` for an object without name, namespace or uid: one that the
    /// apiserver never stored, so nothing can be owned by it.
    pub fn of(kvc: &KvCluster) -> Option<Owner> {
        Some(Owner {
            name: kvc.metadata.name.clone()?,
            namespace: kvc.metadata.namespace.clone()?,
            reference: kvc.controller_owner_ref(&())?,
        })
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(names::object_labels(&self.name)),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// How the kvnode pods run: which TLS, and so which files they mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    Plaintext,
    /// Per-pod certificates `<pod>.crt`/`<pod>.key` from the operator's CA.
    Operator,
    /// One certificate `tls.crt`/`tls.key` made by cert-manager.
    CertManager,
}

impl TlsMode {
    /// What an existing StatefulSet runs, read from the kvnode arguments
    /// this crate's builder wrote.
    pub fn of_statefulset(sts: &StatefulSet) -> TlsMode {
        let args = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| {
                p.containers
                    .iter()
                    .find(|c| c.name == names::CONTAINER_NAME)
            })
            .and_then(|c| c.args.as_ref());
        let peer_cert = args
            .into_iter()
            .flatten()
            .find_map(|a| a.strip_prefix("--peer-cert-file="));
        match peer_cert {
            None => TlsMode::Plaintext,
            Some(file) if file.ends_with(names::TLS_CERT_KEY) => TlsMode::CertManager,
            Some(_) => TlsMode::Operator,
        }
    }

    pub fn tls(self) -> bool {
        self != TlsMode::Plaintext
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use kube::api::ObjectMeta;

    use crate::crd::{KvCluster, KvClusterSpec};

    /// A stored KvCluster named `kv` in namespace `db`.
    pub fn kvc(spec_json: serde_json::Value) -> KvCluster {
        let spec: KvClusterSpec = serde_json::from_value(spec_json).expect("test spec parses");
        let mut kvc = KvCluster::new("kv", spec);
        kvc.metadata = ObjectMeta {
            name: Some("kv".into()),
            namespace: Some("db".into()),
            uid: Some("0b7c3a8e-uid".into()),
            generation: Some(4),
            ..ObjectMeta::default()
        };
        kvc
    }
}
