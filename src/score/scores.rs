//! `ScoreState`: what the engine owns, the fold's state (`fold`) and the
//! live series it feeds with deltas (`live`), changed together so the live
//! series always follows the fold. It reads as its fold state (`Deref`):
//! explanations and batch evaluations are the fold state's.
//!
//! It holds the one read policy for "every relationship at `at`"
//! ([`ScoreState::scores_at`]): the live series when it has caught up and
//! `at` is at or after the latest event (where it is exact to its bound),
//! else a batch evaluation. Decided here once; the engine, rankings, the
//! materialised table and rescore all ask this.
//!
//! It keeps no event. A state is built from a log read twice in canonical
//! order ([`ScoreState::builder`]: kinds, then the fold), and events later
//! than everything folded are appended ([`ScoreState::apply`]); a late
//! event makes `apply` decline, and whoever holds the log builds again.
//!
//! No IO, no clock: live catch-up is sliced by a `stop` callback.

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::fold::{FoldState, PositionSet, sort_canonically};
use super::live::{LiveScores, LiveSeries, LogClock, Moved};
use super::model::{Components, ScoringModel};
use super::propagate::batch::{BatchScores, RelSnapshot, RelationScore};
use super::reach::Reach;
use crate::domain::{Entity, EntityId, EntityKind, Event, Logged};
use crate::graph::Handle;

/// The scoring state: the fold and its live series (module docs).
#[derive(Debug, Clone)]
pub struct ScoreState {
    pub(in crate::score) fold: FoldState,
    pub(in crate::score) live: LiveSeries,
}

impl Deref for ScoreState {
    type Target = FoldState;
    fn deref(&self) -> &FoldState {
        &self.fold
    }
}

/// How a read of every relationship at one time will be answered.
pub enum ScoresAt {
    /// From the live series: every relationship's components at `at`,
    /// scored and ordered by `finish` without holding the state (task
    /// h42: both ran under the read lock every ranking build).
    Live {
        /// The evaluation time.
        at: DateTime<Utc>,
        /// (person, brand) and its components, in the series' own order
        /// (not sorted under the lock: `finish` orders them).
        rows: Vec<((EntityId, EntityId), Components)>,
    },
    /// From a batch evaluation: a snapshot taken now, to be propagated
    /// (`RelSnapshot::into_scores`) without holding the state.
    Batch(Box<RelSnapshot>),
}

impl ScoresAt {
    /// The scores, propagating a batch snapshot if that is what it is.
    pub fn finish(self, model: &ScoringModel) -> BatchScores {
        match self {
            ScoresAt::Live { at, rows } => BatchScores {
                at,
                scores: rows
                    .into_iter()
                    .map(|(k, c)| (k, RelationScore::from_components(model, c)))
                    .collect(),
            },
            ScoresAt::Batch(snapshot) => {
                let at = snapshot.at;
                snapshot.into_scores(model, at)
            }
        }
    }
}

/// Events a log holds in the same microsecond come from a store in id
/// order (`store::EventStore::scan_from`); the fold needs (time, id) order
/// to the nanosecond. This holds back the last microsecond's run of a chunk
/// until the next chunk says it is complete, and sorts what it lets go.
#[derive(Debug, Default)]
struct Reorder {
    held: Vec<Logged>,
}

impl Reorder {
    /// Takes a chunk; answers what is ready, in canonical order.
    fn push(&mut self, chunk: Vec<Logged>) -> Vec<Logged> {
        self.held.extend(chunk);
        let Some(last) = self.held.last() else {
            return Vec::new();
        };
        let micros = last.event.time.timestamp_micros();
        let run = self
            .held
            .iter()
            .rposition(|l| l.event.time.timestamp_micros() != micros)
            .map_or(0, |i| i + 1);
        let mut ready: Vec<Logged> = self.held.drain(..run).collect();
        sort_canonically(&mut ready);
        ready
    }

    /// Everything held, in canonical order.
    fn finish(&mut self) -> Vec<Logged> {
        let mut rest = std::mem::take(&mut self.held);
        sort_canonically(&mut rest);
        rest
    }
}

/// The first pass of a build (module docs): every event of the log, in the
/// store's canonical order, for the kinds its roles fix and the log's
/// clock. Then [`KindsPass::fold_pass`].
///
/// The second pass folds only the positions the first one saw: a store
/// being written meanwhile answers the second pass with more events, and
/// one of them naming as a brand an entity the first pass saw only
/// followed would leave it a person (found by
/// `pg_e2e::sigkill_mid_ingest_loses_no_acknowledged_event_on_the_embedded_store`).
/// Events left out are folded when their own fold job comes.
#[derive(Debug)]
pub struct KindsPass {
    fold: FoldState,
    clock: LogClock,
    order: Reorder,
    seen: PositionSet,
    /// Who names which brand and follows whom: `LogCounts::relationships`.
    reach: Reach,
}

/// What the first pass counted: the sizes the derived state will have
/// (`engine::Footprint` estimates its memory from them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Events in the log.
    pub events: u64,
    /// People (consumers and influencers) the events and registrations name.
    pub people: u64,
    /// Brands.
    pub brands: u64,
    /// Every entity, occasions included.
    pub entities: u64,
    /// The most relationships the state can hold: per brand, the people
    /// the events have naming it and their followers (`score::reach`).
    pub relationships: u64,
}

impl KindsPass {
    /// Sees a chunk of the log (canonical order, as a store scans it).
    pub fn see(&mut self, chunk: Vec<Logged>) {
        let ready = self.order.push(chunk);
        self.take(&ready);
    }

    fn take(&mut self, ready: &[Logged]) {
        self.fold.fix_kinds(ready.iter().map(|l| &l.event));
        for l in ready {
            self.reach.see(&self.fold, &l.event);
            self.clock.tick(l.event.time);
            self.seen.insert(l.position);
        }
    }

    /// The counts of the whole log, once every chunk has been seen.
    pub fn counts(&mut self) -> LogCounts {
        let rest = self.order.finish();
        self.take(&rest);
        let table = self.fold.table();
        let of = |k: fn(EntityKind) -> bool| {
            table.handles().filter(|h| k(table.kind(*h))).count() as u64
        };
        let (people, brands) = (of(EntityKind::is_person), of(|k| k == EntityKind::Brand));
        LogCounts {
            events: self.clock.count() as u64,
            people,
            brands,
            entities: table.len() as u64,
            relationships: std::mem::take(&mut self.reach).bound(&self.fold, people, brands),
        }
    }

    /// The second pass: the same log again, from the start.
    pub fn fold_pass(mut self) -> FoldPass {
        let rest = self.order.finish();
        self.take(&rest);
        let first = self.clock.checkpoint().first_pending as u32;
        FoldPass {
            emit_from: Some(first),
            live: LiveSeries::new(Arc::clone(self.fold.model_arc()), self.clock),
            fold: self.fold,
            order: Reorder::default(),
            seen: self.seen,
        }
    }
}

/// The second pass of a build: every event again, folded.
#[derive(Debug)]
pub struct FoldPass {
    fold: FoldState,
    live: LiveSeries,
    emit_from: Option<u32>,
    order: Reorder,
    /// The positions the first pass saw: the only ones folded.
    seen: PositionSet,
}

impl FoldPass {
    /// Folds a chunk of the log (canonical order, as a store scans it):
    /// the events of it the first pass saw.
    pub fn fold(&mut self, mut chunk: Vec<Logged>) {
        chunk.retain(|l| self.seen.contains(l.position));
        let ready = self.order.push(chunk);
        self.fold.fold_built(ready, self.emit_from);
    }

    /// The state, its live series not built yet (it builds when it first
    /// syncs: `ScoreState::sync_live`).
    pub fn finish(mut self) -> ScoreState {
        let rest = self.order.finish();
        self.fold.fold_built(rest, self.emit_from);
        self.fold.built();
        self.live.receive(self.fold.take_deltas());
        ScoreState {
            fold: self.fold,
            live: self.live,
        }
    }
}

/// A state's live build plan, to be made later ([`ScoreState::live_planner`]):
/// a copy of the fold's state and what the plan takes from the series.
#[derive(Debug)]
pub struct LivePlanner {
    fold: FoldState,
    draft: super::live::PlanDraft,
}

impl LivePlanner {
    /// The plan [`ScoreState::live_plan`] would have made of the state when
    /// this was taken, bit for bit. The copy of the fold's state is let go
    /// here, before the build runs (it holds columns the fold has copied
    /// on write since).
    pub fn plan(self) -> super::live::BuildPlan {
        let LivePlanner { fold, draft } = self;
        draft.plan(&fold)
    }
}

impl ScoreState {
    /// An empty state scoring with `model`.
    pub fn new(model: Arc<ScoringModel>) -> Self {
        Self {
            live: LiveSeries::new(Arc::clone(&model), LogClock::default()),
            fold: FoldState::new(model),
        }
    }

    /// A build from a log (module docs), with these registrations.
    pub fn builder(model: Arc<ScoringModel>, entities: Vec<Entity>) -> KindsPass {
        KindsPass {
            fold: FoldState::to_build(model, entities),
            clock: LogClock::default(),
            order: Reorder::default(),
            seen: PositionSet::default(),
            reach: Reach::default(),
        }
    }

    /// The state of a log held in memory, in any order, the live series
    /// caught up.
    pub fn from_log(model: Arc<ScoringModel>, entities: Vec<Entity>, mut log: Vec<Logged>) -> Self {
        sort_canonically(&mut log);
        let mut kinds = Self::builder(model, entities);
        kinds.see(log.clone());
        let mut fold = kinds.fold_pass();
        fold.fold(log);
        let mut state = fold.finish();
        state.sync_live(|| false);
        state
    }

    /// The state of these events, as a log holding them at positions 0, 1,
    /// ... in the order given (tests, tools, validity), the live series
    /// caught up.
    pub fn build(model: Arc<ScoringModel>, entities: Vec<Entity>, events: Vec<Event>) -> Self {
        let log = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Logged {
                position: i as u64,
                event,
            })
            .collect();
        Self::from_log(model, entities, log)
    }

    /// The fold's state.
    pub fn fold(&self) -> &FoldState {
        &self.fold
    }

    /// Folds in new events (those whose position is folded are skipped),
    /// when they are later than everything folded. Returns `false`,
    /// changing nothing, when one is not: the log must be built again
    /// (module docs).
    pub fn apply(&mut self, events: Vec<Logged>) -> bool {
        self.apply_shared(&events)
    }

    /// Gives every entity `events` name with a kind (brand, occasion,
    /// influencer, consumer; follow targets excepted) that kind, as
    /// `apply` does for all of its events before it folds any: a round
    /// applied in slices (`engine::fold_in_slices`) calls it with the
    /// whole round first, so its slices fold as one `apply` of it (a
    /// brand followed in one slice and named a brand in a later one is a
    /// brand from the first; before, the later slice was declined).
    pub fn fix_kinds_of(&mut self, events: &[Logged]) {
        self.fold.fix_kinds(events.iter().map(|l| &l.event));
    }

    /// `apply` of events the caller keeps (the fold thread keeps them for
    /// refolds, `engine::refold`): the same fold, without a copy.
    pub fn apply_shared(&mut self, events: &[Logged]) -> bool {
        if !self.fold.append_shared(events) {
            return false;
        }
        self.live.receive(self.fold.take_deltas());
        true
    }

    /// The live series: every relationship now, kept per event.
    pub fn live(&self) -> &LiveScores {
        self.live.scores()
    }

    /// Whether the live series has applied every folded event.
    pub fn live_synced(&self) -> bool {
        self.live.synced()
    }

    /// Folded events the live series has not applied yet (a drift rebuild
    /// owed counted as one: `LiveSeries::lag`).
    pub fn live_lag(&self) -> usize {
        self.live.lag()
    }

    /// The live series' components at `at` (`None` while it has not caught
    /// up with the folded events, or when `at` is before the latest event).
    pub fn live_components_at(
        &self,
        at: DateTime<Utc>,
    ) -> Option<Vec<((EntityId, EntityId), Components)>> {
        let rows = self.live.components_at(at, self.fold.table())?;
        Some(self.named(rows))
    }

    /// Rows keyed by handles, keyed by the ids they stand for.
    fn named(
        &self,
        rows: Vec<((Handle, Handle), Components)>,
    ) -> Vec<((EntityId, EntityId), Components)> {
        let table = self.fold.table();
        rows.into_iter()
            .map(|((p, b), c)| ((table.name(p).clone(), table.name(b).clone()), c))
            .collect()
    }

    /// Every relationship at `at` from the live series as it stands, caught
    /// up or not, with the log position it reflects
    /// (`LiveSeries::lagging_components_at`): a ranking that lags the log
    /// by the series' lag instead of a batch evaluation of every
    /// relationship (`Engine::build_ranking`). `None` when the series is no
    /// whole series of events now, or `at` is before its latest event.
    pub fn live_lagging_at(&self, at: DateTime<Utc>) -> Option<(ScoresAt, u64)> {
        let (rows, reflected) = self.live.lagging_components_at(at, self.fold.position())?;
        let rows = self.named(rows);
        Some((ScoresAt::Live { at, rows }, reflected))
    }

    /// The log position the live series reflects as it stands
    /// (`LiveSeries::reflected_position`).
    pub fn live_reflected_position(&self) -> Option<u64> {
        self.live.reflected_position(self.fold.position())
    }

    /// Brings the live series up to date, asking `stop` after each event
    /// (`LiveSeries::sync`); returns whether it caught up.
    pub fn sync_live(&mut self, stop: impl FnMut() -> bool) -> bool {
        self.live.sync(&self.fold, stop)
    }

    /// The checkpoint build the live series needs before it can apply
    /// its pending events, its inputs read now (`LiveSeries::plan`): the
    /// engine runs it off the state's lock, then [`Self::install_live`].
    pub fn live_plan(&self) -> Option<super::live::BuildPlan> {
        self.live.plan(&self.fold)
    }

    /// [`Self::live_plan`] to be made later, off the state's locks: a copy
    /// of the fold's state (its impulse columns and per-entity entries
    /// shared copy-on-write: about 36 ms at 1,000,000 events, task h48),
    /// and what the plan takes from the live series (`LiveSeries::draft`:
    /// the target, and with a change feed the series' rows before the
    /// build, unsorted), so the plan is this state's whatever is folded
    /// meanwhile; or, the same way, the drift rebuild the series owes
    /// ([`Self::apply_live_deferring`]). `None` when no build is needed.
    /// Reading the plan's inputs
    /// (a batch evaluation's `RelSnapshot`) took 20 to 26 s of a 10M-event
    /// restart before ready (task h37), and 1 to 3 s of the fold lock on
    /// the live thread at 1,000,000 events (task h60).
    pub fn live_planner(&self) -> Option<LivePlanner> {
        let draft = self.live.draft(&self.fold)?;
        Some(LivePlanner {
            fold: self.fold.clone(),
            draft,
        })
    }

    /// Whether the live series needs a checkpoint build before it can
    /// apply its pending events ([`Self::live_plan`] would make one).
    pub fn live_plan_needed(&self) -> bool {
        self.live.plan_needed()
    }

    /// Installs a build of [`Self::live_plan`] (`LiveSeries::install`);
    /// answers the series it replaced, if not kept (for the caller to free
    /// where it likes: off a lock).
    pub fn install_live(&mut self, built: super::live::Built) -> Option<LiveScores> {
        self.live.install(built, &self.fold)
    }

    /// Whether `built` is what this state's live series needs next
    /// (`LiveSeries::awaits`): a build at its checkpoint, or the drift
    /// rebuild it owes.
    pub fn live_awaits(&self, built: &super::live::Built) -> bool {
        self.live.awaits(built)
    }

    /// Whether `built`, planned on this state, moves its live series
    /// forward, overtaken or not (`LiveSeries::advanced_by`).
    pub fn live_advanced_by(&self, built: &super::live::Built) -> bool {
        self.live.advanced_by(built)
    }

    /// Continues the live series of `old`, the state a refold that added
    /// events from `first_added` on replaces, in this one's, by moving its
    /// scores, as they are or gone back to their build at the checkpoint
    /// (`LiveSeries::continue_from`; at the swap); answers how.
    pub fn continue_live_from(
        &mut self,
        old: &mut ScoreState,
        first_added: DateTime<Utc>,
    ) -> super::live::Resumed {
        // An event the live thread left unsettled is settled first: the
        // series continued is one of whole events.
        old.live.settle_unsettled(&old.fold);
        // What the old series recorded and no feed took (the movement of
        // the event just settled) is heard first, named in this state's
        // numbering (a refold may move handles): left behind, a series
        // resumed by a replay published that event's moves only inside the
        // replay's, at its position, with other deltas (red team h73).
        let (from, to) = (old.fold.table(), self.fold.table());
        // (A refold adds events: an entity it does not know, never.)
        let rename = |h| to.get(from.name(h));
        let left: Vec<_> = old
            .live
            .take_movements()
            .into_iter()
            .map(|mut m| {
                m.moved = std::mem::take(&mut m.moved)
                    .into_iter()
                    .filter_map(|moved| {
                        Some(Moved {
                            person: rename(moved.person)?,
                            brand: rename(moved.brand)?,
                            ..moved
                        })
                    })
                    .collect();
                m
            })
            .collect();
        let resumed = self.live.continue_from(&mut old.live, first_added);
        self.live.hear_first(left);
        resumed
    }

    /// Whether a read of every relationship at `at` is owed to the live
    /// series: `at` is at or after the latest event, where the series
    /// answers once it has caught up, and it has not yet. A batch
    /// evaluation then is within the series' bound but not its bits, so
    /// it is not the log's answer for `at` (red team h28, F1: a listing
    /// at a time read during catch-up had other bits than after it, and
    /// than after a restart).
    pub fn live_owes(&self, at: DateTime<Utc>) -> bool {
        !self.live.synced() && self.fold.latest_time().is_none_or(|latest| at >= latest)
    }

    /// Applies the live series' pending events when it needs no build
    /// first (`LiveSeries::apply_pending`), asking `stop` after each;
    /// returns whether it caught up.
    pub fn apply_live(&mut self, stop: impl FnMut() -> bool) -> bool {
        self.live.apply_pending(&self.fold, stop)
    }

    /// [`Self::apply_live`] for a caller that holds the state's locks
    /// while it applies (`LiveSeries::apply_pending_deferring`): a drift
    /// rebuild is left owed, for [`Self::live_planner`] to plan off the
    /// locks; `step` is told what each event did and answers whether to
    /// stop; `out_of_time`, asked within an event's pushes too, leaves the
    /// event unsettled when it answers `true` (the next call goes on).
    pub fn apply_live_deferring(
        &mut self,
        step: impl FnMut(&super::live::EventStep) -> bool,
        out_of_time: impl FnMut() -> bool,
    ) -> bool {
        self.live
            .apply_pending_deferring(&self.fold, step, out_of_time)
    }

    /// The log position after the last one folded (0 for none): every
    /// position below it that the log holds is folded.
    pub fn position(&self) -> u64 {
        self.fold.position()
    }

    /// Records that the state reflects the change of the log's context at
    /// `position` (`FoldState::set_context_position`): a state built from
    /// the store, with what it read before its reads of the log.
    pub fn set_context_position(&mut self, position: Option<crate::domain::LogPosition>) {
        self.fold.set_context_position(position);
    }

    /// Records what the live series' steps move from now on, or stops
    /// (only a change feed takes them: [`Self::take_movements`]).
    pub fn record_movements(&mut self, record: bool) {
        self.live.record_movements(record, self.fold.max_position());
    }

    /// Records from now on, replaying nothing folded so far
    /// (`LiveSeries::record_movements_from_now`): a new change feed.
    pub fn record_movements_from_now(&mut self) {
        self.live.record_movements_from_now();
    }

    /// Takes what the live series' steps moved since the last call, in
    /// the order applied (the change feed's input, `crate::feed`).
    pub fn take_movements(&mut self) -> Vec<super::live::Movement> {
        self.live.take_movements()
    }

    /// The smallest log position of the folded events the live series has
    /// not applied yet (`None`: none; `LiveSeries::unapplied_from`).
    pub fn live_unapplied_from(&self) -> Option<crate::domain::LogPosition> {
        self.live.unapplied_from()
    }

    /// A full recompute of the live series on demand (what a checkpoint
    /// does), at the latest event.
    pub fn recompute_live(&mut self) {
        self.live.recompute(&self.fold);
    }

    /// A live series rebuilt from the inputs at the latest event (what
    /// [`Self::recompute_live`] makes), made beside this one, which stays
    /// as it is until [`Self::set_live`]. The series must have caught up.
    pub(crate) fn recomputed_live(&self) -> LiveSeries {
        self.live.recomputed(&self.fold)
    }

    /// Swaps in a series from [`Self::recomputed_live`]; answers the one
    /// it replaced (to free off a lock).
    pub(crate) fn set_live(&mut self, live: LiveSeries) -> LiveSeries {
        std::mem::replace(&mut self.live, live)
    }

    /// The one read policy for every relationship at `at` (module docs):
    /// the live series' components when it answers for `at`, else a batch
    /// snapshot; either is finished (`ScoresAt::finish`, with this state's
    /// model) off the state's lock.
    pub fn scores_at(&self, at: DateTime<Utc>) -> ScoresAt {
        // Not sorted here, under the state's lock: `finish` orders them
        // (a `BTreeMap` of distinct keys: the same map whatever the order).
        match self.live.components_unsorted_at(at) {
            Some(rows) => ScoresAt::Live {
                at,
                rows: self.named(rows),
            },
            None => ScoresAt::Batch(Box::new(RelSnapshot::build(&self.fold, at))),
        }
    }
}
