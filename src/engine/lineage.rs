//! What each new state generation changed (issue #11, item 3): `Lineage`,
//! the one rule by which something derived from a state of one generation
//! (a kept walk, the rankings' past columns, a ranking) may serve a later
//! one. It decides nothing else and keeps no state of the scores.
//!
//! A generation begins whenever a whole state is swapped in (`Derived`). A
//! refold from an event-time checkpoint (`engine/refold.rs`) only adds
//! events, the earliest at some time T, so the state at every time before
//! T is the one the previous generation had: each impulse, graph row and
//! consent at a time before T is a function of the events up to that time
//! (`score::fold`), and so is every entity's handle when the refold kept
//! the replaced state's (`score::handles_kept`: a late event that names an
//! entity first moves the handles of those the replaced state met after
//! it, and what is kept by handle would name other entities; red team
//! h70). Anything else (a whole build, which may follow an erasure or a
//! registration; a restore; a rebuilt live series; a refold that moved a
//! handle) may have changed anything.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// What a new generation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Anything: events may have been removed, or context changed.
    Everything,
    /// Events were only added, none earlier than this time: the state at
    /// every earlier time is unchanged.
    AddedFrom(DateTime<Utc>),
}

/// Generations recorded, at most; a derived value older than that is taken
/// for void (it is rebuilt, never served wrong).
const KEPT: usize = 256;

/// What each recent generation changed (module docs).
#[derive(Debug, Default)]
pub(super) struct Lineage {
    /// (generation, what it changed from the one before), ascending.
    changes: Mutex<VecDeque<(u64, Reach)>>,
}

impl Lineage {
    /// Records that `generation` (one more than the one before) changed
    /// `reach`.
    pub(super) fn record(&self, generation: u64, reach: Reach) {
        let mut changes = self.changes.lock();
        changes.push_back((generation, reach));
        if changes.len() > KEPT {
            changes.pop_front();
        }
    }

    /// Whether every generation after `from` up to `to` satisfies `keeps`
    /// (false when one is not recorded, or `to` is before `from`).
    fn all_since(&self, from: u64, to: u64, keeps: impl Fn(Reach) -> bool) -> bool {
        if from == to {
            return true;
        }
        if to < from {
            return false;
        }
        let changes = self.changes.lock();
        (from + 1..=to).all(|g| {
            changes
                .binary_search_by_key(&g, |(generation, _)| *generation)
                .is_ok_and(|i| keeps(changes[i].1))
        })
    }

    /// Whether the state of generation `to` at time `t` is that of
    /// generation `from`: so what was derived at `t` from `from` (a walk at
    /// `t`, a batch evaluation at `t`) holds for `to`. The one rule for
    /// caches of past times.
    pub(super) fn unchanged_at(&self, from: u64, to: u64, t: DateTime<Utc>) -> bool {
        self.all_since(from, to, |reach| match reach {
            Reach::Everything => false,
            Reach::AddedFrom(first) => t < first,
        })
    }

    /// Whether generation `to` holds every event of `from` and only added
    /// some: a state of `from` is then `to` as it was before those events
    /// came (a view that lags, no more).
    pub(super) fn only_added(&self, from: u64, to: u64) -> bool {
        self.all_since(from, to, |reach| matches!(reach, Reach::AddedFrom(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::hours(hours)
    }

    #[test]
    fn a_refold_keeps_what_was_derived_before_its_earliest_event_and_nothing_after() {
        let lineage = Lineage::default();
        lineage.record(1, Reach::AddedFrom(at(10)));
        assert!(lineage.unchanged_at(0, 1, at(9)));
        // The state at the earliest added event's own time holds it.
        assert!(!lineage.unchanged_at(0, 1, at(10)));
        assert!(!lineage.unchanged_at(0, 1, at(11)));
        assert!(lineage.only_added(0, 1));
        // Two refolds: the earliest of them decides.
        lineage.record(2, Reach::AddedFrom(at(5)));
        assert!(lineage.unchanged_at(0, 2, at(4)));
        assert!(!lineage.unchanged_at(0, 2, at(6)));
        assert!(lineage.unchanged_at(1, 2, at(4)));
        assert!(lineage.unchanged_at(2, 2, at(100)), "its own generation");
    }

    #[test]
    fn a_whole_build_or_an_unrecorded_generation_keeps_nothing() {
        let lineage = Lineage::default();
        lineage.record(1, Reach::Everything);
        lineage.record(2, Reach::AddedFrom(at(10)));
        assert!(!lineage.unchanged_at(0, 2, at(0)));
        assert!(!lineage.only_added(0, 2));
        assert!(lineage.unchanged_at(1, 2, at(0)));
        assert!(!lineage.unchanged_at(2, 1, at(0)), "backwards");
        assert!(!lineage.unchanged_at(2, 3, at(0)), "not recorded");
        for g in 3..(3 + KEPT as u64) {
            lineage.record(g, Reach::AddedFrom(at(10)));
        }
        assert!(!lineage.unchanged_at(1, 3, at(0)), "forgotten");
    }
}
