//! `watch`: print changes as they happen, until Ctrl-C.

use anyhow::{Context, anyhow};
use clap::builder::RangedU64ValueParser;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use kvclient::{ClientError, JsonValue, ValueEncoding, WatchFilter, WatchItem, WatchOptions};

use super::Ctx;
use super::print::{self, Output};
use crate::table::escape;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The key; with --prefix the prefix; with --range-end the first key of the range.
    pub key: String,
    /// Watch every key that starts with KEY (`--prefix ""` watches every key).
    #[arg(long, conflicts_with = "range_end")]
    pub prefix: bool,
    /// Watch every key in [KEY, END).
    #[arg(long, value_name = "END")]
    pub range_end: Option<String>,
    /// Start at revision R, replaying the changes since (while the nodes keep them); default: now.
    #[arg(long, value_name = "R", value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub rev: Option<u64>,
    /// Show the value each change replaced.
    #[arg(long)]
    pub prev_kv: bool,
    /// Show only puts or only deletes.
    #[arg(long, value_enum)]
    pub filter: Option<Filter>,
}

/// `--filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Filter {
    Put,
    Delete,
}

impl WatchArgs {
    fn options(&self) -> WatchOptions {
        let mut o = match (&self.range_end, self.prefix) {
            (Some(end), _) => WatchOptions::range(&self.key, end),
            (None, true) => WatchOptions::prefix(&self.key),
            (None, false) => WatchOptions::key(&self.key),
        }
        .with_prev_value(self.prev_kv);
        if let Some(r) = self.rev {
            o = o.with_start_revision(r);
        }
        if let Some(f) = self.filter {
            o = o.with_filter(match f {
                Filter::Put => WatchFilter::Put,
                Filter::Delete => WatchFilter::Delete,
            });
        }
        o
    }
}

/// Prints each change as it comes, one line each, until Ctrl-C (exit 0) or
/// an error the watch cannot resume from. Failing nodes are the client's
/// business: it continues on the other endpoints without losing or
/// repeating a change.
pub async fn watch(ctx: &Ctx, a: WatchArgs) -> anyhow::Result<()> {
    let mut stream = ctx.client.watch(a.options());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = &mut ctrl_c => {
                r.context("listening for Ctrl-C")?;
                return Ok(());
            }
            item = stream.next() => match item {
                Some(Ok(item)) => show(ctx.out, &item, a.prev_kv)?,
                Some(Err(e)) => return Err(stopped(e)),
                // A watch stream ends only after an error.
                None => return Ok(()),
            },
        }
    }
}

/// One item: in JSON mode every item as its wire line (`created`,
/// `progress` included), one compact object per line; else one text line
/// per change.
fn show(out: Output, item: &WatchItem, prev_kv: bool) -> anyhow::Result<()> {
    if out.is_json() {
        return print::line(&serde_json::to_string(&item.to_line())?);
    }
    match text(item, prev_kv) {
        Some(t) => print::line(&t),
        None => Ok(()),
    }
}

/// `PUT key value (rev N)` / `DELETE key (rev N)`, with `--prev-kv`
/// `, prev VALUE at rev M` inside the parentheses when the key existed.
/// Keys and values are escaped as in tables, so each change is one line.
fn text(item: &WatchItem, prev_kv: bool) -> Option<String> {
    let (kind, e) = match item {
        WatchItem::Put(e) => ("PUT", e),
        WatchItem::Delete(e) => ("DELETE", e),
        WatchItem::Created { .. } | WatchItem::Progress { .. } => return None,
    };
    let mut s = format!("{kind} {}", escape(&e.key));
    if let Some(v) = cell(&e.value, e.value_encoding) {
        s.push(' ');
        s.push_str(&v);
    }
    s.push_str(&format!(" (rev {}", e.revision));
    if prev_kv && let Some(p) = cell(&e.prev_value, e.prev_value_encoding) {
        s.push_str(&format!(", prev {p}"));
        if let Some(r) = e.prev_revision {
            s.push_str(&format!(" at rev {r}"));
        }
    }
    s.push(')');
    Some(s)
}

/// A value as a table shows it (`base64:...` when it is not UTF-8).
fn cell(value: &Option<String>, encoding: Option<ValueEncoding>) -> Option<String> {
    let v = JsonValue {
        value: value.clone()?,
        value_encoding: encoding,
    };
    Some(escape(&print::value_cell(Some(&v))))
}

/// The error that ended the watch, worded for the command line.
fn stopped(e: ClientError) -> anyhow::Error {
    let e = match e {
        ClientError::Compacted {
            revision,
            oldest_revision: Some(oldest),
            ..
        } => anyhow!("revision {revision} is compacted; the oldest available is {oldest}"),
        ClientError::Compacted { revision, .. } => anyhow!(
            "revision {revision} is compacted; read the current values and watch from their revision"
        ),
        e => anyhow::Error::new(e),
    };
    e.context("watch")
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use kvclient::{WatchEvent, WatchTarget};

    use super::*;
    use crate::cli::{Cli, Cmd};

    fn args(argv: &[&str]) -> Result<WatchArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kvctl", "watch"].iter().chain(argv).copied())?;
        match cli.cmd {
            Cmd::Watch(a) => Ok(a),
            other => panic!("not watch: {other:?}"),
        }
    }

    fn options(argv: &[&str]) -> WatchOptions {
        args(argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .options()
    }

    #[test]
    fn flags_become_watch_options() {
        let o = options(&["k"]);
        assert_eq!(o.target, WatchTarget::Key("k".into()));
        assert_eq!(
            (o.start_revision, o.prev_value, o.filter),
            (None, false, None)
        );
        let o = options(&[
            "",
            "--prefix",
            "--rev",
            "5",
            "--prev-kv",
            "--filter",
            "delete",
        ]);
        assert_eq!(o.target, WatchTarget::Prefix(String::new()));
        assert_eq!(o.start_revision, Some(5));
        assert!(o.prev_value);
        assert_eq!(o.filter, Some(WatchFilter::Delete));
        let o = options(&["a", "--range-end", "c", "--filter", "put"]);
        assert_eq!(
            o.target,
            WatchTarget::Range {
                start: "a".into(),
                end: "c".into()
            }
        );
        assert_eq!(o.filter, Some(WatchFilter::Put));
        for bad in [
            &["k", "--prefix", "--range-end", "z"][..],
            &["k", "--rev", "0"],
            &["k", "--filter", "get"],
            &[],
        ] {
            assert!(args(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    fn event(key: &str, revision: u64, value: Option<&str>) -> WatchEvent {
        WatchEvent {
            key: key.into(),
            revision,
            value: value.map(Into::into),
            ..WatchEvent::default()
        }
    }

    #[test]
    fn changes_print_one_line_each() {
        let put = WatchItem::Put(event("app/x", 7, Some("a\nb")));
        assert_eq!(
            text(&put, false).as_deref(),
            Some("PUT app/x a\\nb (rev 7)")
        );
        let del = WatchItem::Delete(event("app/x", 8, None));
        assert_eq!(text(&del, false).as_deref(), Some("DELETE app/x (rev 8)"));
        let bin = WatchItem::Put(WatchEvent {
            value_encoding: Some(ValueEncoding::Base64),
            ..event("b", 9, Some("/wAB"))
        });
        assert_eq!(
            text(&bin, false).as_deref(),
            Some("PUT b base64:/wAB (rev 9)")
        );
        assert_eq!(text(&WatchItem::Progress { revision: 9 }, false), None);
    }

    #[test]
    fn prev_kv_shows_the_replaced_value() {
        let with_prev = WatchEvent {
            prev_value: Some("old".into()),
            prev_revision: Some(5),
            ..event("k", 7, Some("new"))
        };
        let put = WatchItem::Put(with_prev.clone());
        assert_eq!(
            text(&put, true).as_deref(),
            Some("PUT k new (rev 7, prev old at rev 5)")
        );
        // Asked for but absent (a new key): nothing to show.
        let new = WatchItem::Put(event("k", 7, Some("new")));
        assert_eq!(text(&new, true).as_deref(), Some("PUT k new (rev 7)"));
        let del = WatchItem::Delete(WatchEvent {
            value: None,
            ..with_prev
        });
        assert_eq!(
            text(&del, true).as_deref(),
            Some("DELETE k (rev 7, prev old at rev 5)")
        );
    }

    #[test]
    fn json_lines_are_the_wire_lines() {
        let put = WatchItem::Put(event("k", 3, Some("v")));
        assert_eq!(
            serde_json::to_string(&put.to_line()).expect("json"),
            r#"{"type":"put","key":"k","revision":3,"value":"v"}"#
        );
    }

    #[test]
    fn a_compacted_revision_is_one_plain_line() {
        let e = ClientError::Compacted {
            endpoint: "http://n1:7379".into(),
            revision: 5,
            oldest_revision: Some(120),
        };
        assert_eq!(
            format!("{:#}", stopped(e)),
            "watch: revision 5 is compacted; the oldest available is 120"
        );
    }
}
