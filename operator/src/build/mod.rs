//! PURE builders of the objects a KvCluster owns. No Kubernetes client here:
//! each takes the cluster and returns the object to server-side apply, with
//! only fields that kube-apiserver 1.20 knows (unknown fields are rejected
//! by server-side apply there).

mod pdb;
mod services;
mod statefulset;

pub use pdb::pod_disruption_budget;
pub use services::{client_service, peer_service};
pub use statefulset::{StatefulSetParams, statefulset};

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
