//! Keys and values: put, get, range, delete and transactions.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Response of a successful `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub revision: u64,
}

/// Response of `DELETE /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub deleted: bool,
    pub revision: u64,
}

/// Response of `DELETE /v1/kv?prefix=P` (or `?start=A&end=B`): how many keys
/// the range delete removed, and the store revision after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: u64,
    pub revision: u64,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionResponse {
    /// The kvnode crate version, e.g. `0.1.0`.
    pub version: String,
    /// The HTTP API version the node serves (`v1`).
    pub api: String,
}

/// A value as it travels inside JSON: UTF-8 values are plain strings, any
/// other bytes are base64 (standard alphabet, padded) and flagged with
/// `"value_encoding": "base64"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JsonValue {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_encoding: Option<ValueEncoding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    Base64,
}

impl JsonValue {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => JsonValue {
                value: s.to_owned(),
                value_encoding: None,
            },
            Err(_) => JsonValue {
                value: B64.encode(bytes),
                value_encoding: Some(ValueEncoding::Base64),
            },
        }
    }

    /// The raw bytes; fails only on invalid base64.
    pub fn to_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self.value_encoding {
            None => Ok(self.value.as_bytes().to_vec()),
            Some(ValueEncoding::Base64) => B64.decode(&self.value),
        }
    }
}

/// One entry of a range scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeItem {
    pub key: String,
    /// Absent when the scan asked for `keys_only`.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub value: Option<JsonValue>,
    pub revision: u64,
}

/// Response of `GET /v1/kv?prefix=..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub items: Vec<RangeItem>,
    /// Where the next page starts (pass it as `start`), or null at the end.
    pub next: Option<String>,
    /// The store revision this page was read at: a watch from
    /// `revision + 1` sees every change after it (0 from nodes that did
    /// not report it).
    #[serde(default)]
    pub revision: u64,
}

/// Response of `GET /v1/kv?count_only=true` (etcd's `--count-only`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountResponse {
    /// Keys in the range.
    pub count: u64,
    /// The store revision the count was read at.
    pub revision: u64,
    /// With `delimiter`: keys with no delimiter after the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<u64>,
    /// With `delimiter`: the keys grouped by the prefix up to their first
    /// delimiter after the asked prefix, in key order (S3's common prefixes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<PrefixCount>>,
    /// More groups exist than `max_groups`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub groups_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixCount {
    pub prefix: String,
    pub count: u64,
}

/// What a transaction compare looks at. Exactly one target per compare.
///
/// On the wire a target is a flat object with one field:
/// `{"revision": 3}`, `{"exists": false}`, `{"value": "10"}` or, for a value
/// that is not UTF-8, `{"value": "AAEC", "value_encoding": "base64"}`. The
/// nested form `{"value": {"value": "10"}}` that early clients sent is
/// accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTarget", into = "RawTarget")]
pub enum CompareTarget {
    /// The key's last-modified revision (0 = absent).
    Revision(u64),
    /// The key's value (an absent key never matches a value compare).
    Value(JsonValue),
    /// Whether the key exists.
    Exists(bool),
}

/// `value` of a compare target: a plain string, or the early nested object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RawValue {
    Plain(String),
    Nested(JsonValue),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_encoding: Option<ValueEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exists: Option<bool>,
}

impl TryFrom<RawTarget> for CompareTarget {
    type Error = String;

    fn try_from(t: RawTarget) -> Result<Self, String> {
        const ONE: &str = "a compare target has exactly one of revision, value, exists";
        match (t.revision, t.value, t.exists) {
            (Some(r), None, None) if t.value_encoding.is_none() => Ok(CompareTarget::Revision(r)),
            (None, None, Some(e)) if t.value_encoding.is_none() => Ok(CompareTarget::Exists(e)),
            (None, Some(RawValue::Plain(value)), None) => Ok(CompareTarget::Value(JsonValue {
                value,
                value_encoding: t.value_encoding,
            })),
            (None, Some(RawValue::Nested(v)), None) if t.value_encoding.is_none() => {
                Ok(CompareTarget::Value(v))
            }
            (_, _, _) if t.value_encoding.is_some() => {
                Err("value_encoding belongs next to a value".to_owned())
            }
            _ => Err(ONE.to_owned()),
        }
    }
}

impl From<CompareTarget> for RawTarget {
    fn from(t: CompareTarget) -> Self {
        match t {
            CompareTarget::Revision(r) => RawTarget {
                revision: Some(r),
                ..RawTarget::default()
            },
            CompareTarget::Exists(e) => RawTarget {
                exists: Some(e),
                ..RawTarget::default()
            },
            CompareTarget::Value(v) => RawTarget {
                value: Some(RawValue::Plain(v.value)),
                value_encoding: v.value_encoding,
                ..RawTarget::default()
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    #[default]
    Eq,
    Ne,
    Lt,
    Gt,
}

/// `{"key": "a", "target": {"revision": 3}, "op": "eq"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub key: String,
    pub target: CompareTarget,
    #[serde(default)]
    pub op: CompareOp,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    Put {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value_encoding: Option<ValueEncoding>,
        /// Attach the key to this lease (it is deleted when the lease ends).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<u64>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

/// Body of `POST /v1/txn`: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    #[serde(default)]
    pub compare: Vec<Compare>,
    #[serde(default)]
    pub success: Vec<TxnOp>,
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

/// Result of one transaction operation, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOpResult {
    Put {
        revision: u64,
    },
    Delete {
        deleted: bool,
    },
    Get {
        found: bool,
        #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
        value: Option<JsonValue>,
        #[serde(default)]
        revision: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store revision after the transaction (unchanged if it wrote nothing).
    pub revision: u64,
    pub results: Vec<TxnOpResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_value_round_trips_utf8_and_binary() {
        let text = JsonValue::from_bytes(b"hello");
        assert_eq!(text.value, "hello");
        assert_eq!(text.value_encoding, None);
        let bin = JsonValue::from_bytes(&[0xff, 0x00, 0x80]);
        assert_eq!(bin.value_encoding, Some(ValueEncoding::Base64));
        assert_eq!(bin.to_bytes().expect("valid"), vec![0xff, 0x00, 0x80]);
    }

    #[test]
    fn txn_unknown_op_is_rejected() {
        let body = r#"{"success": [{"op": "increment", "key": "a"}]}"#;
        assert!(serde_json::from_str::<TxnRequest>(body).is_err());
        let ok = r#"{"compare": [{"key": "a", "target": {"revision": 0}}],
                     "success": [{"op": "put", "key": "a", "value": "1"}],
                     "failure": [{"op": "get", "key": "a"}]}"#;
        let txn: TxnRequest = serde_json::from_str(ok).expect("valid txn");
        assert_eq!(txn.compare[0].op, CompareOp::Eq);
        assert_eq!(txn.compare[0].target, CompareTarget::Revision(0));
    }

    #[test]
    fn compare_targets_are_flat_objects() {
        let parse = |s: &str| serde_json::from_str::<CompareTarget>(s);
        let plain = parse(r#"{"value": "10"}"#).expect("plain value");
        assert_eq!(plain, CompareTarget::Value(JsonValue::from_bytes(b"10")));
        let bin = parse(r#"{"value": "AAEC", "value_encoding": "base64"}"#).expect("base64");
        let CompareTarget::Value(v) = &bin else {
            panic!("not a value target: {bin:?}");
        };
        assert_eq!(v.to_bytes().expect("base64"), [0, 1, 2]);
        let nested = parse(r#"{"value": {"value": "10"}}"#).expect("nested form");
        assert_eq!(nested, plain);
        assert_eq!(
            parse(r#"{"exists": true}"#).expect("exists"),
            CompareTarget::Exists(true)
        );
        for bad in [
            r#"{}"#,
            r#"{"revision": 1, "exists": true}"#,
            r#"{"revision": 1, "value_encoding": "base64"}"#,
            r#"{"modified": 3}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} must be rejected");
        }
        // What clients send is the documented flat form.
        assert_eq!(
            serde_json::to_string(&bin).expect("serialize"),
            r#"{"value":"AAEC","value_encoding":"base64"}"#
        );
    }
}
