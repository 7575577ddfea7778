//! A network the test can partition, on loopback, with no privileges.
//!
//! Each node is a host with its own address, 127.0.0.(100 + host). Both of
//! its listeners bind that address, and every connection it opens to
//! another node leaves from it too (kvnode binds its raft connections and
//! its follower forwarding to the peer address). Other nodes reach it only
//! through two proxies on its address — the URLs it advertises — which see
//! the caller's address and so know the directed link (from, to) each
//! connection belongs to. The tests' own clients come from 127.0.0.1 and
//! are never cut: like Jepsen's control node, they can reach every node.
//!
//! Cutting a link behaves like dropped packets, not like a refusal: a new
//! connection on it is accepted and then hears nothing, and an open one
//! stops moving bytes; both are closed when the link heals, so nothing sent
//! during the cut arrives after it. A cut (a, b) stops connections that a
//! opens to b, requests and answers alike; b can still reach a unless
//! (b, a) is cut as well.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{NodeProc, free_port};

type Links = BTreeSet<(usize, usize)>;

pub struct Fabric {
    cut: Arc<watch::Sender<Links>>,
    /// Hosts whose node is down: their proxies stop listening, so callers
    /// get a refused connection as they would from the dead node itself
    /// (a proxy that accepted and then closed would look like a lost
    /// answer instead).
    down: Arc<watch::Sender<BTreeSet<usize>>>,
    hosts: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The loopback address of `host`.
pub fn ip(host: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 100 + u8::try_from(host).expect("few hosts"))
}

fn host_of(addr: IpAddr) -> Option<usize> {
    match addr {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] >= 100 => {
            Some(usize::from(v4.octets()[3] - 100))
        }
        _ => None,
    }
}

impl Default for Fabric {
    fn default() -> Self {
        Fabric {
            cut: Arc::new(watch::channel(Links::new()).0),
            down: Arc::new(watch::channel(BTreeSet::new()).0),
            hosts: 0,
            tasks: Vec::new(),
        }
    }
}

impl Fabric {
    /// Makes `node` (not started yet) host `host`: its address, and proxies
    /// for its client and peer ports as the URLs it advertises.
    pub async fn host(&mut self, host: usize, node: &mut NodeProc) {
        node.ip = ip(host);
        let client = self.proxy(host, node.client_port).await;
        let peer = self.proxy(host, node.peer_port).await;
        node.advertise = Some((client, peer));
        self.hosts = self.hosts.max(host + 1);
    }

    async fn proxy(&mut self, to: usize, target: u16) -> u16 {
        let port = free_port();
        let mut listener = Some(
            TcpListener::bind((ip(to), port))
                .await
                .expect("bind fabric proxy"),
        );
        let cut = self.cut.clone();
        let mut down = self.down.subscribe();
        self.tasks.push(tokio::spawn(async move {
            loop {
                let Some(l) = &listener else {
                    // Down: wait for the node to be up, then listen again
                    // (the port may linger for a moment).
                    let _ = down.wait_for(|d| !d.contains(&to)).await;
                    while listener.is_none() {
                        match TcpListener::bind((ip(to), port)).await {
                            Ok(l) => listener = Some(l),
                            Err(_) => {
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await
                            }
                        }
                    }
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = l.accept() => Some(accepted),
                    _ = down.wait_for(|d| d.contains(&to)) => None,
                };
                let Some(accepted) = accepted else {
                    listener = None;
                    continue;
                };
                let Ok((inbound, from)) = accepted else {
                    continue;
                };
                let link = host_of(from.ip()).map(|from| (from, to));
                let mut rx = cut.subscribe();
                tokio::spawn(async move {
                    let is_cut = |links: &Links| link.is_some_and(|l| links.contains(&l));
                    let mut inbound = inbound;
                    if !is_cut(&rx.borrow_and_update()) {
                        let Ok(mut outbound) = TcpStream::connect((ip(to), target)).await else {
                            return;
                        };
                        tokio::select! {
                            _ = copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = rx.wait_for(|l| is_cut(l)) => {}
                        }
                    }
                    // Cut: hold the connection silent until the link heals,
                    // then close it.
                    let _ = rx.wait_for(|l| !is_cut(l)).await;
                });
            }
        }));
        port
    }

    /// `host`'s node is down (`true`: killed) or up again: its proxies
    /// stop and start listening.
    pub fn set_down(&self, host: usize, is_down: bool) {
        self.down.send_modify(|d| {
            if is_down {
                d.insert(host);
            } else {
                d.remove(&host);
            }
        });
    }

    fn set(&self, links: Links) {
        self.cut.send_replace(links);
    }

    /// Every link works again.
    pub fn heal(&self) {
        self.set(Links::new());
    }

    /// Cuts `from` -> `to` only.
    pub fn cut_one_way(&self, from: usize, to: usize) {
        self.cut.send_modify(|l| {
            l.insert((from, to));
        });
    }

    /// Cuts every link between `side` and the other hosts, both ways.
    pub fn partition(&self, side: &[usize]) {
        let mut links = Links::new();
        for a in 0..self.hosts {
            for b in 0..self.hosts {
                if side.contains(&a) != side.contains(&b) {
                    links.insert((a, b));
                }
            }
        }
        self.set(links);
    }

    /// `host` alone on one side.
    pub fn isolate(&self, host: usize) {
        self.partition(&[host]);
    }

    /// The cut links, for the fault timeline.
    pub fn describe(&self) -> String {
        let links = self.cut.borrow();
        if links.is_empty() {
            return "all links up".into();
        }
        let cut: Vec<String> = links
            .iter()
            .map(|(a, b)| format!("n{}->n{}", a + 1, b + 1))
            .collect();
        format!("cut {}", cut.join(" "))
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
