//! Tables the `watch` setting names but that could not be watched at start-up, and why. The
//! start-up log says it once; a later subscription to such a table is told the same cause
//! instead of being advised to do what the operator already did (start with `--watch`).
//!
//! No I/O: the SQL that watches and classifies lives in `schema`.

use std::sync::{Mutex, PoisonError};

use crate::protocol::{Code, Failure};

/// Why `feedgate.watch(...)` refused a table, from the SQLSTATE the database answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchRefusal {
    /// The table has no primary key, which a changefeed needs to identify rows.
    NoPrimaryKey,
    /// The name is a view, sequence or other relation that is not a table.
    NotATable,
    /// No relation (or no schema) by that name.
    NoSuchTable,
    /// PostgreSQL cannot parse the name.
    InvalidName,
    /// Any other database error (the start-up log has its text).
    Other,
}

impl WatchRefusal {
    /// Classifies a failed `feedgate.watch($1::text::regclass)` by its SQLSTATE.
    pub(crate) fn of(err: &sqlx::Error) -> Self {
        let code = err.as_database_error().and_then(|db| db.code());
        match code.as_deref() {
            Some("42P16") => Self::NoPrimaryKey, // invalid_table_definition, raised by watch()
            Some("42809") => Self::NotATable,    // wrong_object_type, raised by watch()
            Some("42P01" | "3F000") => Self::NoSuchTable, // undefined_table, invalid_schema_name
            Some("42602" | "42601" | "42622") => Self::InvalidName, // invalid_name, syntax, too long
            _ => Self::Other,
        }
    }

    /// The value of the `reason` detail in the subscriber's error.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoPrimaryKey => "no_primary_key",
            Self::NotATable => "not_a_table",
            Self::NoSuchTable => "no_such_table",
            Self::InvalidName => "invalid_name",
            Self::Other => "database_error",
        }
    }
}

/// One configured table that could not be watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// As written in the `watch` setting.
    pub(crate) configured: String,
    /// The relation it named then (oid, `schema.table`), when it named one; subscribers may
    /// spell it differently (`t`, `public.t`), so this is what they are matched by.
    pub(crate) relation: Option<(u32, String)>,
    pub(crate) reason: WatchRefusal,
    /// The database's message, for [`WatchRefusal::Other`].
    pub(crate) message: String,
}

impl Refused {
    /// What a subscriber to the table (named `table` by the client) is told.
    pub(crate) fn failure(&self, table: &str) -> Failure {
        let name = self
            .relation
            .as_ref()
            .map_or(self.configured.as_str(), |(_, name)| name);
        let cause = match self.reason {
            WatchRefusal::NoPrimaryKey => format!(
                "it has no primary key, which a changefeed needs to identify rows; add one, then \
                 run SELECT feedgate.watch('{name}')"
            ),
            WatchRefusal::NotATable => format!(
                "{name} is not a table (a view or other relation); only tables can be watched"
            ),
            WatchRefusal::NoSuchTable => format!(
                "it did not exist then; create it (with a primary key), then run \
                 SELECT feedgate.watch('{name}')"
            ),
            WatchRefusal::InvalidName => {
                "PostgreSQL cannot parse the name; fix the `watch` setting".to_owned()
            }
            WatchRefusal::Other => format!(
                "{}; fix that, then run SELECT feedgate.watch('{name}')",
                self.message
            ),
        };
        Failure::new(
            Code::NotFound,
            format!(
                "table {table} is not watched: the `watch` setting names it (as {configured:?}), \
                 but feedgate could not watch it at start-up: {cause}",
                configured = self.configured
            ),
        )
        .detail("table", table)
        .detail("reason", self.reason.as_str())
        .detail("watch", &self.configured)
    }
}

/// The configured tables refused at start-up. Small (at most one entry per `watch` entry).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    entries: Mutex<Vec<Refused>>,
}

impl Refusals {
    /// Records why a configured table was refused, replacing an earlier record for it.
    pub(crate) fn record(&self, refused: Refused) {
        let mut entries = self.lock();
        entries.retain(|r| r.configured != refused.configured);
        entries.push(refused);
    }

    /// Forgets a configured table (it was watched after all).
    pub(crate) fn clear(&self, configured: &str) {
        self.lock().retain(|r| r.configured != configured);
    }

    /// The refusal of the relation `oid` (when the client's name resolves to one), else of the
    /// configured name the client wrote verbatim.
    pub(crate) fn find(&self, oid: Option<u32>, table: &str) -> Option<Refused> {
        let entries = self.lock();
        let by_oid = oid.and_then(|oid| {
            entries
                .iter()
                .find(|r| r.relation.as_ref().is_some_and(|(o, _)| *o == oid))
        });
        by_oid
            .or_else(|| entries.iter().find(|r| r.configured == table))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Refused>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_key() -> Refused {
        Refused {
            configured: "public.pgbench_history".into(),
            relation: Some((42, "public.pgbench_history".into())),
            reason: WatchRefusal::NoPrimaryKey,
            message: "feedgate: table pgbench_history has no primary key".into(),
        }
    }

    #[test]
    fn a_refused_table_is_found_by_oid_whatever_the_spelling() {
        let refusals = Refusals::default();
        refusals.record(no_key());
        let found = refusals.find(Some(42), "pgbench_history").expect("by oid");
        let failure = found.failure("pgbench_history");
        assert_eq!(failure.code, Code::NotFound);
        assert!(!failure.retryable);
        assert!(
            failure
                .message
                .starts_with("table pgbench_history is not watched: the `watch` setting names it"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains("it has no primary key"));
        assert!(failure
            .message
            .contains("SELECT feedgate.watch('public.pgbench_history')"));
        assert!(
            !failure.message.contains("--watch"),
            "no advice to do it again"
        );
        assert_eq!(failure.details["table"], "pgbench_history");
        assert_eq!(failure.details["reason"], "no_primary_key");
        assert_eq!(failure.details["watch"], "public.pgbench_history");
        assert_eq!(refusals.find(Some(7), "other"), None);
    }

    #[test]
    fn a_missing_table_is_found_by_the_configured_name_and_cleared_once_watched() {
        let refusals = Refusals::default();
        let missing = Refused {
            configured: "later".into(),
            relation: None,
            reason: WatchRefusal::NoSuchTable,
            message: String::new(),
        };
        refusals.record(missing.clone());
        refusals.record(missing);
        assert_eq!(refusals.lock().len(), 1, "one record per configured name");
        let failure = refusals
            .find(None, "later")
            .expect("by name")
            .failure("later");
        assert_eq!(failure.details["reason"], "no_such_table");
        assert!(failure.message.contains("it did not exist then"));
        refusals.clear("later");
        assert_eq!(refusals.find(None, "later"), None);
    }
}
