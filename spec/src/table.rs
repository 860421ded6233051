//! Tabular output with the conventions `vmadm` and `imgadm` share (both print with
//! this one module).
//!
//! Both tools print lists the SmartOS way: an upper-case header over left-aligned columns
//! separated by two spaces; `-H` drops the header; `-p` prints `:`-separated fields with no
//! header (a `:` or `\` inside a value is escaped with `\`, so `cut`/`awk -F:` users can
//! still split safely); `-j` prints JSON instead. This module knows nothing about
//! instances or images: it takes column names and rows of already-formatted cells, so
//! `imgadm` can use it as is.

use std::fmt::Write as _;

/// How a [`Table`] is rendered: the `-H` / `-p` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStyle {
    /// `-H`: omit the header line.
    pub no_header: bool,
    /// `-p`: `:`-separated, never a header.
    pub parsable: bool,
}

/// Rows of cells under named columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names (printed upper-cased in the header).
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = S>) -> Self {
        Table {
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends one row. A row shorter than the header is padded with empty cells, a
    /// longer one is truncated: the header decides the shape.
    pub fn push<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// Number of rows (header excluded).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table; every line ends with `\n`.
    pub fn render(&self, style: TableStyle) -> String {
        if style.parsable {
            return self.render_parsable();
        }
        let header: Vec<String> = self.columns.iter().map(|c| c.to_uppercase()).collect();
        let mut widths: Vec<usize> = if style.no_header {
            vec![0; self.columns.len()]
        } else {
            header.iter().map(|h| h.chars().count()).collect()
        };
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        if !style.no_header {
            push_aligned(&mut out, &header, &widths);
        }
        for row in &self.rows {
            push_aligned(&mut out, row, &widths);
        }
        out
    }

    fn render_parsable(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let escaped: Vec<String> = row.iter().map(|c| escape_parsable(c)).collect();
            out.push_str(&escaped.join(":"));
            out.push('\n');
        }
        out
    }
}

/// One aligned line: cells padded to their column width, two spaces apart, and no
/// trailing blanks (the last cell is never padded).
fn push_aligned(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            let _ = write!(line, "{cell:<width$}");
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Escapes `\` and `:` so a `-p` line splits unambiguously on unescaped colons.
pub fn escape_parsable(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    for c in cell.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["uuid", "ram", "alias"]);
        t.push(["1111", "256", "web01"]);
        t.push(["22", "1024", "db"]);
        t
    }

    #[test]
    fn aligned_with_header() {
        let out = sample().render(TableStyle::default());
        assert_eq!(
            out,
            "UUID  RAM   ALIAS\n\
             1111  256   web01\n\
             22    1024  db\n"
        );
    }

    #[test]
    fn no_header_aligns_on_the_data_only() {
        let style = TableStyle {
            no_header: true,
            parsable: false,
        };
        assert_eq!(
            sample().render(style),
            "1111  256   web01\n22    1024  db\n"
        );
    }

    #[test]
    fn parsable_is_colon_separated_and_escaped() {
        let mut t = Table::new(["a", "b"]);
        t.push(["x:y", "back\\slash"]);
        t.push(["", "z"]);
        let style = TableStyle {
            no_header: false,
            parsable: true,
        };
        assert_eq!(t.render(style), "x\\:y:back\\\\slash\n:z\n");
    }

    #[test]
    fn rows_take_the_header_shape_and_empty_last_cells_leave_no_blanks() {
        let mut t = Table::new(["a", "b", "c"]);
        t.push(["1"]);
        t.push(["1", "2", "3", "4"]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.render(TableStyle::default()), "A  B  C\n1\n1  2  3\n");
    }

    #[test]
    fn empty_table_prints_only_the_header() {
        let t = Table::new(["uuid"]);
        assert!(t.is_empty());
        assert_eq!(t.render(TableStyle::default()), "UUID\n");
        let style = TableStyle {
            no_header: true,
            parsable: false,
        };
        assert_eq!(t.render(style), "");
    }
}
