//! The engine's side of what-if (`POST /v1/simulate`): it fetches what the
//! pure simulation (`score::simulate`) needs — the state under its read
//! lock, a brand's relationships from the ranking, the stored events the
//! movers' reasons name — and gives it a deadline. It stores nothing and
//! changes no state: the simulation reads the state through an overlay.
//!
//! Its answer is a function of the event set and the request: as listings
//! do (`Ranking::settled`), it waits for the live series to catch up, at
//! most `LIVE_PATIENCE`, before it reads the state, and an answer made
//! while the series still owed `at` its bits says so
//! (`WhatIfAnswer::provisional`).
//!
//! Must not: hold the state's lock while reading the store, or copy the
//! state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Engine, EngineError};
use crate::domain::{EntityId, Event, EventId};
use crate::score::simulate::{
    self, BrandSummary, Distribution, Mover, Overlay, Precision, SIMULATED, SimulateError,
};
use crate::score::{Explanation, ModelError, ModelOverrides};
use crate::store::EventStore;

/// The work bound of one simulation (issue #13): past it, the simulation
/// stops between units of work and answers why.
pub const SIMULATION_BUDGET: Duration = Duration::from_secs(5);

/// A what-if question.
#[derive(Debug, Clone)]
pub struct WhatIf {
    /// Validated events, with their index in the request.
    pub events: Vec<(usize, Event)>,
    /// Overrides of the model (`None`: the state's model).
    pub model: Option<ModelOverrides>,
    /// The brand of a model-only what-if.
    pub brand: Option<EntityId>,
    /// The evaluation time.
    pub at: DateTime<Utc>,
    /// Movers to list, at most.
    pub top: usize,
}

/// Why a what-if was not answered, besides the engine's own errors.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    /// The overridden model breaks a bound.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The simulation refused an event or ran out of time.
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    /// A model-only what-if names no brand the state knows.
    #[error("brand {0} has no relationships to rescore; check the id and `at`")]
    UnknownBrand(EntityId),
}

/// One mover with the after-state's reasons.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoverAnswer {
    #[serde(flatten)]
    pub mover: Mover,
    /// The after-state's explanation (score, components, contributions).
    pub after_state: Option<Explanation>,
}

/// What a what-if answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WhatIfAnswer {
    pub at: DateTime<Utc>,
    /// Events simulated (repeated ids counted once).
    pub events: usize,
    /// Relationships scored before and after.
    pub scored: usize,
    /// Whether a model-only what-if stopped at its relationship bound.
    pub truncated: bool,
    pub movers: Vec<MoverAnswer>,
    pub brands: Vec<BrandSummary>,
    pub distribution: Distribution,
    /// How exact `brands` and `distribution` are (the movers always are).
    pub precision: Precision,
    /// Ids of the request's events that the log holds already, left out of
    /// the simulation: posting them would store nothing (a duplicate, or a
    /// conflict refused), so they move nothing.
    pub already_stored: Vec<EventId>,
    /// The log position the answer reflects (`Fusion-Position`).
    #[serde(skip)]
    pub position: u64,
    /// Made while the live series still owed `at` its bits, past the wait
    /// for it (module docs): another call may answer other bits, so the
    /// answer is sent uncached (`http::position::provisional`).
    #[serde(skip)]
    pub provisional: bool,
}

impl<S: EventStore> Engine<S> {
    /// Answers a what-if (module docs) within [`SIMULATION_BUDGET`] of work.
    pub async fn simulate(
        self: &Arc<Self>,
        what: WhatIf,
    ) -> Result<Result<WhatIfAnswer, WhatIfError>, EngineError> {
        // Its scores before come from the live series (`Engine::live_built`).
        self.live_built().await;
        let model = match &what.model {
            Some(o) => match self.model().with_overrides(o) {
                Ok(m) => Some(m),
                Err(e) => return Ok(Err(e.into())),
            },
            None => None,
        };
        // A model-only what-if rescores the brand's relationships of the
        // ranking at `at`, which waits for the live series (`ranking_at`).
        let mut listed = None;
        let people: Option<Vec<EntityId>> = match (&what.brand, what.events.is_empty()) {
            (Some(brand), true) => {
                let ranking = self.ranking_at(what.at).await?;
                listed = Some((ranking.position, ranking.settled));
                match ranking.by_brand.get(brand) {
                    Some(list) => Some(list.iter().map(|r| r.person.clone()).collect()),
                    None => return Ok(Err(WhatIfError::UnknownBrand(brand.clone()))),
                }
            }
            _ => None,
        };
        // Events under the state's model are pushed from the live series
        // when it answers for `at`, else walked: the bits differ within its
        // tolerance (red team h28, F1, as for listings). So the answer waits
        // for the series, a bounded time, and says when it did not get it.
        let from_live = people.is_none() && model.is_none();
        if from_live {
            self.live_wait().until_settled(self, what.at).await?;
        }
        // The work's bound starts after the wait: waiting is not work.
        let deadline = Instant::now() + SIMULATION_BUDGET;
        let engine = Arc::clone(self);
        let WhatIf {
            mut events,
            brand,
            at,
            top,
            ..
        } = what;
        // What the log holds already is in the state: as an ingest of it
        // would, the simulation takes only ids the log does not hold.
        let ids: Vec<EventId> = events.iter().map(|(_, e)| e.id.clone()).collect();
        let already_stored: Vec<EventId> = if ids.is_empty() {
            Vec::new()
        } else {
            self.store
                .events_by_id(ids)
                .await?
                .into_iter()
                .map(|l| l.event.id)
                .collect()
        };
        if !already_stored.is_empty() {
            let held: std::collections::HashSet<&EventId> = already_stored.iter().collect();
            events.retain(|(_, e)| !held.contains(&e.id));
        }
        let (outcome, position, owed) = tokio::task::spawn_blocking(move || {
            let stop = || Instant::now() >= deadline;
            let state = engine.state()?;
            // What the answer reflects, read with the state it is made of
            // (no more than published: with a follower, the state may hold
            // positions above one another server stored and it has not
            // folded yet, `engine::follow`).
            let position = state.position().min(engine.position());
            let owed = from_live && state.live_owes(at);
            let fold = state.fold();
            let model = model.as_ref().unwrap_or(fold.model());
            let run = || -> Result<_, SimulateError> {
                match (brand, people) {
                    (Some(brand), Some(people)) => {
                        let sim =
                            simulate::model_whatif(fold, model, &brand, &people, at, top, stop)?;
                        Ok((sim, Vec::new()))
                    }
                    _ => {
                        let overlay = Overlay::fold(fold, events, stop)?;
                        let live = state.live_synced().then(|| state.live().at(at)).flatten();
                        let sim = simulate::simulate(fold, &overlay, model, live, at, top, stop)?;
                        let simulated: Vec<Event> =
                            overlay.events().iter().map(|(_, e)| e.clone()).collect();
                        Ok((sim, simulated))
                    }
                }
            };
            Ok::<_, EngineError>((run(), position, owed))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("the simulation task failed: {e}")))??;
        let (sim, simulated) = match outcome {
            Ok(x) => x,
            Err(e) => return Ok(Err(e.into())),
        };
        // The reasons' stored events, read after the lock is given back.
        let mut positions: Vec<u64> = sim
            .movers
            .iter()
            .filter_map(|(_, d)| d.as_ref())
            .flat_map(|d| d.events())
            .filter(|r| r & SIMULATED == 0)
            .collect();
        positions.sort_unstable();
        positions.dedup();
        let stored: HashMap<u64, Event> = self
            .store
            .events_at(positions)
            .await?
            .into_iter()
            .map(|l| (l.position, l.event))
            .collect();
        let lookup = |r: u64| {
            if r & SIMULATED != 0 {
                simulated.get((r & !SIMULATED) as usize)
            } else {
                stored.get(&r)
            }
        };
        let movers = sim
            .movers
            .into_iter()
            .map(|(mover, draft)| MoverAnswer {
                mover,
                after_state: draft.map(|d| d.finish(lookup)),
            })
            .collect();
        Ok(Ok(WhatIfAnswer {
            at: sim.at,
            events: simulated.len(),
            scored: sim.scored,
            truncated: sim.truncated,
            movers,
            brands: sim.brands,
            distribution: sim.distribution,
            precision: sim.precision,
            already_stored,
            position: listed.map_or(position, |(listed, _)| listed.min(position)),
            provisional: owed || listed.is_some_and(|(_, settled)| !settled),
        }))
    }
}
