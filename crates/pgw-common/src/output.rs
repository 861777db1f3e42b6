//! Output shared by every command: human tables and the terminal test (SQL quoting is
//! [`crate::sql`]).

use std::io::IsTerminal;

use comfy_table::{presets, ContentArrangement, Table};

/// The formats every command offers; commands with more (tune's `conf` and `sql`)
/// define their own enum and map these two onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A human table (the default).
    #[default]
    Table,
    /// JSON with stable, documented keys.
    Json,
}

/// Renders a table with a header row. Wraps to the terminal's width on a terminal;
/// piped output is not wrapped, so it greps well.
pub fn table<R, C>(header: &[&str], rows: R) -> String
where
    R: IntoIterator<Item = Vec<C>>,
    C: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    if std::io::stdout().is_terminal() {
        t.set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        t.set_content_arrangement(ContentArrangement::Disabled);
    }
    t.set_header(header.iter().copied());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// Whether stdin and stdout are both terminals (a person is there to answer a prompt
/// and to watch a progress bar).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_header_and_rows() {
        let t = table(&["name", "value"], vec![vec!["a", "1"], vec!["b", "2"]]);
        assert!(t.contains("name") && t.contains("value") && t.contains('a') && t.contains('2'));
    }
}
