//! The settled frontier: how far a follow-mode reader may consume
//! (the argument: `docs/design.md` §3).
//!
//! # The rule
//!
//! An archive key starts with the time `s` its object was sealed, and the
//! object's PUT completes inside the same invocation, within the function
//! timeout `T` of `s`; the margin `e` covers the clock difference between
//! archiver and reader and an upload finishing just after its client stopped.
//! So an object sealed at `s` can show up in a listing until `s + T + e`, and
//! never after. At reader time `now`, the **settled frontier** is
//! `now - T - e`, and:
//!
//! 1. a key may be consumed only if its seal time is **strictly before** the
//!    frontier (`s < now - T - e`): every object sealed at or before `s`,
//!    including every other object of the same millisecond, is then either
//!    listed or will never exist (a dead invocation's retry gets a newer key);
//! 2. the reader consumes the listing **from its start and stops at the
//!    first key that is not settled**. Keys list in seal-time order, so every
//!    later key is unsettled too; more importantly, the cursor (the last
//!    consumed key, the next listing's `StartAfter`) must never move past the
//!    frontier: an object sealed at `s'` with `frontier <= s' < s` may still
//!    appear, and it would sort *before* a cursor at `s` and be skipped
//!    forever;
//! 3. `now` must be read **before** the LIST request is sent (before the
//!    first page): strong read-after-write consistency then guarantees the
//!    listing holds every object settled at `now`. A `now` taken after the
//!    listing could call settled an object PUT between the LIST and the
//!    clock read.
//!
//! The price is that a live follower lags the archive by `T + e`; that is
//! what never skipping costs. History (everything sealed long ago) is
//! unaffected: it is all settled.

/// The default clock margin `e`: 30 s.
pub const DEFAULT_MARGIN_MS: i64 = 30_000;

/// The largest function timeout or clock margin a [`Frontier`] keeps
/// (about 146 million years): `T + e` of two such values still fits an `i64`.
pub const MAX_BOUND_MS: i64 = i64::MAX / 2;

/// The follow-mode bound: function timeout `T` plus clock margin `e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frontier {
    /// The archiver's hard deadline per batch (the Lambda function timeout), ms.
    pub timeout_ms: i64,
    /// The clock margin, ms.
    pub margin_ms: i64,
}

impl Frontier {
    /// A frontier for a function timeout and a clock margin (negative values
    /// count as 0; each is at most [`MAX_BOUND_MS`], so that `T + e` never
    /// overflows).
    pub fn new(timeout_ms: i64, margin_ms: i64) -> Self {
        Self {
            timeout_ms: timeout_ms.clamp(0, MAX_BOUND_MS),
            margin_ms: margin_ms.clamp(0, MAX_BOUND_MS),
        }
    }

    /// `T + e`: how far a follower lags the archive (saturating, for a
    /// frontier built field by field).
    pub fn lag_ms(&self) -> i64 {
        self.timeout_ms.saturating_add(self.margin_ms)
    }

    /// The settled frontier at reader time `now_ms`: `now - T - e`.
    pub fn settled(&self, now_ms: i64) -> i64 {
        now_ms
            .saturating_sub(self.timeout_ms)
            .saturating_sub(self.margin_ms)
    }

    /// Whether an object sealed at `sealed_at_ms` may be consumed at `now_ms`
    /// (its seal time is strictly before the settled frontier).
    pub fn is_settled(&self, now_ms: i64, sealed_at_ms: i64) -> bool {
        sealed_at_ms < self.settled(now_ms)
    }

    /// The earliest reader time at which an object sealed at `sealed_at_ms`
    /// is settled (`s + T + e + 1`): how long a follower should sleep before
    /// listing again.
    pub fn settles_at(&self, sealed_at_ms: i64) -> i64 {
        sealed_at_ms
            .saturating_add(self.timeout_ms)
            .saturating_add(self.margin_ms)
            .saturating_add(1)
    }

    /// How many leading keys of a listing may be consumed at `now_ms`, given
    /// their seal times in listing order: the length of the longest prefix of
    /// settled keys (it stops at the first unsettled key, see the module docs).
    /// `now_ms` must have been read before the listing was requested.
    pub fn consumable(&self, now_ms: i64, sealed_at_ms: impl IntoIterator<Item = i64>) -> usize {
        let frontier = self.settled(now_ms);
        sealed_at_ms
            .into_iter()
            .take_while(|&s| s < frontier)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Frontier {
        /// A frontier for a function timeout with [`DEFAULT_MARGIN_MS`].
        fn with_default_margin(timeout_ms: i64) -> Self {
            Self::new(timeout_ms, DEFAULT_MARGIN_MS)
        }
    }

    #[test]
    fn frontier_is_now_minus_timeout_minus_margin() {
        let f = Frontier::new(900_000, 30_000);
        assert_eq!(f.settled(1_000_000), 70_000);
        assert!(f.is_settled(1_000_000, 69_999));
        assert!(!f.is_settled(1_000_000, 70_000));
        assert_eq!(f.settles_at(70_000), 1_000_001);
        assert!(f.is_settled(f.settles_at(70_000), 70_000));
        assert_eq!(Frontier::new(-5, -5), Frontier::new(0, 0));
        assert_eq!(
            Frontier::with_default_margin(1).margin_ms,
            DEFAULT_MARGIN_MS
        );
        assert_eq!(f.settled(i64::MIN), i64::MIN);
    }

    #[test]
    fn huge_timeouts_saturate() {
        // A huge --archiver-timeout: T + e, the follow lag and the default
        // gap bound, never wraps to a negative number.
        let f = Frontier::new(i64::MAX, i64::MAX);
        assert!(f.timeout_ms.checked_add(f.margin_ms).is_some());
        assert_eq!(f.lag_ms(), f.timeout_ms + f.margin_ms);
        assert!(f.lag_ms() > 0);
        let literal = Frontier {
            timeout_ms: i64::MAX,
            margin_ms: i64::MAX,
        };
        assert_eq!(literal.lag_ms(), i64::MAX);
        assert_eq!(f.settled(i64::MAX), i64::MAX - f.lag_ms());
        for f in [f, literal] {
            assert_eq!(f.settled(i64::MIN), i64::MIN);
            assert!(f.settled(0) < -(i64::MAX / 2));
            assert_eq!(f.settles_at(0), i64::MAX);
            assert_eq!(f.consumable(0, [0]), 0);
        }
    }

    #[test]
    fn consumable_stops_at_the_first_unsettled_key() {
        let f = Frontier::new(10, 5);
        // frontier at now=100 is 85
        assert_eq!(f.consumable(100, [10, 50, 84, 85, 86]), 3);
        assert_eq!(f.consumable(100, []), 0);
        assert_eq!(f.consumable(100, [85, 10]), 0);
        assert_eq!(f.consumable(1_000, [10, 50, 84, 85, 86]), 5);
    }
}
