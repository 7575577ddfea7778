//! The openraft type configuration and the commands that travel through the
//! raft log. Everything openraft-specific that other modules name goes
//! through the aliases here, so an openraft bump stays local to `raft/` and
//! `store/`.

use std::fmt;

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// raftkv's raft types: our own command/response, `MemberInfo` as the
    /// per-member node data, tokio runtime.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = MemberInfo,
);

pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, MemberInfo>;

/// A member as the raft log, the vote and snapshots store it. kvnode's own
/// type, not kvapi's wire type of the same shape, so that a change to
/// the client API cannot change what is on disk (the encoding is pinned by
/// the test below); the API converts at its edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberInfo {
    #[serde(default)]
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
}

impl From<kvapi::MemberInfo> for MemberInfo {
    fn from(m: kvapi::MemberInfo) -> Self {
        MemberInfo {
            name: m.name,
            peer_url: m.peer_url,
            client_url: m.client_url,
        }
    }
}

impl From<MemberInfo> for kvapi::MemberInfo {
    fn from(m: MemberInfo) -> Self {
        kvapi::MemberInfo {
            name: m.name,
            peer_url: m.peer_url,
            client_url: m.client_url,
        }
    }
}

/// How a transaction compares (stored in the log with its `Cmp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Gt,
}

impl From<kvapi::CompareOp> for CompareOp {
    fn from(op: kvapi::CompareOp) -> Self {
        match op {
            kvapi::CompareOp::Eq => CompareOp::Eq,
            kvapi::CompareOp::Ne => CompareOp::Ne,
            kvapi::CompareOp::Lt => CompareOp::Lt,
            kvapi::CompareOp::Gt => CompareOp::Gt,
        }
    }
}

/// A condition a transaction checks against the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmp {
    pub key: String,
    pub target: CmpTarget,
    pub op: CompareOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpTarget {
    Revision(u64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The lease the key is attached to; the whole command fails,
        /// changing nothing, if it does not exist when the entry applies.
        /// Skipped when absent, so entries without one keep their bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<u64>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
    /// Every key in `[start, end)`. This and `DeletePrefix` are appended
    /// last: entries already in a log decode by variant.
    DeleteRange {
        start: String,
        end: String,
    },
    /// Every key that starts with `prefix` (all keys for "").
    DeletePrefix {
        prefix: String,
    },
    /// A change to users, roles or the auth switch (see `auth`).
    Auth(crate::auth::AuthOp),
    /// A lease granted or revoked (see `lease`).
    Lease(crate::lease::LeaseOp),
}

/// The one command of the state machine: a guarded batch. Single-key puts
/// and deletes are transactions with zero or one compare, so there is one
/// apply path to get right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Command {
    pub compare: Vec<Cmp>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
    /// The auth revision the caller was authorized against. A node checks
    /// permissions on its own applied auth state, which may lag the
    /// cluster's (a follower's, or any node's between check and apply);
    /// the state machine refuses a command whose revision is no longer the
    /// current one, changing nothing, so the API can judge it again (etcd's
    /// auth revision in the request header). Absent in entries written
    /// before it existed, and skipped when absent so their bytes are
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_revision: Option<u64>,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "txn(compare={}, success={}, failure={})",
            self.compare.len(),
            self.success.len(),
            self.failure.len()
        )
    }
}

impl Command {
    /// Roughly its encoded size: keys and values plus a little per item.
    /// Bounds the bytes of one append (`network.rs`) without encoding it.
    pub fn approx_bytes(&self) -> usize {
        let op = |o: &Op| {
            16 + match o {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key } | Op::Get { key } => key.len(),
                Op::DeleteRange { start, end } => start.len() + end.len(),
                Op::DeletePrefix { prefix } => prefix.len(),
                Op::Auth(_) | Op::Lease(_) => 256,
            }
        };
        let cmp = |c: &Cmp| {
            16 + c.key.len()
                + match &c.target {
                    CmpTarget::Value(v) => v.len(),
                    _ => 8,
                }
        };
        32 + self.compare.iter().map(cmp).sum::<usize>()
            + self
                .success
                .iter()
                .chain(&self.failure)
                .map(op)
                .sum::<usize>()
    }
}

/// [`Command::approx_bytes`] for any entry.
pub fn entry_bytes(e: &Entry) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(c) => 32 + c.approx_bytes(),
        _ => 256,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put {
        revision: u64,
    },
    Delete {
        deleted: bool,
    },
    Get {
        /// `(revision, value)` when the key exists.
        found: Option<(u64, serde_bytes::ByteBuf)>,
    },
    /// Of `DeleteRange` and `DeletePrefix`: how many keys went.
    DeleteRange {
        deleted: u64,
    },
    /// Of `Auth`: why it changed nothing, if it did not.
    Auth {
        error: Option<crate::auth::AuthError>,
    },
    /// Of a lease grant: false if the id was taken.
    LeaseGrant {
        granted: bool,
    },
    /// Of a lease revoke: whether the lease existed, and how many keys
    /// went with it.
    LeaseRevoke {
        found: bool,
        deleted: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommandResult {
    pub succeeded: bool,
    /// The store revision after the command (unchanged if it changed no
    /// data; see store/sm.rs).
    pub revision: u64,
    pub results: Vec<OpResult>,
    /// For a failed single-key precondition: the key's revision (0 = absent).
    pub current_revisions: Vec<u64>,
    /// The command was not executed: the auth state changed after the
    /// caller was authorized (see `Command::auth_revision`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth_stale: bool,
    /// The command was not executed: a put names this lease, which does
    /// not exist (any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_lease: Option<u64>,
}

#[cfg(test)]
mod tests {
    //! The raft log and snapshots keep these types as MessagePack
    //! (`store::encode`, named fields). A change of a name, a variant order
    //! or a serde attribute would make entries already on disk undecodable
    //! (or decode differently) after an upgrade: these bytes were written by
    //! the current format and must keep decoding to the same values.

    use super::*;
    use crate::auth::AuthOp;

    fn command() -> Command {
        Command {
            compare: vec![
                Cmp {
                    key: "a".into(),
                    target: CmpTarget::Revision(7),
                    op: CompareOp::Eq,
                },
                Cmp {
                    key: "b".into(),
                    target: CmpTarget::Value(b"v".to_vec()),
                    op: CompareOp::Ne,
                },
                Cmp {
                    key: "c".into(),
                    target: CmpTarget::Exists(true),
                    op: CompareOp::Gt,
                },
            ],
            success: vec![
                Op::Put {
                    key: "k".into(),
                    value: vec![0, 255],
                    lease: None,
                },
                Op::Delete { key: "d".into() },
                Op::Get { key: "g".into() },
                Op::DeleteRange {
                    start: "r0".into(),
                    end: "r9".into(),
                },
                Op::DeletePrefix {
                    prefix: "p/".into(),
                },
            ],
            failure: vec![Op::Auth(AuthOp::UserDelete { name: "u".into() })],
            auth_revision: None,
        }
    }

    fn result() -> CommandResult {
        CommandResult {
            succeeded: true,
            revision: 42,
            results: vec![
                OpResult::Put { revision: 42 },
                OpResult::Delete { deleted: true },
                OpResult::Get {
                    found: Some((3, serde_bytes::ByteBuf::from(b"x".to_vec()))),
                },
                OpResult::DeleteRange { deleted: 2 },
                OpResult::Auth { error: None },
            ],
            current_revisions: vec![0, 5],
            auth_stale: false,
            missing_lease: None,
        }
    }

    fn member() -> MemberInfo {
        MemberInfo {
            name: "kv-0".into(),
            peer_url: "https://kv-0:7380".into(),
            client_url: "https://kv-0:7379".into(),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn pinned<T>(value: T, golden: &str)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug,
    {
        let decoded: T = crate::store::decode("pinned", &unhex(golden)).expect("golden decodes");
        assert_eq!(decoded, value, "bytes on disk decode to something else");
        let encoded = crate::store::encode(&value).expect("encodes");
        assert_eq!(hex(&encoded), golden, "the encoding changed");
    }

    #[test]
    fn the_log_encoding_of_commands_results_and_members_is_pinned() {
        pinned(command(), GOLDEN_COMMAND);
        pinned(result(), GOLDEN_RESULT);
        pinned(member(), GOLDEN_MEMBER);
    }

    const GOLDEN_COMMAND: &str = concat!(
        "83a7636f6d706172659383a36b6579a161a674617267657481a85265766973696f6e07a26f70a265",
        "7183a36b6579a162a674617267657481a556616c7565c40176a26f70a26e6583a36b6579a163a674",
        "617267657481a6457869737473c3a26f70a26774a7737563636573739581a350757482a36b6579a1",
        "6ba576616c7565c40200ff81a644656c65746581a36b6579a16481a347657481a36b6579a16781ab",
        "44656c65746552616e676582a57374617274a27230a3656e64a2723981ac44656c65746550726566",
        "697881a6707265666978a2702fa76661696c7572659181a44175746881aa5573657244656c657465",
        "81a46e616d65a175",
    );
    const GOLDEN_RESULT: &str = concat!(
        "84a9737563636565646564c3a87265766973696f6e2aa7726573756c74739581a350757481a87265",
        "766973696f6e2a81a644656c65746581a764656c65746564c381a347657481a5666f756e649203c4",
        "017881ab44656c65746552616e676581a764656c657465640281a44175746881a56572726f72c0b1",
        "63757272656e745f7265766973696f6e73920005",
    );
    const GOLDEN_MEMBER: &str = concat!(
        "83a46e616d65a46b762d30a8706565725f75726cb168747470733a2f2f6b762d303a37333830aa63",
        "6c69656e745f75726cb168747470733a2f2f6b762d303a37333739",
    );
}
