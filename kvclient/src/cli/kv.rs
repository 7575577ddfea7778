//! Key-value commands: put, get, del, ls, txn.

use std::io::Read;

use anyhow::{Context, bail};
use clap::Args;
use kvclient::{Consistency, JsonValue, RangeOptions, TxnRequest};

use super::Ctx;
use super::print;

#[derive(Args, Debug)]
pub struct PutArgs {
    pub key: String,
    pub value: String,
    /// Only write if the key does not exist.
    #[arg(long)]
    pub if_absent: bool,
    /// Only write if the key is at this revision (0 = absent).
    #[arg(long)]
    pub if_revision: Option<u64>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub key: String,
    /// Serve from the contacted node's local state (possibly stale).
    #[arg(long)]
    pub serializable: bool,
}

#[derive(Args, Debug)]
pub struct DelArgs {
    pub key: String,
    #[arg(long)]
    pub if_revision: Option<u64>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(long)]
    pub prefix: Option<String>,
    #[arg(long)]
    pub start: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub keys_only: bool,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// Transaction JSON file, or `-` for stdin.
    pub file: String,
}

pub async fn put(ctx: &Ctx, a: PutArgs) -> anyhow::Result<()> {
    let value = if a.value == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading value from stdin")?;
        buf
    } else {
        a.value.into_bytes()
    };
    let c = &ctx.client;
    let rev = match (a.if_absent, a.if_revision) {
        (true, Some(_)) => bail!("use either --if-absent or --if-revision"),
        (true, None) => c.put_if_absent(&a.key, value).await?,
        (false, Some(r)) => c.put_if_revision(&a.key, value, r).await?,
        (false, None) => c.put(&a.key, value).await?,
    };
    ctx.out.emit(&serde_json::json!({ "revision": rev }), || {
        format!("OK revision {rev}")
    })
}

pub async fn get(ctx: &Ctx, a: GetArgs) -> anyhow::Result<()> {
    let consistency = if a.serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    };
    let Some(got) = ctx.client.get_with(&a.key, consistency).await? else {
        bail!("key {:?} not found", a.key);
    };
    if ctx.out.is_json() {
        let v = JsonValue::from_bytes(&got.value);
        print::json(&serde_json::json!({
            "key": a.key, "value": v.value, "value_encoding": v.value_encoding,
            "revision": got.revision,
        }))
    } else {
        print::raw(&got.value)
    }
}

pub async fn del(ctx: &Ctx, a: DelArgs) -> anyhow::Result<()> {
    let resp = match a.if_revision {
        Some(r) => ctx.client.delete_if_revision(&a.key, r).await?,
        None => ctx.client.delete(&a.key).await?,
    };
    ctx.out.emit(&resp, || {
        if resp.deleted {
            format!("deleted (revision {})", resp.revision)
        } else {
            format!("not found (revision {})", resp.revision)
        }
    })
}

pub async fn ls(ctx: &Ctx, a: LsArgs) -> anyhow::Result<()> {
    let resp = ctx
        .client
        .range(&RangeOptions {
            prefix: a.prefix,
            start: a.start,
            limit: a.limit,
            keys_only: a.keys_only,
            consistency: Consistency::Linearizable,
        })
        .await?;
    ctx.out.emit(&resp, || {
        let mut text = print::range_table(&resp.items).render();
        if let Some(n) = &resp.next {
            text.push_str(&format!("(more: --start {n:?})\n"));
        }
        text
    })
}

pub async fn txn(ctx: &Ctx, a: TxnArgs) -> anyhow::Result<()> {
    let text = if a.file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file))?
    };
    let txn: TxnRequest = serde_json::from_str(&text).context("parsing transaction")?;
    print::json(&ctx.client.txn(&txn).await?)
}
