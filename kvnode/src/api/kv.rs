//! Key-value routes: single-key put/get/delete, range scans and `/v1/txn`.
//! Every write is a `Command` (a guarded batch) proposed through raft.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use kvapi::{
    CompareTarget, CountResponse, DeleteRangeResponse, DeleteResponse, ErrorCode, JsonValue,
    PrefixCount, PutResponse, RangeItem, RangeResponse, TxnOp, TxnOpResult, TxnRequest,
    TxnResponse,
};

use super::authz::{self, Need};
use super::error::{ApiError, Outcome, Rejection};
use super::{App, forward, json_response, parse_bool, parse_u64, query_map, read_body};
use crate::auth::{Access, KeySpan};
use crate::raft::types::{Cmp, CmpTarget, Command, CommandResult, CompareOp, Op, OpResult};

pub const MAX_KEY_BYTES: usize = 4096;
/// Per branch and for the compare list, as etcd's default --max-txn-ops.
pub const MAX_TXN_OPS: usize = 128;
const DEFAULT_RANGE_LIMIT: usize = 1000;
const MAX_RANGE_LIMIT: usize = 10_000;
/// Groups a `count_only` answer lists (`max_groups`): what a console shows
/// as "folders"; the count itself always covers the whole range.
const DEFAULT_COUNT_GROUPS: usize = 100;
const MAX_COUNT_GROUPS: usize = 10_000;

fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len()),
        ));
    }
    Ok(())
}

fn validate_value(app: &App, len: usize) -> Result<(), ApiError> {
    let max = app.node.config.max_value_bytes;
    if len > max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("value is {len} bytes; the limit is {max}"),
        ));
    }
    Ok(())
}

/// The key from `/v1/kv/<percent-encoded key>`.
fn key_of(parts: &Parts) -> Result<String, ApiError> {
    let raw = parts.uri.path().strip_prefix("/v1/kv/").unwrap_or("");
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("key is not valid UTF-8"))?
        .into_owned();
    validate_key(&key)?;
    Ok(key)
}

enum Consistency {
    Linearizable,
    Serializable,
}

fn consistency(q: &HashMap<String, String>) -> Result<Consistency, ApiError> {
    match q.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("serializable") => Ok(Consistency::Serializable),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency={other:?}: expected linearizable or serializable"
        ))),
    }
}

/// Makes a local read safe at the requested level.
async fn read_gate(app: &App, c: Consistency) -> Result<(), Rejection> {
    match c {
        Consistency::Linearizable => app.node.read_barrier().await?,
        Consistency::Serializable => app.node.check_initialized()?,
    }
    Ok(())
}

/// Refuses (403) unless the caller may do all of `needs`.
fn authorize(app: &App, parts: &Parts, needs: &[Need]) -> Result<(), ApiError> {
    authz::allow(parts, &app.node.db.auth(), needs)
}

/// Proposes `cmd` as a caller allowed `needs` when it applies, not only
/// when it arrived (see `authz::write`).
pub(super) async fn write(
    app: &App,
    parts: &Parts,
    needs: &[Need],
    cmd: Command,
) -> Outcome<CommandResult> {
    authz::write(app, |auth| authz::allow(parts, auth, needs), || cmd.clone()).await
}

/// Runs `f`, resolving a `Rejection` into an error or a forwarded response.
pub(super) async fn run<F>(app: &App, parts: &Parts, body: Bytes, f: F) -> Response
where
    F: std::future::Future<Output = Result<Response, Rejection>>,
{
    match f.await {
        Ok(r) => r,
        Err(rej) => forward::resolve(app, rej, parts, body).await,
    }
}

pub async fn get_key(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let key = key_of(&parts)?;
        let q = query_map(&parts.uri)?;
        read_gate(&app, consistency(&q)?).await?;
        authorize(&app, &parts, &[Need::key(Access::Read, &key)])?;
        match app.node.db.get(&key)? {
            None => Err(ApiError::not_found(format!("key {key:?} not found")).into()),
            Some(rec) => {
                let mut resp = (StatusCode::OK, rec.value).into_response();
                let h = resp.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                h.insert("x-raftkv-revision", HeaderValue::from(rec.revision));
                Ok(resp)
            }
        }
    })
    .await
}

pub async fn put_key(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = app.node.config.max_value_bytes;
    let body = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    run(&app, &parts, body.clone(), async {
        let key = key_of(&parts)?;
        let q = query_map(&parts.uri)?;
        validate_value(&app, body.len())?;
        let needs = [Need::key(Access::Write, &key)];
        authorize(&app, &parts, &needs)?;
        let lease = parse_u64(&q, "lease")?.filter(|l| *l != 0);
        let if_absent = parse_bool(&q, "if_absent")?;
        let if_revision = parse_u64(&q, "if_revision")?;
        let compare = match (if_absent, if_revision) {
            (true, Some(_)) => {
                return Err(ApiError::bad_request("use either if_absent or if_revision").into());
            }
            (true, None) => vec![revision_is(&key, 0)],
            (false, Some(r)) => vec![revision_is(&key, r)],
            (false, None) => vec![],
        };
        let cmd = Command {
            compare,
            success: vec![Op::Put {
                key: key.clone(),
                value: body.to_vec(),
                lease,
            }],
            ..Command::default()
        };
        let res = write(&app, &parts, &needs, cmd).await?;
        check_lease(&res)?;
        check_guard(&key, &res)?;
        Ok(json_response(&PutResponse {
            revision: res.revision,
        }))
    })
    .await
}

pub async fn delete_key(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let key = key_of(&parts)?;
        let q = query_map(&parts.uri)?;
        let compare = parse_u64(&q, "if_revision")?
            .map(|r| vec![revision_is(&key, r)])
            .unwrap_or_default();
        let needs = [Need::key(Access::Write, &key)];
        authorize(&app, &parts, &needs)?;
        let cmd = Command {
            compare,
            success: vec![Op::Delete { key: key.clone() }],
            ..Command::default()
        };
        let res = write(&app, &parts, &needs, cmd).await?;
        check_guard(&key, &res)?;
        let deleted = matches!(
            res.results.first(),
            Some(OpResult::Delete { deleted: true })
        );
        Ok(json_response(&DeleteResponse {
            deleted,
            revision: res.revision,
        }))
    })
    .await
}

/// `DELETE /v1/kv?prefix=P` or `?start=A&end=B`: a range delete, as etcd's
/// `del --prefix` and `del key range_end`. The parameter must be present:
/// a bare `DELETE /v1/kv` is refused rather than read as "everything".
pub async fn delete_range(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let q = query_map(&parts.uri)?;
        let op = match (q.get("prefix"), q.get("start"), q.get("end")) {
            (Some(prefix), None, None) => Op::DeletePrefix {
                prefix: prefix.clone(),
            },
            (None, Some(start), Some(end)) => {
                validate_key(start)?;
                validate_key(end)?;
                if start >= end {
                    return Err(ApiError::bad_request(format!(
                        "empty range: start {start:?} is not below end {end:?}"
                    ))
                    .into());
                }
                Op::DeleteRange {
                    start: start.clone(),
                    end: end.clone(),
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "a range delete takes prefix=P (\"\" = every key) or start=A&end=B",
                )
                .into());
            }
        };
        // An empty prefix is allowed here (every key), a too long one is not.
        if let Op::DeletePrefix { prefix } = &op
            && prefix.len() > MAX_KEY_BYTES
        {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "prefix is {} bytes; the limit is {MAX_KEY_BYTES}",
                    prefix.len()
                ),
            )
            .into());
        }
        let need = match &op {
            Op::DeletePrefix { prefix } => Need {
                access: Access::Write,
                span: KeySpan::prefix(prefix),
                what: format!("keys with prefix {prefix:?}"),
            },
            Op::DeleteRange { start, end } => Need {
                access: Access::Write,
                span: KeySpan::range(start, end),
                what: format!("keys from {start:?} to {end:?}"),
            },
            _ => return Err(ApiError::internal("not a range delete").into()),
        };
        let needs = [need];
        authorize(&app, &parts, &needs)?;
        let cmd = Command {
            success: vec![op],
            ..Command::default()
        };
        let res = write(&app, &parts, &needs, cmd).await?;
        let deleted = match res.results.first() {
            Some(OpResult::DeleteRange { deleted }) => *deleted,
            _ => 0,
        };
        Ok(json_response(&DeleteRangeResponse {
            deleted,
            revision: res.revision,
        }))
    })
    .await
}

fn revision_is(key: &str, r: u64) -> Cmp {
    Cmp {
        key: key.to_owned(),
        target: CmpTarget::Revision(r),
        op: CompareOp::Eq,
    }
}

/// A write that named a lease which does not exist is a 404; it changed
/// nothing.
pub(super) fn check_lease(res: &CommandResult) -> Result<(), ApiError> {
    match res.missing_lease {
        Some(id) => Err(ApiError::not_found(format!(
            "lease {id} not found (expired or revoked); nothing was written"
        ))),
        None => Ok(()),
    }
}

/// A single-key write whose precondition failed is a 412.
fn check_guard(key: &str, res: &CommandResult) -> Result<(), ApiError> {
    if res.succeeded {
        return Ok(());
    }
    let cur = res.current_revisions.first().copied().unwrap_or(0);
    Err(ApiError::new(
        ErrorCode::PreconditionFailed,
        if cur == 0 {
            format!("key {key:?} does not exist")
        } else {
            format!("key {key:?} is at revision {cur}")
        },
    ))
}

pub async fn range(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    run(&app, &parts, Bytes::new(), async {
        let q = query_map(&parts.uri)?;
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        let start = q.get("start").cloned().unwrap_or_default();
        let limit = match parse_u64(&q, "limit")? {
            None => DEFAULT_RANGE_LIMIT,
            Some(0) => return Err(ApiError::bad_request("limit must be at least 1").into()),
            Some(l) => usize::try_from(l)
                .unwrap_or(MAX_RANGE_LIMIT)
                .min(MAX_RANGE_LIMIT),
        };
        let keys_only = parse_bool(&q, "keys_only")?;
        let count_only = parse_bool(&q, "count_only")?;
        let delimiter = q.get("delimiter").filter(|d| !d.is_empty());
        if delimiter.is_some() && !count_only {
            return Err(ApiError::bad_request("delimiter is only for count_only=true").into());
        }
        let max_groups = match parse_u64(&q, "max_groups")? {
            None => DEFAULT_COUNT_GROUPS,
            Some(n) => usize::try_from(n)
                .unwrap_or(MAX_COUNT_GROUPS)
                .min(MAX_COUNT_GROUPS),
        };
        read_gate(&app, consistency(&q)?).await?;
        let need = Need {
            access: Access::Read,
            span: KeySpan::prefix(&prefix).from(&start),
            what: format!("keys with prefix {prefix:?}"),
        };
        authorize(&app, &parts, &[need])?;
        if count_only {
            let c = app.node.db.count_prefix(
                &prefix,
                &start,
                delimiter.map(String::as_str),
                max_groups,
            )?;
            let grouped = delimiter.is_some();
            return Ok(json_response(&CountResponse {
                count: c.count,
                revision: c.revision,
                direct: grouped.then_some(c.direct),
                groups: grouped.then(|| {
                    c.groups
                        .into_iter()
                        .map(|(prefix, count)| PrefixCount { prefix, count })
                        .collect()
                }),
                groups_truncated: c.truncated,
            }));
        }
        let (items, next, revision) = app.node.db.scan_bounded(
            &prefix,
            &start,
            limit,
            keys_only,
            app.node.config.max_response_bytes,
        )?;
        let items = items
            .into_iter()
            .map(|(key, rec)| RangeItem {
                key,
                value: (!keys_only).then(|| JsonValue::from_bytes(&rec.value)),
                revision: rec.revision,
            })
            .collect();
        Ok(json_response(&RangeResponse {
            items,
            next,
            revision,
        }))
    })
    .await
}

pub async fn txn(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match read_body(body, app.body_limit()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    run(&app, &parts, body.clone(), async {
        let txn: TxnRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid transaction: {e}")))?;
        let cmd = txn_command(&app, txn)?;
        let needs = txn_needs(&cmd);
        authorize(&app, &parts, &needs)?;
        check_txn_reads(&app, &cmd)?;
        let res = write(&app, &parts, &needs, cmd).await?;
        check_lease(&res)?;
        Ok(json_response(&TxnResponse {
            succeeded: res.succeeded,
            revision: res.revision,
            results: res.results.into_iter().map(wire_result).collect(),
        }))
    })
    .await
}

/// Refuses (413) a transaction whose `get`s would return more than
/// --max-response-bytes as the values stand now. Checked before the
/// proposal, so a refused transaction changes nothing; concurrent writes can
/// still grow the answer by at most the value limit per get.
fn check_txn_reads(app: &App, cmd: &Command) -> Result<(), ApiError> {
    let budget = app.node.config.max_response_bytes;
    let mut total = 0usize;
    for op in cmd.success.iter().chain(&cmd.failure) {
        if let Op::Get { key } = op {
            // Each branch could run, so both count: a bound, not a guess.
            let size = app.node.db.value_len(key).map_err(ApiError::from)?;
            total = total.saturating_add(key.len() + size);
            if total > budget {
                return Err(ApiError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the transaction's gets would return more than {budget} bytes \
                         (--max-response-bytes); read the values in smaller transactions"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every key a transaction touches, in either branch: compares and gets
/// read, puts and deletes write.
fn txn_needs(cmd: &Command) -> Vec<Need> {
    let mut needs: Vec<Need> = cmd
        .compare
        .iter()
        .map(|c| Need::key(Access::Read, &c.key))
        .collect();
    for op in cmd.success.iter().chain(&cmd.failure) {
        needs.push(match op {
            Op::Get { key } => Need::key(Access::Read, key),
            Op::Put { key, .. } | Op::Delete { key } => Need::key(Access::Write, key),
            Op::DeleteRange { start, end } => Need {
                access: Access::Write,
                span: KeySpan::range(start, end),
                what: format!("keys from {start:?} to {end:?}"),
            },
            Op::DeletePrefix { prefix } => Need {
                access: Access::Write,
                span: KeySpan::prefix(prefix),
                what: format!("keys with prefix {prefix:?}"),
            },
            // Never built from a transaction; refused if it were.
            Op::Auth(_) | Op::Lease(_) => Need {
                access: Access::Write,
                span: KeySpan::all(),
                what: "auth or leases".into(),
            },
        });
    }
    needs
}

/// Validates a wire transaction and turns it into a raft command.
fn txn_command(app: &App, txn: TxnRequest) -> Result<Command, ApiError> {
    if txn.compare.len() > MAX_TXN_OPS
        || txn.success.len() > MAX_TXN_OPS
        || txn.failure.len() > MAX_TXN_OPS
    {
        return Err(ApiError::bad_request(format!(
            "a transaction takes at most {MAX_TXN_OPS} compares and {MAX_TXN_OPS} operations per branch"
        )));
    }
    let mut compare = Vec::with_capacity(txn.compare.len());
    for c in txn.compare {
        validate_key(&c.key)?;
        let target = match c.target {
            CompareTarget::Revision(r) => CmpTarget::Revision(r),
            CompareTarget::Exists(e) => CmpTarget::Exists(e),
            CompareTarget::Value(v) => CmpTarget::Value(decode_value(app, &v)?),
        };
        compare.push(Cmp {
            key: c.key,
            target,
            op: c.op.into(),
        });
    }
    let ops = |list: Vec<TxnOp>| -> Result<Vec<Op>, ApiError> {
        list.into_iter()
            .map(|op| match op {
                TxnOp::Put {
                    key,
                    value,
                    value_encoding,
                    lease,
                } => {
                    validate_key(&key)?;
                    let v = JsonValue {
                        value,
                        value_encoding,
                    };
                    Ok(Op::Put {
                        key,
                        value: decode_value(app, &v)?,
                        lease: lease.filter(|l| *l != 0),
                    })
                }
                TxnOp::Delete { key } => validate_key(&key).map(|_| Op::Delete { key }),
                TxnOp::Get { key } => validate_key(&key).map(|_| Op::Get { key }),
            })
            .collect()
    };
    Ok(Command {
        compare,
        success: ops(txn.success)?,
        failure: ops(txn.failure)?,
        auth_revision: None,
    })
}

fn decode_value(app: &App, v: &JsonValue) -> Result<Vec<u8>, ApiError> {
    let bytes = v
        .to_bytes()
        .map_err(|e| ApiError::bad_request(format!("value is not valid base64: {e}")))?;
    validate_value(app, bytes.len())?;
    Ok(bytes)
}

fn wire_result(r: OpResult) -> TxnOpResult {
    match r {
        OpResult::Put { revision } => TxnOpResult::Put { revision },
        OpResult::Delete { deleted } => TxnOpResult::Delete { deleted },
        // Transactions carry no range deletes, auth or lease changes; kept total
        // for the compiler.
        OpResult::DeleteRange { deleted } => TxnOpResult::Delete {
            deleted: deleted > 0,
        },
        OpResult::Auth { .. } | OpResult::LeaseGrant { .. } | OpResult::LeaseRevoke { .. } => {
            TxnOpResult::Delete { deleted: false }
        }
        OpResult::Get { found } => match found {
            Some((revision, value)) => TxnOpResult::Get {
                found: true,
                value: Some(JsonValue::from_bytes(value.as_ref())),
                revision,
            },
            None => TxnOpResult::Get {
                found: false,
                value: None,
                revision: 0,
            },
        },
    }
}
