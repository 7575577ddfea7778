//! raftkv's small certificate authority (rcgen with ring; ECDSA P-256 keys,
//! PEM files), shared by `kvnode certs` (local clusters, the TLS tests) and
//! the operator, which issues the certificates of the clusters it runs.
//!
//! Node certificates carry both server and client usage: a node serves its
//! ports with it and presents it on outgoing raft RPCs and forwarded
//! requests.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A node: server and client authentication.
    Node,
    /// A client (kvctl, the operator): client authentication only; its
    /// common name is the user name.
    Client,
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "raftkv");
    dn
}

/// A new self-signed CA, valid for `days`.
pub fn new_ca(common_name: &str, days: i64) -> Result<Pem, CertError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    // Back-dated a little: clocks of the machines that check it differ.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
    let cert = p.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `common_name` signed by `ca`, valid for `days`, with
/// `sans` as DNS names or IP addresses.
pub fn issue(
    ca: &Pem,
    common_name: &str,
    sans: &[String],
    usage: Usage,
    days: i64,
) -> Result<Pem, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(common_name);
    for san in sans {
        p.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if valid_dns_name(san) => SanType::DnsName(
                san.clone()
                    .try_into()
                    .map_err(|_| CertError::Invalid(format!("{san:?} is not a DNS name")))?,
            ),
            Err(_) => {
                return Err(CertError::Invalid(format!(
                    "{san:?} is neither an IP address nor a DNS name"
                )));
            }
        });
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match usage {
        Usage::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
    // A fresh serial each time, so a re-issued certificate is told apart.
    p.serial_number = Some(rand::random::<u64>().into());
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Letters, digits and hyphens in dot-separated labels; a leading `*`
/// label for a wildcard.
fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').enumerate().all(|(i, label)| {
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    // Written next to the target and renamed: a reader (a node reloading
    // its files) never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes `pem` as `<dir>/<name>.crt` and `<dir>/<name>.key` (mode 0600).
pub fn write_pair(dir: &Path, name: &str, pem: &Pem) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    // Key first: a reader that sees the new certificate finds its key.
    write(&key, &pem.key, true)?;
    write(&cert, &pem.cert, false)?;
    Ok((cert, key))
}

/// Reads `<dir>/<name>.crt` and `.key`.
pub fn read_pair(dir: &Path, name: &str) -> Result<Pem, CertError> {
    let read = |ext: &str| {
        let path = dir.join(format!("{name}.{ext}"));
        std::fs::read_to_string(&path).map_err(|source| CertError::Io { path, source })
    };
    Ok(Pem {
        cert: read("crt")?,
        key: read("key")?,
    })
}

/// When a certificate is due for renewal: once less than a third of its
/// validity is left (as cert-manager's default), or it cannot be parsed.
pub fn needs_renewal(cert_pem: &str, now: OffsetDateTime) -> bool {
    let Ok(p) = ::pem::parse(cert_pem) else {
        return true;
    };
    let Ok((_, c)) = x509_parser::parse_x509_certificate(p.contents()) else {
        return true;
    };
    let from = c.validity().not_before.timestamp();
    let to = c.validity().not_after.timestamp();
    let now = now.unix_timestamp();
    now >= to - (to - from) / 3
}

/// The subject common name of a PEM certificate.
pub fn common_name(cert_pem: &str) -> Option<String> {
    let p = ::pem::parse(cert_pem).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(p.contents()).ok()?;
    c.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// DNS names and IP addresses of a PEM certificate, in certificate order;
/// `None` when it does not parse.
pub fn subject_alt_names(cert_pem: &str) -> Option<Vec<String>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Some(Vec::new());
    };
    Some(
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => ip_text(bytes),
                _ => None,
            })
            .collect(),
    )
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// `cert_pem` carries a valid signature of the CA certificate `ca_pem`.
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    fn parse(text: &str) -> Option<x509_parser::pem::Pem> {
        x509_parser::pem::parse_x509_pem(text.as_bytes())
            .ok()
            .map(|(_, pem)| pem)
    }
    let (Some(leaf), Some(ca)) = (parse(cert_pem), parse(ca_pem)) else {
        return false;
    };
    let (Ok(leaf), Ok(ca)) = (leaf.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pem: &str) -> Vec<u8> {
        ::pem::parse(pem).expect("pem").contents().to_vec()
    }

    #[test]
    fn issued_certificates_name_their_subject_and_chain_to_the_ca() {
        let ca = new_ca("test CA", 30).expect("ca");
        let sans = ["127.0.0.1".to_string(), "kv-0.kv-peer".to_string()];
        let node = issue(&ca, "node1", &sans, Usage::Node, 7).expect("issue");
        assert_eq!(common_name(&node.cert).as_deref(), Some("node1"));

        let ca_der = parse(&ca.cert);
        let leaf_der = parse(&node.cert);
        let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).expect("leaf");
        assert_eq!(leaf.issuer().to_string(), ca_x509.subject().to_string());
        let san = leaf.subject_alternative_name().expect("ext").expect("san");
        assert_eq!(san.value.general_names.len(), 2);
        let days = (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 7, "validity: 7 days and the hour of back-dating");

        assert!(issue(&ca, "x", &["not a name!".into()], Usage::Client, 1).is_err());
    }

    #[test]
    fn renewal_is_due_in_the_last_third_of_the_validity() {
        let ca = new_ca("test CA", 30).expect("ca");
        let cert = issue(&ca, "n", &["n".into()], Usage::Node, 30)
            .expect("issue")
            .cert;
        let now = OffsetDateTime::now_utc();
        assert!(!needs_renewal(&cert, now));
        assert!(!needs_renewal(&cert, now + Duration::days(19)));
        assert!(needs_renewal(&cert, now + Duration::days(21)));
        assert!(needs_renewal("not a certificate", now));
    }
}
