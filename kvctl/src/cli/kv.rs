//! Key-value commands: put, get, del, ls, txn.

use std::future::Future;
use std::io::Read;

use anyhow::{Context, bail};
use clap::Args;
use clap::builder::RangedU64ValueParser;
use kvclient::client::KeyRange;
use kvclient::{Consistency, JsonValue, RangeOptions, RangeResponse, TxnRequest};

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
    /// Attach the key to this lease (deleted when the lease ends).
    #[arg(long, value_parser = super::lease::parse_id, conflicts_with_all = ["if_absent", "if_revision"])]
    pub lease: Option<u64>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The key; with --prefix, the prefix of the keys to read.
    pub key: String,
    /// Read every key that starts with KEY, in key order.
    #[arg(long)]
    pub prefix: bool,
    /// Print only keys (one per line with --prefix).
    #[arg(long, conflicts_with = "print_value_only")]
    pub keys_only: bool,
    /// Print only values, raw (one per line with --prefix; a single get prints only the value anyway).
    #[arg(long)]
    pub print_value_only: bool,
    /// With --prefix: at most N keys (kvctl follows the server's pages up to it).
    #[arg(long, requires = "prefix", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub limit: Option<usize>,
    /// Serve from the contacted node's local state (possibly stale).
    #[arg(long)]
    pub serializable: bool,
}

#[derive(Args, Debug)]
pub struct DelArgs {
    /// The key; with --prefix the prefix; with RANGE_END the first key of the range.
    pub key: String,
    /// Delete every key in [KEY, RANGE_END), as etcdctl's `del key range_end`.
    #[arg(conflicts_with = "prefix")]
    pub range_end: Option<String>,
    /// Delete every key that starts with KEY (`--prefix ""` deletes every key).
    #[arg(long)]
    pub prefix: bool,
    /// Only delete if the key is at this revision (single key only).
    #[arg(long, conflicts_with_all = ["prefix", "range_end"])]
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
    #[arg(long, conflicts_with = "count_only")]
    pub keys_only: bool,
    /// Only count the keys (etcd's --count-only); nothing else is sent.
    #[arg(long, conflicts_with = "limit")]
    pub count_only: bool,
    /// With --count-only: also count per prefix up to the next DELIMITER after --prefix (e.g. /).
    #[arg(long, requires = "count_only")]
    pub delimiter: Option<String>,
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
    if let Some(lease) = a.lease {
        let rev = match c.put_with_lease(&a.key, value, lease).await {
            Ok(rev) => rev,
            Err(e) if e.code() == Some(kvclient::ErrorCode::NotFound) => {
                bail!("lease {lease} not found (expired or revoked); nothing was written")
            }
            Err(e) => return Err(e.into()),
        };
        return ctx.out.emit(&serde_json::json!({ "revision": rev }), || {
            format!("OK revision {rev}")
        });
    }
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
    if ctx.out.is_json() && a.print_value_only {
        bail!("--print-value-only prints raw values; it does not combine with -o json");
    }
    let consistency = if a.serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    };
    if a.prefix {
        return get_prefix(ctx, a, consistency).await;
    }
    let Some(got) = ctx.client.get_with(&a.key, consistency).await? else {
        bail!("key {:?} not found", a.key);
    };
    if ctx.out.is_json() {
        let v = JsonValue::from_bytes(&got.value);
        let mut obj = serde_json::json!({ "key": a.key, "revision": got.revision });
        if !a.keys_only {
            obj["value"] = v.value.into();
            obj["value_encoding"] = serde_json::to_value(v.value_encoding)?;
        }
        print::json(&obj)
    } else if a.keys_only {
        print::line(&a.key)
    } else {
        print::raw(&got.value)
    }
}

/// `get KEY --prefix`: every key under KEY, across as many pages as it takes.
async fn get_prefix(ctx: &Ctx, a: GetArgs, consistency: Consistency) -> anyhow::Result<()> {
    let client = &ctx.client;
    let resp = collect_pages(a.limit, |start, limit| {
        let opts = RangeOptions {
            prefix: Some(a.key.clone()),
            start,
            limit: Some(limit),
            keys_only: a.keys_only,
            consistency,
        };
        async move { client.range(&opts).await }
    })
    .await?;
    if ctx.out.is_json() {
        print::json(&resp)
    } else if a.keys_only {
        resp.items.iter().try_for_each(|it| print::line(&it.key))
    } else if a.print_value_only {
        for it in &resp.items {
            let bytes = it
                .value
                .as_ref()
                .map(JsonValue::to_bytes)
                .transpose()
                .with_context(|| format!("value of {:?}: invalid base64", it.key))?
                .unwrap_or_default();
            print::raw(&bytes)?;
        }
        Ok(())
    } else {
        print::line(&print::range_table(&resp.items).render())
    }
}

/// Items per request when following pages: the server's default page, so
/// one response stays small however many keys the prefix holds.
const PAGE: usize = 1000;

/// Reads a range page by page, following `next`, until `limit` items or the
/// end. `fetch(start, n)` reads at most `n` items from `start`. The result's
/// `next` is where a further read would continue (null at the end), as in
/// one page of the API, and its `revision` the first page's (pages are read
/// one after another, not at one revision).
async fn collect_pages<F, Fut, E>(limit: Option<usize>, mut fetch: F) -> Result<RangeResponse, E>
where
    F: FnMut(Option<String>, usize) -> Fut,
    Fut: Future<Output = Result<RangeResponse, E>>,
{
    let mut items = Vec::new();
    let mut start = None;
    let mut revision = None;
    loop {
        let want = limit.map_or(PAGE, |l| l.saturating_sub(items.len()).min(PAGE));
        let page = fetch(start.take(), want).await?;
        let revision = *revision.get_or_insert(page.revision);
        // An empty page ends the walk even if it names a next page, so a
        // misbehaving server cannot keep kvctl looping.
        let progressed = !page.items.is_empty();
        items.extend(page.items);
        match page.next {
            Some(next) if progressed && limit.is_none_or(|l| items.len() < l) => start = Some(next),
            next => {
                return Ok(RangeResponse {
                    items,
                    next,
                    revision,
                });
            }
        }
    }
}

pub async fn del(ctx: &Ctx, a: DelArgs) -> anyhow::Result<()> {
    let range = match (a.prefix, a.range_end) {
        (true, _) => KeyRange::Prefix(a.key),
        (false, Some(end)) => KeyRange::Between { start: a.key, end },
        (false, None) => {
            let resp = match a.if_revision {
                Some(r) => ctx.client.delete_if_revision(&a.key, r).await?,
                None => ctx.client.delete(&a.key).await?,
            };
            return ctx.out.emit(&resp, || {
                if resp.deleted {
                    format!("deleted (revision {})", resp.revision)
                } else {
                    format!("not found (revision {})", resp.revision)
                }
            });
        }
    };
    let resp = ctx.client.delete_range(&range).await?;
    ctx.out.emit(&resp, || {
        format!("deleted {} (revision {})", resp.deleted, resp.revision)
    })
}

pub async fn ls(ctx: &Ctx, a: LsArgs) -> anyhow::Result<()> {
    if a.count_only {
        let prefix = a.prefix.unwrap_or_default();
        let resp = ctx
            .client
            .count(&prefix, a.start.as_deref(), a.delimiter.as_deref())
            .await?;
        return ctx.out.emit(&resp, || print::count_text(&resp));
    }
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use kvclient::RangeItem;

    use super::*;

    /// A fake server over keys k000..k{n-1} that serves pages of at most
    /// `max_page` items, and records what each request asked for.
    struct Fake {
        keys: Vec<String>,
        max_page: usize,
        asked: RefCell<Vec<(Option<String>, usize)>>,
    }

    impl Fake {
        fn new(n: usize, max_page: usize) -> Self {
            Fake {
                keys: (0..n).map(|i| format!("k{i:03}")).collect(),
                max_page,
                asked: RefCell::default(),
            }
        }

        async fn fetch(&self, start: Option<String>, limit: usize) -> Result<RangeResponse, ()> {
            self.asked.borrow_mut().push((start.clone(), limit));
            let from = start.map_or(0, |s| self.keys.partition_point(|k| *k < s));
            let n = limit.min(self.max_page);
            let items: Vec<RangeItem> = self.keys[from..]
                .iter()
                .take(n)
                .map(|k| RangeItem {
                    key: k.clone(),
                    value: None,
                    revision: 1,
                })
                .collect();
            let next = self.keys.get(from + items.len()).cloned();
            Ok(RangeResponse {
                items,
                next,
                revision: 9,
            })
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn keys(r: &RangeResponse) -> Vec<&str> {
        r.items.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn pages_are_followed_to_the_end() {
        let fake = Fake::new(7, 3);
        let r = block_on(collect_pages(None, |s, l| fake.fetch(s, l))).expect("pages");
        assert_eq!(keys(&r).len(), 7);
        assert_eq!(r.next, None);
        let asked = fake.asked.borrow();
        let starts: Vec<_> = asked.iter().map(|(s, _)| s.as_deref()).collect();
        assert_eq!(starts, [None, Some("k003"), Some("k006")]);
        assert!(asked.iter().all(|(_, l)| *l == PAGE));
    }

    #[test]
    fn the_limit_stops_the_walk_and_next_says_where_it_stopped() {
        let fake = Fake::new(10, 3);
        let r = block_on(collect_pages(Some(5), |s, l| fake.fetch(s, l))).expect("pages");
        assert_eq!(keys(&r), ["k000", "k001", "k002", "k003", "k004"]);
        assert_eq!(r.next.as_deref(), Some("k005"));
        // The second request asks only for what is still missing.
        assert_eq!(fake.asked.borrow()[1], (Some("k003".into()), 2));
    }

    #[test]
    fn a_limit_at_the_end_reports_no_next() {
        let fake = Fake::new(4, 10);
        let r = block_on(collect_pages(Some(4), |s, l| fake.fetch(s, l))).expect("pages");
        assert_eq!(keys(&r).len(), 4);
        assert_eq!(r.next, None);
    }

    #[test]
    fn an_empty_page_ends_the_walk() {
        let calls = RefCell::new(0);
        let r = block_on(collect_pages(None, |_, _| {
            *calls.borrow_mut() += 1;
            async {
                Ok::<_, ()>(RangeResponse {
                    items: vec![],
                    next: Some("k".into()),
                    revision: 0,
                })
            }
        }))
        .expect("pages");
        assert_eq!(*calls.borrow(), 1);
        assert!(r.items.is_empty());
    }
}
