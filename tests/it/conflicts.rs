//! Same id, different content (issue #9, item 4), through real `fusion
//! serve` processes on both backends: a conflict is reported on `id`, an
//! identical re-send stays a duplicate, and the served state only ever
//! folds what the store holds, so it is what a restart rebuilds.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::pg::TestDb;
use crate::support::Server;

const IDS: usize = 900;
const BATCH: usize = 30;
const AT: &str = "2026-11-20T00:00:00Z";

const DUP_ID_DIFFERENT_PAYLOAD: &str =
    include_str!("../../fixtures/field/02-dup-id-different-payload.ndjson");

/// Client `client`'s version of event `i`: the two clients send the same
/// ids with different content (other type, people, times).
fn event(client: usize, i: usize) -> Value {
    let id = format!("c-{i}");
    let brand = format!("b{}", i % 5);
    let time = format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 10, i % 24, i % 60);
    if client == 0 {
        json!({"id": id, "type": "purchase", "time": time, "person": format!("p{}", i % 30),
               "brand": brand, "amount": 10 + i})
    } else {
        json!({"id": id, "type": "post", "time": time, "person": format!("q{}", i % 30),
               "brand": brand, "sentiment": -0.5})
    }
}

/// Everything a reader sees that depends on which copy was folded: every
/// relationship's answer at `AT` and every entity's timeline.
fn served(s: &Server) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let brands: Vec<String> = (0..5).map(|b| format!("b{b}")).collect();
    let people: Vec<String> = (0..30)
        .flat_map(|i| [format!("p{i}"), format!("q{i}")])
        .collect();
    for p in &people {
        for b in &brands {
            let path = format!("/v1/relationships/{p}/{b}?at={AT}");
            let r = s.get(&path);
            assert!(matches!(r.status, 200 | 404), "{path}: {}", r.body);
            out.insert(path, crate::support::comparable(r.body));
        }
    }
    for id in people.iter().chain(&brands) {
        let path = format!("/v1/entities/{id}/events?limit=1000");
        let r = s.get(&path);
        assert!(matches!(r.status, 200 | 404), "{path}: {}", r.body);
        out.insert(path, crate::support::comparable(r.body));
    }
    out
}

/// Regression: two clients posting the same ids with different payloads at
/// once: each id was counted once, but the served state sometimes folded
/// the copy the store rejected (16 of 900 ids), so scores changed at the
/// next restart. Now one copy is accepted and the other is a conflict, and
/// the served state is bit for bit what a restart gives.
fn concurrent_clients_with_different_payloads(start: impl Fn() -> Server) {
    let s = start();
    let answers: Vec<Vec<(usize, Value)>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..2)
            .map(|client| {
                let s = &s;
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for first in (0..IDS).step_by(BATCH) {
                        let body: String = (first..first + BATCH)
                            .map(|i| event(client, i).to_string() + "\n")
                            .collect();
                        let r = s.post_ndjson(&body);
                        assert_eq!(r.status, 200, "{}", r.body);
                        answers.push((first, r.body));
                    }
                    answers
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut conflicts = [BTreeSet::new(), BTreeSet::new()];
    for (client, answers) in answers.iter().enumerate() {
        for (first, body) in answers {
            assert_eq!(body["duplicates"], 0, "{body}");
            let rejected = body["rejected"].as_array().unwrap();
            assert_eq!(
                body["accepted"].as_u64().unwrap() as usize + rejected.len(),
                BATCH,
                "{body}"
            );
            for r in rejected {
                assert_eq!(r["errors"][0]["field"], "id", "{r}");
                let message = r["errors"][0]["message"].as_str().unwrap();
                assert!(
                    message.contains("conflicts with the stored event"),
                    "{message}"
                );
                let index = r["index"].as_u64().unwrap() as usize;
                assert_eq!(r["id"], format!("c-{}", first + index));
                conflicts[client].insert(first + index);
            }
        }
    }
    // Each id accepted exactly once, a conflict for the other client.
    assert!(conflicts[0].is_disjoint(&conflicts[1]));
    assert_eq!(conflicts[0].len() + conflicts[1].len(), IDS);
    assert_eq!(s.event_count(), IDS as u64);

    let before = served(&s);
    // Every timeline shows the stored (winning) copy of each of its events.
    for (path, body) in &before {
        if !path.contains("/events?") || body["items"].is_null() {
            continue;
        }
        for item in body["items"].as_array().unwrap() {
            let i: usize = item["id"].as_str().unwrap()[2..].parse().unwrap();
            // Client 0 won where client 1 got the conflict, and vice versa.
            let winner = if conflicts[1].contains(&i) { 0 } else { 1 };
            assert_eq!(item["type"], event(winner, i)["type"], "{path}: {item}");
        }
    }
    drop(s.kill());
    let s = start();
    assert_eq!(served(&s), before);
}

#[test]
fn concurrent_clients_with_different_payloads_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    concurrent_clients_with_different_payloads(|| Server::start(&path, &[]));
}

#[test]
fn concurrent_clients_with_different_payloads_on_postgres() {
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    concurrent_clients_with_different_payloads(|| Server::start_on_database(&path, &db.url, &[]));
}

/// Field case 02 over HTTP: the second line reuses an id with other
/// content: a conflict on `id`; an identical re-send of the first stays a
/// duplicate; one that differs only in `attributes` is a duplicate with a
/// warning.
#[test]
fn a_conflict_is_reported_on_id_and_an_identical_resend_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let r = s.post_ndjson(DUP_ID_DIFFERENT_PAYLOAD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 1);
    assert_eq!(r.body["duplicates"], 0);
    let rejected = &r.body["rejected"][0];
    assert_eq!(rejected["index"], 1);
    assert_eq!(rejected["id"], "dup-1");
    assert_eq!(rejected["errors"][0]["field"], "id");
    let first: Value =
        serde_json::from_str(DUP_ID_DIFFERENT_PAYLOAD.lines().next().unwrap()).unwrap();
    let r = s.post_json("/v1/events", &first);
    assert_eq!(r.body["duplicates"], 1, "{}", r.body);
    assert_eq!(r.body["rejected"], json!([]));
    assert_eq!(r.body["warnings"], json!([]));
    let mut resent = first.clone();
    resent["attributes"] = json!({"sent_at": "2026-11-03T00:00:00Z"});
    let r = s.post_json("/v1/events", &resent);
    assert_eq!(r.body["duplicates"], 1, "{}", r.body);
    assert_eq!(r.body["warnings"][0]["field"], "attributes", "{}", r.body);
    assert_eq!(r.body["warnings"][0]["id"], "dup-1");
    // atomic: a conflict refuses the whole request, nothing stored.
    let mut other = first.clone();
    other["amount"] = json!(21);
    let r = s.post(
        "/v1/events?atomic=true",
        "application/json",
        json!([
            {"id": "new-1", "type": "purchase", "time": "2026-11-01T10:00:00Z",
             "person": "carol", "brand": "acme", "amount": 5},
            other
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "id", "{}", r.body);
    assert_eq!(s.event_count(), 1);
    // The stored copy is the one served.
    let timeline = s.get("/v1/entities/carol/events");
    assert_eq!(timeline.body["items"][0]["type"], "purchase");
    assert_eq!(s.get("/v1/entities/dave/events").status, 404);
}
