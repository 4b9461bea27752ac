//! Scoring: from validated events to Fusion Scores with their reasons.
//!
//! Read in this order (each module depends only on those above it):
//! - `model`: the scoring model, as data ([`ScoringModel`]);
//! - `shares`: the one definition of decay and of the propagation
//!   operator's coefficients;
//! - `fold`: [`FoldState`], the events folded in canonical order into the
//!   graph, impulses and brand KPIs; the impulse rules; role checks; it
//!   emits what it changes as deltas ([`Delta`]);
//! - `propagate`: the series `s = Σ_k (αM)^k x` summed three ways: the
//!   adjoint walk (one relationship with its reasons, [`Explanation`]), the
//!   batch driver (every relationship, [`RelSnapshot`]) and the push driver
//!   (incremental, [`IncrementalRelspace`]);
//! - `live`: the live series, fed by the fold's deltas ([`LiveScores`]);
//! - `simulate`: what-if, an overlay of simulated events over the fold's
//!   state, scored by the adjoint walk through a view (`propagate::view`);
//! - `scores`: [`ScoreState`], the fold with its live series, and the one
//!   read policy (live or batch); `refold`: event-time checkpoints of the
//!   fold ([`FoldCheckpoint`]) and the refold of a tail after one.
//!
//! No IO, no clock: every evaluation takes its time as an argument, and every
//! iteration is in a canonical order, so the same events and model give the
//! same numbers whatever the arrival order (`tests/it/tidy.rs` checks the
//! imports).

mod drift;
pub(crate) mod fold;
pub(crate) mod live;
mod model;
pub(crate) mod propagate;
mod reach;
mod refold;
mod scores;
pub(crate) mod shares;
pub mod simulate;
pub mod snapshot;

pub use drift::Drift;
pub use fold::{BrandStats, Delta, EventDeltas, FoldState, RoleConflict};
pub use live::{
    BuildPlan, Built, CHECKPOINT_EVENTS, Checkpoint, EventStep, LiveScores, LiveStats, MoveCause,
    Moved, Movement, RENORMALISE_AFTER_HALF_LIVES, Resumed,
};
pub use model::{
    Component, Components, DEFAULT_MODEL, MAX_COEFFICIENT, MAX_HALF_LIFE_DAYS, MAX_SPILL,
    MIN_HALF_LIFE_DAYS, ModelError, ModelOverrides, PerComponent, Propagation, ScoringModel,
};
pub use propagate::adjoint::{Contribution, Explanation, ExplanationDraft, Reading, Walk};
pub use propagate::batch::{BatchScores, RelSnapshot, RelationScore};
pub use propagate::push::{IncrementalError, IncrementalRelspace, PushStats, Value};
pub use propagate::view::Span;
pub use refold::{FoldCheckpoint, Refolded, handles_kept};
pub use scores::{FoldPass, KindsPass, LivePlanner, LogCounts, ScoreState, ScoresAt};
pub use snapshot::{Captured, SnapshotError, SnapshotHeader};
