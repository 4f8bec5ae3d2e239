//! `--json` output: the same rows as the table, as one JSON object on stdout.

use super::Row;

pub fn to_string(rows: &[Row]) -> String {
    serde_json::json!({ "rows": rows }).to_string()
}
