//! What the relationship read keeps between reads (issue #11, item 2: a
//! read must not cost a full walk, nor a store read for its reasons): the
//! engine's walks and reasons' events (`engine/reads.rs`) and the HTTP
//! answer cache (`http::cache::ReadCache`). A read served from them is the
//! bits a fresh engine computes, at several times, after events folded in
//! place, a late event (a refold) and an erasure; an erased person's
//! cached answer is never served.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::{EntityId, Event, Role};
use fusion::engine::Engine;
use fusion::score::ScoringModel;
use fusion::store::EmbeddedStore;

use crate::relspace::generated;
use crate::support::Server;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// An engine on a fresh embedded store holding `events`, submitted in
/// batches of `batch` (its caches empty).
pub(crate) async fn engine_of(
    dir: &std::path::Path,
    events: &[Event],
    batch: usize,
    now: DateTime<Utc>,
) -> Engine<EmbeddedStore> {
    let engine = Engine::open(EmbeddedStore::open(dir).unwrap(), model())
        .await
        .unwrap();
    submit(&engine, events, batch, now).await;
    engine
}

pub(crate) async fn submit(
    engine: &Engine<EmbeddedStore>,
    events: &[Event],
    batch: usize,
    now: DateTime<Utc>,
) {
    for chunk in events.chunks(batch) {
        let numbered = chunk.iter().cloned().enumerate().collect();
        let report = engine
            .submit(numbered, Vec::new(), false, now)
            .await
            .unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
}

/// Every answer of `pairs` at `times` as JSON text (the shortest text that
/// reads back to the same bits), `None` for none.
pub(crate) async fn answers(
    engine: &Engine<EmbeddedStore>,
    pairs: &[(EntityId, EntityId)],
    times: &[DateTime<Utc>],
) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for (p, b) in pairs {
        for &at in times {
            let answer = engine.relationship(p, b, at).await.unwrap();
            out.push(answer.map(|(e, trend)| serde_json::to_string(&(e, trend)).unwrap()));
        }
    }
    out
}

/// The (person, brand) pairs a stream's events name, first ones first.
pub(crate) fn pairs_of(events: &[Event], n: usize) -> Vec<(EntityId, EntityId)> {
    let mut pairs: Vec<(EntityId, EntityId)> = Vec::new();
    for e in events {
        let refs = e.references();
        let person = refs
            .iter()
            .find(|(_, r)| matches!(r, Role::Person | Role::Influencer));
        let brand = refs.iter().find(|(_, r)| *r == Role::Brand);
        if let (Some((p, _)), Some((b, _))) = (person, brand) {
            let pair = ((*p).clone(), (*b).clone());
            if !pairs.contains(&pair) {
                pairs.push(pair);
                if pairs.len() == n {
                    break;
                }
            }
        }
    }
    pairs
}

/// The answers of one engine that has read before (its caches full of
/// walks and reasons of earlier states) against a fresh engine's on the
/// same events, after each change; the second read of each (pair, time)
/// on the same state is the first's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_served_from_the_engines_caches_is_a_fresh_engines_to_the_bit() {
    let mut events = generated(3_000, 29);
    events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    let first = events.first().unwrap().time;
    let last = events.last().unwrap().time;
    let now = last + Duration::days(60);
    // The head, then events after all of it (folded in place), then late
    // ones from the middle of the head (a refold).
    let cut = events.len() * 2 / 3;
    let mut late: Vec<Event> = Vec::new();
    let mut head: Vec<Event> = Vec::new();
    for (i, e) in events[..cut].iter().enumerate() {
        if i % 29 == 7 && e.time > first + (last - first) / 2 {
            late.push(e.clone());
        } else {
            head.push(e.clone());
        }
    }
    let tail = events[cut..].to_vec();
    let pairs = pairs_of(&events, 40);
    let mid = first + (last - first) / 2;
    let times = [
        last + Duration::days(3),
        last + Duration::days(3) + Duration::seconds(1),
        last,
        mid,
        mid + Duration::seconds(1),
    ];

    let dir = tempfile::tempdir().unwrap();
    let kept = engine_of(dir.path(), &head, 500, now).await;
    let mut so_far = head.clone();
    let erased = pairs[0].0.clone();
    let mut compared = 0;
    for step in ["head", "tail", "late", "erasure"] {
        match step {
            "tail" => {
                submit(&kept, &tail, 97, now).await;
                so_far.extend(tail.iter().cloned());
            }
            "late" => {
                submit(&kept, &late, 13, now).await;
                so_far.extend(late.iter().cloned());
            }
            "erasure" => {
                kept.erase(&erased).await.unwrap();
            }
            _ => {}
        }
        let once = answers(&kept, &pairs, &times).await;
        let twice = answers(&kept, &pairs, &times).await;
        assert_eq!(
            once, twice,
            "{step}: a second read on the same state differs"
        );
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = engine_of(fresh_dir.path(), &so_far, 1_000, now).await;
        if step == "erasure" {
            fresh.erase(&erased).await.unwrap();
        }
        let expected = answers(&fresh, &pairs, &times).await;
        for (i, (got, want)) in once.iter().zip(&expected).enumerate() {
            let (p, b) = &pairs[i / times.len()];
            let at = times[i % times.len()];
            assert_eq!(got, want, "{step}: {p} - {b} at {at}");
        }
        compared += expected.iter().flatten().count();
        if step == "erasure" {
            for (p, b) in pairs.iter().filter(|(p, _)| *p == erased) {
                for &at in &times {
                    let answer = kept.relationship(p, b, at).await.unwrap();
                    assert!(
                        answer.is_none(),
                        "{p} - {b} at {at}: read after the erasure"
                    );
                }
            }
        }
    }
    assert!(compared > 400, "only {compared} answers compared");
}

/// Regression guard for the answer cache: an answer kept for a person
/// (read twice, so the second came from the cache) is not served once
/// the person is erased, at the same `at`.
#[test]
fn an_erased_persons_cached_answer_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let path = "/v1/relationships/fan5/bistro?at=2026-11-20T00:00:00Z";
    let first = s.get(path);
    assert_eq!(first.status, 200, "{}", first.body);
    let again = s.get(path);
    assert_eq!(again.status, 200);
    assert_eq!(first.body, again.body);
    assert_eq!(s.delete("/v1/entities/fan5").status, 200);
    let after = s.get(path);
    assert_eq!(after.status, 404, "{}", after.body);
    assert!(
        !after.body.to_string().contains("story-"),
        "no reason of the erased person's is served: {}",
        after.body
    );
}
