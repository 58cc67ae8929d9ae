//! PostgreSQL transaction snapshots (`pg_snapshot`, as `xmin:xmax:xip,...` text) and the
//! visibility rule the changefeed fences with. Pure: no I/O.
//!
//! A transaction id `x` is visible in (committed before) a snapshot when `x < xmin`, or when
//! `x < xmax` and `x` is not in the in-progress list. This is `pg_visible_in_snapshot` for
//! transactions that committed; changes of aborted transactions never reach the log's readers.

use std::fmt;

use crate::cursor::TxSnapshot;

/// A parsed `pg_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    xmin: u64,
    xmax: u64,
    /// Sorted transaction ids in progress when the snapshot was taken.
    xip: Vec<u64>,
}

/// The text was not a `pg_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a pg_snapshot: {0:?}")]
pub struct BadSnapshot(String);

impl Snapshot {
    /// Parses PostgreSQL's text form, e.g. `"10:20:10,14,15"` or `"12:12:"`.
    pub(crate) fn parse(text: &str) -> Result<Self, BadSnapshot> {
        let bad = || BadSnapshot(text.to_owned());
        let mut parts = text.splitn(3, ':');
        let mut next = || parts.next().ok_or_else(bad);
        let xmin = next()?.parse().map_err(|_| bad())?;
        let xmax = next()?.parse().map_err(|_| bad())?;
        let mut xip = next()?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| bad()))
            .collect::<Result<Vec<u64>, _>>()?;
        xip.sort_unstable();
        if xmin > xmax {
            return Err(bad());
        }
        Ok(Self { xmin, xmax, xip })
    }

    /// Whether transaction `xid` had committed when this snapshot was taken.
    pub(crate) fn is_visible(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && self.xip.binary_search(&xid).is_err())
    }

    /// The oldest transaction that may still be invisible: every change of an older one is
    /// visible. The lower bound of a log scan.
    pub(crate) fn xmin(&self) -> u64 {
        self.xmin
    }

    /// The first transaction id not yet assigned when the snapshot was taken.
    pub(crate) fn xmax(&self) -> u64 {
        self.xmax
    }

    /// Whether every transaction visible in `other` is visible here too (a snapshot taken later
    /// covers an earlier one; a watermark may lag behind a cursor's snapshot).
    pub(crate) fn covers(&self, other: &Snapshot) -> bool {
        // Visible in `other` means below its xmax and not in its xip.
        let beyond = other.xip.iter().filter(|x| **x >= self.xmax).count() as u64;
        let above_ok = other.xmax <= self.xmax || other.xmax - self.xmax == beyond;
        let in_progress_ok = self
            .xip
            .iter()
            .filter(|x| **x < other.xmax)
            .all(|x| other.xip.binary_search(x).is_ok());
        above_ok && in_progress_ok
    }

    /// Whether a transaction other than `except` ended between `earlier` and this snapshot:
    /// one running or not yet started then, and finished (committed or rolled back) now.
    pub(crate) fn ended_since(&self, earlier: &Snapshot, except: Option<u64>) -> bool {
        let counts = |x: u64| Some(x) != except;
        if earlier.xip.iter().any(|&x| counts(x) && self.is_visible(x)) {
            return true;
        }
        // Started after `earlier` and no longer running.
        (earlier.xmax..self.xmax)
            .take(self.xip.len() + 2)
            .any(|x| counts(x) && self.xip.binary_search(&x).is_err())
    }

    /// The snapshot as a cursor holds it.
    pub(crate) fn to_tx(&self) -> TxSnapshot {
        TxSnapshot {
            xmin: self.xmin,
            xmax: self.xmax,
            xip: self.xip.clone(),
        }
    }

    /// A snapshot from a cursor's numbers, when PostgreSQL could have taken it (`1 <= xmin <=
    /// xmax`, each in-progress id between them, ascending, once): a client's cursor may be
    /// forged, and the database must not be handed what it would refuse.
    pub(crate) fn from_tx(tx: &TxSnapshot) -> Option<Self> {
        let ordered = tx.xip.windows(2).all(|pair| pair[0] < pair[1]);
        let within = tx.xip.iter().all(|xid| (tx.xmin..tx.xmax).contains(xid));
        let bounded = tx.xmax <= i64::MAX as u64;
        (tx.xmin >= 1 && tx.xmin <= tx.xmax && ordered && within && bounded).then(|| Self {
            xmin: tx.xmin,
            xmax: tx.xmax,
            xip: tx.xip.clone(),
        })
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, xid) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{xid}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_since_ignores_the_exception() {
        let s = |t: &str| Snapshot::parse(t).expect("valid");
        // Only our marker (12) ran and ended since "12:12:".
        assert!(!s("13:13:").ended_since(&s("12:12:"), Some(12)));
        assert!(s("13:13:").ended_since(&s("12:12:"), None));
        // A transaction that was running (10) ended.
        assert!(s("13:13:").ended_since(&s("10:12:10"), Some(12)));
        // Another one started and ended beside our marker.
        assert!(s("14:14:").ended_since(&s("12:12:"), Some(12)));
        // Nothing ended: 13 still runs.
        assert!(!s("13:14:13").ended_since(&s("12:12:"), Some(12)));
        // Exhaustively against the definition.
        let all = [
            "5:5:", "5:8:5", "5:8:6,7", "6:9:7", "6:9:", "7:7:", "5:9:5,8", "8:10:8,9",
        ];
        for a in all {
            for b in all {
                let (a, b) = (s(a), s(b));
                if !a.covers(&b) {
                    continue; // only later snapshots are compared
                }
                for except in [None, Some(5), Some(7), Some(8)] {
                    let by_definition =
                        (0..12).any(|x| Some(x) != except && a.is_visible(x) && !b.is_visible(x));
                    assert_eq!(
                        a.ended_since(&b, except),
                        by_definition,
                        "{a} since {b} except {except:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn covers_is_visibility_inclusion() {
        let s = |t: &str| Snapshot::parse(t).expect("valid");
        assert!(s("12:20:15").covers(&s("10:12:10,11")));
        assert!(s("10:12:10,11").covers(&s("10:12:10,11")));
        assert!(!s("10:12:10,11").covers(&s("12:20:15")));
        // 11 is in progress in the later one's view only if it was in the earlier one's too.
        assert!(!s("11:14:11").covers(&s("10:13:10")));
        // An earlier xmax is fine when everything above it was in progress in `other`.
        assert!(s("10:12:").covers(&s("10:14:12,13")));
        // Exhaustively against the definition, on small snapshots.
        let all = [
            "5:5:", "5:8:5", "5:8:6,7", "6:9:7", "6:9:", "7:7:", "5:9:5,8", "8:10:8,9",
        ];
        for a in all {
            for b in all {
                let (a, b) = (s(a), s(b));
                let by_definition = (0..12).all(|x| !b.is_visible(x) || a.is_visible(x));
                assert_eq!(a.covers(&b), by_definition, "{a} covers {b}");
            }
        }
    }

    #[test]
    fn parses_and_prints_postgres_text() {
        for text in ["10:20:10,14,15", "12:12:", "5:9:7"] {
            assert_eq!(Snapshot::parse(text).expect("valid").to_string(), text);
        }
        for bad in ["", "1", "1:x:", "9:3:", "1:2:a"] {
            assert!(Snapshot::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cursor_numbers_become_a_snapshot_only_when_postgres_could_have_taken_them() {
        let s = Snapshot::parse("10:20:10,14,15").expect("valid");
        assert_eq!(Snapshot::from_tx(&s.to_tx()), Some(s));
        let bad = [
            (0, 5, vec![]),
            (9, 3, vec![]),
            (5, 9, vec![7, 6]),
            (5, 9, vec![9]),
            (5, 9, vec![6, 6]),
        ];
        for (xmin, xmax, xip) in bad {
            let tx = TxSnapshot { xmin, xmax, xip };
            assert_eq!(Snapshot::from_tx(&tx), None, "{tx:?}");
        }
    }

    #[test]
    fn visibility_follows_postgres_rules() {
        let s = Snapshot::parse("10:20:10,14,15").expect("valid");
        assert!(s.is_visible(9)); // before xmin
        assert!(!s.is_visible(10)); // in progress
        assert!(s.is_visible(11)); // committed between xmin and xmax
        assert!(!s.is_visible(14));
        assert!(s.is_visible(19));
        assert!(!s.is_visible(20)); // at or after xmax: not yet started
        assert!(!s.is_visible(25));
    }
}
