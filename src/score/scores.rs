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
//! No IO, no clock: live catch-up is sliced by a `stop` callback.

use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::fold::{FoldState, sort_canonically};
use super::live::{LiveScores, LiveSeries, LogClock};
use super::model::{Components, ScoringModel};
use super::propagate::batch::{BatchScores, RelSnapshot, RelationScore};
use crate::domain::{Entity, EntityId, Event};

/// The scoring state: the fold and its live series (module docs).
#[derive(Debug, Clone)]
pub struct ScoreState {
    fold: FoldState,
    live: LiveSeries,
}

impl Deref for ScoreState {
    type Target = FoldState;
    fn deref(&self) -> &FoldState {
        &self.fold
    }
}

/// How a read of every relationship at one time will be answered.
pub enum ScoresAt {
    /// From the live series: ready.
    Live(BatchScores),
    /// From a batch evaluation: a snapshot taken now, to be propagated
    /// (`RelSnapshot::into_scores`) without holding the state.
    Batch(Box<RelSnapshot>),
}

impl ScoresAt {
    /// The scores, propagating a batch snapshot if that is what it is.
    pub fn finish(self, model: &ScoringModel) -> BatchScores {
        match self {
            ScoresAt::Live(scores) => scores,
            ScoresAt::Batch(snapshot) => {
                let at = snapshot.at;
                snapshot.into_scores(model, at)
            }
        }
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

    /// The state of a whole log with these registrations, the live series
    /// caught up.
    pub fn build(model: Arc<ScoringModel>, entities: Vec<Entity>, events: Vec<Event>) -> Self {
        let mut state = Self::rebuilt(model, entities, events);
        state.sync_live(|| false);
        state
    }

    /// The state of a whole log; the live series is built when it first
    /// syncs.
    fn rebuilt(model: Arc<ScoringModel>, entities: Vec<Entity>, mut events: Vec<Event>) -> Self {
        sort_canonically(&mut events);
        let clock = LogClock::of(events.iter().map(|e| e.time));
        let first = clock.checkpoint().first_pending as u32;
        let mut fold = FoldState::build(Arc::clone(&model), entities, events, Some(first));
        let mut live = LiveSeries::new(model, clock);
        live.receive(fold.take_deltas());
        Self { fold, live }
    }

    /// The fold's state.
    pub fn fold(&self) -> &FoldState {
        &self.fold
    }

    /// Applies new events (those seen before are skipped). Events later
    /// than everything seen are folded in directly; an earlier one refolds
    /// the whole log in canonical order. Returns whether a refold happened.
    pub fn apply(&mut self, mut events: Vec<Event>) -> bool {
        if self.fold.append(&mut events) {
            self.live.receive(self.fold.take_deltas());
            return false;
        }
        let mut all = self.fold.events().to_vec();
        all.extend(events);
        let registrations = self.fold.registrations().cloned().collect();
        *self = Self::rebuilt(Arc::clone(self.fold.model_arc()), registrations, all);
        true
    }

    /// Registers (or replaces) an entity; the log is refolded because a
    /// registration is context for every event (interests, follower
    /// baseline).
    pub fn register(&mut self, entity: Entity) {
        let mut registrations: Vec<Entity> = self
            .fold
            .registrations()
            .filter(|e| e.id != entity.id)
            .cloned()
            .collect();
        registrations.push(entity);
        let events = self.fold.events().to_vec();
        *self = Self::rebuilt(Arc::clone(self.fold.model_arc()), registrations, events);
    }

    /// Forgets an entity and every event naming it, as if they had never been.
    pub fn erase(&mut self, id: &EntityId) {
        let registrations = self
            .fold
            .registrations()
            .filter(|e| e.id != *id)
            .cloned()
            .collect();
        let events = self.fold.events_without(id);
        *self = Self::rebuilt(Arc::clone(self.fold.model_arc()), registrations, events);
    }

    /// The live series: every relationship now, kept per event.
    pub fn live(&self) -> &LiveScores {
        self.live.scores()
    }

    /// Whether the live series has applied every folded event.
    pub fn live_synced(&self) -> bool {
        self.live.synced()
    }

    /// Folded events the live series has not applied yet.
    pub fn live_lag(&self) -> usize {
        self.live.lag()
    }

    /// The live series' components at `at` (`None` while it has not caught
    /// up with the folded events, or when `at` is before the latest event).
    pub fn live_components_at(
        &self,
        at: DateTime<Utc>,
    ) -> Option<Vec<((EntityId, EntityId), Components)>> {
        let table = self.fold.table();
        let rows = self.live.components_at(at, table)?;
        Some(
            rows.into_iter()
                .map(|((p, b), c)| ((table.name(p).clone(), table.name(b).clone()), c))
                .collect(),
        )
    }

    /// Brings the live series up to date, asking `stop` after each event
    /// (`LiveSeries::sync`); returns whether it caught up.
    pub fn sync_live(&mut self, stop: impl FnMut() -> bool) -> bool {
        self.live.sync(&self.fold, stop)
    }

    /// A full recompute of the live series on demand (what a checkpoint
    /// does), at the latest event.
    pub fn recompute_live(&mut self) {
        self.live.recompute(&self.fold);
    }

    /// The one read policy for every relationship at `at` (module docs):
    /// the live series' scores when it answers for `at`, else a batch
    /// snapshot to finish off the state's lock.
    pub fn scores_at(&self, at: DateTime<Utc>) -> ScoresAt {
        let model = self.fold.model();
        match self.live_components_at(at) {
            Some(rows) => ScoresAt::Live(BatchScores {
                at,
                scores: rows
                    .into_iter()
                    .map(|(k, c)| (k, RelationScore::from_components(model, c)))
                    .collect(),
            }),
            None => ScoresAt::Batch(Box::new(RelSnapshot::build(&self.fold, at))),
        }
    }
}
