//! The ranking maintainer (issue #11, item 2; task h46): one background
//! task per engine that keeps the shared ranking within the staleness, so
//! a listing or summary never waits for a build (`Engine::ranking`). Owns
//! when a ranking is rebuilt without a reader asking: as soon as the log
//! position moved (or the ranking's generation, its bits, or its minute
//! no longer do) and the shared ranking is older than half the staleness.
//! A build shorter than that half then keeps every served ranking younger
//! than the staleness. A batch stand-in the live series has caught up
//! with is rebuilt at once when the build would have the series' bits
//! (task h64). Builds are coalesced (one at a time; what is folded
//! meanwhile goes into the next), never queued per event, and run where
//! every ranking build runs (`Engine::build_shared_ranking`: the
//! evaluations at background priority, `priority.rs`).
//!
//! Started by the first ranking read, it sleeps on the position's watch
//! while nothing moves (no CPU at idle) and ends once no reader has asked
//! for a ranking for [`READERS_GONE`] (a server nobody reads rankings from
//! does not build them), or when the engine is dropped: it holds the
//! engine only while it decides or builds. Must not: decide a ranking's
//! bits (`Engine::build_ranking` does), or wait for anything a writer
//! holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Engine;
use crate::store::EventStore;

/// How long after the latest ranking read the maintainer keeps rankings
/// current: a dashboard polling every few minutes still finds one within
/// the staleness; a server nobody reads rankings from stops building.
pub(super) const READERS_GONE: StdDuration = StdDuration::from_secs(600);

/// How far a reader's time may move past the shared ranking's `as_of`
/// before the maintainer rebuilds with nothing folded: half the minute a
/// ranking may answer for (`Engine::shared_ranking`), so a reader of an
/// idle log finds a ranking of its minute rather than building one.
const MINUTE_MARGIN: i64 = 30;

/// What the maintainer knows of readers (a field of `Engine`).
#[derive(Debug, Default)]
pub(super) struct Maintainer {
    /// The latest time a reader asked a ranking at, and when it asked (the
    /// maintainer builds at that time moved on by the time since, the time
    /// a reader would ask at now: a ranking at a time before the latest
    /// event is a batch evaluation, not the live series' rows).
    wanted: Mutex<Option<(DateTime<Utc>, Instant)>>,
    /// Whether the task runs.
    running: AtomicBool,
    /// Woken by each read (its time moves the minute on).
    read: Arc<Notify>,
}

/// What the maintainer does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Build now.
    Now,
    /// Something moved; build once the ranking is this old.
    At(Instant),
    /// Nothing moved: wait for a change.
    Nothing,
}

impl<S: EventStore> Engine<S> {
    /// Records a ranking read at `now`, and starts the maintainer when it
    /// does not run (else wakes it): the reader itself never waits for it.
    pub(super) fn ranking_read(self: &Arc<Self>, now: DateTime<Utc>) {
        // With a staleness of 0 every reader builds what it reads: a
        // maintainer would only build between them.
        if self.options.staleness.is_zero() {
            return;
        }
        let m = &self.maintainer;
        {
            let mut wanted = m.wanted.lock();
            let at = wanted.map_or(now, |(t, _)| t.max(now));
            *wanted = Some((at, Instant::now()));
        }
        if m.running.swap(true, Ordering::SeqCst) {
            m.read.notify_one();
        } else {
            tokio::spawn(maintain(Arc::downgrade(self), Arc::clone(&m.read)));
        }
    }

    /// How far `r`, a shared ranking, is behind the folded log: the
    /// events it does not reflect, and its age (since it was taken; zero
    /// when it reflects every folded event, however old).
    pub fn ranking_lag(&self, r: &super::Ranking) -> (StdDuration, u64) {
        let events = self.position().saturating_sub(r.position);
        let age = if events == 0 {
            StdDuration::ZERO
        } else {
            r.taken.elapsed()
        };
        (age, events)
    }

    /// The time the maintainer builds at: the latest asked, moved on by
    /// the time since it was asked.
    pub(super) fn maintained_time(&self) -> Option<(DateTime<Utc>, Instant)> {
        let (at, asked) = (*self.maintainer.wanted.lock())?;
        let since = Duration::from_std(asked.elapsed()).unwrap_or(Duration::zero());
        Some((at + since, asked))
    }

    /// Whether the shared ranking should be rebuilt for a reader at `at`
    /// (module docs).
    pub(super) fn ranking_due(&self, at: DateTime<Utc>) -> Due {
        let Some(r) = self.ranking.read().clone() else {
            return Due::Now;
        };
        let generation = self.derived.generation.load(Ordering::SeqCst);
        let overtaken = !r.settled && self.live_caught_up_since(&r);
        let moved = r.position < self.position()
            || r.generation != generation
            || at - r.as_of >= Duration::seconds(MINUTE_MARGIN)
            || overtaken;
        if !moved {
            return Due::Nothing;
        }
        // A batch stand-in the live series has caught up with since: a
        // build now has the series' bits, so it is not put off by half the
        // staleness, during which readers got the stand-in's bits where
        // the series answers with others (red team h50; task h64). Only
        // when the build would be settled: else (`at` before a
        // future-dated event, or the series behind again) it would be a
        // batch evaluation too, and rebuilding at once could run builds
        // back to back.
        if overtaken && self.build_would_settle(at) {
            return Due::Now;
        }
        // A series that lags answers the build as it stands once it has
        // passed the shared ranking (`Engine::build_ranking`); until then
        // the build waits for its next install rather than run a batch
        // evaluation beside the series' own build (lead, session 31).
        if self.waits_for_series(at, r.position) {
            return Due::Nothing;
        }
        let half = self.options.staleness / 2;
        match r.taken.checked_add(half) {
            Some(when) if when > Instant::now() => Due::At(when),
            _ => Due::Now,
        }
    }
}

impl<S: EventStore> Engine<S> {
    /// The least log position a maintainer's build from a series that lags
    /// must reflect: more than the shared ranking (a served ranking never
    /// goes back).
    fn maintained_floor(&self) -> u64 {
        self.ranking.read().as_ref().map_or(0, |r| r.position + 1)
    }

    /// Whether a ranking built at `at` now would lag (the live series owes
    /// `at`) and the series as it stands reflects no more of the log than
    /// `shared`, the shared ranking's position, or is no whole series
    /// (`ScoreState::live_reflected_position`: not built since a refold,
    /// an event part way through its pushes, a drift rebuild owed). The
    /// live thread moves it on at its next install or slice, and a batch
    /// evaluation now would only duplicate its build.
    fn waits_for_series(&self, at: DateTime<Utc>, shared: u64) -> bool {
        self.derived.read().is_ok_and(|state| {
            state.live_owes(at)
                && state
                    .live_reflected_position()
                    .is_none_or(|reflected| reflected <= shared)
        })
    }

    /// Whether a ranking built at `at` now would have the live series'
    /// bits: the series has applied every folded event and `at` is at or
    /// after the latest one (where the series answers).
    fn build_would_settle(&self, at: DateTime<Utc>) -> bool {
        self.derived.read().is_ok_and(|state| {
            state.live_synced() && state.latest_time().is_none_or(|latest| at >= latest)
        })
    }
}

/// The maintainer's loop (module docs). Holds the engine only while it
/// decides or builds, so dropping the engine ends it.
async fn maintain<S: EventStore>(engine: Weak<Engine<S>>, read: Arc<Notify>) {
    loop {
        let Some(e) = engine.upgrade() else { return };
        // Subscribed before deciding: a change after the decision wakes it.
        let mut position = e.derived.position.subscribe();
        let mut caught_up = e.derived.live.caught_up();
        let mut installed = e.derived.live.installed();
        let Some((at, asked)) = e.maintained_time() else {
            e.maintainer.running.store(false, Ordering::SeqCst);
            return;
        };
        let due = e.ranking_due(at);
        if due == Due::Now {
            // One build at a time: a reader's build (no ranking may answer
            // it) is waited for, then this decides again.
            let _building = e.ranking_build.lock().await;
            if e.ranking_due(at) == Due::Now
                && let Err(err) = e.build_shared_ranking(at, Some(e.maintained_floor())).await
            {
                tracing::warn!(cause = %err, "the ranking maintainer's build failed");
                drop(_building);
                drop(e);
                // A failing build (a store gone) is not retried in a
                // loop: the next read or change starts it again.
                tokio::time::sleep(StdDuration::from_secs(1)).await;
            }
            continue;
        }
        let gone = asked + READERS_GONE;
        if due == Due::Nothing && Instant::now() >= gone {
            let m = &e.maintainer;
            m.running.store(false, Ordering::SeqCst);
            // A read after the decision found it running and only woke
            // it: keep on for that reader unless another task took over.
            let again = m.wanted.lock().is_some_and(|(_, a)| a > asked);
            if !again || m.running.swap(true, Ordering::SeqCst) {
                return;
            }
            continue;
        }
        drop(e);
        let until = match due {
            Due::At(when) => when,
            _ => gone,
        };
        let until = tokio::time::Instant::from_std(until);
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            changed = position.changed(), if due == Due::Nothing => {
                // The engine's state is gone: so is the engine.
                if changed.is_err() {
                    return;
                }
            }
            // A live thread gone disables this branch, not the loop.
            Ok(()) = caught_up.changed(), if due == Due::Nothing => {}
            Ok(()) = installed.changed(), if due == Due::Nothing => {}
            _ = read.notified(), if due == Due::Nothing => {}
        }
    }
}
