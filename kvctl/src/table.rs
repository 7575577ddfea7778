//! Minimal aligned-column output for kvctl's table format.

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Cells are escaped here, not by the callers, so that no
    /// value, key or error message can break a row or the alignment.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| escape(c)).collect());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = widths.get(i).copied().unwrap_or(0);
                    format!("{c:<w$}")
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// One table cell on one line: newline, carriage return and tab as `\n`,
/// `\r`, `\t`, any other control character as `\u{..}`, and the backslash
/// itself doubled so that a value containing a literal `\n` stays
/// distinguishable from one containing a newline.
pub fn escape(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    for c in cell.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["ID", "NAME"]);
        t.row(vec!["12345".into(), "a".into()]);
        assert_eq!(t.render(), "ID     NAME\n12345  a\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(escape("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape("\u{1b}[31m\u{0}\u{7f}"), "\\u{1b}[31m\\u{0}\\u{7f}");
        assert_eq!(escape("C:\\new"), "C:\\\\new");
    }

    #[test]
    fn a_multi_line_value_stays_on_its_row() {
        let mut t = Table::new(&["KEY", "VALUE"]);
        t.row(vec!["k1".into(), "line1\nline2\n".into()]);
        t.row(vec!["k2".into(), "x".into()]);
        let out = t.render();
        assert_eq!(out.lines().count(), 3, "{out}");
        // Alignment counts the escaped width, so the columns still line up.
        assert_eq!(out, "KEY  VALUE\nk1   line1\\nline2\\n\nk2   x\n");
    }
}
