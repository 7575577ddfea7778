//! `GET /v1/watch`: a stream of changes, one JSON object per line (NDJSON).
//!
//! The first line is `created`; then `put`/`delete` events in revision
//! order (every event of one revision together), `progress` lines when the
//! watch is quiet, and at most one `canceled` line, the last, which says
//! from which revision to resume. Events of one revision are never split
//! across a `canceled` line: resuming from `resume_revision` loses nothing
//! and repeats nothing.

use serde::{Deserialize, Serialize};

use crate::ValueEncoding;

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchLine {
    /// The watch is registered: events from `start_revision` on follow.
    /// `revision` is the node's store revision when it was created.
    Created {
        revision: u64,
        start_revision: u64,
    },
    Put(WatchEvent),
    Delete(WatchEvent),
    /// Every event up to and including `revision` has been sent; resume
    /// from `revision + 1`.
    Progress {
        revision: u64,
    },
    /// The stream ends here. Nothing after `resume_revision - 1` was sent;
    /// a new watch from `resume_revision` (on any node) continues it.
    Canceled {
        code: WatchCancel,
        reason: String,
        resume_revision: u64,
    },
}

/// A change to one key. `value` (and its encoding, as in range answers) is
/// the new value of a put and absent for a delete; `prev_*` only when the
/// watch asked for `prev_value=true` and the key existed before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WatchEvent {
    pub key: String,
    /// The store revision of the change.
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_encoding: Option<ValueEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_value_encoding: Option<ValueEncoding>,
    /// The revision that wrote the previous value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_revision: Option<u64>,
}

/// Why a watch stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchCancel {
    /// The node is shutting down: resume on another node.
    ShuttingDown,
    /// The watcher fell too far behind the writes (it reads too slowly).
    Lagging,
    /// The revisions it still needed left this node's history (compaction,
    /// or a snapshot install replaced the node's state): resuming from
    /// `resume_revision` will answer `compacted`; start over from a read.
    Compacted,
    /// The caller lost read permission on the watched keys.
    PermissionDenied,
}

impl WatchLine {
    /// The revision a new watch should start from to continue after this
    /// line, when the line says so. Events do not: a revision can hold
    /// several (a transaction) and a dropped connection can cut between
    /// them, so after an event a client resumes from that event's revision
    /// and skips the events of it already received (every node sends them
    /// in the same order), or from the next revision once a later one or
    /// a progress line has arrived.
    pub fn next_revision(&self) -> Option<u64> {
        match self {
            WatchLine::Created { start_revision, .. } => Some(*start_revision),
            WatchLine::Put(_) | WatchLine::Delete(_) => None,
            WatchLine::Progress { revision } => Some(revision + 1),
            WatchLine::Canceled {
                resume_revision, ..
            } => Some(*resume_revision),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_documented_shape() {
        let put = WatchLine::Put(WatchEvent {
            key: "k".into(),
            revision: 7,
            value: Some("v".into()),
            ..WatchEvent::default()
        });
        assert_eq!(
            serde_json::to_string(&put).expect("json"),
            r#"{"type":"put","key":"k","revision":7,"value":"v"}"#
        );
        let c: WatchLine = serde_json::from_str(
            r#"{"type":"canceled","code":"lagging","reason":"slow","resume_revision":9}"#,
        )
        .expect("parse");
        assert_eq!(c.next_revision(), Some(9));
        let p: WatchLine = serde_json::from_str(r#"{"type":"progress","revision":4}"#).expect("p");
        assert_eq!(p.next_revision(), Some(5));
    }
}
