//! Process lifecycle: bind both listeners, serve, and on SIGTERM/SIGINT
//! stop taking requests, hand leadership off, drain, flush and return.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, App};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::node::Node;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let client_listener = TcpListener::bind(config.client_addr)
        .await
        .with_context(|| format!("binding client address {}", config.client_addr))?;
    let peer_listener = TcpListener::bind(config.peer_addr)
        .await
        .with_context(|| format!("binding peer address {}", config.peer_addr))?;
    let dev = config.dev;
    let shutdown_timeout = Duration::from_millis(config.shutdown_timeout_ms);
    let node = Node::start(config).await?;
    let app = App::new(node.clone(), Arc::new(Metrics::new()))?;

    let peer_stop = CancellationToken::new();
    let client_stop = CancellationToken::new();
    let peer_server = tokio::spawn({
        let stop = peer_stop.clone();
        let router = api::peer_router(node.clone());
        async move {
            axum::serve(peer_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    let client_server = tokio::spawn({
        let stop = client_stop.clone();
        let router = api::client_router(app);
        async move {
            axum::serve(client_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
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

    wait_for_signal().await?;
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
