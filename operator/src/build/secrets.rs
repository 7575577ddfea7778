//! The Secrets of `tls.issuer: operator`. Built from material the caller
//! issued; these objects carry private keys, so they are never logged and
//! are not part of the (printable) plan.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::Owner;
use kvclient::ROOT;

use crate::auth::Password;
use crate::certs::{CertPair, TlsMaterial};
use crate::names::{
    self, CA_CERT_KEY, CA_KEY_KEY, ROOT_PASSWORD_KEY, ROOT_USERNAME_KEY, TLS_CERT_KEY, TLS_KEY_KEY,
};

fn secret(owner: &Owner, name: String, type_: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: owner.meta(name),
        type_: Some(type_.into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// `NAME-root`: root's user name and password (`spec.auth`), for people
/// and programs that authenticate with a password; created once, never
/// rewritten (the nodes keep the password it was made with).
///
/// Owned by the KvCluster unless its volumes outlive it
/// (`whenDeleted: Retain`): the retained data still answers to this
/// password, and a KvCluster re-created on those volumes must find it
/// instead of making a new one the nodes do not know.
pub fn root_secret(owner: &Owner, password: &Password, owned: bool) -> Secret {
    let mut secret = secret(
        owner,
        names::root_secret(&owner.name),
        "Opaque",
        BTreeMap::from([
            (ROOT_USERNAME_KEY.to_owned(), ROOT.to_owned()),
            (ROOT_PASSWORD_KEY.to_owned(), password.expose().to_owned()),
        ]),
    );
    if !owned {
        secret.metadata.owner_references = None;
    }
    secret
}

/// `NAME-ca`: the cluster CA and its key. Only the operator reads it.
pub fn ca_secret(owner: &Owner, ca: &CertPair) -> Secret {
    secret(
        owner,
        names::ca_secret(&owner.name),
        "Opaque",
        BTreeMap::from([
            (CA_CERT_KEY.to_owned(), ca.cert.clone()),
            (CA_KEY_KEY.to_owned(), ca.key.expose().to_owned()),
        ]),
    )
}

/// `NAME-tls`: the CA bundle and every pod's certificate, mounted by all
/// pods (each selects its own files by name).
pub fn node_secret(owner: &Owner, material: &TlsMaterial) -> Secret {
    let mut data = BTreeMap::from([(CA_CERT_KEY.to_owned(), material.ca.cert.clone())]);
    for (pod, pair) in &material.nodes {
        data.insert(names::pod_cert_key(pod), pair.cert.clone());
        data.insert(names::pod_key_key(pod), pair.key.expose().to_owned());
    }
    secret(owner, names::tls_secret(&owner.name), "Opaque", data)
}

/// `NAME-operator-client`: the operator's client certificate (CN `root`)
/// with the CA bundle, the layout of a cert-manager Secret, so kvctl's
/// `--cacert`/`--cert`/`--key` take its three files in either mode.
pub fn client_secret(owner: &Owner, material: &TlsMaterial) -> Secret {
    secret(
        owner,
        names::client_secret(&owner.name),
        "kubernetes.io/tls",
        BTreeMap::from([
            (CA_CERT_KEY.to_owned(), material.ca.cert.clone()),
            (TLS_CERT_KEY.to_owned(), material.client.cert.clone()),
            (
                TLS_KEY_KEY.to_owned(),
                material.client.key.expose().to_owned(),
            ),
        ]),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::kvc;
    use crate::certs::KeyPem;

    fn pair(name: &str) -> CertPair {
        CertPair {
            cert: format!("{name}-cert"),
            key: KeyPem::new(format!("{name}-key")),
        }
    }

    fn keys(secret: &Secret) -> Vec<&str> {
        secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect()
    }

    #[test]
    fn secrets_have_the_documented_names_keys_and_owner() {
        let owner = Owner::of(&kvc(json!({}))).expect("identity");
        let material = TlsMaterial {
            ca: pair("ca"),
            nodes: BTreeMap::from([("kv-0".into(), pair("n0")), ("kv-1".into(), pair("n1"))]),
            client: pair("root"),
        };
        let nodes = node_secret(&owner, &material);
        assert_eq!(nodes.metadata.name.as_deref(), Some("kv-tls"));
        assert_eq!(
            keys(&nodes),
            ["ca.crt", "kv-0.crt", "kv-0.key", "kv-1.crt", "kv-1.key"]
        );
        assert_eq!(
            nodes
                .data
                .as_ref()
                .and_then(|d| d.get("kv-1.key"))
                .map(|b| b.0.clone()),
            Some(b"n1-key".to_vec())
        );
        let ca = ca_secret(&owner, &material.ca);
        assert_eq!(ca.metadata.name.as_deref(), Some("kv-ca"));
        assert_eq!(keys(&ca), ["ca.crt", "ca.key"]);
        let client = client_secret(&owner, &material);
        assert_eq!(client.metadata.name.as_deref(), Some("kv-operator-client"));
        assert_eq!(client.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(keys(&client), ["ca.crt", "tls.crt", "tls.key"]);
        for s in [&nodes, &ca, &client] {
            assert_eq!(s.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        }
    }

    #[test]
    fn the_root_secret_is_owned_only_when_the_volumes_go_with_the_cluster() {
        let owner = Owner::of(&kvc(json!({}))).expect("identity");
        let password = Password::new("pw".into());
        let owned = root_secret(&owner, &password, true);
        assert_eq!(owned.metadata.name.as_deref(), Some("kv-root"));
        assert_eq!(keys(&owned), ["password", "username"]);
        assert_eq!(
            owned
                .data
                .as_ref()
                .and_then(|d| d.get("username"))
                .map(|b| b.0.clone()),
            Some(b"root".to_vec())
        );
        assert_eq!(
            owned.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let kept = root_secret(&owner, &password, false);
        assert_eq!(kept.metadata.owner_references, None);
        assert_eq!(kept.metadata.labels, owned.metadata.labels);
    }
}
