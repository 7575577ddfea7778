//! Test harness: real kvnode processes on loopback, each with its own data
//! dir and ports, driven through the real HTTP API with kvclient.
#![allow(dead_code)] // helpers kept for tests that come and go

pub mod fabric;
pub mod kvctl;
pub mod link;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvclient::{Client, ClusterStatus, InitRequest, MemberInfo, Role};

pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: u64 = 600;

/// How [`NodeProc::start`] starts a node: its id (`None`: the one kept in
/// the data dir, or a generated one), extra kvnode flags, extra environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Start<'a> {
    pub id: Option<u64>,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

impl<'a> Start<'a> {
    pub fn args(self, args: &'a [&'a str]) -> Self {
        Start { args, ..self }
    }

    pub fn env(self, env: &'a [(&'a str, &'a str)]) -> Self {
        Start { env, ..self }
    }
}

impl From<Option<u64>> for Start<'_> {
    fn from(id: Option<u64>) -> Self {
        Start {
            id,
            ..Start::default()
        }
    }
}

/// Puts `n` keys `prefix-0000..` with values `prefix0..`, one at a time
/// (each acknowledged before the next), and returns the last revision.
pub async fn put_keys(client: &Client, prefix: &str, n: usize) -> u64 {
    let mut last = 0;
    for i in 0..n {
        last = client
            .put(&format!("{prefix}-{i:04}"), format!("{prefix}{i}"))
            .await
            .expect("put");
    }
    last
}

/// A `--dev` node (one node that initializes itself) with `args` added,
/// started and ready.
pub async fn dev_node(dir: &std::path::Path, name: &str, opts: Opts, args: &[&str]) -> NodeProc {
    let mut n = NodeProc::new(dir, name, opts);
    let mut all = vec!["--dev"];
    all.extend_from_slice(args);
    n.start(Start::default().args(&all)).await;
    let c = n.client();
    wait_for(
        Duration::from_secs(20),
        &format!("{name} ready"),
        || async { matches!(c.ready().await, Ok(Ok(()))).then_some(()) },
    )
    .await;
    n
}

/// Options every node of a test cluster starts with.
#[derive(Clone, Debug)]
pub struct Opts {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_threshold: u64,
    /// TLS on both ports (client port: optional client certificates).
    pub tls: Option<Arc<Pki>>,
    /// A token every harness client sends (shared by all clones: set it
    /// once auth is enabled and the harness keeps working).
    pub token: Arc<Mutex<Option<String>>>,
    /// Environment of every node process.
    pub env: Vec<(String, String)>,
    /// User and password harness clients authenticate with (nodes that
    /// start with auth on, such as one restored from a snapshot).
    pub credentials: Option<(String, String)>,
}

impl Opts {
    /// A kvclient for these nodes: over TLS (trusting the test CA) when
    /// the nodes run it, with the token if one is set.
    pub fn client(&self, endpoints: &[String]) -> Client {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((user, password)) = &self.credentials {
            let c = match &self.tls {
                None => Client::new(endpoints).expect("endpoints"),
                Some(pki) => Client::with_http(endpoints, Pki::http(pki, None)).expect("endpoints"),
            };
            return c.with_credentials(user, password);
        }
        let mut b = match &self.tls {
            None if token.is_none() => return Client::new(endpoints).expect("endpoints"),
            None => reqwest::Client::builder().timeout(Duration::from_secs(15)),
            Some(pki) => Pki::http_builder(pki, None),
        };
        if let Some(t) = token {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("x-raftkv-token", t.parse().expect("token header"));
            b = b.default_headers(h);
        }
        Client::with_http(endpoints, b.build().expect("http client")).expect("endpoints")
    }

    pub fn set_token(&self, token: &str) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.to_owned());
    }
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            heartbeat_ms: HEARTBEAT_MS,
            election_ms: ELECTION_MS,
            snapshot_threshold: 10_000,
            tls: None,
            token: Arc::default(),
            env: Vec::new(),
            credentials: None,
        }
    }
}

/// A test CA (kvnode's own `certs` module) and the files it issued.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    ca: kvnode::certs::Pem,
}

impl Pki {
    pub fn new(dir: PathBuf) -> Pki {
        let ca = kvnode::certs::new_ca("raftkv test CA", 1).expect("ca");
        kvnode::certs::write_pair(&dir, "ca", &ca).expect("write ca");
        Pki { dir, ca }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues (again, with a new serial) `<name>.crt/.key` for a node on
    /// 127.0.0.1.
    pub fn issue_node(&self, name: &str) -> (PathBuf, PathBuf) {
        let pem = kvnode::certs::issue(
            &self.ca,
            name,
            &["127.0.0.1".into(), "localhost".into()],
            kvnode::certs::Usage::Node,
            1,
        )
        .expect("issue node");
        kvnode::certs::write_pair(&self.dir, name, &pem).expect("write node cert")
    }

    pub fn issue_client(&self, user: &str) -> (PathBuf, PathBuf) {
        let pem = kvnode::certs::issue(&self.ca, user, &[], kvnode::certs::Usage::Client, 1)
            .expect("issue client");
        kvnode::certs::write_pair(&self.dir, user, &pem).expect("write client cert")
    }

    /// An HTTPS client that trusts `trust`'s CA and presents `<user>`'s
    /// certificate from this CA, if given. Independent of kvnode's TLS code.
    pub fn http(trust: &Pki, identity: Option<(&Pki, &str)>) -> reqwest::Client {
        Self::http_builder(trust, identity)
            .build()
            .expect("https client")
    }

    pub fn http_builder(trust: &Pki, identity: Option<(&Pki, &str)>) -> reqwest::ClientBuilder {
        let ca = std::fs::read(trust.ca_file()).expect("read ca");
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
            .timeout(Duration::from_secs(10))
            .tls_info(true);
        if let Some((pki, user)) = identity {
            let mut pem = std::fs::read(pki.dir.join(format!("{user}.crt"))).expect("crt");
            pem.extend(std::fs::read(pki.dir.join(format!("{user}.key"))).expect("key"));
            b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        b
    }
}

pub struct NodeProc {
    /// The id the node reports (learned from its status after start).
    pub id: u64,
    pub name: String,
    /// The loopback address both listeners bind (127.0.0.1 unless the
    /// node is a host of a [`fabric::Fabric`]).
    pub ip: std::net::Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
    /// Ports (client, peer) on `ip` the node advertises instead of its
    /// own: a fabric's proxies in front of it.
    pub advertise: Option<(u16, u16)>,
    pub data_dir: PathBuf,
    log: PathBuf,
    opts: Opts,
    child: Option<Child>,
}

/// A port no other test process holds: each is claimed with a file under
/// the system temp dir naming the claiming process (nextest runs every
/// test in its own process, and two processes may pick the same port;
/// checking that it binds is not enough, a node started by the other test
/// may bind it a moment later). A claim whose process is gone is stale and
/// taken over. Ports stay below the kernel's ephemeral range (32768+), or
/// a restarted node could find its port taken by some client's outgoing
/// connection.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let dir = std::env::temp_dir().join("raftkv-test-ports");
    std::fs::create_dir_all(&dir).expect("port claims dir");
    let me = std::process::id();
    let base = 10000 + (me % 220) as u16 * 100;
    loop {
        let p = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let claim = dir.join(p.to_string());
        match std::fs::File::create_new(&claim) {
            Ok(mut f) => {
                use std::io::Write as _;
                f.write_all(me.to_string().as_bytes()).expect("write claim");
            }
            Err(_) => {
                let owner = std::fs::read_to_string(&claim).unwrap_or_default();
                let alive = owner.trim().parse::<u32>().is_ok_and(|pid| {
                    pid == me || std::path::Path::new(&format!("/proc/{pid}")).exists()
                });
                if alive || owner.is_empty() {
                    // Held, or being written by its claimer right now.
                    continue;
                }
                let _ = std::fs::remove_file(&claim);
                continue;
            }
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

impl NodeProc {
    pub fn new(root: &std::path::Path, name: &str, opts: Opts) -> Self {
        NodeProc {
            id: 0,
            name: name.to_owned(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            client_port: free_port(),
            peer_port: free_port(),
            advertise: None,
            data_dir: root.join(name),
            log: root.join(format!("{name}.log")),
            opts,
            child: None,
        }
    }

    /// Changes how the harness talks to the node (credentials, say: a node
    /// restored from a snapshot has the snapshot's users and auth state).
    pub fn set_opts(&mut self, opts: Opts) {
        self.opts = opts;
    }

    fn scheme(&self) -> &'static str {
        if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The node's own client listener (what the tests' clients use).
    pub fn client_url(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.ip, self.client_port)
    }

    /// The peer URL other nodes use: the advertised one.
    pub fn peer_url(&self) -> String {
        let port = self.advertise.map_or(self.peer_port, |a| a.1);
        format!("{}://{}:{port}", self.scheme(), self.ip)
    }

    /// What the membership records: the advertised URLs.
    pub fn info(&self) -> MemberInfo {
        let client = self.advertise.map_or(self.client_port, |a| a.0);
        MemberInfo {
            name: self.name.clone(),
            peer_url: self.peer_url(),
            client_url: format!("{}://{}:{client}", self.scheme(), self.ip),
        }
    }

    /// Every key of `put_keys(prefix, n)`, read from this node's own state
    /// (serializable: what it applied, not what the leader knows).
    pub async fn assert_holds(&self, prefix: &str, n: usize) {
        let client = self.client();
        for k in 0..n {
            let key = format!("{prefix}-{k:04}");
            let got = client
                .get_with(&key, kvclient::Consistency::Serializable)
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("{key} missing on {}", self.name));
            assert_eq!(
                String::from_utf8_lossy(&got.value),
                format!("{prefix}{k}"),
                "{key} on {}",
                self.name
            );
        }
    }

    /// The request that adds this node as a learner (under `id`, which is
    /// its own id unless a test wants another).
    pub fn learner_request(&self, id: u64) -> kvclient::AddLearnerRequest {
        kvclient::AddLearnerRequest {
            id,
            name: self.name.clone(),
            peer_url: self.peer_url(),
            client_url: self.client_url(),
        }
    }

    pub fn command(&self, id: Option<u64>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvnode"));
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--client-addr")
            .arg(format!("{}:{}", self.ip, self.client_port))
            .arg("--peer-addr")
            .arg(format!("{}:{}", self.ip, self.peer_port))
            .arg("--heartbeat-interval-ms")
            .arg(self.opts.heartbeat_ms.to_string())
            .arg("--election-timeout-ms")
            .arg(self.opts.election_ms.to_string())
            .arg("--snapshot-log-threshold")
            .arg(self.opts.snapshot_threshold.to_string())
            .env("KVNODE_LOG", "info,openraft=warn")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)));
        if let Some(id) = id {
            cmd.arg("--id").arg(id.to_string());
        }
        if self.advertise.is_some() {
            let info = self.info();
            cmd.arg("--advertise-client-url")
                .arg(info.client_url)
                .arg("--advertise-peer-url")
                .arg(info.peer_url);
        }
        if let Some(pki) = &self.opts.tls {
            let cert = pki.dir.join(format!("{}.crt", self.name));
            if !cert.exists() {
                pki.issue_node(&self.name);
            }
            let key = pki.dir.join(format!("{}.key", self.name));
            let ca = pki.ca_file();
            for (flag, path) in [
                ("--cert-file", &cert),
                ("--key-file", &key),
                ("--trusted-ca-file", &ca),
                ("--peer-cert-file", &cert),
                ("--peer-key-file", &key),
                ("--peer-trusted-ca-file", &ca),
            ] {
                cmd.arg(flag).arg(path);
            }
        }
        cmd
    }

    /// Starts the process and waits until its API answers: `n.start(Some(id))`,
    /// `n.start(None)`, or with flags and environment,
    /// `n.start(Start::default().args(&["--dev"]).env(&[("KVNODE_CRASH_AT", p)]))`.
    pub async fn start<'a>(&mut self, how: impl Into<Start<'a>>) {
        let Start { id, args, env } = how.into();
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = self
            .command(id)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kvnode");
        self.child = Some(child);
        let c = self.client();
        let st = wait_for(
            Duration::from_secs(20),
            &format!("{} to serve", self.name),
            || async { c.status().await.ok() },
        )
        .await;
        self.id = st.id;
    }

    pub fn client(&self) -> Client {
        self.opts.client(&[self.client_url()]).single_shot()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a paused process keeps its
    /// sockets and wakes up believing what it believed before.
    pub fn pause(&self, stop: bool) {
        let pid = self.pid().to_string();
        let signal = if stop { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {signal} {pid}");
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < until,
                "{} did not exit after SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself (a crash point) and returns
    /// its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut().expect("running");
            if let Some(st) = c.try_wait().expect("wait") {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < until,
                "{} still running after {timeout:?}; log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn wipe(&mut self) {
        assert!(self.child.is_none());
        std::fs::remove_dir_all(&self.data_dir).expect("wipe data dir");
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// A process started from a hand-built command, killed when dropped.
pub struct Spawned(Child);

impl Spawned {
    pub fn new(mut cmd: Command, log: &std::path::Path) -> Spawned {
        let log = std::fs::File::create(log).expect("create log");
        Spawned(
            cmd.stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn"),
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub dir: tempfile::TempDir,
    pub opts: Opts,
}

impl Cluster {
    /// `n` nodes with ids 1..=n, initialized through node 1, all ready.
    pub async fn start(n: usize, opts: Opts) -> Cluster {
        Cluster::start_hosts(None, n, opts).await
    }

    /// `n` nodes with ids 1..=n, each its own host of `fabric` (its own
    /// loopback address, reached by the others only through the fabric's
    /// proxies), initialized through node 1, all ready.
    pub async fn start_on(fabric: &mut fabric::Fabric, n: usize, opts: Opts) -> Cluster {
        Cluster::start_hosts(Some(fabric), n, opts).await
    }

    async fn start_hosts(mut fabric: Option<&mut fabric::Fabric>, n: usize, opts: Opts) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("raftkv-test-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut node = NodeProc::new(dir.path(), &format!("n{}", i + 1), opts.clone());
            if let Some(f) = fabric.as_deref_mut() {
                f.host(i, &mut node).await;
            }
            node.start(Some(i as u64 + 1)).await;
            nodes.push(node);
        }
        let mut members = BTreeMap::new();
        for n in &nodes {
            members.insert(n.id.to_string(), n.info());
        }
        nodes[0]
            .client()
            .init(&InitRequest { members })
            .await
            .expect("init");
        let c = Cluster { nodes, dir, opts };
        c.wait_all_ready().await;
        c
    }

    /// Adds a (not yet member) node process with a generated id.
    pub async fn spawn_extra(&mut self, name: &str) -> usize {
        self.spawn_extra_env(name, &[]).await
    }

    /// `spawn_extra` with environment variables for the new process.
    pub async fn spawn_extra_env(&mut self, name: &str, env: &[(&str, &str)]) -> usize {
        let mut node = NodeProc::new(self.dir.path(), name, self.opts.clone());
        node.start(Start::default().env(env)).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.client_url())
            .collect()
    }

    /// A client over every running node, with retries.
    pub fn client(&self) -> Client {
        self.opts.client(&self.endpoints())
    }

    pub async fn wait_all_ready(&self) {
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let c = n.client();
            wait_for(
                Duration::from_secs(20),
                &format!("{} ready", n.name),
                || async { matches!(c.ready().await, Ok(Ok(()))).then_some(()) },
            )
            .await;
        }
    }

    /// Index of the node every running node agrees leads.
    pub async fn leader(&self) -> usize {
        wait_for(Duration::from_secs(20), "an agreed leader", || async {
            let mut leader = None;
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let st = n.client().status().await.ok()?;
                let l = st.leader?.id;
                if *leader.get_or_insert(l) != l {
                    return None;
                }
            }
            self.nodes
                .iter()
                .position(|n| Some(n.id) == leader && n.is_running())
        })
        .await
    }

    pub async fn status(&self, i: usize) -> ClusterStatus {
        self.nodes[i].client().status().await.expect("status")
    }

    /// Waits until node `i` has applied store revision `revision` (what
    /// writes return; not a log index).
    pub async fn wait_applied(&self, i: usize, revision: u64) {
        let c = self.nodes[i].client();
        wait_for(
            Duration::from_secs(20),
            &format!("{} to apply revision {revision}", self.nodes[i].name),
            || async {
                let st = c.status().await.ok()?;
                (st.revision >= revision).then_some(())
            },
        )
        .await;
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("----- {} (id {}) -----\n{}", n.name, n.id, n.log_tail());
        }
    }
}

impl Drop for Cluster {
    /// A failing test shows what the nodes logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Polls `f` every 50 ms until it yields `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// kvnode's source directory, as the test runner (cargo, nextest) gives it
/// at run time: the compile-time value is stale when one target directory
/// serves clones at different paths and the binary was built by another.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

pub fn is_voter(st: &ClusterStatus, id: u64) -> bool {
    st.membership.voters.iter().any(|m| m.id == id)
}

pub fn role(st: &ClusterStatus) -> Role {
    st.role
}
