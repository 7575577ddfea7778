//! A TCP link the test can cut: a node advertises the link's address as its
//! peer URL, so the leader reaches it only through the link while the node
//! itself still reaches the leader directly. Cutting the link makes that one
//! node fall behind on the log (a one-way partition) on demand.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Link {
    pub port: u16,
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// A link on a fresh loopback port to `127.0.0.1:target`, up.
    pub async fn to(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind link");
        let port = listener.local_addr().expect("link addr").port();
        let up = Arc::new(watch::channel(true).0);
        let state = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut rx = state.subscribe();
                tokio::spawn(async move {
                    // While cut, a new connection is dropped at once.
                    if !*rx.borrow_and_update() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = copy_bidirectional(&mut a, &mut b) => {}
                        // Cutting drops every open connection too.
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Link { port, up, task }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}
