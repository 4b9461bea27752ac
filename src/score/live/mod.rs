//! The live series: every relationship's components now, kept event by
//! event. `LiveSeries` consumes the fold's deltas (`fold::deltas`) and
//! keeps `LiveScores` (`scores.rs`: the push driver in forward-decay units)
//! up to date; it reads the fold's state only to build checkpoints. It
//! must not do IO or read the clock: `sync` is sliced by a `stop` callback
//! the caller owns.
//!
//! **Checkpoints: batch, then per event.** The series is built in one go
//! ([`LiveScores::build`], from the batch driver's sum and its exact
//! residual, ids numbered in sorted order) from the state as it stood at
//! canonical position `n − n mod CHECKPOINT_EVENTS` ([`Checkpoint`]); the
//! events after it are applied one by one from their deltas
//! ([`LiveSeries::sync`]). So the live state is a function of the set of
//! events alone, whatever the arrival order, batching or restarts; start-up
//! and refolds emit no deltas for the events before the checkpoint.
//!
//! **Through refolds.** A refold of late events after the checkpoint does
//! not build the series again ([`LiveSeries::resumable`]): the replaced
//! series' scores continue when it applied nothing the refold moved, else
//! they go back to its build at the checkpoint and apply the events since
//! it again, in canonical order; either way the bits a fresh series of
//! the refolded log would have. Going back costs the rows the events since
//! the build changed, not a second copy of the series: each build is
//! marked ([`LiveScores::mark`]) and the push driver saves a row the first
//! time an event changes it (`propagate::undo`), so `serve` holds one copy
//! of the series plus those rows (issue #10). The checkpoint stays every
//! `CHECKPOINT_EVENTS` positions: with the exact lazy audience spill 128
//! events of pushes cost a tenth of a build on the generated mix, but a
//! longer block makes each late round replay more of them (1,024 measured
//! and not kept: ARCHITECTURE.md, "Late events").
//!
//! **Forward decay.** The graph (follows, associations, consent) is a step
//! function of time that changes only at events, and decay is a factor per
//! component, so for any `at` at or after the latest event
//!
//! `s_c(at) = 2^(-(at - o)/h_c) · Σ_k (αM)^k x̃_c`,  `x̃_c = Σ_i w_c x_i 2^((t_i - o)/h_c)`
//!
//! with `o` the origin (the checkpoint's time) and `h_c` the half-life. The
//! driver keeps the series of `x̃` (forward units); a read multiplies by one
//! factor per component. The push threshold of each lane is the model's
//! tolerance in current units, `tol · 2^((latest - o)/h_c)` in forward units.
//!
//! **A moving landmark** (Cormode, Shkapenyuk, Srivastava, Xu, "Forward
//! decay: a practical time decay model for streaming systems", ICDE 2009,
//! section on numerical issues). `2^((t - o)/h)` overflows an f64 past 1,024
//! half-lives (85 years with a 30-day half-life, 20 years with 7 days), and
//! events that far apart are ordinary (a placeholder date beside today's).
//! So when an event is applied more than `RENORMALISE_AFTER_HALF_LIVES`
//! half-lives of the shortest component after the origin, the origin moves
//! to that event's time: `s`, `r` (and with them the thresholds) are
//! multiplied per component by `2^(-(t - o)/h_c)` (the series is linear),
//! which underflows harmlessly to zero for what has decayed away. Every
//! forward factor then stays below `2^RENORMALISE_AFTER_HALF_LIVES`, for any
//! span of event time and any half-life. The landmark moves only while
//! events are applied in canonical order after a checkpoint, at a time
//! that is a function of those events, so the bits stay a function of the
//! event set.
//!
//! **Consent.** A person without consent is out of the series (ARCHITECTURE.md,
//! "Scoring"): no impulses, no follow row (receives no audience spill), no
//! association row. Withdrawal removes all three from the driver; a new grant
//! puts back what the state holds then (the deltas carry it).
//!
//! **Lazy audience spill** (`propagate::push`; issue #11, item 3). A push
//! at a person with at least `WIDE_AUDIENCE` followers leaves the spill to
//! the followers who spread nothing further (no followers, no associations)
//! pending, and sends it at once to the others; readers
//! ([`LiveScores::components_at`], [`LiveAt::row`], the moves) add the
//! pending amounts as the first hop of those followers, which is all they
//! have, so the series and its bound are the eager driver's: no flush. A
//! follower who starts to spread takes its first hop into its residual.
//! Every checkpoint build starts with nothing pending.
//!
//! **Drift control.** After every `CHECK_EVERY`-th event (a position in the
//! canonical order, so the check is deterministic too), the bound
//! ([`LiveScores::error_bound`]) is measured; past `max_error` the series is
//! rebuilt from the inputs as they stood at that event (a checkpoint): at
//! once by [`LiveSeries::apply_pending`], or, by
//! [`LiveSeries::apply_pending_deferring`] (the engine's live thread, which
//! applies events under its locks), left owed and built off the locks
//! like a checkpoint build, no event applied meanwhile; the same inputs,
//! the same bits (task h66). By construction every residual
//! entry is at most `tol`, and the bound of one relationship
//! (`propagate::push`, "Error bound") sums a person's residual row only
//! weighted by that person's largest association share. So an endorser of
//! many brands (each share `a / Σa`, thin) keeps it near a few tolerances
//! however many brands it has (the row sums' bound, `B·tol / (1 − ρ)`,
//! passed the limit for one of about 1,200 brands and rebuilt the series at
//! every check: red team h58, task h62); it fires for a person whose few
//! associations gather a residual row of thousands of brands, where the
//! gap it bounds can be that large, or once the row sums' bound passes
//! about 1.36 raw with the default model (ARCHITECTURE.md, "Decisions and
//! debts").

mod scores;

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use scores::{LiveAt, LiveScores, LiveStats, Moved, RENORMALISE_AFTER_HALF_LIVES};

use crate::domain::{EventId, LogPosition};
use crate::graph::{EntityTable, Handle};
use crate::score::fold::{Delta, EventDeltas, FoldState};
use crate::score::model::{Components, ScoringModel};
use crate::score::propagate::batch::RelSnapshot;

/// Events between two checkpoints (canonical positions).
pub const CHECKPOINT_EVENTS: usize = 128;

/// Where the live series of a log is built in one go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checkpoint {
    /// `(origin, as_of)`: the build takes the inputs as they stood at
    /// `as_of`; `None` for an empty log.
    pub at: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The first canonical position applied event by event after the build.
    pub first_pending: usize,
}

/// Where the folded log stands in canonical order, as far as the live
/// series needs it to place its checkpoint: the count, the latest event's
/// time with the first position of that time, and the same for the latest
/// checkpoint position (a multiple of [`CHECKPOINT_EVENTS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LogClock {
    pub(in crate::score) count: usize,
    /// (time, first position with that time) of the latest event.
    pub(in crate::score) last: Option<(DateTime<Utc>, usize)>,
    /// (position, time, first position with that time) of the latest event
    /// at a multiple of `CHECKPOINT_EVENTS`.
    pub(in crate::score) mark: Option<(usize, DateTime<Utc>, usize)>,
}

impl LogClock {
    /// One more event, at or after the latest.
    pub fn tick(&mut self, t: DateTime<Utc>) {
        let i = self.count;
        let run = match self.last {
            Some((lt, start)) if lt == t => start,
            _ => i,
        };
        self.last = Some((t, run));
        if i.is_multiple_of(CHECKPOINT_EVENTS) {
            self.mark = Some((i, t, run));
        }
        self.count += 1;
    }

    /// Events counted.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The latest checkpoint of the log: position `P = n - n mod K`. The
    /// build takes the events before the time of event `P` (those at that
    /// time and after are applied per event, so equal times never straddle
    /// the build); if `P = n`, before the time of the latest event, whose
    /// run of equal times is applied per event.
    ///
    /// Why not everything when `P = n` (red team h63, F2): a build that
    /// took the latest event's time whole was followed, when the next
    /// event shared that time, by a checkpoint before it, and the events
    /// of the run the first build took were in no series' pending or
    /// applied deltas: a series caught up at `n` lost them (a consent
    /// grant among them left the person out of every ranking), where a
    /// fresh open of the same log had them. Now the next event at that
    /// time leaves the checkpoint where it is.
    pub fn checkpoint(&self) -> Checkpoint {
        let n = self.count;
        let Some((last, run)) = self.last else {
            return Checkpoint {
                at: None,
                first_pending: 0,
            };
        };
        let p = n - n % CHECKPOINT_EVENTS;
        if p == n {
            return Checkpoint {
                at: Some((last, last - chrono::Duration::nanoseconds(1))),
                first_pending: run,
            };
        }
        let (at, c, run) = self.mark.expect("a log of n > 0 events has a mark");
        debug_assert_eq!(at, p);
        Checkpoint {
            at: Some((c, c - chrono::Duration::nanoseconds(1))),
            first_pending: run,
        }
    }
}

/// How [`LiveSeries::resumable`] continues a series through a refold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// It did not: the series is built again at its checkpoint.
    No,
    /// The replaced series' scores, the events it had not applied pending.
    Continued,
    /// A copy of the replaced series' build at the checkpoint, every event
    /// since pending.
    Replayed,
}

/// What moved relationships of the series, for the change feed
/// (`crate::feed`).
#[derive(Debug, Clone, PartialEq)]
pub enum MoveCause {
    /// One event, applied on its own.
    Event {
        /// Its log position.
        position: LogPosition,
        /// Its id.
        event: EventId,
    },
    /// Events folded together by a checkpoint build: the smallest and the
    /// largest of their log positions. A series built from nothing (after
    /// a start or a rebuild of the state) names the whole log folded.
    Rebuild {
        /// The smallest log position of the events.
        first: LogPosition,
        /// The largest.
        last: LogPosition,
    },
}

/// Relationships one step of the series moved, in canonical order of the
/// steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Movement {
    /// The event, or the events of a build.
    pub cause: MoveCause,
    /// Event time of the step: `before` and `after` are both valued then.
    pub time: DateTime<Utc>,
    /// The relationships moved, in an order the same steps always give but
    /// none a reader may rely on (an event's in the order its changes first
    /// reached them: `IncrementalRelspace::take_moves_until`); the change
    /// feed orders them by id.
    pub moved: Vec<Moved>,
}

/// The live series and what it has not applied yet (module docs).
#[derive(Debug, Clone)]
pub struct LiveSeries {
    scores: LiveScores,
    /// Deltas of folded events not applied yet, in canonical order; always
    /// the events from some position up to the latest folded.
    pending: VecDeque<EventDeltas>,
    /// Deltas applied since the checkpoint, in canonical order: what a
    /// series rebuilt at that checkpoint applies again (a snapshot keeps
    /// them, `score::snapshot`; a new checkpoint whose run of equal times
    /// starts before it applies again those of the run).
    applied: Vec<EventDeltas>,
    clock: LogClock,
    /// What the steps applied since the last [`Self::take_movements`] moved.
    movements: Vec<Movement>,
    /// Whether to record `movements` (only a change feed reads them).
    record: bool,
    /// Events of a lower canonical index are applied unrecorded: they were
    /// folded before the feed attached (`Self::record_movements_from_now`).
    record_from: u32,
    /// While a series built again from the log (a rebuilt state) replays
    /// events the feed has seen: the canonical index the replay ends at and
    /// the largest log position it holds (`Self::record_movements`).
    replay: Option<(u32, LogPosition)>,
    /// The scores as built at the checkpoint, kept only when a drift
    /// rebuild replaced them after it (the replaced scores rolled back,
    /// not a copy). Otherwise the scores themselves go back to the build
    /// (`LiveScores::mark`, `roll_back`): a refold of late events after
    /// the checkpoint replays the events since it from there
    /// ([`Self::resumable`]) instead of building.
    base: Option<Box<LiveScores>>,
    /// A drift rebuild the check asked for and that is not made yet: the
    /// caller that applies events with [`Self::apply_pending_deferring`]
    /// builds it off its locks ([`Self::draft`] → [`BuildPlan::run`] →
    /// [`Self::install`]); no event is applied until then.
    drift: Option<DriftDue>,
    /// The first pending event is applied to the driver and its pushes
    /// are not all made ([`Self::apply_pending_deferring`] stopped within
    /// them): the next application goes on with them.
    settling: bool,
}

/// A drift rebuild owed after one event (`LiveSeries::drift`): the
/// canonical index of the event and its time, where the inputs are read.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DriftDue {
    index: u32,
    time: DateTime<Utc>,
}

/// What applying one pending event did
/// ([`LiveSeries::apply_pending_deferring`]), for the caller's budget and
/// measurements: it times the step, the series reads no clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStep {
    /// Entries pushed while applying and settling the event.
    pub pushes: u64,
    /// Neighbour entries those pushes touched.
    pub visits: u64,
    /// Whether the drift check measured the bound after it (a pass over
    /// every residual row).
    pub checked: bool,
    /// Whether the check passed the limit: the series was rebuilt at the
    /// event (inline), or the rebuild is now owed (deferring).
    pub drifted: bool,
}

impl LiveSeries {
    /// The series of a log whose canonical clock is `clock`, not built yet:
    /// it expects the deltas of the events from `clock.checkpoint()
    /// .first_pending` on.
    pub fn new(model: Arc<ScoringModel>, clock: LogClock) -> Self {
        Self {
            scores: LiveScores::new(model),
            pending: VecDeque::new(),
            applied: Vec::new(),
            clock,
            movements: Vec::new(),
            record: false,
            record_from: 0,
            replay: None,
            base: None,
            drift: None,
            settling: false,
        }
    }

    /// The series of a log whose canonical clock is `clock`, not built
    /// yet, given the deltas of the events from `clock.checkpoint()
    /// .first_pending` on (a snapshot's journal, `Self::journal`): it
    /// syncs as a build of the whole log would.
    pub(in crate::score) fn resume(
        model: Arc<ScoringModel>,
        clock: LogClock,
        journal: Vec<EventDeltas>,
    ) -> Self {
        let mut series = Self::new(model, clock);
        series.pending = journal.into();
        series
    }

    /// The canonical clock.
    pub(in crate::score) fn clock(&self) -> LogClock {
        self.clock
    }

    /// The deltas of the events from the latest checkpoint's first pending
    /// position on, applied or not, in canonical order: with the fold's
    /// state and the clock, what `Self::resume` needs.
    pub(in crate::score) fn journal(&self) -> Vec<EventDeltas> {
        let first = self.clock.checkpoint().first_pending as u32;
        self.applied
            .iter()
            .chain(self.pending.iter())
            .filter(|e| e.index >= first)
            .cloned()
            .collect()
    }

    /// Records what each step moves from now on (`true`), or stops.
    ///
    /// A series not built yet (a state built again from the log, after a
    /// late event or an erasure) replays events the feed has seen already,
    /// in canonical order, which is not log order: their changes are not
    /// recorded one by one. Once the replay is applied, one movement says
    /// what it changed against the feed's published values, at the
    /// replay's latest time, caused by the positions it holds (red team
    /// 2026-11-30: after an erasure the feed's ids went backwards, and a
    /// build's changes at its checkpoint time left stale scores).
    ///
    /// `folded` is the largest log position folded: the replay reflects
    /// every event folded (those before the checkpoint through the build
    /// or its copy, the rest pending), so its position is at least that,
    /// not only the largest pending one. A late event at or before the
    /// checkpoint's time can hold the largest position, be published, and
    /// not be pending in the next replay (red team h33: the feed's ids
    /// went backwards after a series replayed from its copy, and a client
    /// resuming with `Last-Event-ID` silently missed the replay's changes).
    pub fn record_movements(&mut self, record: bool, folded: Option<LogPosition>) {
        self.record = record;
        self.record_from = 0;
        self.replay = None;
        if !record {
            self.movements.clear();
        } else if self.scores.checkpoint().is_none() {
            let end = self.pending.back().map(|e| e.index + 1);
            let last = self.pending.iter().map(|e| e.position).max().max(folded);
            self.replay = end.zip(last);
        }
    }

    /// Records what each step moves from now on, for a change feed that
    /// has published nothing: unlike [`Self::record_movements`], nothing
    /// folded so far is told to it (its floor is every event folded), not
    /// by a replay of a series not built yet, nor by the events still
    /// pending (a start that did not wait for the series, `engine::live`,
    /// whose build was planned before). A series built and caught up
    /// records the same either way.
    pub fn record_movements_from_now(&mut self) {
        self.record = true;
        self.record_from = self.clock.count as u32;
        self.replay = None;
    }

    /// Takes what the steps applied so far moved, in the order applied.
    pub fn take_movements(&mut self) -> Vec<Movement> {
        std::mem::take(&mut self.movements)
    }

    /// Puts `movements` (recorded by the series a refold replaces, named
    /// in this one's numbering) before the ones recorded so far, when this
    /// series records: `ScoreState::continue_live_from`.
    pub(in crate::score) fn hear_first(&mut self, mut movements: Vec<Movement>) {
        if self.record && !movements.is_empty() {
            movements.append(&mut self.movements);
            self.movements = movements;
        }
    }

    /// The series itself.
    pub fn scores(&self) -> &LiveScores {
        &self.scores
    }

    /// Takes the deltas of newly folded events (in canonical order).
    pub fn receive(&mut self, deltas: VecDeque<EventDeltas>) {
        for e in deltas {
            if e.index as usize >= self.clock.count {
                debug_assert_eq!(e.index as usize, self.clock.count);
                self.clock.tick(e.time);
            }
            self.pending.push_back(e);
        }
    }

    /// Folded events whose deltas are not applied yet, and a drift
    /// rebuild owed counted as one (the series is not current until it is
    /// made: a lag of 0 means caught up).
    pub fn lag(&self) -> usize {
        self.pending.len() + usize::from(self.drift.is_some())
    }

    /// The smallest log position of the folded events whose deltas are
    /// not applied yet (`None`: none). Events are applied in canonical
    /// (time) order, not log order, so a movement recorded now may be
    /// followed by one of a smaller position down to this one (the change
    /// feed holds its changes back until then: `feed::Tracker::release`).
    pub fn unapplied_from(&self) -> Option<LogPosition> {
        self.pending.iter().map(|e| e.position).min()
    }

    /// Whether the series has applied every folded event.
    pub fn synced(&self) -> bool {
        self.pending.is_empty()
            && self.drift.is_none()
            && self.scores.checkpoint() == self.clock.checkpoint().at
    }

    /// The drift rebuild owed, if it still stands: an event of the same
    /// time folded since the check (the fold appends events at or after
    /// the latest) makes the check one a series of the whole log does not
    /// make (it checks only where the next event is later), so it no
    /// longer stands.
    fn due(&self) -> Option<DriftDue> {
        let due = self.drift?;
        self.pending
            .front()
            .is_none_or(|e| e.time > due.time)
            .then_some(due)
    }

    /// The components at `at`, sorted by (person id, brand id); `None`
    /// while the series has not caught up or when `at` is before the latest
    /// event.
    pub fn components_at(
        &self,
        at: DateTime<Utc>,
        table: &EntityTable,
    ) -> Option<Vec<((Handle, Handle), Components)>> {
        if !self.synced() {
            return None;
        }
        self.scores.components_at(at, table)
    }

    /// [`Self::components_at`] in the series' own order, not sorted (one
    /// pass over its rows): for a reader that orders them itself, off the
    /// state's lock (a ranking's `BTreeMap`).
    pub fn components_unsorted_at(
        &self,
        at: DateTime<Utc>,
    ) -> Option<Vec<((Handle, Handle), Components)>> {
        if !self.synced() {
            return None;
        }
        self.scores.components_unsorted_at(at)
    }

    /// The log position the series reflects while it lags, `folded` being
    /// the position after the last event folded: every event of a smaller
    /// position is in its scores, as a build at a checkpoint or applied
    /// since (the smallest position still pending, else `folded`). `None`
    /// when its scores are no whole series of events: not built, an event
    /// left part way through its pushes ([`Self::apply_pending_deferring`]),
    /// or a drift rebuild owed (the check found them past their bound).
    ///
    /// Events are applied in canonical order, so the scores may hold
    /// events of larger positions too; what they reflect is a prefix of
    /// the log only up to this position.
    pub fn reflected_position(&self, folded: LogPosition) -> Option<LogPosition> {
        if self.scores.checkpoint().is_none() || self.settling || self.drift.is_some() {
            return None;
        }
        Some(self.unapplied_from().map_or(folded, |p| p.min(folded)))
    }

    /// [`Self::components_unsorted_at`] of the series as it stands, caught
    /// up or not (a ranking that lags, `Engine::build_ranking`), with the
    /// position it reflects ([`Self::reflected_position`]); `None` when
    /// that is none or `at` is before the latest event applied.
    pub fn lagging_components_at(
        &self,
        at: DateTime<Utc>,
        folded: LogPosition,
    ) -> Option<(Rows, LogPosition)> {
        let reflected = self.reflected_position(folded)?;
        Some((self.scores.components_unsorted_at(at)?, reflected))
    }

    /// Brings the series up to date with the folded events, in canonical
    /// order: a build at the latest checkpoint if it is not there yet, then
    /// the pending events after it one by one. Asks `stop` after each event
    /// and stops when it says so; returns whether it caught up. The result
    /// is the same whenever and in how many slices it runs.
    pub fn sync(&mut self, state: &FoldState, stop: impl FnMut() -> bool) -> bool {
        if let Some(plan) = self.plan(state) {
            drop(self.install(plan.run(), state));
        }
        self.apply_pending(state, stop)
    }

    /// The checkpoint build this series needs before it can apply its
    /// pending events, if any, with its inputs read from `state` now (the
    /// engine reads them under the state's lock and runs the build,
    /// [`BuildPlan::run`], off it; then [`Self::install`]).
    pub fn plan(&self, state: &FoldState) -> Option<BuildPlan> {
        Some(self.draft(state)?.plan(state))
    }

    /// What [`Self::plan`] takes from the series (not from the fold's
    /// state), taken now: the build's target and the change feed's basis,
    /// the "before" rows not sorted yet. Cheap next to the plan's inputs
    /// (one pass over the series' rows when a feed records its movements,
    /// nothing more), so the engine takes it under the state's lock with a
    /// copy of the fold's state, and plans off it ([`PlanDraft::plan`],
    /// task h60: the whole plan under the fold lock held the fold thread
    /// 1 to 3 s at 1,000,000 events). `None` when no build is needed.
    ///
    /// At its checkpoint, the drift rebuild owed, if any
    /// ([`Self::apply_pending_deferring`]): the inputs as they stood at the
    /// event that drifted, read off the lock the same way (task h66:
    /// before, it was read and built under both locks, seconds at
    /// 1,000,000 events).
    pub fn draft(&self, state: &FoldState) -> Option<PlanDraft> {
        let target = self.clock.checkpoint();
        if self.scores.checkpoint() == target.at {
            let due = self.due()?;
            return Some(PlanDraft {
                target,
                as_of: due.time,
                stats: self.scores.stats(),
                basis: None,
                drift: Some(due),
            });
        }
        let (_, as_of) = target.at?;
        Some(PlanDraft {
            target,
            as_of,
            stats: self.scores.stats(),
            basis: self.movement_basis(state, target, as_of),
            drift: None,
        })
    }

    /// What a change feed needs to tell what a checkpoint build moves
    /// (when movements are recorded): its cause, and the series' components
    /// before it at the build's time, in the series' order (sorted by
    /// [`PlanDraft::plan`]). Events the build takes that were not
    /// applied one by one moved what the build changes (a series built from
    /// nothing: everything folded).
    fn movement_basis(
        &self,
        state: &FoldState,
        target: Checkpoint,
        as_of: DateTime<Utc>,
    ) -> Option<MovementBasis> {
        if !self.record || self.replay.is_some() {
            return None;
        }
        let first = target.first_pending as u32;
        let skipped = || {
            self.pending
                .iter()
                .take_while(|e| e.index < first)
                .map(|e| e.position)
        };
        let (low, high) = (skipped().min(), skipped().max());
        let cause = if self.scores.checkpoint().is_none() {
            // Everything the build takes: the log up to the events it
            // leaves to be applied one by one (whose positions come after,
            // so the feed's positions stay in log order).
            MoveCause::Rebuild {
                first: 0,
                last: high.or_else(|| state.max_position()).unwrap_or(0),
            }
        } else {
            MoveCause::Rebuild {
                first: low?,
                last: high?,
            }
        };
        // An event left unsettled (`Self::apply_pending_deferring`) is
        // taken by the build when it is before the checkpoint, and its
        // movement is never recorded: the rows are compared as they stood
        // before it (red team h70).
        let settled = if self.settling {
            self.scores.settled_components_unsorted_at(as_of)
        } else {
            None
        };
        let before = match settled {
            Some(rows) => rows,
            None => self.scores.components_unsorted_at(as_of)?,
        };
        Some((cause, before))
    }

    /// Whether a build of `target` is the one this series needs next: its
    /// clock's checkpoint is `target` and its scores are not built there.
    /// A build planned on the state this one replaced (a refold) fits it
    /// when, besides, the refold added nothing up to the build's inputs
    /// (`engine::lineage`): the build's inputs are then this state's.
    ///
    /// A drift rebuild fits when this series owes that very rebuild (the
    /// same event, still standing: [`Self::due`]) at the same checkpoint.
    pub fn awaits(&self, built: &Built) -> bool {
        let target = built.target;
        match built.drift {
            Some(due) => {
                self.due() == Some(due)
                    && self.clock.checkpoint() == target
                    && self.scores.checkpoint() == target.at
            }
            None => self.clock.checkpoint() == target && self.scores.checkpoint() != target.at,
        }
    }

    /// Whether `built`, planned on this very state (no refold or restore
    /// since), moves the series forward: a checkpoint build at a later
    /// checkpoint than the one its scores are built at (or they are built
    /// at none), though the stream may have overtaken it since (the
    /// clock's checkpoint moved on; [`Self::awaits`] is then false). Such
    /// a build is installed: the series takes the events up to it whole
    /// and a change feed hears what they moved (its `movement`), and the
    /// next build starts from there. A build at or before the scores'
    /// checkpoint is not (after `engine::Derived::rebuild_live` built the
    /// latest, say: the series would need a build again before it could
    /// apply an event). A drift rebuild fits only as [`Self::awaits`] says.
    ///
    /// Regression (lead, session 30): task h66 installed only awaited
    /// builds, so under a stream of 2,000 events/s at 200,000 events every
    /// build was overtaken and thrown away, and the change feed heard of no
    /// event until the stream stopped (1 of 5 markers seen, against 3 to 5
    /// before).
    pub fn advanced_by(&self, built: &Built) -> bool {
        if built.drift.is_some() {
            return self.awaits(built);
        }
        match (self.scores.checkpoint(), built.target.at) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some((built_at, _)), Some((target, _))) => target > built_at,
        }
    }

    /// Whether `old`, the series of the state a refold replaces, can be
    /// continued in this series (the refold's, not built yet) with this
    /// series' bits, and how ([`Resumed`]). Both must have the same checkpoint,
    /// at a time earlier than `first_added` (the earliest event the refold
    /// added): the build's inputs are then the same, and the events from
    /// the checkpoint up to `first_added` keep their canonical positions
    /// and deltas. Then, if every event `old` applied is earlier than
    /// `first_added`, `old`'s scores are this series' build plus the same
    /// events in the same order: they are moved here (`old` is left
    /// empty; it is dropped with the replaced state), and the events from
    /// the first `old` did not apply on stay pending. Else `old`'s scores
    /// go back to its build at the checkpoint (`LiveScores::roll_back`,
    /// through the rows changed since; or `base`, after a drift rebuild),
    /// are moved here, and every event since the checkpoint is applied
    /// again, in canonical order. Either way a refold of late events after
    /// the checkpoint costs per-event pushes of the events since it, not a
    /// checkpoint build (about 1.6 s at 200,000 events): before, every
    /// refold built the series again. Only events before the checkpoint
    /// need a build. Done by [`Self::continue_from`], at the swap.
    pub fn resumable(&self, old: &LiveSeries, first_added: DateTime<Utc>) -> Resumed {
        let target = self.clock.checkpoint();
        let Some((origin, _)) = target.at else {
            return Resumed::No;
        };
        if origin >= first_added || self.scores.checkpoint().is_some() {
            return Resumed::No;
        }
        // A replay in progress counts canonical positions of the old log.
        let continues = old.scores.checkpoint() == target.at
            && old.replay.is_none()
            && old.applied.iter().all(|e| e.time < first_added)
            && old
                .applied
                .first()
                .is_none_or(|e| e.index as usize == target.first_pending)
            && self
                .pending
                .front()
                .is_none_or(|e| e.index <= old.next_index(target));
        if continues {
            return Resumed::Continued;
        }
        let rebases = old.build_checkpoint() == Some(target.at)
            && self
                .pending
                .front()
                .is_none_or(|e| e.index as usize == target.first_pending);
        if rebases {
            Resumed::Replayed
        } else {
            Resumed::No
        }
    }

    /// The checkpoint of the build this series can go back to (`base`,
    /// else its scores when marked at their build), if any.
    fn build_checkpoint(&self) -> Option<Option<(DateTime<Utc>, DateTime<Utc>)>> {
        match &self.base {
            Some(base) => Some(base.checkpoint()),
            None => self.scores.marked().then(|| self.scores.checkpoint()),
        }
    }

    /// The canonical index of the first event after those applied since
    /// the checkpoint `target`.
    fn next_index(&self, target: Checkpoint) -> u32 {
        self.applied
            .last()
            .map_or(target.first_pending as u32, |e| e.index + 1)
    }

    /// Continues `old`'s series in this one as [`Self::resumable`] says,
    /// moving its scores (`old` is left without them; it is dropped with
    /// the replaced state): as they are ([`Resumed::Continued`]), or gone
    /// back to their build at the checkpoint, every event since pending
    /// ([`Resumed::Replayed`]: the rows the events since changed are put
    /// back, no copy of the series). Under the write lock, at the swap:
    /// the roll-back costs the rows changed since the checkpoint, fewer
    /// than 128 events' pushes changed.
    pub fn continue_from(&mut self, old: &mut LiveSeries, first_added: DateTime<Utc>) -> Resumed {
        let resumed = self.resumable(old, first_added);
        match resumed {
            Resumed::No => {}
            Resumed::Continued => {
                let next = old.next_index(self.clock.checkpoint());
                while self.pending.front().is_some_and(|e| e.index < next) {
                    self.pending.pop_front();
                }
                // This series' scores are not built: `old` drops them.
                std::mem::swap(&mut self.scores, &mut old.scores);
                self.applied = std::mem::take(&mut old.applied);
                self.movements = std::mem::take(&mut old.movements);
                self.base = old.base.take();
                // Owed at an event earlier than every one the refold
                // added: its inputs are this state's too.
                self.drift = old.drift.take();
                self.record = old.record;
                self.record_from = old.record_from;
                self.replay = None;
            }
            Resumed::Replayed => {
                // The events it replays were seen by a change feed: the
                // replay set by `Self::record_movements` (this series was
                // not built then) stands.
                match old.base.take() {
                    Some(base) => self.scores = *base,
                    None => {
                        std::mem::swap(&mut self.scores, &mut old.scores);
                        let rolled = self.scores.roll_back();
                        debug_assert!(rolled, "resumable checked the mark");
                    }
                }
            }
        }
        resumed
    }

    /// Whether [`Self::plan`] would make a build (without reading inputs).
    pub fn plan_needed(&self) -> bool {
        let target = self.clock.checkpoint();
        target.at.is_some() && self.scores.checkpoint() != target.at
    }

    /// Installs a build made from [`Self::plan`]'s inputs, dropping the
    /// pending events it holds (what [`Self::sync`] does after its build);
    /// answers the scores it replaced, for the caller to free (`None`: a
    /// drift rebuild's are kept, as `base`). A drift rebuild the series
    /// no longer owes ([`Self::awaits`]) changes nothing: its own scores
    /// are answered.
    pub fn install(&mut self, built: Built, state: &FoldState) -> Option<LiveScores> {
        if let Some(due) = built.drift {
            if self.due() != Some(due) {
                // Made already (red team h70: the live thread's and an
                // admin rescore's, `Derived::rebuild_live`, which installs
                // without asking `Self::awaits`), or overtaken: refused,
                // its scores answered to free.
                return Some(built.scores);
            }
            self.drift = None;
            return self.rebuilt_for_drift(built.scores);
        }
        // A build at a checkpoint starts the events after it again: a
        // drift rebuild owed before it, or an event left unsettled, is the
        // older series'.
        self.drift = None;
        self.settling = false;
        // A series replaying a rebuilt log records the replay instead (a
        // build planned on the state a refold replaced measured its
        // movement against that state's series).
        if self.record
            && self.replay.is_none()
            && let Some(movement) = built.movement
        {
            self.movements.push(movement);
        }
        let first = built.target.first_pending as u32;
        let old = std::mem::replace(&mut self.scores, built.scores);
        self.scores.set_checkpoint(built.target.at);
        self.base = None;
        // A run of equal times that straddles the new checkpoint starts
        // before it: its events applied already are left out of the build
        // (it takes the inputs before their time), so they are applied
        // again.
        for e in std::mem::take(&mut self.applied).into_iter().rev() {
            if e.index >= first {
                self.pending.push_front(e);
            }
        }
        while self.pending.front().is_some_and(|e| e.index < first) {
            self.pending.pop_front();
        }
        // A replay the build took whole (`Self::record_movements`).
        if let (Some((end, last)), Some((_, as_of))) = (self.replay, built.target.at)
            && end <= first
        {
            self.replay = None;
            self.record_replay(state, as_of, last);
        }
        Some(old)
    }

    /// Applies the pending events one by one when the series is at its
    /// latest checkpoint (else `false` at once: it needs a build first,
    /// [`Self::plan`]). Asks `stop` after each event; returns whether it
    /// caught up. A drift rebuild is made here, at once (a rebuild owed by
    /// [`Self::apply_pending_deferring`] first, and an event it left
    /// unsettled is settled).
    pub fn apply_pending(&mut self, state: &FoldState, mut stop: impl FnMut() -> bool) -> bool {
        if self.scores.checkpoint() != self.clock.checkpoint().at {
            return false;
        }
        if let Some(due) = self.due() {
            let built = BuildInputs::read(state, due.time, self.scores.stats()).build();
            drop(self.rebuilt_for_drift(built));
        }
        // Made, or overtaken by an event of its time (`Self::due`): owed no
        // more. Red team h70: an overtaken one stayed owed through this
        // catch-up (synced false after it), and the next deferring one
        // found it due again and made it over the events applied since.
        self.drift = None;
        self.apply_each(state, false, |_| stop(), || false)
    }

    /// [`Self::apply_pending`] for a caller that holds locks while it
    /// applies (the engine's live thread). A drift check past the limit
    /// stops it, and the rebuild is owed ([`Self::synced`] is false
    /// meanwhile, no event is applied) until the caller has made it off
    /// its locks, as a checkpoint build ([`Self::draft`] → [`PlanDraft::plan`]
    /// → [`BuildPlan::run`] → [`Self::install`]), with the same inputs
    /// (the state at the event's time) and so the same bits. `step` is
    /// told what each event did (or the part of it done, when cut), and
    /// stops the run when it answers `true`; `out_of_time` is asked
    /// within an event's pushes too (`LiveScores::end_event_until`), and
    /// when it answers `true` the event is left unsettled, still pending,
    /// and the next call goes on with its pushes (task h66: one event's
    /// pushes held the slice for hundreds of milliseconds at 1,000,000
    /// events).
    pub fn apply_pending_deferring(
        &mut self,
        state: &FoldState,
        step: impl FnMut(&EventStep) -> bool,
        out_of_time: impl FnMut() -> bool,
    ) -> bool {
        if self.scores.checkpoint() != self.clock.checkpoint().at {
            return false;
        }
        if self.drift.is_some() {
            if self.due().is_some() {
                return false;
            }
            // Overtaken by an event of its time: not a check a series of
            // the whole log makes (`Self::due`).
            self.drift = None;
        }
        self.apply_each(state, true, step, out_of_time)
    }

    /// Settles the event [`Self::apply_pending_deferring`] left unsettled,
    /// if any, leaving a drift rebuild it asks for owed: before anything
    /// else changes the series (a refold's swap, `Self::continue_from`).
    pub(in crate::score) fn settle_unsettled(&mut self, state: &FoldState) {
        if self.settling {
            let _ = self.apply_one(state, true, || false);
        }
    }

    fn apply_each(
        &mut self,
        state: &FoldState,
        defer: bool,
        mut step: impl FnMut(&EventStep) -> bool,
        mut out_of_time: impl FnMut() -> bool,
    ) -> bool {
        while !self.pending.is_empty() {
            match self.apply_one(state, defer, &mut out_of_time) {
                Err(part) => {
                    step(&part);
                    return false;
                }
                Ok(done) if done.drifted && defer => {
                    step(&done);
                    return false;
                }
                Ok(done) => {
                    if step(&done) {
                        return self.pending.is_empty();
                    }
                }
            }
        }
        true
    }

    /// Applies the first pending event, or goes on with its pushes when it
    /// was left unsettled; `Err` with the part done when `out_of_time`
    /// stopped its pushes (it stays pending, `settling`), else what it did,
    /// its drift check included: with `defer` a rebuild is left owed,
    /// else made at once.
    fn apply_one(
        &mut self,
        state: &FoldState,
        defer: bool,
        out_of_time: impl FnMut() -> bool,
    ) -> Result<EventStep, EventStep> {
        let event = self.pending.pop_front().expect("an event is pending");
        let before = self.scores.stats();
        let record = self.record && event.index >= self.record_from;
        if !std::mem::take(&mut self.settling) {
            // Its changes tracked when it is recorded: a build that takes
            // the event while it is cut part way takes the values before
            // it from them (`Self::movement_basis`, red team h70). Not
            // when it is not (folded before the feed attached, or during a
            // replay): no feed publishes its movement, and tracking those
            // too (h70's first fix) held the write lock 174 to 285 ms
            // twice a run at 200,000 events and 2,000 events/s, against
            // 11 ms without (lead, session 30). The cost is the tracking
            // itself: a push at a wide audience values every follower's
            // first hop, and `take_moves_until` values them again, in
            // parts since session 32 (session 31's profile: 26 % of a
            // catch-up; ARCHITECTURE.md, "The catch-up's write-lock
            // holds").
            self.begin(&event, record);
        }
        let settled = self.scores.end_event_until(out_of_time);
        let after = self.scores.stats();
        let mut done = EventStep {
            pushes: after.pushes - before.pushes,
            visits: after.visits - before.visits,
            ..EventStep::default()
        };
        let Some(moved) = settled else {
            self.settling = true;
            self.pending.push_front(event);
            return Err(done);
        };
        self.record_event(&event, state, record, moved);
        let (index, time) = (event.index, event.time);
        self.applied.push(event);
        // The drift check, at canonical positions where the inputs as of
        // this event's time are exactly those of the events up to it.
        let next_later = self.pending.front().is_none_or(|e| e.time > time);
        if (index + 1) % scores::CHECK_EVERY == 0 && next_later {
            done.checked = true;
            done.drifted = self.scores.check_drift();
        }
        if done.drifted {
            if defer {
                self.drift = Some(DriftDue { index, time });
            } else {
                let built = BuildInputs::read(state, time, self.scores.stats()).build();
                drop(self.rebuilt_for_drift(built));
            }
        }
        Ok(done)
    }

    /// Swaps in `built`, a rebuild from the inputs at the event the drift
    /// check stopped at, keeping the checkpoint mark; answers the replaced
    /// scores to free, unless they are kept.
    fn rebuilt_for_drift(&mut self, built: LiveScores) -> Option<LiveScores> {
        let mark = self.scores.checkpoint();
        let mut replaced = std::mem::replace(&mut self.scores, built);
        self.scores.set_checkpoint(mark);
        self.scores.note_recompute();
        // The rebuilt scores cannot go back to the checkpoint's build: the
        // replaced ones can, and are kept for a refold (rare: a second
        // copy of the series until the next build).
        if self.base.is_none() && replaced.roll_back() {
            self.base = Some(Box::new(replaced));
            return None;
        }
        Some(replaced)
    }

    /// The movement of a replay (`Self::record_movements`): every
    /// relationship's components at `at` (the replay's latest time), from
    /// nothing, so the feed compares them with what it published.
    fn record_replay(&mut self, state: &FoldState, at: DateTime<Utc>, last: LogPosition) {
        let Some(mut after) = self.scores.components_unsorted_at(at) else {
            return;
        };
        let ranks = state.table().ranks();
        scores::sort_components_ranked(&mut after, &ranks);
        let tolerance = state.model().live_tolerance;
        let moved = differences(Vec::new(), after, &ranks, tolerance);
        if !moved.is_empty() {
            self.movements.push(Movement {
                cause: MoveCause::Rebuild { first: 0, last },
                time: at,
                moved,
            });
        }
    }

    /// What an event moved, told to a change feed when recorded.
    fn record_event(
        &mut self,
        event: &EventDeltas,
        state: &FoldState,
        record: bool,
        moved: Vec<Moved>,
    ) {
        if !record {
            return;
        }
        if let Some((end, last)) = self.replay {
            if event.index + 1 >= end {
                self.replay = None;
                self.record_replay(state, event.time, last);
            }
            return;
        }
        if !moved.is_empty() {
            self.movements.push(Movement {
                cause: MoveCause::Event {
                    position: event.position,
                    event: event.event.clone(),
                },
                time: event.time,
                moved,
            });
        }
    }

    /// Applies an event's deltas to the driver, held: settled by
    /// `LiveScores::end_event_until`.
    fn begin(&mut self, event: &EventDeltas, record: bool) {
        let t = event.time;
        let live = &mut self.scores;
        live.advance(t);
        live.begin_event(record);
        for delta in &event.deltas {
            match delta {
                Delta::Impulse {
                    person,
                    brand,
                    component,
                    amount,
                } => live.impulse(person, brand, *component, *amount, t),
                Delta::Follow {
                    follower,
                    followee,
                    strength,
                } => live.set_follow(follower, followee, *strength),
                Delta::Association {
                    person,
                    brand,
                    strength,
                } => live.set_association(person, brand, Some(*strength)),
                Delta::ConsentWithdrawn { person, impulses } => live.withdraw(person, impulses),
                Delta::ConsentGranted {
                    person,
                    follows,
                    associations,
                    impulses,
                } => live.grant(person, follows, associations, impulses),
            }
        }
    }

    /// Rebuilds the series (a checkpoint) from the state as it stood at
    /// `as_of` (follows, associations, consent, the impulses of events at or
    /// before it): the batch driver sums the series there, and the live
    /// series starts from that and its residual.
    /// Answers the scores it replaced.
    fn build_at(&mut self, state: &FoldState, as_of: DateTime<Utc>) -> LiveScores {
        let built = BuildInputs::read(state, as_of, self.scores.stats()).build();
        std::mem::replace(&mut self.scores, built)
    }

    /// The series [`Self::recompute`] would make, made beside this one (no
    /// copy of it): built from the inputs at the latest event, keeping its
    /// checkpoint mark and clock. This one must have caught up (no pending
    /// deltas).
    pub fn recomputed(&self, state: &FoldState) -> LiveSeries {
        debug_assert!(self.pending.is_empty());
        let mut fresh = LiveSeries {
            scores: LiveScores::new(Arc::clone(state.model_arc())),
            pending: VecDeque::new(),
            applied: self.applied.clone(),
            clock: self.clock,
            movements: Vec::new(),
            record: self.record,
            record_from: self.record_from,
            replay: self.replay,
            // Built at the latest event, not at the checkpoint: a refold
            // must build again.
            base: None,
            drift: None,
            settling: false,
        };
        fresh.scores.set_stats(self.scores.stats());
        if let Some(latest) = state.latest_time() {
            fresh.build_at(state, latest);
            fresh.scores.note_recompute();
        }
        fresh.scores.set_checkpoint(self.scores.checkpoint());
        fresh
    }

    /// A full recompute on demand (what a checkpoint does): catches up,
    /// then rebuilds the series from the inputs at the latest event,
    /// keeping its checkpoint mark, so it carries on per event from there.
    pub fn recompute(&mut self, state: &FoldState) {
        self.sync(state, || false);
        if let Some(latest) = state.latest_time() {
            self.base = None;
            let mark = self.scores.checkpoint();
            self.build_at(state, latest);
            self.scores.set_checkpoint(mark);
            self.scores.note_recompute();
        }
    }
}

/// What a checkpoint build reads from the fold's state, read in one go
/// (cheap next to the build: a snapshot of the inputs, the graph's edges
/// and a copy of the id table), so that the build itself needs no state.
struct BuildInputs {
    snapshot: RelSnapshot,
    follows: Vec<(Handle, Handle, f64)>,
    associations: Vec<(Handle, Handle, f64)>,
    withdrawn: Vec<Handle>,
    table: EntityTable,
    /// The table's ranks (`EntityTable::ranks`): the change feed's rows
    /// are sorted and compared by id through them.
    ranks: Vec<u32>,
    model: Arc<ScoringModel>,
    as_of: DateTime<Utc>,
    stats: LiveStats,
}

impl BuildInputs {
    /// The inputs as they stood at `as_of` (follows, associations,
    /// consent, the impulses of events at or before it).
    fn read(state: &FoldState, as_of: DateTime<Utc>, stats: LiveStats) -> Self {
        let table = state.table();
        let snapshot = RelSnapshot::build(state, as_of);
        let follows = state.graph.follow_edges(as_of);
        let mut persons: Vec<Handle> = table
            .handles()
            .filter(|h| table.kind(*h).is_person())
            .collect();
        table.sort(&mut persons);
        let mut associations = Vec::new();
        for p in persons {
            for (b, a) in state.graph.associations(p, as_of) {
                associations.push((p, b, a));
            }
        }
        BuildInputs {
            snapshot,
            follows,
            associations,
            withdrawn: state.withdrawn_at(as_of),
            table: table.clone(),
            ranks: table.ranks(),
            model: Arc::clone(state.model_arc()),
            as_of,
            stats,
        }
    }

    /// The series: the batch driver sums it at `as_of`, and the live series
    /// starts from that and its residual.
    fn build(&self) -> LiveScores {
        let (s, r) = self.snapshot.seed();
        let (people, brands) = (
            self.snapshot.people_handles(),
            self.snapshot.brand_handles(),
        );
        // Renamed in place (the same layout: no second copy of either
        // list at the build's peak, docs/scale.md).
        let handles = |list: Vec<((u32, u32), Components)>| -> Vec<_> {
            list.into_iter()
                .map(|((p, b), v)| (people[p as usize], brands[b as usize], v))
                .collect()
        };
        LiveScores::build(
            Arc::clone(&self.model),
            self.as_of,
            &self.follows,
            &self.associations,
            handles(s),
            handles(r),
            &self.withdrawn,
            &self.table,
            self.stats,
        )
    }
}

/// Relationships keyed by handles, with their components.
type Rows = Vec<((Handle, Handle), Components)>;

/// What a checkpoint build needs to record what it moves: its cause, and
/// every relationship's components before it (`LiveSeries::movement_basis`).
type MovementBasis = (MoveCause, Rows);

/// What a checkpoint build takes from the live series, taken under the
/// state's lock ([`LiveSeries::draft`]); with the fold's state (or a copy
/// of it made at the same time) it makes the [`BuildPlan`] off the lock.
#[derive(Debug)]
pub struct PlanDraft {
    target: Checkpoint,
    /// The inputs' time: the checkpoint's.
    as_of: DateTime<Utc>,
    stats: LiveStats,
    /// `LiveSeries::movement_basis`, its rows in the series' order.
    basis: Option<MovementBasis>,
    /// A drift rebuild at `as_of`, not a checkpoint build.
    drift: Option<DriftDue>,
}

impl PlanDraft {
    /// The plan ([`LiveSeries::plan`]) with its inputs read from `state`,
    /// which must be the fold's state the draft was taken with, or a copy
    /// of it made then: the costly read (a batch evaluation's snapshot of
    /// every relationship, the graph's edges, the id table), and the
    /// "before" rows sorted as `LiveScores::components_at` sorts them.
    pub fn plan(self, state: &FoldState) -> BuildPlan {
        let inputs = BuildInputs::read(state, self.as_of, self.stats);
        let basis = self.basis.map(|(cause, mut before)| {
            scores::sort_components_ranked(&mut before, &inputs.ranks);
            (cause, before)
        });
        BuildPlan {
            inputs,
            target: self.target,
            basis,
            drift: self.drift,
        }
    }
}

/// A checkpoint build with its inputs read ([`LiveSeries::plan`]): it
/// holds no reference to the state, so it runs off every lock.
pub struct BuildPlan {
    inputs: BuildInputs,
    target: Checkpoint,
    /// `LiveSeries::movement_basis`, when movements are recorded.
    basis: Option<MovementBasis>,
    /// A drift rebuild (`PlanDraft::drift`).
    drift: Option<DriftDue>,
}

impl BuildPlan {
    /// Builds the series (the costly part: a batch evaluation and the push
    /// driver's set-up).
    pub fn run(self) -> Built {
        let mut scores = self.inputs.build();
        if let Some(due) = self.drift {
            // As `LiveSeries::apply_pending` rebuilds at once: no mark, no
            // movement; `LiveSeries::install` keeps the checkpoint's.
            return Built {
                scores,
                target: self.target,
                movement: None,
                drift: Some(due),
            };
        }
        scores.set_checkpoint(self.target.at);
        // A refold goes back to this build through the rows changed
        // after it (`LiveScores::mark`): no copy of the series is kept.
        scores.mark();
        let inputs = &self.inputs;
        let movement = self.basis.and_then(|(cause, before)| {
            // `LiveScores::components_at`, sorted through the ranks.
            let mut after = scores.components_unsorted_at(inputs.as_of)?;
            scores::sort_components_ranked(&mut after, &inputs.ranks);
            let tolerance = inputs.model.live_tolerance;
            let moved = differences(before, after, &inputs.ranks, tolerance);
            (!moved.is_empty()).then_some(Movement {
                cause,
                time: inputs.as_of,
                moved,
            })
        });
        Built {
            scores,
            target: self.target,
            movement,
            drift: None,
        }
    }
}

/// A finished checkpoint build, to [`LiveSeries::install`].
pub struct Built {
    scores: LiveScores,
    target: Checkpoint,
    /// What the build moved, for a change feed (`BuildPlan::basis`).
    movement: Option<Movement>,
    /// A drift rebuild (`PlanDraft::drift`).
    drift: Option<DriftDue>,
}

impl Built {
    /// The checkpoint it was built at (of the series a drift rebuild is
    /// for).
    pub fn target(&self) -> Checkpoint {
        self.target
    }

    /// When its inputs were read: the checkpoint's `as_of`, or a drift
    /// rebuild's event time (`None`: an empty log).
    pub fn inputs_at(&self) -> Option<DateTime<Utc>> {
        match self.drift {
            Some(due) => Some(due.time),
            None => self.target.at.map(|(_, as_of)| as_of),
        }
    }

    /// Whether it is a drift rebuild, not a checkpoint build.
    pub fn is_drift(&self) -> bool {
        self.drift.is_some()
    }
}

/// The relationships whose components differ between two listings sorted
/// the same way (`LiveScores::components_at`) by more than `tolerance` in
/// sum (rounding between two builds of the same inputs is not a move);
/// keys compared by id through the table's `ranks`.
fn differences(
    before: Vec<((Handle, Handle), Components)>,
    after: Vec<((Handle, Handle), Components)>,
    ranks: &[u32],
    tolerance: f64,
) -> Vec<Moved> {
    let key_order = |x: &(Handle, Handle), y: &(Handle, Handle)| {
        scores::rank_key(ranks, x.0, x.1).cmp(&scores::rank_key(ranks, y.0, y.1))
    };
    let mut moved = Vec::new();
    let mut push = |(person, brand): (Handle, Handle), before: Components, after: Components| {
        let apart: f64 = before.iter().zip(&after).map(|(b, a)| (a - b).abs()).sum();
        if apart > tolerance {
            moved.push(Moved {
                person,
                brand,
                before,
                after,
            });
        }
    };
    let (mut b, mut a) = (before.into_iter().peekable(), after.into_iter().peekable());
    loop {
        match (b.peek(), a.peek()) {
            (None, None) => break,
            (Some(_), None) => {
                let (k, v) = b.next().expect("peeked");
                push(k, v, [0.0; 6]);
            }
            (None, Some(_)) => {
                let (k, v) = a.next().expect("peeked");
                push(k, [0.0; 6], v);
            }
            (Some(x), Some(y)) => match key_order(&x.0, &y.0) {
                std::cmp::Ordering::Less => {
                    let (k, v) = b.next().expect("peeked");
                    push(k, v, [0.0; 6]);
                }
                std::cmp::Ordering::Greater => {
                    let (k, v) = a.next().expect("peeked");
                    push(k, [0.0; 6], v);
                }
                std::cmp::Ordering::Equal => {
                    let (k, v) = b.next().expect("peeked");
                    let (_, w) = a.next().expect("peeked");
                    push(k, v, w);
                }
            },
        }
    }
    moved
}
