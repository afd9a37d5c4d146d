//! Printing: aligned tables for people, JSON for scripts.
//!
//! Everything a server sends is text someone else chose (a service's log lines, names,
//! error messages), so what goes to a terminal passes through [`printable`] first: a
//! control character or a bidirectional override could otherwise rewrite the screen,
//! set the window title or hide text. JSON output is already escaped by the encoder.

use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;

/// `text` with control characters (other than tab) and bidirectional overrides written
/// as escapes (`\x1b`, `\u{202e}`), so printing it cannot drive the terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

/// One column of a listing.
#[derive(Clone, Copy)]
pub struct Column {
    /// The header.
    pub title: &'static str,
    /// Shown only with `-o wide`.
    pub wide: bool,
    /// May be cut (with `…`) to fit the terminal; the others never are.
    pub elastic: bool,
}

impl Column {
    /// Always shown, never cut.
    pub const fn fixed(title: &'static str) -> Column {
        Column {
            title,
            wide: false,
            elastic: false,
        }
    }

    /// Always shown, cut to fit the terminal.
    pub const fn elastic(title: &'static str) -> Column {
        Column {
            title,
            wide: false,
            elastic: true,
        }
    }

    /// Shown with `-o wide` only, never cut.
    pub const fn wide(title: &'static str) -> Column {
        Column {
            title,
            wide: true,
            elastic: false,
        }
    }

    /// Shown with `-o wide` only, cut to fit the terminal.
    pub const fn wide_elastic(title: &'static str) -> Column {
        Column {
            title,
            wide: true,
            elastic: true,
        }
    }
}

/// How a table is laid out: which columns, whether a header, and how wide it may be.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Show the `wide` columns.
    pub wide: bool,
    /// Print the header line.
    pub headers: bool,
    /// The terminal's width; `None` (not a terminal) never cuts.
    pub width: Option<usize>,
}

/// The narrowest an elastic column is cut to.
const MIN_ELASTIC: usize = 8;

/// The table as lines: columns padded to the widest cell, elastic ones cut (widest
/// first) until the lines fit `layout.width`.
pub fn table_lines(layout: &Layout, columns: &[Column], rows: &[Vec<String>]) -> Vec<String> {
    let shown: Vec<usize> = (0..columns.len())
        .filter(|&i| layout.wide || !columns[i].wide)
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            shown
                .iter()
                .map(|&i| printable(row.get(i).map_or("", String::as_str)).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = shown
        .iter()
        .map(|&i| {
            if layout.headers {
                columns[i].title.chars().count()
            } else {
                0
            }
        })
        .collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(limit) = layout.width {
        let total =
            |widths: &[usize]| widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        // Water-filling: the widest elastic column gives first, down to the next
        // widest, so the cut is shared rather than one column losing everything. A
        // header is never cut: an elastic column keeps at least its title's width.
        let min: Vec<usize> = shown
            .iter()
            .map(|&i| {
                let title = if layout.headers {
                    columns[i].title.chars().count()
                } else {
                    0
                };
                title.max(MIN_ELASTIC)
            })
            .collect();
        while total(&widths) > limit {
            let mut elastic: Vec<usize> = (0..shown.len())
                .filter(|&k| columns[shown[k]].elastic && widths[k] > min[k])
                .collect();
            elastic.sort_by_key(|&k| std::cmp::Reverse(widths[k]));
            let Some(&k) = elastic.first() else { break };
            let next = elastic.get(1).map_or(0, |&j| widths[j]);
            let excess = total(&widths) - limit;
            let floor = if widths[k] > next {
                next
            } else {
                widths[k] - 1
            };
            widths[k] = widths[k].saturating_sub(excess).max(floor).max(min[k]);
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (k, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let cell = cut(cell, *w);
            if k + 1 == cells.len() {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = Vec::with_capacity(cells.len() + 1);
    if layout.headers {
        let titles: Vec<String> = shown.iter().map(|&i| columns[i].title.to_owned()).collect();
        lines.push(line(&titles));
    }
    lines.extend(cells.iter().map(|row| line(row)));
    lines
}

/// Print a table (see [`table_lines`]).
pub fn table(layout: &Layout, columns: &[Column], rows: &[Vec<String>]) {
    for line in table_lines(layout, columns, rows) {
        println!("{line}");
    }
}

/// `text` cut to `width` characters in the middle (`/run/str…/fs.sock`), so both the
/// start and the end of a path or an endpoint stay readable.
fn cut(text: &str, width: usize) -> Cow<'_, str> {
    let len = text.chars().count();
    if len <= width {
        return Cow::Borrowed(text);
    }
    let keep = width.saturating_sub(1);
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = text.chars().take(head).collect();
    out.push('…');
    out.extend(text.chars().skip(len - tail));
    Cow::Owned(out)
}

/// The terminal's width when stdout is one: `$COLUMNS` if set, else the tty's size.
/// `None` when stdout is not a terminal (a pipe or file gets whole lines).
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return Some(n);
    }
    rustix::termios::tcgetwinsize(&stdout)
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&n| n > 0)
}

/// Print a value as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "strata-ctl: cannot print JSON: {e}");
        }
    }
}

/// Print `key: value` lines.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in pairs {
        println!("{k:<width$}  {}", printable(v));
    }
}

/// A JSON value as a short cell: strings bare, null empty.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec![
                "fs".into(),
                "unix:///run/strata/a-rather-long-socket-name.sock".into(),
                "1".into(),
            ],
            vec![
                "identity".into(),
                "unix:///run/strata/identity.sock".into(),
                "1".into(),
            ],
        ]
    }

    const COLUMNS: [Column; 3] = [
        Column::fixed("SERVICE"),
        Column::elastic("ENDPOINT"),
        Column::wide("API"),
    ];

    #[test]
    fn the_cut_is_shared_by_the_widest_columns() {
        let columns = [
            Column::fixed("A"),
            Column::elastic("LONG"),
            Column::elastic("LONGER"),
        ];
        let rows = vec![vec!["x".to_owned(), "l".repeat(20), "m".repeat(30)]];
        let layout = Layout {
            wide: false,
            headers: true,
            width: Some(1 + 2 + 15 + 2 + 15),
        };
        let lines = table_lines(&layout, &columns, &rows);
        assert_eq!(lines[1].chars().count(), 35, "{lines:?}");
        // Both cut to 15: neither is left with nothing.
        assert_eq!(
            lines[1],
            format!("x  {0}…{0}  {1}…{1}", "l".repeat(7), "m".repeat(7))
        );
    }

    #[test]
    fn tables_fit_the_terminal_by_cutting_elastic_columns_only() {
        let free = Layout {
            wide: true,
            headers: true,
            width: None,
        };
        let lines = table_lines(&free, &COLUMNS, &rows());
        assert_eq!(
            lines[0],
            "SERVICE   ENDPOINT                                           API"
        );
        assert!(
            lines[1].ends_with("a-rather-long-socket-name.sock  1"),
            "{lines:?}"
        );
        let narrow = Layout {
            width: Some(40),
            ..free
        };
        let lines = table_lines(&narrow, &COLUMNS, &rows());
        for l in &lines {
            assert!(l.chars().count() <= 40, "{l:?}");
        }
        assert!(lines[1].starts_with("fs        unix:///"), "{lines:?}");
        assert!(
            lines[1].contains('…') && lines[1].ends_with("  1"),
            "{lines:?}"
        );
        // Fixed columns are never cut, even when nothing else can give.
        let tiny = Layout {
            width: Some(5),
            ..free
        };
        assert!(table_lines(&tiny, &COLUMNS, &rows())[2].starts_with("identity"));
    }

    #[test]
    fn wide_columns_and_headers_are_optional() {
        let plain = Layout {
            wide: false,
            headers: false,
            width: None,
        };
        let lines = table_lines(&plain, &COLUMNS, &rows());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "identity  unix:///run/strata/identity.sock");
    }

    #[test]
    fn terminal_controls_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(printable("fs\tHealthy ünïcode"), "fs\tHealthy ünïcode");
        assert_eq!(printable("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(printable("x\r\ny"), "x\\x0d\\x0ay");
        assert_eq!(printable("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
    }
}
