//! Same events, same model -> same scores: in any arrival order, in any
//! batching, after a duplicate replay, after a crash and restart.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::Event;
use fusion::score::{ScoreState, ScoringModel};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::support::{MemoryLog, STORY, Server, story_lines};

pub fn story_events() -> Vec<Event> {
    let values = fusion::ingest::parse_ndjson(STORY.as_bytes()).unwrap();
    let checked = fusion::ingest::validate_all(
        &values,
        &fusion::score::ScoringModel::default_model().currency,
    );
    assert!(checked.rejected.is_empty());
    checked.good.into_iter().map(|(_, e)| e).collect()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// A random but valid stream over a few people and brands, every type.
pub fn random_events(seed: u64, n: usize) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = t("2026-01-01T00:00:00Z");
    let people: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
    let brands: Vec<String> = (0..4).map(|i| format!("b{i}")).collect();
    let mut lines = Vec::new();
    for i in 0..n {
        let time = (start + Duration::minutes(rng.random_range(0..200_000))).to_rfc3339();
        let p = &people[rng.random_range(0..people.len())];
        let q = &people[rng.random_range(0..people.len())];
        let b = &brands[rng.random_range(0..brands.len())];
        let id = format!("r{seed}-{i}");
        let v = match rng.random_range(0..14) {
            0 => {
                json!({"id": id, "type": "purchase", "time": time, "person": p, "brand": b, "amount": rng.random_range(1.0..300.0)})
            }
            1 => {
                json!({"id": id, "type": "brand_sales", "time": time, "brand": b, "amount": rng.random_range(1000.0..5000.0)})
            }
            2 => {
                json!({"id": id, "type": "post", "time": time, "person": p, "brand": b, "sentiment": rng.random_range(-1.0..=1.0)})
            }
            3 => {
                json!({"id": id, "type": "mention", "time": time, "person": p, "brand": b, "sentiment": rng.random_range(-1.0..=1.0)})
            }
            4 => {
                json!({"id": id, "type": "review", "time": time, "person": p, "brand": b, "rating": rng.random_range(1..=5)})
            }
            5 => {
                json!({"id": id, "type": "service", "time": time, "person": p, "brand": b, "csat": rng.random_range(1..=5), "effort": rng.random_range(1..=7), "resolved": rng.random_bool(0.6), "wait_seconds": rng.random_range(0..900), "transfers": rng.random_range(0..3)})
            }
            6 => {
                json!({"id": id, "type": "endorsement", "time": time, "person": p, "brand": b, "strength": rng.random_range(0.1..=1.0)})
            }
            7 => {
                json!({"id": id, "type": "audience", "time": time, "person": p, "followers": rng.random_range(0..100_000)})
            }
            8 if p != q => {
                json!({"id": id, "type": "follow", "time": time, "person": p, "target": q})
            }
            9 if p != q => {
                json!({"id": id, "type": "unfollow", "time": time, "person": p, "target": q})
            }
            10 => {
                json!({"id": id, "type": "occasion", "time": time, "occasion": format!("o{}", rng.random_range(0..3)), "brand": b, "performers": [q]})
            }
            11 => {
                json!({"id": id, "type": "attendance", "time": time, "person": p, "occasion": format!("o{}", rng.random_range(0..3))})
            }
            12 => {
                json!({"id": id, "type": "cause", "time": time, "brand": b, "tags": ["climate"], "amount": 1000})
            }
            13 => {
                json!({"id": id, "type": "consent", "time": time, "person": p, "granted": rng.random_bool(0.8)})
            }
            _ => json!({"id": id, "type": "follow", "time": time, "person": p, "target": b}),
        };
        lines.push(v);
    }
    let checked = fusion::ingest::validate_all(
        &lines,
        &fusion::score::ScoringModel::default_model().currency,
    );
    let (good, bad) = (checked.good, checked.rejected);
    assert!(bad.is_empty(), "{bad:?}");
    // Occasions keep their host: drop events that would give one a second kind.
    let mut kinds = std::collections::HashMap::new();
    let fresh = ScoreState::new(model());
    good.into_iter()
        .filter(|(_, e)| fresh.check_roles(e, &mut kinds).is_ok())
        .map(|(_, e)| e)
        .collect()
}

/// Everything a reader can see of a state, as text, at a few times: batch
/// scores, the live series and every explanation (its events looked up in
/// `log`, by position).
pub fn fingerprint(state: &ScoreState, log: &[Event], times: &[DateTime<Utc>]) -> Vec<String> {
    let entities = state.entities();
    // The live series catches up off the write path; here, all at once.
    let mut synced = state.clone();
    assert!(synced.sync_live(|| false));
    let mut out = Vec::new();
    for &at in times {
        let batch = state.batch(at);
        out.push(format!("{:?}", batch.scores));
        // The live (incremental) series, where it answers (after the latest
        // event): `{:?}` of an f64 round-trips, so this compares bits.
        out.push(format!("{:?}", synced.live_components_at(at)));
        for (p, _) in entities.iter().filter(|(_, k)| k.is_person()) {
            for (b, _) in entities
                .iter()
                .filter(|(_, k)| *k == fusion::domain::EntityKind::Brand)
            {
                out.push(format!(
                    "{:?}",
                    crate::support::explain(state, log, p, b, at)
                        .map(|e| serde_json::to_string(&e).unwrap())
                ));
            }
        }
    }
    out
}

/// The state of `events` posted in a shuffled order, in batches of 1 to 7,
/// with the log as a store would hold it (positions in arrival order).
fn build_in_arrival_order(events: &[Event], seed: u64) -> MemoryLog {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut shuffled = events.to_vec();
    shuffled.shuffle(&mut rng);
    let mut log = MemoryLog::new(model());
    let mut rest = &shuffled[..];
    while !rest.is_empty() {
        let k = rng.random_range(1..=rest.len().min(7));
        log.append(rest[..k].to_vec());
        rest = &rest[k..];
    }
    log
}

#[test]
fn arrival_order_and_batching_do_not_change_any_score() {
    let times = [
        t("2026-11-05T09:00:00Z"),
        t("2026-11-12T22:15:00Z"),
        t("2027-01-01T00:00:00Z"),
    ];
    let events = story_events();
    let whole = ScoreState::build(model(), vec![], events.clone());
    let reference = fingerprint(&whole, &events, &times);
    for seed in 0..20 {
        let log = build_in_arrival_order(&events, seed);
        assert_eq!(
            fingerprint(&log.state, &log.events, &times),
            reference,
            "arrival order seed {seed}"
        );
    }
}

#[test]
fn arrival_order_does_not_matter_on_random_streams() {
    let times = [
        t("2026-02-01T00:00:00Z"),
        t("2026-03-15T00:00:00Z"),
        t("2026-06-01T00:00:00Z"),
    ];
    for stream in 0..3 {
        let events = random_events(stream, 300);
        let whole = ScoreState::build(model(), vec![], events.clone());
        let reference = fingerprint(&whole, &events, &times);
        for seed in 0..3 {
            let log = build_in_arrival_order(&events, seed);
            assert_eq!(
                fingerprint(&log.state, &log.events, &times),
                reference,
                "stream {stream}, order {seed}"
            );
        }
    }
}

#[test]
fn shuffled_posts_over_http_give_the_demo_scores() {
    let d1 = tempfile::tempdir().unwrap();
    let demo = Server::start(d1.path(), &["--demo"]);
    let d2 = tempfile::tempdir().unwrap();
    let s = Server::start(d2.path(), &[]);
    let mut lines = story_lines();
    lines.shuffle(&mut ChaCha8Rng::seed_from_u64(7));
    for line in lines {
        let r = s.post_ndjson(line);
        assert_eq!(r.body["accepted"], 1, "{line}: {}", r.body);
    }
    for (p, b) in [
        ("artist", "sweater"),
        ("artist", "bistro"),
        ("fan1", "bistro"),
        ("fan3", "sweater"),
    ] {
        let path = format!("/v1/relationships/{p}/{b}?at=2026-11-20T00:00:00Z");
        assert_eq!(s.get(&path).body, demo.get(&path).body, "{p}-{b}");
    }
}

#[test]
fn a_restart_after_a_crash_gives_the_same_scores() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    assert_eq!(s.post_ndjson(STORY).status, 200);
    let paths: Vec<String> = [
        "artist/sweater",
        "artist/bistro",
        "fan1/bistro",
        "fan2/sweater",
    ]
    .iter()
    .map(|pb| format!("/v1/relationships/{pb}?at=2026-11-20T00:00:00Z"))
    .collect();
    let before: Vec<_> = paths.iter().map(|p| s.get(p).body).collect();
    let dir_path = s.kill();
    let s = Server::start(&dir_path, &[]);
    assert_eq!(s.event_count(), story_lines().len() as u64);
    let after: Vec<_> = paths.iter().map(|p| s.get(p).body).collect();
    assert_eq!(before, after);
}

fn any_events() -> impl Strategy<Value = Vec<Event>> {
    (any::<u64>(), 1usize..120).prop_map(|(seed, n)| random_events(seed, n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn scores_stay_within_0_and_100(events in any_events(), days in 0i64..400) {
        let state = ScoreState::build(model(), vec![], events);
        let at = t("2026-01-01T00:00:00Z") + Duration::days(days);
        for s in state.batch(at).scores.values() {
            prop_assert!((0.0..=100.0).contains(&s.score), "{}", s.score);
        }
    }

    #[test]
    fn old_relationships_decay_towards_50(events in any_events()) {
        let state = ScoreState::build(model(), vec![], events);
        let last = state.latest_time().unwrap();
        let mut previous: Option<fusion::score::BatchScores> = None;
        for years in [1i64, 3, 10, 30] {
            let now = state.batch(last + Duration::days(365 * years));
            if let Some(prev) = &previous {
                for (k, s) in &now.scores {
                    // With no new events every component only decays (each
                    // is a sum of terms with one half-life), never grows.
                    let before = prev.scores.get(k).map_or([0.0; 6], |p| p.components);
                    for (c, b) in s.components.iter().zip(before) {
                        prop_assert!(c.abs() <= b.abs() + 1e-12, "{k:?}: {c} after {b}");
                    }
                }
            }
            previous = Some(now);
        }
        for s in previous.unwrap().scores.values() {
            prop_assert!((s.score - 50.0).abs() < 0.01, "after 30 years a score should be back at 50: {}", s.score);
        }
    }
}
