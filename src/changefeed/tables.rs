//! Watched tables: what the reader needs to convert a table's logged rows, by oid. Their
//! subscribers are in `fence`. No I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::values::ColumnType;

/// A watched table, as resolved from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// pg_class oid; what the log records.
    pub(crate) oid: u32,
    /// `schema.table`, for `RowChange.table`.
    pub(crate) name: String,
    /// The table as a safely quoted SQL name (`regclass::text`), for the snapshot query.
    pub(crate) sql_name: String,
    /// Primary key columns, in key order.
    pub(crate) key_columns: Vec<String>,
    /// Schema and table name as PostgreSQL stores them, for permission checks.
    pub(crate) schema: String,
    pub(crate) relname: String,
}

/// One watched table: what the reader needs to convert its rows.
pub(crate) struct TableEntry {
    pub(crate) info: TableInfo,
    /// Its subscribers' key in the `fence::Subscribers` registry: the oid in decimal (a table dropped
    /// and created again under its name is another table, with other subscribers).
    pub(super) key: Arc<str>,
    types: RwLock<Arc<HashMap<String, ColumnType>>>,
}

impl TableEntry {
    pub(crate) fn new(info: TableInfo, types: HashMap<String, ColumnType>) -> Self {
        Self {
            key: Arc::from(info.oid.to_string()),
            info,
            types: RwLock::new(Arc::new(types)),
        }
    }

    /// The column types used to convert this table's rows.
    pub(crate) fn types(&self) -> Arc<HashMap<String, ColumnType>> {
        self.types
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the column types (after a schema change).
    pub(crate) fn set_types(&self, types: HashMap<String, ColumnType>) {
        *self.types.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(types);
    }
}

/// Table entries by oid. Entries stay once created (there are at most as many as watched
/// tables), keeping their column types cached.
#[derive(Default)]
pub(crate) struct Tables {
    entries: Mutex<HashMap<u32, Arc<TableEntry>>>,
}

impl Tables {
    pub(crate) fn get(&self, oid: u32) -> Option<Arc<TableEntry>> {
        self.lock().get(&oid).cloned()
    }

    /// The entry for `info.oid`, created with `types` if absent.
    pub(crate) fn get_or_insert(
        &self,
        info: TableInfo,
        types: impl FnOnce() -> HashMap<String, ColumnType>,
    ) -> Arc<TableEntry> {
        self.lock()
            .entry(info.oid)
            .or_insert_with(|| Arc::new(TableEntry::new(info, types())))
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<TableEntry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
