//! Turning logged or snapshot rows (`to_jsonb` objects) into domain [`RowChange`]s.

use std::collections::HashMap;

use super::tables::TableInfo;
use super::values::{convert_row, ColumnType};
use crate::protocol::{ChangeKind, Row, RowChange};
use crate::row_filter::RowFilter;

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

/// How a change reaches a subscriber whose row filter sees only part of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// As it happened.
    Original,
    /// An update that moved the row into the visible set: an INSERT of the new row.
    Insert,
    /// An update that moved the row out of the visible set: a DELETE of the old row.
    Delete,
}

/// What a subscriber with `filter` sees of `change`; `None` when nothing (the row was invisible
/// before and after). An update that moved the row across the filter's boundary becomes an
/// insert or a delete, so the subscriber's copy of its visible rows stays right.
pub(crate) fn view_through(filter: &RowFilter, change: &RowChange) -> Option<View> {
    let visible = |row: &Option<Row>| row.as_ref().is_some_and(|r| filter.matches(r));
    match change.kind {
        ChangeKind::Initial | ChangeKind::Insert => {
            visible(&change.new_row).then_some(View::Original)
        }
        ChangeKind::Delete => visible(&change.old_row).then_some(View::Original),
        ChangeKind::Update => match (visible(&change.old_row), visible(&change.new_row)) {
            (true, true) => Some(View::Original),
            (false, true) => Some(View::Insert),
            (true, false) => Some(View::Delete),
            (false, false) => None,
        },
    }
}

/// The columns a subscriber asked for (`TableFeed.columns`), with the primary key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Projection {
    /// Sorted, without duplicates.
    columns: Vec<String>,
}

impl Projection {
    /// `asked` and the key columns.
    pub(crate) fn new(asked: &[String], key_columns: &[String]) -> Self {
        let mut columns: Vec<String> = asked.iter().chain(key_columns).cloned().collect();
        columns.sort_unstable();
        columns.dedup();
        Self { columns }
    }

    fn row(&self, row: &Row) -> Row {
        row.iter()
            .filter(|(name, _)| self.columns.binary_search(name).is_ok())
            .cloned()
            .collect()
    }

    /// `change` with only these columns; `None` for an update that changed none of them.
    pub(crate) fn apply(&self, change: &RowChange) -> Option<RowChange> {
        let new_row = change.new_row.as_ref().map(|row| self.row(row));
        let old_row = change.old_row.as_ref().map(|row| self.row(row));
        if change.kind == ChangeKind::Update && new_row == old_row {
            return None;
        }
        Some(RowChange {
            new_row,
            old_row,
            ..change.clone()
        })
    }
}

/// What one subscriber sees of a change, outside fan-out (which caches each form's encoding
/// itself): through its row filter, then with its columns. `None`: nothing (a row it may not
/// see, or an update of columns it did not ask for).
pub(crate) fn seen(
    change: RowChange,
    filter: Option<&RowFilter>,
    projection: Option<&Projection>,
    key_columns: &[String],
) -> Option<RowChange> {
    let view = match filter {
        None => View::Original,
        Some(filter) => view_through(filter, &change)?,
    };
    let change = match view {
        View::Original => change,
        _ => apply_view(&change, view, key_columns),
    };
    match projection {
        None => Some(change),
        Some(projection) => projection.apply(&change),
    }
}

/// `change` as `view` presents it.
pub(crate) fn apply_view(change: &RowChange, view: View, key_columns: &[String]) -> RowChange {
    let mut out = change.clone();
    match view {
        View::Original => {}
        View::Insert => {
            out.kind = ChangeKind::Insert;
            out.old_row = None;
        }
        View::Delete => {
            out.kind = ChangeKind::Delete;
            out.new_row = None;
            out.key = key_of(key_columns, out.old_row.as_ref());
        }
    }
    out
}
