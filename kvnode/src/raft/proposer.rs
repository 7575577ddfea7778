//! Batches the writes a follower forwards to its leader.
//!
//! Without it every forwarded write is one peer RPC: the follower and the
//! leader each pay a full HTTP exchange per client write, which is what made
//! writes through a follower cost more CPU than writes to the leader. Here
//! the proposals that arrive while earlier batches are in flight go to the
//! leader together in one `PATH_PROPOSE_BATCH` request (group commit, as the
//! log's fsync does), and the leader proposes them to raft concurrently, so
//! they usually share one log append and one fsync as well.
//!
//! Each command is encoded once, when it is queued; a batch body is the
//! MessagePack array of those encodings, so the leader decodes a
//! `Vec<Command>` and the batch size is known exactly.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::network::{Network, ProposeError, ProposeReply};
use super::types::{Command, MemberInfo, NodeId};

/// Batches in flight to the leader at once: enough to keep its log busy
/// while a batch waits for its fsync, few enough that a loaded follower's
/// proposals gather into batches instead of trickling out one by one.
const MAX_IN_FLIGHT: usize = 4;
/// Commands and encoded bytes in one batch (a larger single command goes
/// alone).
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 2 << 20;

pub type Answer = Result<ProposeReply, ProposeError>;

struct Pending {
    leader: NodeId,
    info: MemberInfo,
    encoded: Vec<u8>,
    answer: oneshot::Sender<Answer>,
}

/// The follower side: hands proposals to a background task that batches
/// them per leader.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the batching task; it ends when the last `Proposer` is dropped.
    pub fn start(network: Network, ttl: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, network, ttl));
        Proposer { tx }
    }

    /// Proposes `cmd` through `leader` and waits for its answer.
    pub async fn propose(&self, leader: NodeId, info: MemberInfo, cmd: &Command) -> Answer {
        let encoded = rmp_serde::to_vec_named(cmd)
            .map_err(|e| ProposeError::NotSent(format!("encode proposal: {e}")))?;
        let (answer, rx) = oneshot::channel();
        let pending = Pending {
            leader,
            info,
            encoded,
            answer,
        };
        if self.tx.send(pending).is_err() {
            return Err(ProposeError::NotSent("proposal queue closed".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(ProposeError::Indeterminate("proposal task ended".into())))
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Pending>, network: Network, ttl: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        // Wait for a free slot first: while all are busy, proposals queue
        // up and leave together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let leader = first.leader;
        let mut bytes = first.encoded.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                // A proposal for another leader (leadership moved) or one that
                // would overflow the batch starts the next batch.
                Ok(p) if p.leader != leader || bytes + p.encoded.len() > MAX_BATCH_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.encoded.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let network = network.clone();
        tokio::spawn(async move {
            send(&network, batch, ttl).await;
            drop(slot);
        });
    }
}

async fn send(network: &Network, batch: Vec<Pending>, ttl: Duration) {
    let client = network.client(batch[0].leader, &batch[0].info);
    let body = array_of(batch.iter().map(|p| p.encoded.as_slice()), batch.len());
    match client.propose_batch(body, ttl).await {
        Ok(replies) if replies.len() == batch.len() => {
            for (p, r) in batch.into_iter().zip(replies) {
                let _ = p.answer.send(Ok(r));
            }
        }
        Ok(replies) => {
            let msg = format!(
                "leader answered {} of {} proposals",
                replies.len(),
                batch.len()
            );
            for p in batch {
                let _ = p.answer.send(Err(ProposeError::Indeterminate(msg.clone())));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.answer.send(Err(e.clone()));
            }
        }
    }
}

/// A MessagePack array of already-encoded elements.
fn array_of<'a>(items: impl Iterator<Item = &'a [u8]>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    // MessagePack's array headers: fixarray up to 15, array 16 up to 65535.
    match n {
        0..=15 => out.push(0x90 | n as u8),
        _ => {
            let n = u16::try_from(n).expect("batches are capped far below 65536");
            out.push(0xdc);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Op;

    fn cmd(i: usize) -> Command {
        Command {
            success: vec![Op::Put {
                key: format!("k{i}"),
                value: vec![i as u8; i],
                lease: None,
            }],
            ..Command::default()
        }
    }

    #[test]
    fn a_batch_body_decodes_as_the_commands_it_carries() {
        // Both header forms: fixarray and array 16.
        for n in [0, 1, 15, 16, 300] {
            let cmds: Vec<Command> = (0..n).map(cmd).collect();
            let encoded: Vec<Vec<u8>> = cmds
                .iter()
                .map(|c| rmp_serde::to_vec_named(c).expect("encode"))
                .collect();
            let body = array_of(encoded.iter().map(Vec::as_slice), n);
            let back: Vec<Command> = rmp_serde::from_slice(&body).expect("decode");
            assert_eq!(back, cmds, "{n} commands");
        }
    }
}
