//! The drift `fusion rescore` reports: the largest score difference between
//! the live series and a batch evaluation of the same state at one time.
//! It owns only that comparison; it must not do IO or read the clock.
//!
//! Both sides are compact rows (handles or numbers and six components, 56 B
//! a relationship), merged in (person id, brand id) order, one pair at a
//! time: no map of every relationship by its ids is built. Two such maps
//! (`BatchScores`, two ids and a score each) were built before and were
//! the rescore's largest transient at issue #10's shape (11 million
//! relationships at 1,000,000 events).

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use super::model::Components;
use super::propagate::batch::RelSnapshot;
use super::scores::ScoreState;

/// What a rescore compares (`ScoreState::drift_at`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Relationships the batch evaluation scored.
    pub relationships: usize,
    /// Largest absolute score difference, points (0 to 100), a
    /// relationship missing on one side counting as 50 there; 0 when the
    /// live series was not synced (a batch compared with itself).
    pub max_drift: f64,
    /// Whether the live series could be read at `at` (caught up, `at` not
    /// before its latest event).
    pub live_synced: bool,
}

impl ScoreState {
    /// The batch evaluation at `at` and its drift from the live series
    /// (module docs). As `engine::drift` of the two evaluations' scores,
    /// bit for bit.
    pub fn drift_at(&self, at: DateTime<Utc>) -> Drift {
        let model = self.fold.model();
        let table = self.fold.table();
        let snapshot = RelSnapshot::build(&self.fold, at);
        let batch = snapshot.propagate();
        let Some(live) = self.live.components_at(at, table) else {
            // A batch against itself: the evaluation is deterministic.
            return Drift {
                relationships: batch.len(),
                max_drift: 0.0,
                live_synced: false,
            };
        };
        let score = |c: &Components| model.score(c.iter().sum());
        let mut worst = 0.0f64;
        let (mut i, mut j) = (0, 0);
        while i < live.len() || j < batch.len() {
            let order = match (live.get(i), batch.get(j)) {
                (Some(((p, b), _)), Some(((q, c), _))) => table
                    .name(*p)
                    .cmp(snapshot.person_id(*q))
                    .then_with(|| table.name(*b).cmp(snapshot.brand_id(*c))),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            let (x, y) = match order {
                Ordering::Less => {
                    i += 1;
                    (score(&live[i - 1].1), 50.0)
                }
                Ordering::Greater => {
                    j += 1;
                    (50.0, score(&batch[j - 1].1))
                }
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                    (score(&live[i - 1].1), score(&batch[j - 1].1))
                }
            };
            worst = worst.max((x - y).abs());
        }
        Drift {
            relationships: batch.len(),
            max_drift: worst,
            live_synced: true,
        }
    }
}
