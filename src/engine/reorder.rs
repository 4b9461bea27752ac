//! The fold thread's reorder window (issue #11, items 1 and 3): fresh
//! events are held back for a few milliseconds so the stragglers stamped
//! before them arrive first, and a round folds them all in place, in
//! canonical order, instead of refolding.
//!
//! Why: concurrent senders stamp events at send, and their requests reach
//! the fold thread in another order (HTTP, the commit group they land
//! in). Folded as they come, nearly every round of a stream held an event
//! earlier than one folded the round before, and refolded from a
//! checkpoint: a copy of the whole fold state and the drop of the old one
//! (28 ms a round at 200,000 events, 1,036 refolds in a 15 s stream of
//! single events, `benches/stream.sh`), which bounded the rounds and so
//! the acknowledgements. A watermark delay, as stream processors have it:
//! a change is due once the server clock has passed its latest event time
//! by the window (`EngineOptions::reorder_window`), and never later than
//! the window after it was sent (an event dated ahead of the clock, within
//! `max_future_skew`, does not wait for its date). A backfill of old
//! events is due at once. A straggler still late (its transit longer than
//! the window) is refolded as before.
//!
//! The window changes when events are folded, never what: the state is a
//! function of the event set (`score::refold`), so the bits do not move.
//! Rounds still take received changes in order, a prefix of them (the
//! published position says every position below it is folded: a change
//! held back holds back the ones sent after it, at most a window); a
//! registration, an erasure or a restore makes everything received before
//! it due (a build reads the store, which holds their events).
//!
//! Must not: read the event log, change the state, answer writers.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::FoldJob;
use crate::domain::Logged;

/// Default of `EngineOptions::reorder_window`: longer than the transit of
/// most single events from a stamp at send to the fold thread under
/// `benches/stream.sh` (a commit, an fsync, about 10 ms on its machine),
/// short beside the acknowledgement target (100 ms at the 99th
/// percentile).
pub const DEFAULT_REORDER_WINDOW: Duration = Duration::from_millis(20);

/// When a change of `events`, sent now (`now`, `clock`: the same instant
/// on the monotonic and the wall clock), is due to be folded: once the
/// wall clock passes its latest event time by `window`, at most `window`
/// from now. A change without events (a rebuild) is due now.
pub(super) fn due(
    events: &[Logged],
    window: Duration,
    now: Instant,
    clock: DateTime<Utc>,
) -> Instant {
    let Some(latest) = events.iter().map(|l| l.event.time).max() else {
        return now;
    };
    // Negative (an event older than the window) is no wait; an event
    // dated ahead of the clock waits one window.
    let window_then = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let wait = (latest.checked_add_signed(window_then).unwrap_or(latest) - clock)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .min(window);
    now + wait
}

/// How many jobs at the front of `received` a round may take at `now`:
/// the longest prefix of due ones, where a rebuild or a restore makes
/// everything before it due.
pub(super) fn due_prefix(received: &VecDeque<FoldJob>, now: Instant) -> usize {
    let forced = received
        .iter()
        .rposition(|job| match job {
            FoldJob::Change(change) => change.rebuild,
            FoldJob::Restore(_) => true,
        })
        .map_or(0, |i| i + 1);
    let ripe = received
        .iter()
        .skip(forced)
        .take_while(|job| match job {
            FoldJob::Change(change) => change.due <= now,
            FoldJob::Restore(_) => true,
        })
        .count();
    forced + ripe
}

/// When the first job of `received` not in its due prefix is due (`None`:
/// none is waiting).
pub(super) fn next_due(received: &VecDeque<FoldJob>, now: Instant) -> Option<Instant> {
    match received.get(due_prefix(received, now))? {
        FoldJob::Change(change) => Some(change.due),
        FoldJob::Restore(_) => Some(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: DateTime<Utc>) -> Logged {
        let value = serde_json::json!({"id": "e", "type": "purchase",
            "time": time.to_rfc3339(), "person": "p", "brand": "b", "amount": 1});
        let model = crate::score::ScoringModel::default_model();
        let mut valid = crate::ingest::validate_all(&[value], &model.currency);
        assert!(valid.rejected.is_empty(), "{:?}", valid.rejected);
        Logged {
            position: 0,
            event: valid.good.remove(0).1,
        }
    }

    #[test]
    fn a_fresh_event_waits_what_is_left_of_the_window_after_its_time() {
        let (now, clock) = (Instant::now(), Utc::now());
        let window = Duration::from_millis(20);
        let sent_8ms_after = at(clock - chrono::Duration::milliseconds(8));
        let due = due(&[sent_8ms_after], window, now, clock);
        assert_eq!(due - now, Duration::from_millis(12));
    }

    #[test]
    fn an_old_event_is_due_at_once_and_one_from_the_future_waits_one_window() {
        let (now, clock) = (Instant::now(), Utc::now());
        let window = Duration::from_millis(20);
        let old = at(clock - chrono::Duration::hours(3));
        assert_eq!(due(&[old], window, now, clock), now);
        let ahead = at(clock + chrono::Duration::hours(3));
        assert_eq!(due(&[ahead], window, now, clock), now + window);
        assert_eq!(due(&[], window, now, clock), now);
    }
}
