//! PURE: which certificates of a cluster with `tls.issuer: operator` to
//! issue, keep or drop, from what its Secrets hold and the time. Issuing
//! them (key generation) is `crate::certs::issue`'s job, writing them
//! `apply`'s.
//!
//! A certificate is (re)issued when it is missing, when it was not signed
//! by the cluster's current CA, when `raftkv_pki::needs_renewal` says so
//! (a third of its validity left), or when its names are not the ones the
//! pod needs (e.g. a changed cluster domain). kvnode re-reads its files
//! when the Secret changes, so nothing restarts.

use time::OffsetDateTime;

use crate::certs::{self, CertPair};
use crate::names::{self, OPERATOR_USER};
use crate::observe::ObservedTls;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPlan {
    /// Subject of a new CA.
    pub ca_common_name: String,
    /// Create a new CA (none yet, unreadable, or due for renewal); every
    /// certificate is then re-issued.
    pub new_ca: bool,
    /// Node certificates to issue.
    pub issue: Vec<CertRequest>,
    /// Pods whose current certificate stays.
    pub keep: Vec<String>,
    /// The operator's client certificate, when it must be (re)issued.
    pub client: Option<CertRequest>,
    /// The Secrets must be written: something is issued, a certificate of
    /// a pod past the cluster's size is dropped, or a CA bundle is stale.
    pub write: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    /// The pod (the certificate's key in the node Secret), or the client
    /// Secret's name for the operator's certificate.
    pub name: String,
    pub common_name: String,
    pub sans: Vec<String>,
    pub reason: IssueReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    Missing,
    /// Signed by another CA (a new CA, or a Secret edited by hand).
    NewCa,
    Renewal,
    /// Its names differ from what the pod needs.
    Names,
}

pub struct CertInput<'a> {
    pub cluster: &'a str,
    pub namespace: &'a str,
    pub cluster_domain: &'a str,
    /// Certificates for pods `0..pods`: every pod that exists or that the
    /// StatefulSet may create next, so a pod never starts without its own.
    pub pods: u32,
    pub tls: &'a ObservedTls,
    pub now: OffsetDateTime,
}

/// The names a pod is reached by: its own DNS name under the peer Service
/// and the client Service, each in the short, namespace, `.svc` and
/// `.svc.<cluster domain>` forms, and loopback (the node calls itself).
pub fn pod_sans(cluster: &str, namespace: &str, domain: &str, pod: &str) -> Vec<String> {
    let peer = format!("{pod}.{}", names::peer_service(cluster));
    let mut sans = Vec::new();
    for host in [peer.as_str(), cluster] {
        sans.push(host.to_owned());
        sans.push(format!("{host}.{namespace}"));
        sans.push(format!("{host}.{namespace}.svc"));
        sans.push(format!("{host}.{namespace}.svc.{domain}"));
    }
    sans.push("localhost".into());
    sans.push("127.0.0.1".into());
    sans
}

pub fn plan_certificates(input: &CertInput) -> CertPlan {
    let tls = input.tls;
    let ca = tls
        .ca
        .as_ref()
        .filter(|ca| !raftkv_pki::needs_renewal(&ca.cert, input.now));
    let new_ca = ca.is_none();
    let judge = |pair: Option<&CertPair>, sans: &[String], common_name: &str| {
        let (Some(ca), Some(pair)) = (ca, pair) else {
            return Some(if new_ca && pair.is_some() {
                IssueReason::NewCa
            } else {
                IssueReason::Missing
            });
        };
        if !certs::signed_by(&pair.cert, &ca.cert) {
            Some(IssueReason::NewCa)
        } else if raftkv_pki::needs_renewal(&pair.cert, input.now) {
            Some(IssueReason::Renewal)
        } else if certs::subject_alt_names(&pair.cert).as_deref() != Some(sans)
            || raftkv_pki::common_name(&pair.cert).as_deref() != Some(common_name)
        {
            Some(IssueReason::Names)
        } else {
            None
        }
    };

    let mut issue = Vec::new();
    let mut keep = Vec::new();
    for ordinal in 0..input.pods {
        let pod = names::pod(input.cluster, ordinal);
        let sans = pod_sans(input.cluster, input.namespace, input.cluster_domain, &pod);
        match judge(tls.nodes.get(&pod), &sans, &pod) {
            None => keep.push(pod),
            Some(reason) => issue.push(CertRequest {
                common_name: pod.clone(),
                name: pod,
                sans,
                reason,
            }),
        }
    }
    let client = judge(tls.client.as_ref(), &[], OPERATOR_USER).map(|reason| CertRequest {
        name: names::client_secret(input.cluster),
        common_name: OPERATOR_USER.into(),
        sans: Vec::new(),
        reason,
    });

    let dropped = tls.nodes.keys().any(|pod| !keep.contains(pod));
    let ca_cert = ca.map(|ca| ca.cert.as_str());
    let bundles_stale = tls.node_bundle.as_deref() != ca_cert
        || tls.client_bundle.as_deref() != ca_cert
        || !tls.node_secret_exists;
    CertPlan {
        ca_common_name: format!("raftkv {}/{} CA", input.namespace, input.cluster),
        write: new_ca || !issue.is_empty() || client.is_some() || dropped || bundles_stale,
        new_ca,
        issue,
        keep,
        client,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use raftkv_pki::Usage;
    use time::Duration;

    use super::*;

    const NS: &str = "db";
    const DOMAIN: &str = "cluster.local";

    fn input(tls: &ObservedTls, pods: u32, now: OffsetDateTime) -> CertInput<'_> {
        CertInput {
            cluster: "kv",
            namespace: NS,
            cluster_domain: DOMAIN,
            pods,
            tls,
            now,
        }
    }

    /// The Secrets of a cluster whose operator issued everything for
    /// `pods` pods, as `plan` + `issue` would leave them.
    fn issued(pods: u32) -> ObservedTls {
        let plan = plan_certificates(&input(
            &ObservedTls::default(),
            pods,
            OffsetDateTime::now_utc(),
        ));
        let material =
            certs::issue(&plan, None, &BTreeMap::new(), None).expect("issues certificates");
        ObservedTls {
            node_bundle: Some(material.ca.cert.clone()),
            client_bundle: Some(material.ca.cert.clone()),
            node_secret_exists: true,
            ca: Some(material.ca),
            nodes: material.nodes,
            client: Some(material.client),
            cert_manager: None,
        }
    }

    fn issued_names(plan: &CertPlan) -> Vec<(&str, IssueReason)> {
        plan.issue
            .iter()
            .map(|r| (r.name.as_str(), r.reason))
            .collect()
    }

    #[test]
    fn a_pod_is_named_by_its_peer_and_client_service_names_and_loopback() {
        assert_eq!(
            pod_sans("kv", NS, "example.org", "kv-2"),
            [
                "kv-2.kv-peer",
                "kv-2.kv-peer.db",
                "kv-2.kv-peer.db.svc",
                "kv-2.kv-peer.db.svc.example.org",
                "kv",
                "kv.db",
                "kv.db.svc",
                "kv.db.svc.example.org",
                "localhost",
                "127.0.0.1",
            ]
        );
    }

    #[test]
    fn a_new_cluster_gets_a_ca_every_pod_certificate_and_the_operator_client() {
        let plan = plan_certificates(&input(
            &ObservedTls::default(),
            3,
            OffsetDateTime::now_utc(),
        ));
        assert!(plan.new_ca && plan.write);
        assert_eq!(
            issued_names(&plan),
            [
                ("kv-0", IssueReason::Missing),
                ("kv-1", IssueReason::Missing),
                ("kv-2", IssueReason::Missing)
            ]
        );
        let client = plan.client.as_ref().expect("client certificate");
        assert_eq!(
            (client.common_name.as_str(), client.name.as_str()),
            ("root", "kv-operator-client")
        );
        assert!(client.sans.is_empty());

        let material = certs::issue(&plan, None, &BTreeMap::new(), None).expect("issue");
        let kv1 = &material.nodes["kv-1"].cert;
        assert_eq!(raftkv_pki::common_name(kv1).as_deref(), Some("kv-1"));
        assert_eq!(
            certs::subject_alt_names(kv1),
            Some(pod_sans("kv", NS, DOMAIN, "kv-1"))
        );
        assert!(certs::signed_by(kv1, &material.ca.cert));
        assert_eq!(
            raftkv_pki::common_name(&material.client.cert).as_deref(),
            Some("root")
        );
    }

    #[test]
    fn a_converged_cluster_writes_nothing() {
        let tls = issued(3);
        let plan = plan_certificates(&input(&tls, 3, OffsetDateTime::now_utc()));
        assert!(
            !plan.write && !plan.new_ca && plan.client.is_none(),
            "{plan:?}"
        );
        assert!(plan.issue.is_empty());
        assert_eq!(plan.keep, ["kv-0", "kv-1", "kv-2"]);
    }

    #[test]
    fn scale_up_issues_only_the_new_pods_certificates() {
        let tls = issued(1);
        let plan = plan_certificates(&input(&tls, 3, OffsetDateTime::now_utc()));
        assert!(plan.write && !plan.new_ca);
        assert_eq!(
            issued_names(&plan),
            [
                ("kv-1", IssueReason::Missing),
                ("kv-2", IssueReason::Missing)
            ]
        );
        assert_eq!(plan.keep, ["kv-0"], "the running pod keeps its certificate");
    }

    #[test]
    fn scale_down_drops_the_removed_pods_certificates() {
        let tls = issued(3);
        let plan = plan_certificates(&input(&tls, 1, OffsetDateTime::now_utc()));
        assert!(plan.write, "the Secret is rewritten without kv-1 and kv-2");
        assert!(plan.issue.is_empty());
        assert_eq!(plan.keep, ["kv-0"]);
    }

    #[test]
    fn certificates_are_renewed_in_the_last_third_of_their_validity() {
        let tls = issued(2);
        let now = OffsetDateTime::now_utc();
        let early = plan_certificates(&input(&tls, 2, now + Duration::days(59)));
        assert!(!early.write, "{early:?}");
        let due = plan_certificates(&input(&tls, 2, now + Duration::days(61)));
        assert!(!due.new_ca, "the CA lasts ten years");
        assert_eq!(
            issued_names(&due),
            [
                ("kv-0", IssueReason::Renewal),
                ("kv-1", IssueReason::Renewal)
            ]
        );
        assert_eq!(
            due.client.as_ref().map(|c| c.reason),
            Some(IssueReason::Renewal)
        );
    }

    #[test]
    fn a_lost_ca_reissues_everything_and_a_foreign_certificate_is_replaced() {
        let mut tls = issued(2);
        tls.ca = None;
        let plan = plan_certificates(&input(&tls, 2, OffsetDateTime::now_utc()));
        assert!(plan.new_ca);
        assert_eq!(
            issued_names(&plan),
            [("kv-0", IssueReason::NewCa), ("kv-1", IssueReason::NewCa)]
        );

        let mut tls = issued(2);
        let stranger = raftkv_pki::new_ca("someone else", 10).expect("ca");
        let sans = pod_sans("kv", NS, DOMAIN, "kv-1");
        let forged = raftkv_pki::issue(&stranger, "kv-1", &sans, Usage::Node, 10).expect("issue");
        tls.nodes.insert("kv-1".into(), forged.into());
        let plan = plan_certificates(&input(&tls, 2, OffsetDateTime::now_utc()));
        assert!(!plan.new_ca);
        assert_eq!(issued_names(&plan), [("kv-1", IssueReason::NewCa)]);
    }

    #[test]
    fn a_changed_cluster_domain_reissues_with_the_new_names() {
        let tls = issued(1);
        let mut changed = input(&tls, 1, OffsetDateTime::now_utc());
        changed.cluster_domain = "example.org";
        let plan = plan_certificates(&changed);
        assert_eq!(issued_names(&plan), [("kv-0", IssueReason::Names)]);
        assert!(
            plan.issue[0]
                .sans
                .contains(&"kv-0.kv-peer.db.svc.example.org".to_owned())
        );
    }

    #[test]
    fn a_stale_bundle_or_missing_node_secret_is_rewritten() {
        let mut tls = issued(1);
        tls.client_bundle = Some("old".into());
        assert!(plan_certificates(&input(&tls, 1, OffsetDateTime::now_utc())).write);
        let mut tls = issued(1);
        tls.node_secret_exists = false;
        assert!(plan_certificates(&input(&tls, 1, OffsetDateTime::now_utc())).write);
    }

    #[test]
    fn observed_secrets_never_print_their_keys() {
        let tls = issued(2);
        let text = format!("{tls:?}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        let plan = plan_certificates(&input(&tls, 3, OffsetDateTime::now_utc()));
        assert!(!format!("{plan:?}").contains("PRIVATE KEY"));
    }
}
