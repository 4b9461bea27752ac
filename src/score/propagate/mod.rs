//! Propagation: the truncated series `s = Σ_k (αM)^k x` over relationship
//! space (ARCHITECTURE.md, "Scoring"), summed three ways over the fold's
//! state, with decay and coefficients from `shares.rs`:
//! - `adjoint`: one relationship with its reasons (`explain`, `score_at`);
//! - `batch`: every relationship at one time (`RelSnapshot`, parallel);
//! - `push`: the incremental driver the live series runs (`IncrementalRelspace`),
//!   its rows of `s` and `r` stored by `rows` (only the nonzero lanes),
//!   its per-person rows able to go back to a mark by `undo`.
//!
//! It reads the fold's state and never changes it; no IO, no clock.

pub mod adjoint;
pub mod batch;
pub mod push;
pub mod rows;
mod undo;
pub mod view;

use chrono::{DateTime, Utc};

use crate::graph::Handle;
use crate::score::fold::FoldState;
use view::ScoreView;

impl FoldState {
    /// The association shares `α_a · s / max(1, Σs)` of `person` at `at`
    /// (`shares.rs`), for each associated brand with a strength above 0,
    /// sorted by brand id: [`ScoreView::association_shares`], said once.
    pub(crate) fn association_shares(
        &self,
        person: Handle,
        at: DateTime<Utc>,
    ) -> Vec<(Handle, f64)> {
        ScoreView::association_shares(self, person, at)
    }
}
