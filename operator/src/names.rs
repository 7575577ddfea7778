//! Names, labels and ports shared by the builders, the observer and the
//! planner, so that "which pod is ordinal 10" has one answer.

use std::collections::BTreeMap;

/// kvnode client + admin HTTP port (the only port the client Service exposes).
pub const CLIENT_PORT: i32 = 7379;
/// kvnode raft RPC port (only on the headless peer Service).
pub const PEER_PORT: i32 = 7380;
/// Where the volume is mounted and what `--data-dir` points at.
pub const DATA_DIR: &str = "/var/lib/raftkv";
/// Name of the volume claim template; PVCs are `data-<cluster>-<ordinal>`.
pub const DATA_VOLUME: &str = "data";
pub const CONTAINER_NAME: &str = "kvnode";
/// KvCluster annotation asking for a disaster recovery; its value names
/// the request (any value not yet in `status.recovery.request`).
pub const FORCE_NEW_CLUSTER_ANNOTATION: &str = "raftkv.io/force-new-cluster";
/// Where the Secret with the node certificates is mounted (read-only).
pub const TLS_DIR: &str = "/etc/raftkv/tls";
pub const TLS_VOLUME: &str = "tls";
/// Key of the CA bundle in every TLS Secret (cert-manager's name for it).
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
/// Keys of a single certificate in a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
/// The user the operator's client certificate names (its CN).
pub const OPERATOR_USER: &str = "root";
/// The one server-side-apply field manager of the operator.
pub const FIELD_MANAGER: &str = "raftkv-operator";
pub const FINALIZER: &str = "raftkv.io/cleanup";

/// The label the StatefulSet controller puts on each pod: the template
/// revision the pod was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// On the client Service only: what a Prometheus ServiceMonitor selects.
/// The peer Service carries the same other labels and also names a
/// `client` port, so without this every node would be scraped twice.
pub const LABEL_METRICS: &str = "raftkv.io/metrics";
const APP: &str = "raftkv";

pub fn peer_service(cluster: &str) -> String {
    format!("{cluster}-peer")
}

/// Secret with the cluster CA (`ca.crt`, `ca.key`), issuer `operator` only.
pub fn ca_secret(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// Secret with the node certificates: `ca.crt` and `<pod>.crt`/`<pod>.key`
/// (issuer `operator`), or `ca.crt`/`tls.crt`/`tls.key` (cert-manager).
/// With cert-manager it is also the name of the Certificate object.
pub fn tls_secret(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// Secret with the operator's client certificate (CN `root`):
/// `ca.crt`, `tls.crt`, `tls.key`; also the cert-manager Certificate's name.
pub fn client_secret(cluster: &str) -> String {
    format!("{cluster}-operator-client")
}

/// Keys of the root Secret.
pub const ROOT_USERNAME_KEY: &str = "username";
pub const ROOT_PASSWORD_KEY: &str = "password";

/// Secret with root's credentials (`username`, `password`), made once by
/// the operator when `spec.auth` is on.
pub fn root_secret(cluster: &str) -> String {
    format!("{cluster}-root")
}

/// Key of a pod's certificate in the node Secret.
pub fn pod_cert_key(pod: &str) -> String {
    format!("{pod}.crt")
}

pub fn pod_key_key(pod: &str) -> String {
    format!("{pod}.key")
}

/// The pod's DNS name under the headless peer Service in its namespace.
pub fn pod_host(cluster: &str, namespace: &str, pod: &str) -> String {
    format!("{pod}.{}.{namespace}.svc", peer_service(cluster))
}

pub fn pod(cluster: &str, ordinal: u32) -> String {
    format!("{cluster}-{ordinal}")
}

pub fn pvc(cluster: &str, ordinal: u32) -> String {
    format!("{DATA_VOLUME}-{cluster}-{ordinal}")
}

/// The ordinal of `<cluster>-<n>`, parsed as a number so that ordering is
/// numeric (kv-10 after kv-9) everywhere it is used.
pub fn pod_ordinal(cluster: &str, pod: &str) -> Option<u32> {
    parse_suffix(pod.strip_prefix(cluster)?)
}

/// The ordinal of `data-<cluster>-<n>`.
pub fn pvc_ordinal(cluster: &str, pvc: &str) -> Option<u32> {
    let rest = pvc.strip_prefix(DATA_VOLUME)?.strip_prefix('-')?;
    parse_suffix(rest.strip_prefix(cluster)?)
}

fn parse_suffix(rest: &str) -> Option<u32> {
    let digits = rest.strip_prefix('-')?;
    // Reject "+1", "01" and the like: the StatefulSet never makes them, so
    // such a name belongs to something else.
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// Labels that select the pods (and PVCs) of one cluster. Kept minimal and
/// stable: a StatefulSet selector can never change.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), APP.to_owned()),
        (LABEL_INSTANCE.to_owned(), cluster.to_owned()),
    ])
}

/// `key=value,...` form of [`selector_labels`], for list calls and the
/// scale subresource.
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every object the operator creates.
pub fn object_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(LABEL_MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned());
    labels.insert(LABEL_COMPONENT.to_owned(), "kvnode".to_owned());
    labels
}

/// Raft quorum of a voter set of `n`.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_numeric_and_strict() {
        assert_eq!(pod_ordinal("kv", "kv-0"), Some(0));
        assert_eq!(pod_ordinal("kv", "kv-10"), Some(10));
        assert_eq!(pod_ordinal("kv", "kv-01"), None);
        assert_eq!(pod_ordinal("kv", "kv-x"), None);
        assert_eq!(pod_ordinal("kv", "kvx-1"), None);
        // A cluster named "kv" must not claim the pods of cluster "kv-a".
        assert_eq!(pod_ordinal("kv", "kv-a-1"), None);
        assert_eq!(pvc_ordinal("kv", "data-kv-12"), Some(12));
        assert_eq!(pvc_ordinal("kv", "data-kv-a-12"), None);
        assert_eq!(pvc_ordinal("kv", "other-kv-1"), None);
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!([1, 2, 3, 4, 5, 9].map(quorum), [1, 2, 2, 3, 3, 5]);
    }
}
