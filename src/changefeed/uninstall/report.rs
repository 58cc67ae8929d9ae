//! `feedgate uninstall`'s text: one line per thing it removes (or would), saying why the
//! replication slot matters. Pure: formats a [`Plan`], reads nothing.

use std::fmt;

use super::{Plan, ReplicaIdentity, Sessions, Slot, Table};

impl Plan {
    /// The plan as lines for people: what would be done, or (`done`) what was.
    pub fn report(&self, done: bool) -> Report<'_> {
        Report { plan: self, done }
    }
}

/// [`Plan::report`]'s text, one indented line per thing removed.
pub struct Report<'a> {
    plan: &'a Plan,
    done: bool,
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.plan;
        if plan.is_empty() {
            return writeln!(f, "  nothing of feedgate's in database {}", plan.database);
        }
        if !plan.slots.iter().any(|s| s.ours) {
            writeln!(f, "  no replication slot of feedgate's in this database")?;
        }
        for slot in &plan.slots {
            self.write_slot(f, slot)?;
        }
        let drop = self.verb("drop", "dropped");
        if let Some(publication) = &plan.publication {
            writeln!(f, "  {drop} publication {publication}")?;
        }
        for table in &plan.tables {
            self.write_table(f, table)?;
        }
        if plan.schema {
            writeln!(
                f,
                "  {drop} schema feedgate CASCADE (the change log, feedgate's functions and any \
                 trigger left using them)"
            )?;
        }
        Ok(())
    }
}

impl Report<'_> {
    fn verb(&self, now: &'static str, past: &'static str) -> &'static str {
        if self.done {
            past
        } else {
            now
        }
    }

    fn write_slot(&self, f: &mut fmt::Formatter<'_>, slot: &Slot) -> fmt::Result {
        let state = match slot.active_pid {
            Some(pid) => format!("streamed by PostgreSQL backend pid {pid}"),
            None => "inactive".to_owned(),
        };
        let retained = match slot.retained_bytes {
            Some(bytes) => format!("keeps {} of WAL", Size(bytes)),
            None => "invalidated".to_owned(),
        };
        if !slot.dropped() {
            return writeln!(
                f,
                "  {} replication slot {} ({state}, {retained}): named like feedgate's but not \
                 one it records or is configured with",
                self.verb("leave", "left"),
                slot.name
            );
        }
        let why = if self.done {
            "it no longer holds WAL on the server"
        } else {
            "the part that matters: a slot left behind holds WAL on the server forever"
        };
        let drop = self.verb("drop", "dropped");
        writeln!(
            f,
            "  {drop} replication slot {} ({state}, {retained}): {why}",
            slot.name
        )
    }

    fn write_table(&self, f: &mut fmt::Formatter<'_>, table: &Table) -> fmt::Result {
        let mut what = Vec::new();
        if !table.triggers.is_empty() {
            let drop = self.verb("drop", "dropped");
            what.push(format!("{drop} triggers {}", table.triggers.join(", ")));
        }
        if let Some(restore) = table.restore {
            what.push(format!(
                "replica identity {} back to {}",
                table.identity, restore
            ));
        }
        if what.is_empty() {
            what.push("nothing to restore".to_owned());
        }
        let verb = self.verb("unwatch", "unwatched");
        writeln!(f, "  {verb} {}: {}", table.name, what.join("; "))
    }
}

/// Bytes for people: `512 bytes`, `1.5 MiB`.
struct Size(i64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} bytes", self.0);
        }
        #[allow(clippy::cast_precision_loss)] // a rounded figure for people
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for ReplicaIdentity {
    /// As `ALTER TABLE ... REPLICA IDENTITY` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Default => "DEFAULT",
            Self::Nothing => "NOTHING",
            Self::Full => "FULL",
            Self::Index => "USING INDEX",
        })
    }
}

impl fmt::Display for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("another session holds the capture lock"),
            pids => {
                f.write_str("PostgreSQL backend pid")?;
                for (i, pid) in pids.iter().enumerate() {
                    write!(f, "{}{pid}", if i == 0 { " " } else { ", " })?;
                }
                Ok(())
            }
        }
    }
}
