//! The live thread: brings the live series up to date after the fold
//! thread has folded and answered, so no writer waits for it, and keeps the
//! state's write lock for a few milliseconds at a time.
//!
//! A checkpoint build (a batch evaluation: about 1.6 s on 200,000 events
//! alone, 2 s in a loaded server; task h72) runs off every lock: under
//! the fold lock and the state's read lock the thread takes only a copy of
//! what the build's plan reads (the fold's
//! state, its columns shared copy-on-write, and from the series the
//! target and, for a change feed, its rows before the build:
//! `ScoreState::live_planner`), so the inputs are of the generation read
//! there; the plan's read of the inputs from that copy and the build run
//! holding nothing (the fold thread folds and answers writers meanwhile;
//! their deltas wait in the series), and the build is swapped in under the
//! write lock. (Until task h60 the plan's read ran under the fold lock: 1
//! to 3 s at 1,000,000 events, which the fold thread waited out.) Builds are coalesced: events that arrive during
//! a build make the next one (at the checkpoint of the log as it then is),
//! nothing is queued per event. The build is swapped in under the write
//! lock alone, not the fold lock (task h66: the fold thread waited with the
//! install for the readers ahead of it). Pending events are applied one by
//! one in slices of `SLICE` under the write lock, the fold lock given back
//! fairly between slices; an event's pushes are cut at the slice's end too
//! and go on in the next (`LiveSeries::apply_pending_deferring`: the same
//! pushes in the same order; measured: `telemetry::record_live_event`). A drift
//! rebuild (the drift check past its limit, `score::live`) is not made in
//! a slice: the series owes it, applies nothing meanwhile, and the thread
//! plans and builds it off the locks as a checkpoint build (task h66:
//! before, it was read and built inside the slice, under both locks). The result is the series `LiveSeries::sync` makes
//! (the same checkpoints, the same events after them), so the bits are a
//! function of the event set, whatever the timing. A build that a refold
//! overtakes is still installed when the refold added nothing up to its
//! inputs and the new state's series needs that checkpoint (task h31:
//! before, every refold threw the running build away); and the refold
//! itself continues the series rather than leaving one to build
//! (`Derived::replace`, `LiveSeries::continue_from`).
//!
//! After a start that did not wait for it (`EngineOptions::ready_before_live`)
//! the thread's first build is the one planned at open
//! (`Derived::open_build`), after the snapshot a full fold at open writes
//! (so the two largest transients of a start do not add up, and the next
//! start finds its snapshot), and once it has caught up the readers that
//! wait for it are let go (`Engine::live_built`), or as soon as a build
//! was overtaken by a stream (they then read batch evaluations until the
//! series catches up, as whenever it is behind).
//!
//! Must not fold, answer writers, or hold a lock across a build.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{Derived, panic_message};

/// Longest hold of the write lock by one slice of per-event catch-up.
pub(super) const SLICE: std::time::Duration = std::time::Duration::from_millis(5);

/// Wakes the live thread: set when the fold thread changed the state,
/// taken by the live thread (so wake-ups coalesce), and told to stop when
/// the fold thread ends.
#[derive(Default)]
pub(super) struct LiveSignal {
    /// (work waiting, stop).
    state: Mutex<(bool, bool)>,
    cond: Condvar,
    /// Counts the catch-ups done (one after each wake-up), for readers
    /// that wait for the series (`Engine::ranking_at`).
    caught_up: tokio::sync::watch::Sender<u64>,
    /// Counts the builds installed: the series moved forward, caught up or
    /// not (the ranking maintainer builds from a series that lags,
    /// `maintainer.rs`).
    installed: tokio::sync::watch::Sender<u64>,
}

impl LiveSignal {
    /// There is work: the state changed.
    pub(super) fn wake(&self) {
        // The series is behind from this change on (the lag gauge's start).
        crate::telemetry::live_synced(false);
        self.state.lock().0 = true;
        self.cond.notify_one();
    }

    /// The live thread ends after its current work.
    pub(super) fn stop(&self) {
        self.state.lock().1 = true;
        self.cond.notify_one();
    }

    /// A receiver told after each catch-up of the live thread (done, or
    /// left behind a stream until its next wake-up).
    pub(super) fn caught_up(&self) -> tokio::sync::watch::Receiver<u64> {
        self.caught_up.subscribe()
    }

    /// A receiver told after each build installed (`installed`).
    pub(super) fn installed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Waits for work; `false` once told to stop.
    fn wait(&self) -> bool {
        let mut s = self.state.lock();
        while !s.0 && !s.1 {
            self.cond.wait(&mut s);
        }
        let go = !s.1;
        s.0 = false;
        go
    }
}

/// The live thread's loop (module docs).
pub(super) fn live_loop(derived: Arc<Derived>) {
    while derived.live.wait() {
        catch_up(&derived);
        // Caught up (or broken: readers then get `NotReady` instead).
        derived
            .live_built
            .send_if_modified(|built| !std::mem::replace(built, true));
        crate::telemetry::live_synced(derived.slot.read().state.live_synced());
        derived.live.caught_up.send_modify(|n| *n += 1);
    }
}

/// What one step of catching up found.
enum Step {
    /// Caught up, or the state is broken (nothing to do until restored).
    Done,
    /// More to do.
    Again,
    /// A build was made; more to do.
    Built,
}

/// Catches the live series up with the folded events (module docs). A
/// panic is a fold failure: the state is marked broken and rebuilt.
///
/// While a stream keeps moving the checkpoint, every build is overtaken
/// before the series is current; builds then run back to back, at
/// background priority (`priority.rs`), so folding and serving take the
/// CPU first. Each install moves the series to its checkpoint, and the
/// rankings of a stream are read from the series as it stands
/// (`Engine::build_ranking`). Until session 31 the thread paused as long
/// as the build took (at most 2 s) after an overtaken build, to leave
/// half a core to the rankings' batch evaluations, which the series'
/// builds now stand in for.
fn catch_up(derived: &Derived) {
    loop {
        match catch_unwind(AssertUnwindSafe(|| step(derived))) {
            Ok(Step::Done) => return,
            Ok(Step::Again) => {}
            Ok(Step::Built) => {
                let behind = derived.slot.read().state.live_plan_needed();
                if behind {
                    // Overtaken by a stream: it may not catch up until the
                    // stream slows, and readers of every relationship must
                    // not wait that long for the first build (they waited
                    // the whole stream: benches/stream.sh's ranking reads).
                    // They get the series as it stands meanwhile.
                    derived
                        .live_built
                        .send_if_modified(|built| !std::mem::replace(built, true));
                }
            }
            Err(panic) => {
                derived.fail(&panic_message(&*panic));
                return;
            }
        }
    }
}

/// The fold lock held by the live thread, each hold measured when let go
/// (`telemetry::record_live_fold_lock_hold`, by what it was held for): the
/// fold thread waits that long at most for the live thread.
struct FoldHold<'a> {
    guard: Option<MutexGuard<'a, ()>>,
    since: Instant,
    what: &'static str,
}

impl<'a> FoldHold<'a> {
    /// Takes the fold lock, to hold it for `what`: `plan` (a copy of what a
    /// build's plan reads, or finding nothing to do) or `slice` (one slice
    /// of per-event catch-up). An install holds the write lock alone
    /// (`install`).
    fn take(derived: &'a Derived, what: &'static str) -> Self {
        let guard = derived.fold.lock();
        FoldHold {
            guard: Some(guard),
            since: Instant::now(),
            what,
        }
    }

    /// Lets go of the lock fairly (the fold thread waiting gets it next).
    fn unlock_fair(mut self) {
        self.let_go(true);
    }

    fn let_go(&mut self, fair: bool) {
        if let Some(guard) = self.guard.take() {
            let held = self.since.elapsed();
            if fair {
                MutexGuard::unlock_fair(guard);
            } else {
                drop(guard);
            }
            crate::telemetry::record_live_fold_lock_hold(self.what, held);
        }
    }
}

impl Drop for FoldHold<'_> {
    fn drop(&mut self) {
        self.let_go(false);
    }
}

/// One build, or one slice of per-event catch-up.
///
/// A build's plan is made off the locks (task h60): under them the thread
/// takes only a copy of the fold's state (shared columns, about 36 ms at
/// 1,000,000 events) and what the plan takes from the series
/// (`ScoreState::live_planner`); before, the whole plan (a read of every
/// relationship's inputs, and the change feed's rows before the build)
/// ran under the fold lock, 1 to 3 s at 1,000,000 events, and the fold
/// thread waited it out.
fn step(derived: &Derived) -> Step {
    let mut fold = FoldHold::take(derived, "plan");
    let (planner, generation, first_snapshot) = {
        let slot = derived.slot.read();
        if slot.broken.is_some() || slot.state.live_synced() {
            return Step::Done;
        }
        let generation = derived.generation.load(Ordering::SeqCst);
        // Of a state swapped out since (a rebuild, a restore): not run.
        let opened = derived.open_build.lock().take();
        match opened.filter(|(_, planned, _)| *planned == generation) {
            Some((planner, generation, saved)) => (Some(planner), generation, saved),
            // The plan's inputs are this generation's: copied under the
            // lock (the fold thread changes the state only under it).
            None => (slot.state.live_planner(), generation, None),
        }
    };
    if let Some(planner) = planner {
        fold.unlock_fair();
        // The snapshot written at open first (`snapshot::Writer::first`):
        // saved or not, the build goes on.
        if let Some(saved) = first_snapshot {
            let _ = saved.blocking_recv();
        }
        let started = Instant::now();
        // The plan is made here, off the locks, from the copy (the state
        // at open, or as it was under the lock above), then the build
        // runs; both at background priority (`priority.rs`), holding no
        // lock. The copy is let go before the build runs.
        let built = super::priority::live_build(|| planner.plan().run());
        let took = started.elapsed();
        let drift = built.is_drift();
        let installed = install(derived, generation, built);
        if drift {
            crate::telemetry::record_live_drift_build(took, installed.is_ok());
        } else {
            crate::telemetry::record_live_build(took, installed.is_ok());
        }
        derived.publish_changes();
        if installed.is_ok() {
            derived.live.installed.send_modify(|n| *n += 1);
        }
        drop(installed);
        // The build's transient (the batch evaluation) is freed by now.
        super::release::return_freed_memory();
        return Step::Built;
    }
    fold.what = "slice";
    let deadline = Instant::now() + SLICE;
    let done = {
        let mut slot = derived.write_slot();
        // Each event timed (the series reads no clock), or each part of
        // one: an event's pushes are cut at the deadline too (every
        // `WORK_PER_ASK` entries touched) and go on in the next slice, so only a
        // drift check (a pass over every residual row) can hold the slice
        // past its budget (`telemetry::record_live_event`). A drift rebuild
        // is not made here: it is left owed, and planned and built off the
        // locks as a checkpoint build is (task h66: it was built under
        // both locks, seconds at 1,000,000 events, and an event's pushes
        // were not cut).
        let mut last = Instant::now();
        slot.state.apply_live_deferring(
            |event| {
                let now = Instant::now();
                crate::telemetry::record_live_event(now - last, event.pushes, event.checked);
                last = now;
                now >= deadline
            },
            || Instant::now() >= deadline,
        )
    };
    // The change feed's publish holds neither the fold lock (session 33:
    // it was the longest part of some slices' holds, which the fold thread
    // and so the writers' acknowledgements waited for) nor, for its
    // comparison, the state's (`Derived::publish_changes`).
    fold.unlock_fair();
    derived.publish_changes();
    if done { Step::Done } else { Step::Again }
}

/// Swaps `built` (planned in `generation`) in under the write lock alone,
/// if it still fits; answers the series it replaced (none when kept: a
/// drift rebuild's), or the build when it did not fit, to free after the
/// lock (a series at 1,000,000 events
/// takes tens of milliseconds to free).
///
/// Not under the fold lock (task h66): the install waited for the write
/// lock behind readers while it held the fold lock, 154 ms on average at
/// 1,000,000 events and 20,000 events/s offered, and the fold thread
/// waited with it. The fold lock is not needed: every change of the state
/// and of `generation` is made under the write lock, so what is checked
/// here holds until it is let go. A state swapped in meanwhile has its own
/// series; the build is still that series' when the new state only added
/// events later than the build's inputs and its series needs this very
/// build (a refold of late events, every round of a stream stamped at
/// send: before task h31 every such refold threw the build away, and under
/// a stream no build was ever installed). A whole rebuild or a restore may
/// have changed anything: their series builds anew. In the same
/// generation the build must move the series forward
/// (`LiveSeries::advanced_by`: a later checkpoint than its scores'),
/// overtaken by the stream or not: an overtaken build still takes the
/// series up to its checkpoint and tells the change feed what the events
/// before it moved (task h66 threw those away, and under a stream of 2,000
/// events/s the feed heard of nothing until it stopped). Not an earlier
/// one: without the fold lock an install can come between the steps of
/// `Derived::rebuild_live`, whose series is built at the latest checkpoint
/// already and would then need a build again before its next event.
fn install(
    derived: &Derived,
    generation: u64,
    built: crate::score::Built,
) -> Result<Option<crate::score::LiveScores>, Box<crate::score::Built>> {
    let mut slot = derived.write_slot();
    let now = derived.generation.load(Ordering::SeqCst);
    let fits = if now == generation {
        slot.state.live_advanced_by(&built)
    } else {
        built
            .inputs_at()
            .is_some_and(|at| derived.lineage.unchanged_at(generation, now, at))
            && slot.state.live_awaits(&built)
    };
    if fits {
        Ok(slot.state.install_live(built))
    } else {
        Err(Box::new(built))
    }
}
