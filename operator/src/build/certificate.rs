//! cert-manager `Certificate` objects (cert-manager.io/v1) for
//! `tls.issuer: certManager`, as plain JSON: no cert-manager crate, and the
//! fields used here have been stable since cert-manager 1.0.
//!
//! One certificate covers every pod (wildcards under the peer Service), so
//! its Secret has the single `tls.crt`/`tls.key` layout; cert-manager
//! renews it and kvnode reloads the files.

use serde_json::{Value, json};

use super::Owner;
use crate::crd::IssuerRef;
use crate::names::{self, OPERATOR_USER};

pub const CERTIFICATE_API_VERSION: &str = "cert-manager.io/v1";

const DURATION: &str = "2160h";
const RENEW_BEFORE: &str = "720h";

fn certificate(owner: &Owner, name: String, spec: Value) -> Value {
    let mut meta = serde_json::to_value(owner.meta(name.clone())).unwrap_or_else(|_| json!({}));
    meta["name"] = name.into();
    json!({
        "apiVersion": CERTIFICATE_API_VERSION,
        "kind": "Certificate",
        "metadata": meta,
        "spec": spec,
    })
}

fn issuer(issuer: &IssuerRef) -> Value {
    json!({"name": issuer.name, "kind": issuer.kind, "group": issuer.group})
}

fn private_key() -> Value {
    // PKCS#8 ECDSA P-256, what raftkv's own CA issues; a new key on every
    // renewal.
    json!({"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"})
}

/// `NAME-tls`: the certificate every node serves and presents to peers.
pub fn node_certificate(owner: &Owner, issuer_ref: &IssuerRef, cluster_domain: &str) -> Value {
    let (cluster, ns) = (&owner.name, &owner.namespace);
    let peer = names::peer_service(cluster);
    let mut dns = Vec::new();
    for host in [format!("*.{peer}"), cluster.clone()] {
        dns.push(host.clone());
        dns.push(format!("{host}.{ns}"));
        dns.push(format!("{host}.{ns}.svc"));
        dns.push(format!("{host}.{ns}.svc.{cluster_domain}"));
    }
    dns.push("localhost".into());
    certificate(
        owner,
        names::tls_secret(cluster),
        json!({
            "secretName": names::tls_secret(cluster),
            "commonName": cluster,
            "dnsNames": dns,
            "ipAddresses": ["127.0.0.1"],
            "duration": DURATION,
            "renewBefore": RENEW_BEFORE,
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
            "privateKey": private_key(),
            "issuerRef": issuer(issuer_ref),
        }),
    )
}

/// `NAME-operator-client`: the operator's client certificate, CN `root`.
pub fn client_certificate(owner: &Owner, issuer_ref: &IssuerRef) -> Value {
    certificate(
        owner,
        names::client_secret(&owner.name),
        json!({
            "secretName": names::client_secret(&owner.name),
            "commonName": OPERATOR_USER,
            "duration": DURATION,
            "renewBefore": RENEW_BEFORE,
            "usages": ["client auth", "digital signature", "key encipherment"],
            "privateKey": private_key(),
            "issuerRef": issuer(issuer_ref),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::kvc;

    #[test]
    fn certificates_name_every_pod_and_the_issuer() {
        let owner = Owner::of(&kvc(serde_json::json!({}))).expect("identity");
        let issuer_ref = IssuerRef {
            name: "ca-issuer".into(),
            kind: "ClusterIssuer".into(),
            group: "cert-manager.io".into(),
        };
        let node = node_certificate(&owner, &issuer_ref, "cluster.local");
        assert_eq!(node["apiVersion"], "cert-manager.io/v1");
        assert_eq!(node["metadata"]["name"], "kv-tls");
        assert_eq!(node["metadata"]["namespace"], "db");
        assert_eq!(node["metadata"]["ownerReferences"][0]["kind"], "KvCluster");
        assert_eq!(node["spec"]["secretName"], "kv-tls");
        let dns: Vec<&str> = node["spec"]["dnsNames"]
            .as_array()
            .expect("dnsNames")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for name in [
            "*.kv-peer.db.svc",
            "*.kv-peer.db.svc.cluster.local",
            "kv.db.svc",
            "localhost",
        ] {
            assert!(dns.contains(&name), "{name} missing from {dns:?}");
        }
        let usages = node["spec"]["usages"].to_string();
        assert!(usages.contains("server auth") && usages.contains("client auth"));
        assert_eq!(node["spec"]["issuerRef"]["kind"], "ClusterIssuer");

        let client = client_certificate(&owner, &issuer_ref);
        assert_eq!(client["spec"]["secretName"], "kv-operator-client");
        assert_eq!(client["spec"]["commonName"], "root");
        assert!(!client["spec"]["usages"].to_string().contains("server auth"));
    }
}
