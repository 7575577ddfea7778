//! Which TLS mode the pods get, and which pods need certificates.

use k8s_openapi::jiff::Timestamp;

use super::PlanInput;
use super::sizing::current_replicas;
use crate::build::TlsMode;
use crate::crd::{KvClusterSpec, TlsIssuer};
use crate::reason::Reason;

/// The TLS the pods get, and why it is not what the spec asks for. An
/// initialized cluster keeps the mode it runs: its members' advertised
/// URLs carry the scheme, and pods rolling from one CA or scheme to another
/// could not talk to each other half-way.
pub(super) fn tls_mode(
    input: &PlanInput,
    initialized: bool,
) -> (TlsMode, Option<(Reason, String)>) {
    let wanted = wanted_tls(input.spec);
    let describe = |mode| match mode {
        TlsMode::Plaintext => "no TLS",
        TlsMode::Operator => "TLS from the operator's CA",
        TlsMode::CertManager => "TLS from cert-manager",
    };
    match input.observed.statefulset_tls {
        Some(running) if initialized && running != wanted => (
            running,
            Some((
                Reason::TlsChangeNotApplied,
                format!(
                    "spec.tls asks for {} but the cluster runs with {}; an initialized cluster \
                     keeps its TLS mode (its members advertise their URLs with the scheme). Set \
                     spec.tls back, or move the data to a new cluster",
                    describe(wanted),
                    describe(running)
                ),
            )),
        ),
        _ if wanted == TlsMode::CertManager && input.observed.tls.cert_manager == Some(false) => (
            wanted,
            Some((
                Reason::CertManagerMissing,
                "spec.tls.issuer is certManager but the server does not serve \
                 cert-manager.io/v1 Certificates: install cert-manager (the pods cannot start \
                 without their certificate Secret) or use issuer operator"
                    .into(),
            )),
        ),
        _ => (wanted, None),
    }
}

/// The TLS mode `spec.tls` asks for.
pub fn wanted_tls(spec: &KvClusterSpec) -> TlsMode {
    match (spec.tls.enabled, spec.tls.issuer) {
        (false, _) => TlsMode::Plaintext,
        (true, TlsIssuer::Operator) => TlsMode::Operator,
        (true, TlsIssuer::CertManager) => TlsMode::CertManager,
    }
}

/// Certificates for every pod that exists, the StatefulSet's size this
/// round and the desired size: the next pod's is in the Secret before the
/// StatefulSet grows to it.
pub(super) fn certificate_pods(input: &PlanInput, replicas: i32) -> u32 {
    let pods = input
        .observed
        .pods
        .iter()
        .map(|p| p.ordinal.saturating_add(1))
        .max()
        .unwrap_or(0);
    let sizes = [
        replicas,
        input.spec.replicas,
        current_replicas(input.observed),
    ];
    sizes
        .into_iter()
        .map(|n| u32::try_from(n).unwrap_or(0))
        .chain([pods])
        .max()
        .unwrap_or(0)
}

pub(super) fn offset_time(now: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(now.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
