//! Turning logged or snapshot rows (`to_jsonb` objects) into domain [`RowChange`]s.

use std::collections::HashMap;

use super::tables::TableInfo;
use super::values::{convert_row, ColumnType};
use crate::protocol::{ChangeKind, Row, RowChange};

/// Builds a change from the old and new row JSON of one table row; `key` is taken from the new
/// row, or from the old one for deletes.
pub(crate) fn row_change_from_json(
    kind: ChangeKind,
    info: &TableInfo,
    types: &HashMap<String, ColumnType>,
    old_row: Option<serde_json::Value>,
    new_row: Option<serde_json::Value>,
) -> RowChange {
    let old_row = old_row.map(|json| convert_row(types, json));
    let new_row = new_row.map(|json| convert_row(types, json));
    let key = key_of(&info.key_columns, new_row.as_ref().or(old_row.as_ref()));
    RowChange {
        kind,
        table: info.name.clone(),
        key,
        new_row,
        old_row,
        transaction_id: 0,
        commit_time_micros: 0,
    }
}

/// The key columns of `row`, in key order.
pub(crate) fn key_of(key_columns: &[String], row: Option<&Row>) -> Row {
    let Some(row) = row else {
        return Vec::new();
    };
    key_columns
        .iter()
        .filter_map(|name| row.iter().find(|(column, _)| column == name).cloned())
        .collect()
}
