//! One rule's state machine for one relationship, pure: no clock, no IO.
//! Time is an argument (the event time the value was read at).
//!
//! ```text
//!   armed ──value past threshold──▶ pending(since) ──held for dwell──▶ fired
//!     ▲                                 │                               │
//!     └────────back before the dwell────┘                               │
//!     └──────────────value back past the re-arm threshold───────────────┘
//! ```
//!
//! Hysteresis is the gap between `threshold` and `rearm`: a value that
//! oscillates inside it fires once, because only crossing back past
//! `rearm` re-arms. The dwell is measured between the times the value was
//! read at, so an evaluation that sees the value past the threshold at
//! `since` and still past it at `since + dwell` fires, whatever happened to
//! the wall clock in between.

use chrono::{DateTime, Duration, Utc};

use crate::store::alerts::{Direction, Phase, RuleSpec};

/// What one step decided besides the new phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Firing {
    /// When the value crossed the threshold (the start of the dwell).
    pub crossed_at: DateTime<Utc>,
}

/// Whether `value` is on the alert's side of the threshold (strictly).
pub fn past_threshold(rule: &RuleSpec, value: f64) -> bool {
    match rule.direction {
        Direction::Below => value < rule.threshold,
        Direction::Above => value > rule.threshold,
    }
}

/// Whether `value` is back past the re-arm threshold (inclusive).
pub fn rearmed(rule: &RuleSpec, value: f64) -> bool {
    match rule.direction {
        Direction::Below => value >= rule.rearm,
        Direction::Above => value <= rule.rearm,
    }
}

/// The next phase of a relationship whose value at time `t` is `value`,
/// and whether it fires now.
pub fn step(
    rule: &RuleSpec,
    phase: Phase,
    t: DateTime<Utc>,
    value: f64,
) -> (Phase, Option<Firing>) {
    let dwell = Duration::seconds(rule.dwell_seconds.min(i64::MAX as u64 / 1000) as i64);
    match phase {
        Phase::Armed if past_threshold(rule, value) => {
            if dwell.is_zero() {
                (Phase::Fired { at: t }, Some(Firing { crossed_at: t }))
            } else {
                (Phase::Pending { since: t }, None)
            }
        }
        Phase::Armed => (Phase::Armed, None),
        Phase::Pending { .. } if !past_threshold(rule, value) => (Phase::Armed, None),
        Phase::Pending { since } if t - since >= dwell => {
            (Phase::Fired { at: t }, Some(Firing { crossed_at: since }))
        }
        Phase::Pending { since } => (Phase::Pending { since }, None),
        Phase::Fired { .. } if rearmed(rule, value) => (Phase::Armed, None),
        Phase::Fired { at } => (Phase::Fired { at }, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::alerts::Metric;

    fn rule(dwell_seconds: u64) -> RuleSpec {
        RuleSpec {
            brand: None,
            kind: None,
            metric: Metric::Score,
            direction: Direction::Below,
            threshold: 40.0,
            rearm: 45.0,
            dwell_seconds,
            webhook_url: "https://example.com/hook".into(),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// Runs values through the machine, one second apart; answers how many
    /// times it fired.
    fn fires(rule: &RuleSpec, values: &[(i64, f64)]) -> usize {
        let mut phase = Phase::Armed;
        let mut n = 0;
        for &(s, v) in values {
            let (next, fired) = step(rule, phase, t(s), v);
            phase = next;
            n += fired.is_some() as usize;
        }
        n
    }

    #[test]
    fn oscillation_inside_the_band_fires_once() {
        let values: Vec<(i64, f64)> = (0..20)
            .map(|i| (i, if i % 2 == 0 { 39.0 } else { 44.0 }))
            .collect();
        assert_eq!(fires(&rule(0), &values), 1);
    }

    #[test]
    fn crossing_back_past_rearm_fires_again() {
        let values = [(0, 39.0), (1, 46.0), (2, 39.0)];
        assert_eq!(fires(&rule(0), &values), 2);
    }

    #[test]
    fn the_dwell_is_held_in_event_time() {
        let r = rule(60);
        // Short dips never fire.
        assert_eq!(
            fires(&r, &[(0, 39.0), (30, 41.0), (40, 39.0), (90, 41.0)]),
            0
        );
        // Held for the dwell: fires once, dated from the crossing.
        let (p, f) = step(&r, Phase::Armed, t(0), 39.0);
        assert_eq!(p, Phase::Pending { since: t(0) });
        assert!(f.is_none());
        let (p, f) = step(&r, p, t(59), 39.0);
        assert!(f.is_none() && p == Phase::Pending { since: t(0) });
        let (p, f) = step(&r, p, t(60), 39.0);
        assert_eq!(p, Phase::Fired { at: t(60) });
        assert_eq!(f, Some(Firing { crossed_at: t(0) }));
    }

    #[test]
    fn above_mirrors_below() {
        let r = RuleSpec {
            direction: Direction::Above,
            threshold: 70.0,
            rearm: 65.0,
            ..rule(0)
        };
        let values = [(0, 71.0), (1, 66.0), (2, 71.0), (3, 64.0), (4, 71.0)];
        assert_eq!(fires(&r, &values), 2);
    }
}
