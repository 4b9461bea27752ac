//! The seed story (seed 004) replayed through the scoring state: the
//! default model's calibration. The HTTP-level checks are in `http.rs`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fusion::domain::EntityId;
use fusion::score::{ScoreState, ScoringModel};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn id(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn story() -> ScoreState {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/seed_story.ndjson"
    ))
    .unwrap();
    let values = fusion::ingest::parse_ndjson(text.as_bytes()).unwrap();
    let (good, bad) = fusion::ingest::validate_all(&values);
    assert!(bad.is_empty(), "{bad:?}");
    ScoreState::build(
        Arc::new(ScoringModel::default_model()),
        vec![],
        good.into_iter().map(|(_, e)| e).collect(),
    )
}

fn score(s: &ScoreState, p: &str, b: &str, at: &str) -> f64 {
    s.explain(&id(p), &id(b), t(at)).map_or(50.0, |e| e.score)
}

#[test]
fn print_story() {
    let s = story();
    for (p, b) in [
        ("artist", "sweater"),
        ("artist", "bistro"),
        ("fan1", "bistro"),
        ("fan1", "sweater"),
    ] {
        for at in [
            "2026-11-05T08:59:00Z",
            "2026-11-05T09:00:00Z",
            "2026-11-12T22:14:00Z",
            "2026-11-12T22:15:00Z",
        ] {
            println!("{p}-{b} {at}: {:.2}", score(&s, p, b, at));
        }
    }
}
