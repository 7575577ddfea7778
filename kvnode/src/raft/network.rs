//! The client side of raft RPC: HTTP on the peer port, MessagePack bodies,
//! one pooled reqwest client for all peers. Every request names the cluster
//! and the target node id so that a node reached by mistake (a wiped pod
//! that came back with a new id, another cluster) refuses it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncSeekExt;

use super::identity::Identity;
use super::types::{CommandResult, MemberInfo, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::metrics::{PeerHandles, PeerInstruments};
use crate::store::SnapshotFile;

pub const HDR_CLUSTER: &str = "x-raftkv-cluster-id";
pub const HDR_TARGET: &str = "x-raftkv-target-id";
pub const HDR_FROM: &str = "x-raftkv-from-id";

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_PRE_VOTE: &str = "/raft/pre-vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub const PATH_TRANSFER: &str = "/raft/transfer-leader";
pub const PATH_READ_INDEX: &str = "/raft/read-index";
pub const PATH_PROPOSE_BATCH: &str = "/raft/propose-batch";

/// The leader's answer to one of a follower's proposals (`PATH_PROPOSE_BATCH`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ProposeReply {
    /// Committed and applied on the leader, at log index `index`.
    Applied { result: CommandResult, index: u64 },
    /// Not proposed: the receiver is not the leader (any more).
    NotLeader,
    /// Proposed, but the leader cannot tell whether it committed (it lost
    /// leadership first), or raft failed: the caller must not retry blindly.
    Unavailable(String),
}

/// Why a proposal sent to the leader has no answer.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// It never reached the leader's raft (no connection, or refused at the
    /// gate): nothing was proposed, so another route is safe.
    NotSent(String),
    /// Sent, but the answer was lost: it may or may not have been applied.
    Indeterminate(String),
}

/// Header of a streamed snapshot, sent before the file bytes.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    identity: Arc<Identity>,
    append_timeout: Duration,
    instruments: PeerInstruments,
}

/// Entry bytes sent in one append: openraft batches up to
/// `max_payload_entries` entries, which with 1 MiB values would be a 128 MiB
/// request, built once per follower and decoded in one piece. A larger batch
/// goes as a prefix that fits and a `PartialSuccess`; openraft sends the rest
/// next.
const MAX_APPEND_BYTES: usize = 4 << 20;
/// The rate assumed when giving an append time for its bytes.
const APPEND_BYTES_PER_SEC: u64 = 8 << 20;

impl Network {
    /// With `tls`, every RPC runs over mutual TLS: the node presents its
    /// peer certificate and accepts only peers signed by the peer CA.
    /// `idle`: how long pooled connections are kept; below the peers'
    /// idle timeout, so the pool never picks one a peer is closing.
    /// `append_timeout`: how long an append carrying entries may take
    /// before its bytes are counted (see `PeerClient::append_entries`).
    pub fn new(
        identity: Arc<Identity>,
        tls: Option<&Arc<crate::tls::Material>>,
        idle: Duration,
        append_timeout: Duration,
    ) -> Result<Self, crate::node::StartError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(idle)
            .tcp_nodelay(true)
            .local_address(identity.peer_bind_ip());
        if let Some(m) = tls {
            b = b.use_preconfigured_tls(m.client_config()?).https_only(true);
        }
        Ok(Network {
            http: b.build()?,
            identity,
            append_timeout,
            instruments: PeerInstruments::default(),
        })
    }

    pub fn instruments(&self) -> &PeerInstruments {
        &self.instruments
    }
}

impl Network {
    pub fn client(&self, target: NodeId, node: &MemberInfo) -> PeerClient {
        PeerClient {
            http: self.http.clone(),
            identity: self.identity.clone(),
            append_timeout: self.append_timeout,
            target,
            base: node.peer_url.trim_end_matches('/').to_owned(),
            metrics: self.instruments.peer(target),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> PeerClient {
        self.client(target, node)
    }
}

pub struct PeerClient {
    http: reqwest::Client,
    identity: Arc<Identity>,
    append_timeout: Duration,
    target: NodeId,
    base: String,
    metrics: PeerHandles,
}

impl PeerClient {
    fn request(&self, path: &str, ttl: Duration) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .timeout(ttl)
            .header(HDR_TARGET, self.target.to_string())
            .header(HDR_FROM, self.identity.node_id.to_string());
        if let Some(c) = self.identity.cluster_id() {
            req = req.header(HDR_CLUSTER, c);
        }
        req
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let body =
            rmp_serde::to_vec_named(body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.post(path, body, option.soft_ttl()).await
    }

    /// `call`, timed as the peer's round trip: only for RPCs that carry no
    /// log entries, whose answer does not wait for the peer's fsync.
    async fn timed_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let started = Instant::now();
        let resp = self.call(path, body, option).await?;
        self.metrics.rtt.observe(started.elapsed().as_secs_f64());
        Ok(resp)
    }

    /// Posts an encoded body and decodes the MessagePack answer.
    async fn post<Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.metrics.sent.inc_by(body.len() as u64);
        let resp = self
            .request(path, ttl)
            .body(body)
            .send()
            .await
            .map_err(|e| to_rpc_error(&e))?;
        self.decode_response(resp).await
    }

    async fn decode_response<Resp: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| to_rpc_error(&e))?;
        self.metrics.received.inc_by(bytes.len() as u64);
        if !status.is_success() {
            let msg = String::from_utf8_lossy(&bytes).into_owned();
            // A refusal (wrong node or cluster) means nobody we should talk to
            // is at that address; treat it as unreachable so openraft backs off.
            return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "peer answered {status}: {msg}"
            ))));
        }
        rmp_serde::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl PeerClient {
    /// Asks the leader for a read index (ReadIndex confirmed by a quorum),
    /// so a follower can serve a linearizable read from its own state.
    pub async fn read_index(&self, ttl: Duration) -> Result<u64, RPCError<TypeConfig>> {
        self.call(PATH_READ_INDEX, &(), &RPCOption::new(ttl)).await
    }

    /// Proposes a batch of commands through the leader, in the log's own
    /// encoding on the peer connection (see `proposer.rs`): cheaper than
    /// replaying each client's HTTP request, whose JSON the leader would
    /// parse a second time. `body` is a MessagePack array of commands; the
    /// answer has one reply per command, in order.
    pub async fn propose_batch(
        &self,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<ProposeReply>, ProposeError> {
        match self.post(PATH_PROPOSE_BATCH, body, ttl).await {
            Ok(replies) => Ok(replies),
            // Connection refused, or the peer gate's refusal (wrong node,
            // not a member, or a leader too old to know this path): raft
            // never saw it.
            Err(RPCError::Unreachable(u)) => Err(ProposeError::NotSent(u.to_string())),
            Err(e) => Err(ProposeError::Indeterminate(e.to_string())),
        }
    }
}

/// How many of `entries` go in one append (at least one), and their
/// approximate size.
fn append_prefix(entries: &[super::types::Entry]) -> (usize, usize) {
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        let n = super::types::entry_bytes(e);
        if i > 0 && bytes + n > MAX_APPEND_BYTES {
            return (i, bytes);
        }
        bytes += n;
    }
    (entries.len(), bytes)
}

fn to_rpc_error(e: &reqwest::Error) -> RPCError<TypeConfig> {
    if e.is_connect() {
        RPCError::Unreachable(Unreachable::new(e))
    } else {
        RPCError::Network(NetworkError::new(e))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if rpc.entries.is_empty() {
            // A heartbeat: openraft's deadline (the heartbeat interval).
            return self.timed_call(PATH_APPEND, &rpc, &option).await;
        }
        let (keep, bytes) = append_prefix(&rpc.entries);
        let cut = keep < rpc.entries.len();
        rpc.entries.truncate(keep);
        // openraft's deadline for an append is the heartbeat interval, too
        // short for a follower to write, fsync and answer a batch under
        // load; a timed-out batch is sent again from the start, so a big one
        // would never get through. Give it an election timeout plus time
        // for its bytes.
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let ttl = self.append_timeout
            + Duration::from_millis(bytes.saturating_mul(1000) / APPEND_BYTES_PER_SEC);
        let resp: AppendEntriesResponse<TypeConfig> = self
            .call(
                PATH_APPEND,
                &rpc,
                &RPCOption::new(ttl.max(option.hard_ttl())),
            )
            .await?;
        Ok(match resp {
            AppendEntriesResponse::Success if cut => {
                AppendEntriesResponse::PartialSuccess(rpc.entries.last().map(|e| e.log_id))
            }
            resp => resp,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.timed_call(PATH_VOTE, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.timed_call(PATH_PRE_VOTE, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(PATH_TRANSFER, &req, &option).await
    }

    /// Streams the snapshot file in chunks behind a small header; the
    /// receiver spools it to disk, so neither side holds it in memory.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net_err = |e: &dyn std::fmt::Display| {
            StreamingError::Network(NetworkError::from_string(e.to_string()))
        };
        let header = rmp_serde::to_vec_named(&SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        })
        .map_err(|e| net_err(&e))?;
        let header_len = u32::try_from(header.len()).map_err(|e| net_err(&e))?;
        let mut prefix = header_len.to_be_bytes().to_vec();
        prefix.extend_from_slice(&header);

        let file = snapshot
            .snapshot
            .file
            .try_clone()
            .map_err(|e| net_err(&e))?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| net_err(&e))?;
        let sent = self.metrics.sent.clone();
        let body =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(prefix)) })
                .chain(tokio_util::io::ReaderStream::with_capacity(
                    file,
                    256 * 1024,
                ))
                .inspect(move |chunk| {
                    if let Ok(b) = chunk {
                        sent.inc_by(b.len() as u64);
                    }
                });

        let send = self
            .request(PATH_SNAPSHOT, Duration::from_secs(600))
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r.map_err(|e| {
                if e.is_connect() {
                    StreamingError::Unreachable(Unreachable::new(&e))
                } else {
                    StreamingError::Network(NetworkError::new(&e))
                }
            })?,
        };
        self.decode_response(resp).await.map_err(|e| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => net_err(&other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{Command, Entry, Op};
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderId;

    fn entry(index: u64, value_len: usize) -> Entry {
        let leader = openraft::alias::CommittedLeaderIdOf::<TypeConfig>::new(1, 1);
        Entry::new_normal(
            openraft::alias::LogIdOf::<TypeConfig>::new(leader, index),
            Command {
                success: vec![Op::Put {
                    key: format!("k{index}"),
                    value: vec![0; value_len],
                    lease: None,
                }],
                ..Command::default()
            },
        )
    }

    #[test]
    fn appends_are_cut_to_a_bounded_size_but_always_carry_an_entry() {
        let small: Vec<Entry> = (1..=128).map(|i| entry(i, 256)).collect();
        assert_eq!(append_prefix(&small).0, 128, "small entries all go");
        let big: Vec<Entry> = (1..=128).map(|i| entry(i, 1 << 20)).collect();
        let (n, bytes) = append_prefix(&big);
        assert_eq!(n, 3, "three 1 MiB entries fit in 4 MiB, a fourth does not");
        assert!(bytes <= MAX_APPEND_BYTES);
        let huge = vec![entry(1, 8 << 20), entry(2, 1)];
        assert_eq!(
            append_prefix(&huge).0,
            1,
            "an entry larger than the cap goes alone"
        );
    }
}
