//! Looking at the TLS a node really speaks, from the test machine: the
//! certificate a fresh handshake presents, and a loopback relay to a pod (what
//! `kubectl port-forward` gives a user) so that kvctl can verify the node by a
//! name its certificate carries (`localhost`). Both need the host to route to
//! pod IPs, as it does on tests/local-k8s.sh.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use tokio::net::{TcpListener, TcpStream};

use crate::kv::{Kv, Target};

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
        .filter(|der| !der.is_empty())
}

/// kvnode's raft port.
pub const PEER_PORT: u16 = 7380;

/// The leaf certificate (DER) a new TLS connection to `pod`'s `port` is
/// served, verified against the cluster CA for the pod's name. The raft
/// port wants a client certificate of the CA: `identity` presents the
/// operator's.
pub async fn served_certificate(
    kv: &Kv,
    pod: &str,
    port: u16,
    identity: bool,
) -> Result<Vec<u8>, String> {
    let target = Target::pod(pod);
    // A new client per call: a new connection, so a new handshake.
    let (http, endpoints) = kv
        .direct_http_port(&target, identity, port)
        .await
        .map_err(|e| e.to_string())?;
    let endpoint = endpoints.first().ok_or("no endpoint")?;
    let response = http
        .get(format!("{endpoint}/healthz"))
        .send()
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("{endpoint}: no peer certificate"))
}

/// Whether a TCP connection to `addr` opens within 2 s.
pub async fn reachable(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// `kubectl port-forward`: connections to 127.0.0.1:<port> go to `remote` of
/// pod `pod` through the API server, the kubelet and the container runtime
/// (kube-rs speaks the WebSocket port-forward protocol), one stream per
/// connection, until dropped. Unlike `Relay` it needs no route to pod IPs.
pub struct PortForward {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl PortForward {
    pub async fn start(
        pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
        pod: &str,
        remote: u16,
    ) -> std::io::Result<PortForward> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let pod = pod.to_owned();
        let task = tokio::spawn(async move {
            // Owned here: dropping the forward ends every open stream too (an
            // open stream keeps a connection into the pod and slows its deletion).
            let mut streams = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                while streams.try_join_next().is_some() {}
                let (pods, pod) = (pods.clone(), pod.clone());
                streams.spawn(async move {
                    let mut forwarder = match pods.portforward(&pod, &[remote]).await {
                        Ok(f) => f,
                        Err(e) => {
                            eprintln!("port-forward to {pod}:{remote}: {e}");
                            return;
                        }
                    };
                    if let Some(mut upstream) = forwarder.take_stream(remote) {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                    forwarder.abort();
                });
            }
        });
        Ok(PortForward { port, task })
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays connections on 127.0.0.1:<port> to `to` until dropped.
pub struct Relay {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Relay { port, task })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_certificate_of_a_pem_text_is_decoded() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_to_der(pem), Some(vec![0, 1, 2, 3]));
        assert_eq!(pem_to_der("no certificate"), None);
    }
}
