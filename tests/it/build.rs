//! Building a state from a log read in chunks, twice (kinds, then the
//! fold), while the store is being written.

use std::collections::HashMap;

use fusion::domain::{EntityId, EntityKind, Event, Logged};
use fusion::score::{ScoreState, ScoringModel};

fn event(line: &str) -> Event {
    let values = fusion::ingest::parse_ndjson(line.as_bytes()).unwrap();
    let checked = fusion::ingest::validate_all(&values, &ScoringModel::default_model().currency);
    assert!(checked.rejected.is_empty(), "{line}");
    checked.good.into_iter().next().unwrap().1
}

/// Regression: the second pass of a build read more of a store being
/// written than the first; a brand the first pass saw only followed
/// (a provisional person) was folded as a brand's host without its kind
/// fixed, and stayed a consumer: the next occasion it hosted was refused
/// ("'b21' is a consumer, which cannot be the brand of a occasion event").
#[test]
fn a_build_folds_only_the_events_its_first_pass_saw() {
    let follow = Logged {
        position: 0,
        event: event(
            r#"{"id":"f","type":"follow","time":"2026-01-02T00:00:00Z","person":"ann","target":"b21"}"#,
        ),
    };
    // Committed between the two passes, earlier in event time.
    let occasion = Logged {
        position: 1,
        event: event(
            r#"{"id":"o","type":"occasion","time":"2026-01-01T00:00:00Z","occasion":"gig","brand":"b21","performers":[]}"#,
        ),
    };
    let mut kinds = ScoreState::builder(
        std::sync::Arc::new(ScoringModel::default_model()),
        Vec::new(),
    );
    kinds.see(vec![follow.clone()]);
    let mut fold = kinds.fold_pass();
    fold.fold(vec![occasion.clone(), follow]);
    let state = fold.finish();

    assert_eq!(
        state.event_count(),
        1,
        "the occasion waits for its own fold"
    );
    let b21 = EntityId::new("b21").unwrap();
    assert_eq!(state.kind(&b21), Some(EntityKind::Consumer));
    state
        .check_roles(&occasion.event, &mut HashMap::new())
        .expect("a brand only followed so far may still host");
}
