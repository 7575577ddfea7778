//! What every command prints through: JSON with `-o json`, human text (mostly
//! tables) otherwise. Writes go to a locked stdout and report errors, so
//! `kvctl ... | head` ends with a one-line error instead of a panic.

use std::io::Write;

use clap::ValueEnum;
use kvclient::{CountResponse, JsonValue, RangeItem, ValueEncoding};
use serde::Serialize;

use crate::table::Table;

/// `-o/--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Output::Json
    }

    /// Prints `v` as JSON, or else the text `text` builds (only then is it
    /// built).
    pub fn emit<T: Serialize>(self, v: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        match self {
            Output::Json => json(v),
            Output::Table => line(&text()),
        }
    }
}

/// Pretty JSON and a newline.
pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    line(&serde_json::to_string_pretty(v)?)
}

/// `s` on stdout, ending in exactly one newline it may already have.
pub fn line(s: &str) -> anyhow::Result<()> {
    raw(s.as_bytes())
}

/// Raw bytes (a value as stored), with a newline added when they do not end
/// in one, so the shell prompt starts on its own line.
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    if !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// A value in a table cell: as text, or `base64:...` when it is not UTF-8
/// and came base64-encoded, so it is not mistaken for the text it encodes.
/// (The table escapes control characters in either form.)
pub fn value_cell(v: Option<&JsonValue>) -> String {
    match v {
        None => String::new(),
        Some(JsonValue {
            value,
            value_encoding: Some(ValueEncoding::Base64),
        }) => format!("base64:{value}"),
        Some(v) => v.value.clone(),
    }
}

/// `ls --count-only`: the count, then a PREFIX / KEYS table with --delimiter.
pub fn count_text(c: &CountResponse) -> String {
    let mut text = format!("{} keys (revision {})\n", c.count, c.revision);
    if let Some(groups) = &c.groups {
        let mut t = Table::new(&["PREFIX", "KEYS"]);
        for g in groups {
            t.row(vec![g.prefix.clone(), g.count.to_string()]);
        }
        if let Some(d) = c.direct {
            t.row(vec!["(no delimiter)".to_owned(), d.to_string()]);
        }
        text.push_str(&t.render());
        if c.groups_truncated {
            text.push_str("(more prefixes not listed)\n");
        }
    }
    text
}

/// The KEY / REVISION / VALUE table of `ls` and `get --prefix`.
pub fn range_table(items: &[RangeItem]) -> Table {
    let mut t = Table::new(&["KEY", "REVISION", "VALUE"]);
    for it in items {
        t.row(vec![
            it.key.clone(),
            it.revision.to_string(),
            value_cell(it.value.as_ref()),
        ]);
    }
    t
}

/// An optional index as a table cell.
pub fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, value: &[u8], revision: u64) -> RangeItem {
        RangeItem {
            key: key.into(),
            value: Some(JsonValue::from_bytes(value)),
            revision,
        }
    }

    #[test]
    fn range_table_keeps_one_row_per_key_and_marks_base64() {
        let items = [
            item("multi", b"line1\nline2", 7),
            item("ctl", b"a\x00\x1bb", 8),
            item("bin", &[0xff, 0x00, 0x01], 9),
            RangeItem {
                key: "keys-only".into(),
                value: None,
                revision: 10,
            },
        ];
        let out = range_table(&items).render();
        assert_eq!(
            out,
            "KEY        REVISION  VALUE\n\
             multi      7         line1\\nline2\n\
             ctl        8         a\\u{0}\\u{1b}b\n\
             bin        9         base64:/wAB\n\
             keys-only  10\n",
        );
    }

    #[test]
    fn utf8_values_are_shown_as_text() {
        assert_eq!(
            value_cell(Some(&JsonValue::from_bytes("héllo".as_bytes()))),
            "héllo"
        );
        assert_eq!(value_cell(None), "");
    }
}
