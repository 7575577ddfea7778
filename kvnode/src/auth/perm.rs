//! Permissions as half-open byte ranges, and the one question asked of
//! them: does the union of a user's grants cover every key of a request?
//! A range read or delete needs the whole range, not just the keys that
//! happen to exist, so the answer never depends on the data.

use serde::{Deserialize, Serialize};

use crate::store::prefix_upper_bound;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrantKind {
    Read,
    Write,
    Readwrite,
}

impl GrantKind {
    pub fn allows(self, a: Access) -> bool {
        matches!(
            (self, a),
            (GrantKind::Readwrite, _)
                | (GrantKind::Read, Access::Read)
                | (GrantKind::Write, Access::Write)
        )
    }
}

/// Where a grant's keys end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrantEnd {
    /// Only the key itself.
    Key,
    /// Every key starting with it (`""`: every key).
    Prefix,
    /// Up to, not including, this key.
    Range(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Grant {
    pub kind: GrantKind,
    pub key: String,
    pub end: GrantEnd,
}

impl Grant {
    pub fn span(&self) -> KeySpan {
        match &self.end {
            GrantEnd::Key => KeySpan::key(&self.key),
            GrantEnd::Prefix => KeySpan::prefix(&self.key),
            GrantEnd::Range(end) => KeySpan::range(&self.key, end),
        }
    }
}

/// Keys `start <= k < end`; `end: None` has no upper bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpan {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeySpan {
    pub fn key(k: &str) -> Self {
        let mut end = k.as_bytes().to_vec();
        end.push(0);
        KeySpan {
            start: k.as_bytes().to_vec(),
            end: Some(end),
        }
    }

    pub fn prefix(p: &str) -> Self {
        KeySpan {
            start: p.as_bytes().to_vec(),
            end: prefix_upper_bound(p.as_bytes()),
        }
    }

    pub fn range(start: &str, end: &str) -> Self {
        KeySpan {
            start: start.as_bytes().to_vec(),
            end: Some(end.as_bytes().to_vec()),
        }
    }

    pub fn all() -> Self {
        KeySpan::prefix("")
    }

    fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|e| *e <= self.start)
    }

    /// The part of `self` at or after `from` (a range scan's cursor).
    pub fn from(mut self, from: &str) -> Self {
        if from.as_bytes() > self.start.as_slice() {
            self.start = from.as_bytes().to_vec();
        }
        self
    }
}

/// Whether the union of `grants` covers all of `want`.
pub fn covers<'a>(grants: impl Iterator<Item = &'a Grant>, want: &KeySpan) -> bool {
    if want.is_empty() {
        return true;
    }
    let mut spans: Vec<KeySpan> = grants.map(Grant::span).collect();
    spans.sort_by(|a, b| a.start.cmp(&b.start));
    // Sweep: `covered` is the end of the contiguous run from want.start.
    let mut covered = want.start.clone();
    for s in spans {
        if s.start > covered {
            break;
        }
        match s.end {
            None => return true,
            Some(e) if e > covered => covered = e,
            Some(_) => {}
        }
        if want.end.as_ref().is_some_and(|we| covered >= *we) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(key: &str, end: GrantEnd) -> Grant {
        Grant {
            kind: GrantKind::Read,
            key: key.into(),
            end,
        }
    }

    fn covered(grants: &[Grant], want: KeySpan) -> bool {
        covers(grants.iter(), &want)
    }

    #[test]
    fn a_key_grant_covers_that_key_only() {
        let gs = [g("a", GrantEnd::Key)];
        assert!(covered(&gs, KeySpan::key("a")));
        assert!(!covered(&gs, KeySpan::key("ab")));
        assert!(!covered(&gs, KeySpan::prefix("a")));
    }

    #[test]
    fn prefix_grants_cover_keys_and_narrower_prefixes() {
        let gs = [g("app/", GrantEnd::Prefix)];
        assert!(covered(&gs, KeySpan::key("app/x")));
        assert!(covered(&gs, KeySpan::prefix("app/x/")));
        assert!(covered(&gs, KeySpan::prefix("app/")));
        assert!(!covered(&gs, KeySpan::prefix("app")));
        assert!(!covered(&gs, KeySpan::key("apq")));
        assert!(!covered(&gs, KeySpan::all()));
        assert!(covered(&[g("", GrantEnd::Prefix)], KeySpan::all()));
    }

    #[test]
    fn adjacent_and_overlapping_grants_join() {
        let gs = [
            g("c", GrantEnd::Range("e".into())),
            g("a", GrantEnd::Range("c".into())),
        ];
        assert!(covered(&gs, KeySpan::range("a", "e")));
        assert!(covered(&gs, KeySpan::range("b", "d")));
        assert!(!covered(&gs, KeySpan::range("a", "f")));
        let gap = [
            g("a", GrantEnd::Range("b".into())),
            g("c", GrantEnd::Range("d".into())),
        ];
        assert!(!covered(&gap, KeySpan::range("a", "d")));
    }

    #[test]
    fn nothing_is_covered_without_grants_except_an_empty_span() {
        assert!(!covered(&[], KeySpan::key("a")));
        assert!(covered(&[], KeySpan::range("b", "a")));
        assert!(covered(&[], KeySpan::prefix("a").from("c")));
    }

    #[test]
    fn kinds() {
        assert!(GrantKind::Readwrite.allows(Access::Write));
        assert!(GrantKind::Read.allows(Access::Read));
        assert!(!GrantKind::Read.allows(Access::Write));
        assert!(!GrantKind::Write.allows(Access::Read));
    }
}
