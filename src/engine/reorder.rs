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
//! Besides the window, a change waits for the writes already in the
//! server that hold an earlier event (`InTransit`: from a write's arrival
//! checks until its change is sent): most stragglers are not on the wire
//! but in the engine, behind a commit, when the change ahead of them
//! reaches the fold thread. Under 64 single-event clients the transit from
//! stamp to fold thread (a commit group and the wait for the one before
//! it) is longer than the window, so the window alone held nothing back
//! and nearly every round refolded (1,257 refolds of 718 events, 15 ms each,
//! in a 15 s `benches/stream.sh` singles run: a quarter of the server's CPU
//! with the freeing thread); waiting for the writes in transit costs at
//! most one commit and folds them in place. Still bounded: a change is due
//! at the latest one window after it was sent, whatever is in transit.
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

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::FoldJob;
use crate::domain::{Event, Logged};

/// Default of `EngineOptions::reorder_window`: longer than the transit of
/// most single events from a stamp at send to the fold thread under
/// `benches/stream.sh` (a commit, an fsync, about 10 ms on its machine),
/// short beside the acknowledgement target (100 ms at the 99th
/// percentile).
pub const DEFAULT_REORDER_WINDOW: Duration = Duration::from_millis(20);

/// Writes between their arrival checks and the change of their stored
/// events sent to the fold thread, by their earliest event time: the
/// stragglers a change about to be folded may still get.
#[derive(Default)]
pub(super) struct InTransit {
    /// (earliest event time, ticket) of each write in transit.
    writes: Mutex<BTreeSet<(DateTime<Utc>, u64)>>,
    next: AtomicU64,
}

impl InTransit {
    /// Counts a write of `events` in transit until the answer is dropped
    /// (`None` for no events: nothing to wait for). `fold` reaches the fold
    /// thread: a write that ends without a change wakes it through it
    /// (`Transit`).
    pub(super) fn enter<'a>(
        self: &Arc<Self>,
        events: impl IntoIterator<Item = &'a Event>,
        fold: &Sender<FoldJob>,
    ) -> Option<Transit> {
        let earliest = events.into_iter().map(|e| e.time).min()?;
        let key = (earliest, self.next.fetch_add(1, Ordering::Relaxed));
        self.writes.lock().insert(key);
        Some(Transit {
            transit: Arc::clone(self),
            key,
            wake: Some(fold.clone()),
        })
    }

    /// Whether a write in transit holds an event earlier than `time`.
    fn holds_earlier_than(&self, time: DateTime<Utc>) -> bool {
        self.writes.lock().first().is_some_and(|(t, _)| *t < time)
    }

    /// The ticket the next write will get: every write counted before now
    /// has a smaller one.
    fn next_ticket(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Whether a write counted before `ticket` is still in transit (at
    /// most the writes in flight: a scan).
    fn holds_entered_before(&self, ticket: u64) -> bool {
        self.writes.lock().iter().any(|(_, t)| *t < ticket)
    }
}

/// A write counted in `InTransit` until dropped: end it with
/// [`Transit::before_change`] right before its change is sent (a change
/// waiting for itself would wait the whole window); dropped anywhere else,
/// the write ended without a change (its events all duplicates, refused,
/// a failed commit), and it wakes the fold thread (`FoldJob::Wake`): a
/// change waiting for it is due now, and nothing else would wake the fold
/// thread before that change's window was over (task h64; a debt of task
/// h47).
pub(super) struct Transit {
    transit: Arc<InTransit>,
    key: (DateTime<Utc>, u64),
    /// Where the wake goes, unless the change's send wakes the fold thread.
    wake: Option<Sender<FoldJob>>,
}

impl Transit {
    /// Out of transit as its change is about to be sent: the send wakes
    /// the fold thread.
    pub(super) fn before_change(mut self) {
        self.wake = None;
    }
}

impl Drop for Transit {
    fn drop(&mut self) {
        // Out of the set before the wake: the fold thread, woken, must
        // find the change it holds due.
        self.transit.writes.lock().remove(&self.key);
        if let Some(fold) = self.wake.take() {
            // The fold thread gone has nothing to fold.
            let _ = fold.send(FoldJob::Wake);
        }
    }
}

/// When a change may be folded (`due`).
pub(super) struct Due {
    /// Not before: its latest event time plus the window, on the monotonic
    /// clock.
    after: Instant,
    /// Not after: the window from when it was sent, whatever is in transit.
    by: Instant,
    /// Its latest event time, and the writes in transit it waits for when
    /// one holds an earlier event.
    wait_for: Option<(DateTime<Utc>, Arc<InTransit>)>,
    /// Late (an event earlier than the fold's latest when it was sent: it
    /// refolds): it also waits for every write in transit then, whatever
    /// their times (below this ticket), so one refold folds them all.
    gather_below: Option<u64>,
}

impl Due {
    /// Due now (a rebuild; tests).
    pub(super) fn now(now: Instant) -> Due {
        Due {
            after: now,
            by: now,
            wait_for: None,
            gather_below: None,
        }
    }

    /// Whether it may be folded at `now`.
    fn ready(&self, now: Instant) -> bool {
        now >= self.by
            || (now >= self.after
                && self.wait_for.as_ref().is_none_or(|(latest, transit)| {
                    !transit.holds_earlier_than(*latest)
                        && self
                            .gather_below
                            .is_none_or(|ticket| !transit.holds_entered_before(ticket))
                }))
    }

    /// When to look again if it is not ready: once `after` has passed, a
    /// change waits for a write in transit to be sent (which wakes the fold
    /// thread) or for `by`.
    fn next(&self, now: Instant) -> Instant {
        if now < self.after {
            self.after
        } else {
            self.by
        }
    }
}

/// When a change of `events`, sent now (`now`, `clock`: the same instant
/// on the monotonic and the wall clock), is due to be folded: once the
/// wall clock passes its latest event time by `window` and no write in
/// `transit` holds an earlier event, and, when one of its events is
/// earlier than `folded` (the fold's latest event time: it will refold),
/// once every write in transit now has been sent; at most `window` from
/// now. A change without events (a rebuild) is due now.
pub(super) fn due(
    events: &[Logged],
    window: Duration,
    transit: &Arc<InTransit>,
    folded: Option<DateTime<Utc>>,
    now: Instant,
    clock: DateTime<Utc>,
) -> Due {
    let Some(latest) = events.iter().map(|l| l.event.time).max() else {
        return Due::now(now);
    };
    let late = folded.is_some_and(|folded| events.iter().any(|l| l.event.time < folded));
    // Negative (an event older than the window) is no wait; an event
    // dated ahead of the clock waits one window.
    let window_then = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let wait = (latest.checked_add_signed(window_then).unwrap_or(latest) - clock)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .min(window);
    Due {
        after: now + wait,
        by: now + window,
        wait_for: Some((latest, Arc::clone(transit))),
        gather_below: late.then(|| transit.next_ticket()),
    }
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
            FoldJob::Wake => false,
        })
        .map_or(0, |i| i + 1);
    let ripe = received
        .iter()
        .skip(forced)
        .take_while(|job| match job {
            FoldJob::Change(change) => change.due.ready(now),
            FoldJob::Restore(_) | FoldJob::Wake => true,
        })
        .count();
    forced + ripe
}

/// When the first job of `received` not in its due prefix is due (`None`:
/// none is waiting).
pub(super) fn next_due(received: &VecDeque<FoldJob>, now: Instant) -> Option<Instant> {
    match received.get(due_prefix(received, now))? {
        FoldJob::Change(change) => Some(change.due.next(now)),
        FoldJob::Restore(_) | FoldJob::Wake => Some(now),
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

    /// The fold thread's channel, as a test holds it.
    type FoldChannel = (Sender<FoldJob>, std::sync::mpsc::Receiver<FoldJob>);

    /// The same instant on the monotonic and the wall clock, no write in
    /// transit, and a channel to the fold thread.
    fn start() -> (Instant, DateTime<Utc>, Arc<InTransit>, FoldChannel) {
        let (now, clock) = (Instant::now(), Utc::now());
        (now, clock, Arc::default(), std::sync::mpsc::channel())
    }

    #[test]
    fn a_fresh_event_waits_what_is_left_of_the_window_after_its_time() {
        let (now, clock) = (Instant::now(), Utc::now());
        let window = Duration::from_millis(20);
        let none = Arc::default();
        let sent_8ms_after = at(clock - chrono::Duration::milliseconds(8));
        let due = due(&[sent_8ms_after], window, &none, None, now, clock);
        assert_eq!(due.after - now, Duration::from_millis(12));
        assert!(!due.ready(now + Duration::from_millis(11)));
        assert!(due.ready(now + Duration::from_millis(12)));
    }

    #[test]
    fn an_old_event_is_due_at_once_and_one_from_the_future_waits_one_window() {
        let (now, clock) = (Instant::now(), Utc::now());
        let window = Duration::from_millis(20);
        let none = Arc::default();
        let old = at(clock - chrono::Duration::hours(3));
        assert!(due(&[old], window, &none, None, now, clock).ready(now));
        let ahead = due(
            &[at(clock + chrono::Duration::hours(3))],
            window,
            &none,
            None,
            now,
            clock,
        );
        assert!(!ahead.ready(now + window - Duration::from_millis(1)));
        assert!(ahead.ready(now + window));
        assert!(due(&[], window, &none, None, now, clock).ready(now));
    }

    /// What the window alone missed (task h47): a change whose window has
    /// passed (its transit was longer) still waits for a write in the
    /// engine that holds an earlier event, so both fold in one round in
    /// place; a later write in transit does not hold it back, and nothing
    /// holds it past one window from its sending.
    #[test]
    fn a_change_waits_for_a_write_in_transit_with_an_earlier_event_at_most_one_window() {
        let (now, clock, transit, (fold, _woken)) = start();
        let window = Duration::from_millis(20);
        let stored = at(clock - chrono::Duration::milliseconds(40));
        let straggler = at(clock - chrono::Duration::milliseconds(45)).event;
        let later = at(clock - chrono::Duration::milliseconds(30)).event;

        let behind_later = transit.enter([&later], &fold);
        let due = due(
            std::slice::from_ref(&stored),
            window,
            &transit,
            None,
            now,
            clock,
        );
        assert!(
            due.ready(now),
            "a later write in transit holds nothing back"
        );

        let behind = transit.enter([&straggler], &fold);
        assert!(!due.ready(now), "an earlier write in transit holds it back");
        assert_eq!(
            due.next(now),
            now + window,
            "until it is sent, or one window"
        );
        assert!(due.ready(now + window), "at most one window");
        drop(behind);
        assert!(due.ready(now), "sent: due");
        drop(behind_later);
        assert!(transit.writes.lock().is_empty());
        assert!(transit.enter(std::iter::empty(), &fold).is_none());
    }

    /// A late change (it will refold) waits for every write in transit
    /// when it was sent, later ones too, so one refold folds them all;
    /// not for writes that entered after it, and at most one window.
    #[test]
    fn a_late_change_gathers_the_writes_in_transit_for_one_refold() {
        let (now, clock, transit, (fold, _woken)) = start();
        let window = Duration::from_millis(20);
        let late = at(clock - chrono::Duration::milliseconds(60));
        let later = at(clock - chrono::Duration::milliseconds(30)).event;
        let folded = Some(clock - chrono::Duration::milliseconds(50));

        let before = transit.enter([&later], &fold);
        let due = due(
            std::slice::from_ref(&late),
            window,
            &transit,
            folded,
            now,
            clock,
        );
        let after = transit.enter([&later], &fold);
        assert!(!due.ready(now), "a write in transit when it was sent");
        assert!(due.ready(now + window), "at most one window");
        drop(before);
        assert!(due.ready(now), "not one that entered after it");
        drop(after);

        let in_order = at(clock - chrono::Duration::milliseconds(40));
        let _before = transit.enter([&later], &fold);
        let due = super::due(&[in_order], window, &transit, folded, now, clock);
        assert!(
            due.ready(now),
            "in order: later writes in transit hold nothing back"
        );
    }

    /// Regression (task h64; a debt of task h47): a write that ended
    /// without a change (its events all duplicates, refused, a failed
    /// commit) left the transit set without waking the fold thread, so a
    /// change waiting for it waited out its window though it was due.
    /// Now its end wakes the fold thread once, after it left the set; a
    /// write whose change is sent does not (the send wakes it).
    #[test]
    fn a_write_that_ends_without_a_change_wakes_the_fold_thread() {
        let (now, clock, transit, (fold, woken)) = start();
        let window = Duration::from_secs(3600);
        // Older than the window: due at once, but for the write in transit.
        let stored = [at(clock - chrono::Duration::hours(2))];
        let straggler = at(clock - chrono::Duration::hours(3)).event;

        let sent = transit.enter([&straggler], &fold).unwrap();
        sent.before_change();
        assert!(woken.try_recv().is_err(), "its change's send wakes it");

        let ended = transit.enter([&straggler], &fold).unwrap();
        let due = due(&stored, window, &transit, None, now, clock);
        assert!(!due.ready(now), "it waits for the write in transit");
        drop(ended);
        assert!(matches!(woken.try_recv(), Ok(FoldJob::Wake)), "woken");
        assert!(woken.try_recv().is_err(), "once");
        assert!(due.ready(now), "and due when woken");
    }
}
