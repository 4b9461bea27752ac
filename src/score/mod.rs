//! Scoring: the model (data), impulses derived from events, decay in event
//! time, propagation through the graph, and explanations.
//!
//! No IO, no clock: every evaluation takes its time as an argument, and every
//! iteration is in a canonical order, so the same events and model give the
//! same numbers whatever the arrival order.

mod evaluate;
pub mod incremental;
pub mod kernel;
pub mod live;
mod model;
pub mod relspace;
mod state;

pub use evaluate::{BatchScores, Contribution, Explanation, RelationScore};
pub use model::{
    DEFAULT_MODEL, MAX_COEFFICIENT, MAX_HALF_LIFE_DAYS, MAX_SPILL, MIN_HALF_LIFE_DAYS, ModelError,
    ScoringModel,
};
pub use state::{BrandStats, EventRef, ScoreState};

use serde::Serialize;

/// The parts a relationship is made of (DESIGN.md, "Scoring").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Sentiment,
    Sales,
    Service,
    Engagement,
    Influence,
    Values,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Sentiment,
        Component::Sales,
        Component::Service,
        Component::Engagement,
        Component::Influence,
        Component::Values,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Sentiment => "sentiment",
            Component::Sales => "sales",
            Component::Service => "service",
            Component::Engagement => "engagement",
            Component::Influence => "influence",
            Component::Values => "values",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value per component, indexed by `Component::index`.
pub type Components = [f64; 6];
