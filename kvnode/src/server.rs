//! Process lifecycle: bind both listeners, serve, and on SIGTERM/SIGINT
//! stop taking requests, hand leadership off, drain, flush and return.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, App};
use crate::config::Config;
use crate::listener::{self, Limits};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::tls::{ClientAuth, Material};

/// What a follower uses to forward requests to the leader's TLS client
/// port: it verifies the leader against the client CA (or the peer CA when
/// there is none) and presents its peer certificate (or, without peer TLS,
/// its client-port certificate), which --client-cert-auth leaders require.
fn forwarding_tls(config: &Config) -> anyhow::Result<Option<Arc<Material>>> {
    let Some(client) = config.client_tls() else {
        return Ok(None);
    };
    let peer = config.peer_tls();
    let ca = client
        .ca
        .clone()
        .or_else(|| peer.as_ref().and_then(|p| p.ca.clone()))
        .context(
            "client TLS needs --trusted-ca-file or peer TLS: followers verify the \
             leader's client certificate when they forward requests to it",
        )?;
    let (cert, key) = match peer {
        Some(p) => (p.cert, p.key),
        None => (client.cert, client.key),
    };
    let files = crate::tls::TlsFiles {
        cert,
        key,
        ca: Some(ca),
    };
    let m = Material::load(files, ClientAuth::None).context("forwarding TLS")?;
    m.watch("forward");
    Ok(Some(m))
}

/// Loads a listener's TLS material and starts watching its files.
fn tls_config(
    files: Option<crate::tls::TlsFiles>,
    auth: ClientAuth,
    what: &'static str,
) -> anyhow::Result<Option<(Arc<Material>, Arc<rustls::ServerConfig>)>> {
    let Some(files) = files else { return Ok(None) };
    let material = Material::load(files, auth).with_context(|| format!("{what} TLS"))?;
    material.watch(what);
    let cfg = Arc::new(material.server_config()?);
    Ok(Some((material, cfg)))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let client_listener = TcpListener::bind(config.client_addr)
        .await
        .with_context(|| format!("binding client address {}", config.client_addr))?;
    let peer_listener = TcpListener::bind(config.peer_addr)
        .await
        .with_context(|| format!("binding peer address {}", config.peer_addr))?;
    let dev = config.dev;
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let client_tls = tls_config(config.client_tls(), config.client_auth(), "client")?;
    // Peers always prove themselves: the peer port requires a certificate.
    let peer_tls = tls_config(config.peer_tls(), ClientAuth::Required, "peer")?;
    let limits = Limits {
        handshake_timeout: Duration::from_millis(config.header_timeout_ms),
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        max_connections: config.max_connections,
    };
    // Peers keep a few pooled connections each; the client bound would be
    // far too generous there, and a small one could starve replication.
    let peer_limits = Limits {
        max_connections: 256,
        ..limits
    };
    let peer_material = peer_tls.as_ref().map(|(m, _)| m.clone());
    let forward_tls = forwarding_tls(&config)?;
    if let Some(done) = crate::offline::pending_restore(&config)? {
        tracing::info!(result = %done, "restore received through the API done");
    }
    if let Some(done) = crate::offline::pending_force_new_cluster(&config)? {
        tracing::warn!(result = %done, "force-new-cluster done");
    }
    let node = Node::start(config, peer_material).await?;
    let app = App::new(
        node.clone(),
        Arc::new(Metrics::new(&node)),
        forward_tls.as_ref(),
    )?;
    tokio::spawn(crate::watch::compact_history(node.clone()));
    tokio::spawn(crate::lease::clock::expire(node.clone()));

    let peer_stop = CancellationToken::new();
    let client_stop = CancellationToken::new();
    let peer_server = tokio::spawn({
        let stop = peer_stop.clone();
        let router = api::peer_router(node.clone());
        let tls = peer_tls.map(|(_, c)| c);
        async move { listener::serve(peer_listener, router, tls, peer_limits, "peer", stop).await }
    });
    let client_server = tokio::spawn({
        let stop = client_stop.clone();
        let router = api::client_router(app);
        let tls = client_tls.map(|(_, c)| c);
        async move { listener::serve(client_listener, router, tls, limits, "client", stop).await }
    });
    tracing::info!(
        client = %node.config.client_addr,
        peer = %node.config.peer_addr,
        "listening"
    );
    if dev && !node.is_initialized() {
        node.init(Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("dev init failed: {e:?}"))?;
        tracing::info!("dev mode: initialized a one-node cluster");
    }

    tokio::select! {
        r = wait_for_signal() => r?,
        _ = node.exit_requested() => {}
    }
    tracing::info!("shutdown requested");
    let graceful = async {
        node.set_draining();
        client_stop.cancel();
        node.hand_off_leadership().await;
        if let Err(e) = client_server.await {
            tracing::warn!(error = %e, "client server task failed");
        }
    };
    if tokio::time::timeout(shutdown_timeout, graceful)
        .await
        .is_err()
    {
        tracing::warn!(?shutdown_timeout, "graceful shutdown timed out");
    }
    if let Err(e) = node.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown failed");
    }
    peer_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), peer_server).await;
    node.db.sync().context("flushing storage")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
