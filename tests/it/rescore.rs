//! `fusion rescore`'s comparison (issue #10, task h32): the drift between
//! the live series and a batch evaluation, merged from compact rows
//! (`ScoreState::drift_at`), is the drift of the two evaluations' maps by
//! id (`engine::drift`, what rescore built before) bit for bit, and counts
//! the same relationships.

use std::sync::Arc;

use fusion::domain::Logged;
use fusion::generate::GenerateConfig;
use fusion::score::{ScoreState, ScoringModel};

/// The state of a small generated stream, its first part built and the
/// rest applied as a running engine would (so the live series carries its
/// own error), caught up.
fn state() -> (ScoreState, chrono::DateTime<chrono::Utc>) {
    let model = Arc::new(ScoringModel::default_model());
    let config = GenerateConfig {
        seed: 11,
        people: 200,
        influencers: 8,
        brands: 9,
        events: 1_500,
        ..GenerateConfig::default()
    };
    let mut events = crate::support::generated_events(&config);
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    let log: Vec<Logged> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Logged {
            position: i as u64,
            event,
        })
        .collect();
    let (head, tail) = log.split_at(1_200);
    let mut state = ScoreState::from_log(model, Vec::new(), head.to_vec());
    for chunk in tail.chunks(50) {
        assert!(state.apply(chunk.to_vec()), "the tail is in time order");
    }
    assert!(state.sync_live(|| false));
    (state, log.last().unwrap().event.time)
}

#[test]
fn the_drift_merged_from_rows_is_the_drift_of_the_two_maps_by_id() {
    let (state, latest) = state();
    let model = ScoringModel::default_model();
    for at in [latest, latest + chrono::Duration::days(20)] {
        let drift = state.drift_at(at);
        assert!(drift.live_synced);
        let live = state.scores_at(at).finish(&model);
        let batch = state.batch(at);
        assert_eq!(drift.relationships, batch.scores.len());
        assert!(batch.scores.len() > 500, "{}", batch.scores.len());
        let by_maps = fusion::engine::drift(&live, &batch);
        assert_eq!(drift.max_drift.to_bits(), by_maps.to_bits(), "at {at}");
        assert!(drift.max_drift > 0.0, "the live series carries an error");
    }
}
