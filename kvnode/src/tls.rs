//! TLS for the client and peer listeners and for outgoing raft RPCs
//! (rustls with the ring provider; no OpenSSL).
//!
//! Certificates, keys and CA bundles are PEM files that are re-read when
//! their bytes change (Kubernetes updates a mounted Secret in place): new
//! handshakes use the new material, connections already open keep theirs,
//! nothing restarts. A file caught half-written fails to parse; the old
//! material stays in force and the next poll tries again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("CA bundle: {0}")]
    Verifier(String),
}

/// The files of one TLS identity: etcd's `--cert-file`/`--key-file`/
/// `--trusted-ca-file` (or the `--peer-*` trio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Verifies the other side's certificate: clients on the client port
    /// (with client certificate auth), peers in both directions.
    pub ca: Option<PathBuf>,
}

/// Whether a listener asks connecting clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asks (plain server TLS).
    None,
    /// Asks, verifies what is presented against the CA, admits clients
    /// without one (their identity then comes from a token, if any).
    Optional,
    /// Refuses the handshake without a certificate signed by the CA.
    Required,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One consistent set of material read from the files.
struct Loaded {
    /// Raw bytes of (cert, key, ca), to notice changes.
    raw: (Vec<u8>, Vec<u8>, Option<Vec<u8>>),
    key: Arc<CertifiedKey>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    server_verifier: Option<Arc<WebPkiServerVerifier>>,
}

/// Certificate material shared by a listener's and a client's rustls
/// configs, swapped in place when the files change.
pub struct Material {
    files: TlsFiles,
    client_auth: ClientAuth,
    current: RwLock<Arc<Loaded>>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("files", &self.files)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_err(path: &Path, what: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

fn parse_certs(path: &Path, raw: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(raw)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load(files: &TlsFiles, client_auth: ClientAuth) -> Result<Loaded, TlsError> {
    let cert_raw = read(&files.cert)?;
    let key_raw = read(&files.key)?;
    let ca_raw = files.ca.as_deref().map(read).transpose()?;
    let chain = parse_certs(&files.cert, &cert_raw)?;
    let key = PrivateKeyDer::from_pem_slice(&key_raw).map_err(|e| pem_err(&files.key, e))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_err(&files.key, e))?;
    let key = Arc::new(CertifiedKey::new(chain, signer));
    key.keys_match().map_err(|e| pem_err(&files.key, e))?;

    let (client_verifier, server_verifier) = match (&files.ca, &ca_raw) {
        (Some(path), Some(raw)) => {
            let mut roots = RootCertStore::empty();
            for c in parse_certs(path, raw)? {
                roots.add(c).map_err(|e| pem_err(path, e))?;
            }
            let roots = Arc::new(roots);
            let client = match client_auth {
                ClientAuth::None => None,
                ClientAuth::Optional => Some(
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?,
                ),
                ClientAuth::Required => Some(
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?,
                ),
            };
            let server = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            (client, Some(server))
        }
        _ => (None, None),
    };
    Ok(Loaded {
        raw: (cert_raw, key_raw, ca_raw),
        key,
        client_verifier,
        server_verifier,
    })
}

impl Material {
    /// Reads the files once; a node refuses to start on unreadable or
    /// mismatched material rather than serve without it.
    pub fn load(files: TlsFiles, client_auth: ClientAuth) -> Result<Arc<Self>, TlsError> {
        if client_auth != ClientAuth::None && files.ca.is_none() {
            return Err(TlsError::Verifier(
                "client certificate auth needs a trusted CA file".into(),
            ));
        }
        let loaded = load(&files, client_auth)?;
        Ok(Arc::new(Material {
            files,
            client_auth,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the files; `Ok(true)` when new material took effect.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cur = self.current();
        let cert = read(&self.files.cert)?;
        let key = read(&self.files.key)?;
        let ca = self.files.ca.as_deref().map(read).transpose()?;
        if (&cert, &key, &ca) == (&cur.raw.0, &cur.raw.1, &cur.raw.2) {
            return Ok(false);
        }
        let loaded = load(&self.files, self.client_auth)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    /// Polls the files until the process ends.
    pub fn watch(self: &Arc<Self>, what: &'static str) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = me.upgrade() else { return };
                match m.reload() {
                    Ok(true) => tracing::info!(listener = what, cert = %m.files.cert.display(),
                        "reloaded TLS certificate files"),
                    Ok(false) => {}
                    // Typically a Secret update caught half-way; the old
                    // material stays in force.
                    Err(e) => tracing::warn!(listener = what, error = %e,
                        "TLS files changed but do not load; keeping the previous ones"),
                }
            }
        });
    }

    /// The rustls config of a listener using this material.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mut cfg = if self.client_auth == ClientAuth::None {
            builder.with_no_client_auth()
        } else {
            builder.with_client_cert_verifier(Arc::new(ReloadingClientVerifier(self.clone())))
        }
        .with_cert_resolver(Arc::new(ReloadingResolver(self.clone())));
        // The listeners serve HTTP/1.1 only (listener.rs); offering h2
        // would let a client such as curl pick it.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// The rustls config of a client that presents this material's
    /// certificate and verifies servers against its CA (peer RPCs).
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, TlsError> {
        if self.files.ca.is_none() {
            return Err(TlsError::Verifier(
                "a TLS client needs a trusted CA file to verify servers".into(),
            ));
        }
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(ReloadingResolver(self.clone())));
        Ok(cfg)
    }
}

/// Hands out the current certificate, on both the server and client side.
#[derive(Debug)]
struct ReloadingResolver(Arc<Material>);

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

impl ResolvesClientCert for ReloadingResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the current CA bundle.
#[derive(Debug)]
struct ReloadingClientVerifier(Arc<Material>);

impl ReloadingClientVerifier {
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.0
            .current()
            .client_verifier
            .clone()
            .ok_or_else(|| rustls::Error::General("no client verifier configured".into()))
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; returning none keeps this free of the
        // lifetime of a bundle that may be swapped underneath.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies peer servers against the current CA bundle (and their name
/// against the URL, as any TLS client).
#[derive(Debug)]
struct ReloadingServerVerifier(Arc<Material>);

impl ReloadingServerVerifier {
    fn inner(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        self.0
            .current()
            .server_verifier
            .clone()
            .ok_or_else(|| rustls::Error::General("no CA bundle configured".into()))
    }
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The common name of a DER certificate's subject: a client certificate's
/// CN is the user name, as in etcd.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}
