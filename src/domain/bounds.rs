//! What a valid event may hold: the accepted span of event time, the range of
//! every number, and the size of every string and free object. Said once
//! here; `ingest` enforces it on the way in, so a stored event is always
//! within these bounds, and `score` may rely on them (every total below stays
//! finite). No IO, no clock.
//!
//! Worst cases the bounds are chosen for (f64 reaches 1.8e308):
//! - amounts: at most [`MAX_AMOUNT`] units of their currency, converted with
//!   a factor of at most 1e15 (the model loader bounds every rate to
//!   [1e-6, 1e9], `money.rs`), so one converted amount is at most 1e27 and
//!   a brand's total over even 2^64 events at most 2e46;
//! - waits: at most [`MAX_WAIT_SECONDS`] each, so a brand's wait sum over
//!   2^64 contacts stays below 6e26;
//! - impulses: `ln(1 + amount / unit)`, `ln(new / old followers)` and
//!   `log10(1 + followers)` of bounded arguments are at most a few dozen;
//! - event time: within [`MIN_TIME`, `MAX_TIME`), 300 years; the scoring
//!   numerics are valid over the whole span (forward decay renormalises).

use chrono::{DateTime, Utc};

/// Earliest event time accepted: 1900-01-01T00:00:00Z. Earlier dates in
/// real pipelines are placeholders (`0001-01-01`), not events.
pub const MIN_TIME: DateTime<Utc> = match DateTime::from_timestamp(-2_208_988_800, 0) {
    Some(t) => t,
    None => panic!("1900-01-01 is a valid time"),
};

/// First event time no longer accepted: 2200-01-01T00:00:00Z (the range is
/// half-open, `MIN_TIME <= t < MAX_TIME`).
pub const MAX_TIME: DateTime<Utc> = match DateTime::from_timestamp(7_258_118_400, 0) {
    Some(t) => t,
    None => panic!("2200-01-01 is a valid time"),
};

/// A time outside [`MIN_TIME`, `MAX_TIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be from 1900-01-01T00:00:00Z up to (not including) 2200-01-01T00:00:00Z, got {}",
    .0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
)]
pub struct TimeOutOfRange(pub DateTime<Utc>);

/// Checks that `t` is within the accepted span of event time. The same span
/// bounds a read's `at`: every time a client may ask about is one an event
/// may have.
pub fn check_time(t: DateTime<Utc>) -> Result<DateTime<Utc>, TimeOutOfRange> {
    if (MIN_TIME..MAX_TIME).contains(&t) {
        Ok(t)
    } else {
        Err(TimeOutOfRange(t))
    }
}

/// Largest `amount` (purchase, brand_sales, cause), in units of the event's
/// currency: a trillion, beyond any single sale or a brand's reported
/// period. Amounts are at least 0 (a free item is a purchase of 0).
pub const MAX_AMOUNT: f64 = 1e12;

/// Largest `wait_seconds` of a service contact: 365 days.
pub const MAX_WAIT_SECONDS: f64 = 365.0 * 86_400.0;

/// Largest follower count (`followers`): 1e11, more than ten times everyone
/// alive.
pub const MAX_FOLLOWERS: u64 = 100_000_000_000;

/// Most `transfers` of one service contact.
pub const MAX_TRANSFERS: u64 = 1000;

/// `rating` of a review, stars.
pub const RATING: (u64, u64) = (1, 5);

/// `csat` of a service contact (customer satisfaction, 1 to 5).
pub const CSAT: (u64, u64) = (1, 5);

/// `effort` of a service contact (customer effort score, 1 to 7).
pub const EFFORT: (u64, u64) = (1, 7);

/// `sentiment`, closed range: -1 very negative, 1 very positive.
pub const SENTIMENT: (f64, f64) = (-1.0, 1.0);

/// `strength` of an endorsement or follow: in (0, 1], 1 when absent.
pub const STRENGTH: (f64, f64) = (0.0, 1.0);

/// Longest `text`, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Longest `channel`, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 64;

/// Most items in `tags` or `performers`.
pub const MAX_LIST: usize = 1000;

/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// Largest `attributes` object (and any other free JSON value an event
/// keeps), in bytes of compact JSON.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// Deepest nesting of `attributes`: the object itself is depth 1, an object
/// or array inside it depth 2, and so on.
pub const MAX_ATTRIBUTES_DEPTH: usize = 16;

/// The one character no string of an event may hold: PostgreSQL's `text`
/// and `jsonb` cannot store U+0000, and both stores must accept the same
/// events.
pub const NUL: char = '\0';

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_range_is_half_open_and_its_ends_are_the_documented_dates() {
        assert_eq!(MIN_TIME.to_rfc3339(), "1900-01-01T00:00:00+00:00");
        assert_eq!(MAX_TIME.to_rfc3339(), "2200-01-01T00:00:00+00:00");
        assert!(check_time(MIN_TIME).is_ok());
        assert!(check_time(MAX_TIME - chrono::Duration::nanoseconds(1)).is_ok());
        assert!(check_time(MAX_TIME).is_err());
        assert!(check_time(MIN_TIME - chrono::Duration::nanoseconds(1)).is_err());
    }

    #[test]
    fn an_out_of_range_time_says_the_range_and_the_time() {
        let t = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let message = check_time(t).unwrap_err().to_string();
        assert!(message.contains("1900-01-01T00:00:00Z"), "{message}");
        assert!(message.contains("2200-01-01T00:00:00Z"), "{message}");
        assert!(message.contains("0001-01-01T00:00:00Z"), "{message}");
    }

    #[test]
    fn worst_case_totals_stay_finite() {
        // One converted amount at the bounds, summed 2^64 times.
        let total = MAX_AMOUNT * 1e15 * 2f64.powi(64);
        assert!(total.is_finite() && total < 1e47);
        assert!((MAX_WAIT_SECONDS * 2f64.powi(64)).is_finite());
    }
}
