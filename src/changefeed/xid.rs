//! Widening pgoutput's 32-bit transaction ids to the 64-bit `xid8` the change log keeps.
//!
//! pgoutput's `Begin` carries a transaction's `xid` without its epoch; `pg_current_snapshot()`
//! and the log speak `xid8` (epoch × 2³² + xid). The leader widens each xid of a batch around
//! the batch's watermark snapshot: PostgreSQL never lets a transaction still needed fall 2³¹
//! behind the next xid, and the slot keeps every transaction it has not decoded needed, so the
//! full id is the one **nearest** to the snapshot's `xmax` (not "at or below" it: a transaction
//! that began after the snapshot was taken can commit before the marker, a little above `xmax`).

/// The `xid8` whose low 32 bits are `xid` and which is nearest to `reference`.
pub(crate) fn widen(xid: u32, reference: u64) -> u64 {
    // The low half of the reference: truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    let low = reference as u32;
    // The signed distance from the reference, in -2³¹..2³¹.
    #[allow(clippy::cast_possible_wrap)]
    let delta = xid.wrapping_sub(low) as i32;
    reference.wrapping_add_signed(i64::from(delta))
}

#[cfg(test)]
mod tests {
    use super::widen;
    use proptest::prelude::*;

    const EPOCH: u64 = 1 << 32;

    #[test]
    fn widens_within_an_epoch() {
        assert_eq!(widen(738, 3 * EPOCH + 740), 3 * EPOCH + 738);
        assert_eq!(widen(745, 3 * EPOCH + 740), 3 * EPOCH + 745);
    }

    #[test]
    fn widens_across_an_epoch_boundary() {
        // The reference is just past the wrap; the xid just before it is of the epoch before.
        assert_eq!(widen(u32::MAX - 2, EPOCH + 5), EPOCH - 3);
        // The reference is just before the wrap; a slightly newer xid is of the next epoch.
        assert_eq!(widen(4, 2 * EPOCH - 3), 2 * EPOCH + 4);
    }

    proptest! {
        /// Whatever the reference, any xid8 within 2³¹ of it comes back from its low bits.
        #[test]
        fn nearest_is_exact(reference in (1u64 << 31)..(u64::MAX >> 1), delta in -(1i64 << 31) + 1..(1i64 << 31)) {
            let full = reference.wrapping_add_signed(delta);
            #[allow(clippy::cast_possible_truncation)]
            let low = full as u32;
            prop_assert_eq!(widen(low, reference), full);
        }
    }
}
