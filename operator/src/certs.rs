//! Certificate material of the operator-run CA: reading facts out of PEM
//! certificates (pure, the planner uses them) and issuing what a
//! [`CertPlan`] asks for (key generation: random, so not in the planner).
//!
//! Private keys live in [`KeyPem`], whose `Debug` prints nothing, so no
//! `?`-formatted struct or error can carry key material into a log.

use std::collections::BTreeMap;
use std::fmt;

use raftkv_pki::{CertError, Pem, Usage};
/// Facts the planner reads out of certificates (in raftkv-pki, with the
/// other PEM readers).
pub use raftkv_pki::{signed_by, subject_alt_names};

use crate::plan::certs::{CertPlan, CertRequest};

/// Validity of node and client certificates. Renewal starts when a third is
/// left (`raftkv_pki::needs_renewal`), i.e. after 60 days.
pub const LEAF_DAYS: i64 = 90;
/// Validity of a cluster CA. It is not rotated automatically; deleting the
/// `NAME-ca` Secret makes the operator create a new CA and re-issue all.
pub const CA_DAYS: i64 = 3650;

/// A PEM private key. Never printed: `Debug` shows a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(String);

impl KeyPem {
    pub fn new(pem: String) -> KeyPem {
        KeyPem(pem)
    }

    /// The key itself, for a Secret or a TLS client; never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPair {
    pub cert: String,
    pub key: KeyPem,
}

impl From<Pem> for CertPair {
    fn from(pem: Pem) -> CertPair {
        CertPair {
            cert: pem.cert,
            key: KeyPem(pem.key),
        }
    }
}

impl CertPair {
    fn to_pem(&self) -> Pem {
        Pem {
            cert: self.cert.clone(),
            key: self.key.0.clone(),
        }
    }
}

/// Everything the Secrets of an operator-issued cluster hold after a plan
/// was carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsMaterial {
    pub ca: CertPair,
    /// Pod name -> its node certificate.
    pub nodes: BTreeMap<String, CertPair>,
    /// The operator's client certificate (CN `root`).
    pub client: CertPair,
}

/// Carries out `plan`: a new CA if asked, then the certificates it lists,
/// keeping the existing ones it names. `existing` is what the Secrets held.
pub fn issue(
    plan: &CertPlan,
    ca: Option<&CertPair>,
    existing_nodes: &BTreeMap<String, CertPair>,
    existing_client: Option<&CertPair>,
) -> Result<TlsMaterial, CertError> {
    let ca = match (plan.new_ca, ca) {
        (false, Some(ca)) => ca.clone(),
        _ => CertPair::from(raftkv_pki::new_ca(&plan.ca_common_name, CA_DAYS)?),
    };
    let ca_pem = ca.to_pem();
    let leaf = |request: &CertRequest, usage| -> Result<CertPair, CertError> {
        raftkv_pki::issue(
            &ca_pem,
            &request.common_name,
            &request.sans,
            usage,
            LEAF_DAYS,
        )
        .map(CertPair::from)
    };
    let mut nodes = BTreeMap::new();
    for pod in &plan.keep {
        if let Some(pair) = existing_nodes.get(pod) {
            nodes.insert(pod.clone(), pair.clone());
        }
    }
    for request in &plan.issue {
        nodes.insert(request.name.clone(), leaf(request, Usage::Node)?);
    }
    let client = match (&plan.client, existing_client) {
        (None, Some(pair)) => pair.clone(),
        (Some(request), _) => leaf(request, Usage::Client)?,
        (None, None) => {
            return Err(CertError::Invalid(
                "the plan keeps a client certificate that does not exist".into(),
            ));
        }
    };
    Ok(TlsMaterial { ca, nodes, client })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_show_in_debug_output() {
        let ca = CertPair::from(raftkv_pki::new_ca("test", 1).expect("ca"));
        let text = format!("{ca:?}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(ca.key.expose().contains("PRIVATE KEY"));
    }

    #[test]
    fn names_and_signatures_are_read_back() {
        let ca = raftkv_pki::new_ca("a", 1).expect("ca");
        let other = raftkv_pki::new_ca("b", 1).expect("ca");
        let sans = ["kv-0.kv-peer".to_owned(), "127.0.0.1".to_owned()];
        let leaf = raftkv_pki::issue(&ca, "kv-0", &sans, Usage::Node, 1).expect("leaf");
        assert_eq!(subject_alt_names(&leaf.cert), Some(sans.to_vec()));
        assert!(signed_by(&leaf.cert, &ca.cert));
        assert!(!signed_by(&leaf.cert, &other.cert));
        assert!(!signed_by("garbage", &ca.cert));
        assert_eq!(subject_alt_names("garbage"), None);
    }
}
