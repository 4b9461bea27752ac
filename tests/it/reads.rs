//! The relationship read (`FoldState::read`, issue #11): one read of the
//! explanation at `at` and the scores 1, 7 and 30 days before, reusing
//! adjoint walks over their span, gives bit for bit what a fresh
//! `explain` and `score_at` give, on the same state and on a later one
//! that folded events in place after the walks were taken (what the
//! engine's cache of walks, `engine/reads.rs`, relies on).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::{EntityId, EntityKind, Event};
use fusion::score::{ScoreState, ScoringModel, Walk};

use crate::determinism::random_events;
use crate::relspace::generated;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

fn pairs(state: &ScoreState) -> Vec<(EntityId, EntityId)> {
    let entities = state.entities();
    let brands: Vec<&EntityId> = entities
        .iter()
        .filter(|(_, k)| *k == EntityKind::Brand)
        .map(|(id, _)| id)
        .collect();
    entities
        .iter()
        .filter(|(_, k)| k.is_person())
        .flat_map(|(p, _)| brands.iter().map(move |b| (p.clone(), (*b).clone())))
        .collect()
}

fn past(at: DateTime<Utc>) -> [DateTime<Utc>; 3] {
    [1, 7, 30].map(|d| at - Duration::days(d))
}

/// Reads every pair of `state` at each of `times`, giving each read the
/// walks `kept` holds for its pair whose span covers the time asked (as the
/// engine does), and checks every answer against fresh `explain` and
/// `score_at` to the bit. Answers the reads compared and the walks reused.
fn check_reads(
    state: &ScoreState,
    times: &[DateTime<Utc>],
    kept: &mut std::collections::HashMap<(EntityId, EntityId), Vec<Arc<Walk>>>,
    serves: impl Fn(&Walk, DateTime<Utc>) -> bool,
    what: &str,
) -> (usize, usize) {
    let (mut compared, mut reused) = (0, 0);
    let reused_cell = std::cell::Cell::new(0usize);
    for (p, b) in pairs(state) {
        for &at in times {
            let walks = kept.entry((p.clone(), b.clone())).or_default();
            let reading = state.read(&p, &b, at, &past(at), |t| {
                let w = walks.iter().find(|w| serves(w, t)).cloned();
                reused_cell.set(reused_cell.get() + usize::from(w.is_some()));
                w
            });
            let fresh = state.explain(&p, &b, at);
            assert_eq!(
                format!("{:?}", reading.as_ref().map(|r| &r.draft)),
                format!("{fresh:?}"),
                "{what}: {p} - {b} at {at}: the read's explanation is not the fresh one"
            );
            let Some(reading) = reading else { continue };
            for (t, score) in past(at).iter().zip(&reading.past) {
                assert_eq!(
                    score.map(f64::to_bits),
                    state.score_at(&p, &b, *t).map(f64::to_bits),
                    "{what}: {p} - {b} at {t}: the read's past score is not the fresh one"
                );
            }
            walks.extend(reading.walks);
            compared += 1;
        }
    }
    reused += reused_cell.get();
    (compared, reused)
}

fn spread(events: &[Event]) -> Vec<DateTime<Utc>> {
    let first = events.iter().map(|e| e.time).min().unwrap();
    let last = events.iter().map(|e| e.time).max().unwrap();
    let span = last - first;
    vec![
        last + Duration::days(40),
        last,
        first + span / 2,
        first + span / 2 + Duration::seconds(1),
        first + span / 4,
        last + Duration::days(41),
    ]
}

#[test]
fn a_read_that_reuses_walks_equals_explain_and_score_at_to_the_bit() {
    let mut streams = vec![("generated".to_string(), generated(3_000, 13))];
    for seed in 0..4 {
        streams.push((format!("random {seed}"), random_events(300 + seed, 400)));
    }
    for (what, events) in streams {
        let state = ScoreState::build(model(), vec![], events.clone());
        let mut kept = Default::default();
        let (compared, reused) = check_reads(
            &state,
            &spread(&events),
            &mut kept,
            |w, t| w.span().covers(t),
            &what,
        );
        assert!(compared > 100, "{what}: only {compared} reads compared");
        // Random streams change follows often, so fewer walks serve twice.
        assert!(reused > 100, "{what}: only {reused} walks reused");
    }
}

/// Walks taken on a state stay right on a later state that folded events in
/// place (all no earlier than the first state's latest event), at times
/// before that latest event, or wherever their span ends at a change the
/// first state had: the rule `engine/reads.rs` serves kept walks by.
#[test]
fn walks_kept_before_events_folded_in_place_still_serve_before_them() {
    for (what, mut events) in [
        ("generated".to_string(), generated(3_000, 17)),
        ("random".to_string(), random_events(411, 500)),
    ] {
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let cut = events.len() * 3 / 4;
        let before = ScoreState::build(model(), vec![], events[..cut].to_vec());
        let latest = before.latest_time().unwrap();
        let mut kept = Default::default();
        let times = spread(&events[..cut]);
        check_reads(&before, &times, &mut kept, |w, t| w.span().covers(t), &what);
        let after = ScoreState::build(model(), vec![], events);
        let (compared, reused) = check_reads(
            &after,
            &times,
            &mut kept,
            |w, t| w.span().covers(t) && (w.span().until.is_some() || t < latest),
            &format!("{what}, after more events"),
        );
        assert!(compared > 100, "{what}: only {compared} reads compared");
        assert!(reused > 0, "{what}: no walk reused");
    }
}

/// Through the server: a relationship read keeps its walk (`engine/reads.rs`);
/// a follow folded in place afterwards, earlier than the read's time,
/// changes the walk there, and the next read at that time must be the
/// answer a fresh start on the same log gives, not one from the kept walk.
#[test]
fn a_read_after_a_follow_folded_in_place_is_what_a_fresh_start_answers() {
    use serde_json::json;

    use crate::support::Server;

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let events = [
        json!({"id": "r1", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "fan", "brand": "b", "amount": 40}),
        json!({"id": "r2", "type": "endorsement", "time": "2026-10-02T00:00:00Z", "person": "star", "brand": "b", "strength": 0.8}),
        json!({"id": "r3", "type": "post", "time": "2026-10-03T00:00:00Z", "person": "star", "brand": "c", "sentiment": 0.9}),
        json!({"id": "r4", "type": "purchase", "time": "2026-10-04T00:00:00Z", "person": "star", "brand": "b", "amount": 300}),
    ];
    let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    assert_eq!(s.post_ndjson(&lines.join("\n")).status, 200);
    let path = "/v1/relationships/fan/b?at=2026-11-01T00:00:00Z";
    let before = s.get(path);
    assert_eq!(before.status, 200, "{}", before.body);

    let follow = json!({"id": "r5", "type": "follow", "time": "2026-10-20T00:00:00Z", "person": "fan", "target": "star"});
    assert_eq!(s.post_ndjson(&follow.to_string()).status, 200);
    let after = s.get(path);
    assert_eq!(after.status, 200, "{}", after.body);
    assert_ne!(
        after.body["score"], before.body["score"],
        "the follow must reach the read (the star's purchase spills over)"
    );

    let dir_path = s.kill();
    let fresh = Server::start(&dir_path, &[]);
    let again = fresh.get(path);
    for field in [
        "score",
        "raw",
        "components",
        "trend",
        "event_count",
        "contributions",
    ] {
        assert_eq!(
            after.body[field], again.body[field],
            "{field}: the read after the follow differs from a fresh start's"
        );
    }
}

/// Regression (red team, on a merge that folded late events in place
/// without a new generation): walks kept for times inside a closed span
/// (cat follows bob from 10-02 to 10-10) or an open one before the latest
/// event served stale scores after a late event changed that span (cat
/// follows dan at 10-06: warm 51.45, fresh 51.65). Every late event, of
/// every type, leaves reads equal to a fresh start's.
#[test]
fn reads_after_a_late_event_inside_a_kept_walks_span_are_a_fresh_starts() {
    use serde_json::json;

    use crate::support::{Server, comparable};

    let base = json!([
        {"id": "c1", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "bob", "brand": "acme", "amount": 80},
        {"id": "c2", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "dan", "brand": "acme", "amount": 250},
        {"id": "c3", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "cat", "brand": "acme", "amount": 5},
        {"id": "c4", "type": "follow", "time": "2026-10-02T00:00:00Z", "person": "cat", "target": "bob"},
        {"id": "c5", "type": "unfollow", "time": "2026-10-10T00:00:00Z", "person": "cat", "target": "bob"},
        {"id": "c6", "type": "purchase", "time": "2026-10-20T00:00:00Z", "person": "eve", "brand": "acme", "amount": 10},
    ]);
    let late = [
        json!({"id": "l1", "type": "follow", "time": "2026-10-06T00:00:00Z", "person": "cat", "target": "dan"}),
        json!({"id": "l2", "type": "consent", "time": "2026-10-06T00:00:00Z", "person": "bob", "granted": false}),
        json!({"id": "l3", "type": "endorsement", "time": "2026-10-06T00:00:00Z", "person": "dan", "brand": "acme", "strength": 1.0}),
        json!({"id": "l4", "type": "follow", "time": "2026-10-11T00:00:00Z", "person": "cat", "target": "dan"}),
        json!({"id": "l5", "type": "unfollow", "time": "2026-10-05T00:00:00Z", "person": "cat", "target": "bob"}),
        json!({"id": "l6", "type": "audience", "time": "2026-10-05T00:00:00Z", "person": "bob", "followers": 50000}),
    ];
    let times = [
        "2026-10-07T12:00:00Z",
        "2026-10-09T12:00:00Z",
        "2026-10-12T12:00:00Z",
    ];
    let read = |s: &Server| -> Vec<serde_json::Value> {
        times
            .iter()
            .flat_map(|at| {
                ["cat", "bob", "dan"]
                    .map(|p| comparable(s.get(&format!("/v1/relationships/{p}/acme?at={at}")).body))
            })
            .collect()
    };
    let mut wrong = Vec::new();
    for e in late {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(dir.path(), &[]);
        assert_eq!(s.post_json("/v1/events", &base).status, 200);
        read(&s);
        assert_eq!(s.post_json("/v1/events", &json!([e])).status, 200);
        let warm = read(&s);
        drop(s);
        let fresh = read(&Server::start(dir.path(), &[]));
        for (w, f) in warm.iter().zip(&fresh) {
            if w != f {
                wrong.push(format!("{}: warm {w} fresh {f}", e["id"]));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
