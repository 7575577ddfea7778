//! The accept loop both listeners run: optional TLS, a bound on open
//! connections, handshake and request-header timeouts, graceful shutdown.
//! axum's own `serve` has none of those limits, so a client could hold
//! connections open with slow or missing headers for as long as it liked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to complete a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's headers. hyper starts this
    /// clock again whenever a keep-alive connection waits for its next
    /// request, so it is also the idle timeout.
    pub header_timeout: Duration,
    /// Open connections beyond this are closed at once.
    pub max_connections: usize,
}

/// What the TLS handshake proved about the client: the common name of a
/// verified client certificate (etcd uses it as the user name). Present as
/// a request extension on every request of a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertName(pub Option<String>);

/// Serves `router` on `listener` until `stop` is cancelled, then lets the
/// requests in flight finish (bounded by the caller).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    name: &'static str,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of file descriptors or a connection reset before
                // accept: not fatal for the listener.
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(listener = name, %addr, "connection limit reached; closing");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let conn = http1(limits)
                        .serve_connection(TokioIo::new(tcp), service(router, ClientCertName(None)));
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(listener = name, %addr, error = %e, "connection ended");
                    }
                }
                Some(acceptor) => {
                    serve_tls(acceptor, tcp, addr, router, limits, name, watcher).await
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn http1(limits: Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    b
}

async fn serve_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    router: Router,
    limits: Limits,
    name: &'static str,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // A plaintext client, a certificate from another CA, or none
            // where one is required: refused here, before any HTTP.
            tracing::info!(listener = name, %addr, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(listener = name, %addr, "TLS handshake timed out");
            return;
        }
    };
    let cn = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(crate::tls::common_name);
    let conn =
        http1(limits).serve_connection(TokioIo::new(stream), service(router, ClientCertName(cn)));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(listener = name, %addr, error = %e, "connection ended");
    }
}

/// The router as a hyper service that stamps each request with what the
/// connection's handshake proved.
#[derive(Clone)]
struct Stamped {
    router: Router,
    cn: ClientCertName,
}

fn service(router: Router, cn: ClientCertName) -> Stamped {
    Stamped { router, cn }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Stamped {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, axum::extract::Request>;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.cn.clone());
        self.router.clone().oneshot(req.map(axum::body::Body::new))
    }
}
