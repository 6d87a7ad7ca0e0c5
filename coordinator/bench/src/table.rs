//! The two-column tables the benches print.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// A two-column table of a bench's measures.
pub fn measures_table<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["measure", "value"]);
    for (measure, value) in rows {
        table.add_row(vec![measure.to_owned(), value]);
    }
    table
}
