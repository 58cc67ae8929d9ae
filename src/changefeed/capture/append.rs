//! Appending to the change log: rows in chunks of column arrays, one statement each.

use pgwire_replication::Lsn;
use sqlx::PgConnection;

use super::super::ChangefeedError;

const APPEND: &str = "\
INSERT INTO feedgate.changes (xid, table_oid, op, old_row, new_row, logged_at, commit_lsn) \
SELECT u.xid::xid8, u.t::oid, u.op::\"char\", u.old::jsonb, u.new::jsonb, \
       timestamptz '2000-01-01 00:00:00+00' + u.ts * interval '1 microsecond', u.lsn::pg_lsn \
  FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[]) \
       WITH ORDINALITY AS u(xid, t, op, old, new, ts, lsn, n) \
 ORDER BY u.n";

/// The source transaction a row belongs to.
pub(super) struct Origin {
    /// Its `xid8`.
    pub(super) xid: u64,
    /// Its commit time, microseconds since 2000-01-01 (PostgreSQL's epoch).
    pub(super) commit_micros: i64,
    pub(super) commit_lsn: Lsn,
}

/// Rows to append, column by column (the statement's arrays).
#[derive(Default)]
pub(super) struct Chunk {
    xid: Vec<String>,
    table: Vec<i64>,
    op: Vec<String>,
    old: Vec<Option<String>>,
    new: Vec<Option<String>>,
    committed: Vec<i64>,
    lsn: Vec<String>,
}

impl Chunk {
    pub(super) fn len(&self) -> usize {
        self.xid.len()
    }

    /// A change: `op` is the log's (`I`, `U`, `D`, `T`), the rows `to_jsonb`'s JSON text.
    pub(super) fn push(
        &mut self,
        origin: &Origin,
        table: u32,
        op: &str,
        old: Option<String>,
        new: Option<String>,
    ) {
        self.xid.push(origin.xid.to_string());
        self.table.push(i64::from(table));
        self.op.push(op.to_owned());
        self.old.push(old);
        self.new.push(new);
        self.committed.push(origin.commit_micros);
        self.lsn.push(origin.commit_lsn.to_string());
    }

    /// Appends the rows in one statement (in the caller's transaction), in the order pushed;
    /// returns how many.
    pub(super) async fn write(self, conn: &mut PgConnection) -> Result<u64, ChangefeedError> {
        let rows = self.len() as u64;
        sqlx::query(APPEND)
            .bind(self.xid)
            .bind(self.table)
            .bind(self.op)
            .bind(self.old)
            .bind(self.new)
            .bind(self.committed)
            .bind(self.lsn)
            .execute(conn)
            .await?;
        Ok(rows)
    }
}
