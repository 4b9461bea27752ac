//! The one adapter between validity and the scoring engine: every read of
//! `score` by this module goes through here, so when the scoring API is
//! reshaped (issue #10) only this file changes.
//!
//! It uses the public API only: `ScoreState::build` (a fold of exactly the
//! events given), `RelSnapshot::build` + `into_scores` (every relationship at
//! one time). The state keeps no event: whoever asks for an impact hands
//! the events in (`impact::gather`). It must not evaluate a state built from more events than the
//! caller allows: "the score at the cut" is the state of the events before
//! the cut, not the full log evaluated at the cut, because the fold takes
//! context (an entity's kind, a sales baseline) from every event it is given.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::outcomes::Pair;
use crate::domain::{Entity, Event};
use crate::score::RelSnapshot;
use crate::score::{Components, ScoreState, ScoringModel};

/// One relationship's score at a time, as validity uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The Fusion Score, 0..100.
    pub score: f64,
    /// Weighted, propagated, decayed components (they add up to the raw sum).
    pub components: Components,
}

/// Every relationship's score at `at`.
pub type Scores = BTreeMap<Pair, Scored>;

/// The state of the events strictly before `cut` (and the registrations).
pub fn state_before(
    model: Arc<ScoringModel>,
    entities: &[Entity],
    events: &[Event],
    cut: DateTime<Utc>,
) -> ScoreState {
    let kept: Vec<Event> = events.iter().filter(|e| e.time < cut).cloned().collect();
    ScoreState::build(model, entities.to_vec(), kept)
}

/// The state of the events at or before `at` (what a service holding the
/// log would have at `at`).
pub fn state_until(
    model: Arc<ScoringModel>,
    entities: &[Entity],
    events: &[Event],
    at: DateTime<Utc>,
) -> ScoreState {
    let kept: Vec<Event> = events.iter().filter(|e| e.time <= at).cloned().collect();
    ScoreState::build(model, entities.to_vec(), kept)
}

/// A snapshot of `state` at `at`, cheap enough to take under a read lock;
/// [`scores_of`] finishes it without the state.
pub fn snapshot(state: &ScoreState, at: DateTime<Utc>) -> RelSnapshot {
    RelSnapshot::build(state, at)
}

/// Every relationship's score from a snapshot.
pub fn scores_of(snapshot: RelSnapshot, model: &ScoringModel) -> Scores {
    let at = snapshot.at;
    snapshot
        .into_scores(model, at)
        .scores
        .into_iter()
        .map(|(pair, s)| {
            (
                pair,
                Scored {
                    score: s.score,
                    components: s.components,
                },
            )
        })
        .collect()
}

/// Every relationship's score at `cut`, from the events before it.
pub fn scores_at_cut(
    model: Arc<ScoringModel>,
    entities: &[Entity],
    events: &[Event],
    cut: DateTime<Utc>,
) -> Scores {
    let state = state_before(Arc::clone(&model), entities, events, cut);
    scores_of(snapshot(&state, cut), &model)
}

/// A model's weights and half-lives (days), per component in
/// `Component::ALL` order: what calibration fits.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Params {
    pub weights: [f64; 6],
    pub half_lives: [f64; 6],
}

/// The component names, in `Params` order.
pub fn component_names() -> [&'static str; 6] {
    crate::score::Component::ALL.map(|c| c.as_str())
}

/// The weights and half-lives of `model`.
pub fn params(model: &ScoringModel) -> Params {
    let all = crate::score::Component::ALL;
    Params {
        weights: all.map(|c| model.weight.get(c)),
        half_lives: all.map(|c| model.half_life_days.get(c)),
    }
}

/// `base` with these weights and half-lives, everything else kept.
pub fn with_params(base: &ScoringModel, p: &Params) -> ScoringModel {
    let mut m = base.clone();
    // Field by field: the per-component type is private to `score`.
    let (w, h) = (&p.weights, &p.half_lives);
    m.weight.sentiment = w[0];
    m.weight.sales = w[1];
    m.weight.service = w[2];
    m.weight.engagement = w[3];
    m.weight.influence = w[4];
    m.weight.values = w[5];
    m.half_life_days.sentiment = h[0];
    m.half_life_days.sales = h[1];
    m.half_life_days.service = h[2];
    m.half_life_days.engagement = h[3];
    m.half_life_days.influence = h[4];
    m.half_life_days.values = h[5];
    m
}

/// The model `state` scores with.
pub fn model(state: &ScoreState) -> Arc<ScoringModel> {
    Arc::new(state.model().clone())
}

/// The people whose registered interests share a tag with `tags`, compared
/// without case, as the fold matches a cause (`score::state`), in id order.
pub fn interested(state: &ScoreState, tags: &[String]) -> Vec<crate::domain::EntityId> {
    let wanted: Vec<String> = tags.iter().map(|t| t.to_lowercase()).collect();
    state
        .entities()
        .into_iter()
        .filter(|(_, kind)| kind.is_person())
        .filter_map(|(id, _)| {
            let e = state.registration(&id)?;
            e.interests
                .iter()
                .any(|i| wanted.contains(&i.to_lowercase()))
                .then_some(id)
        })
        .collect()
}
