//! Which build this is: the crate's version and the git commit it was built from (embedded by
//! `build.rs`; "unknown" when built outside a git checkout). Reported by `feedgate --version`,
//! the start-up log line, `/health` and `/health/ready`. Nothing here changes at run time.

/// The crate's version, e.g. "0.1.0".
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The abbreviated (12-digit) hash of the commit the binary was built from, or "unknown".
pub const COMMIT: &str = env!("FEEDGATE_COMMIT");

/// What `feedgate --version` prints after the name: "0.1.0 (commit 0123456789ab)".
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FEEDGATE_COMMIT"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_is_a_short_hash_or_unknown() {
        assert!(
            COMMIT == "unknown"
                || (COMMIT.len() == 12 && COMMIT.chars().all(|c| c.is_ascii_hexdigit())),
            "{COMMIT}"
        );
        assert!(LONG.starts_with(VERSION) && LONG.contains(COMMIT));
    }
}
