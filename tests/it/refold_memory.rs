//! Refolds take their tail from the fold thread's memory (task h55; issue
//! #11, items 1, 3, 4; `engine/refold.rs`): a real server, on both
//! backends, refolds late rounds from the events it kept, never reads the
//! store for them, and serves a fresh open's bits, through ties,
//! duplicates, registrations and erasures between late rounds, an atomic
//! request refused before a late round, and events a follower server on
//! PostgreSQL folded without being sent them.
//!
//! Each test also counts where every refold's tail came from: a memory
//! tail that missed an event the state holds, or held one it does not,
//! gives a refold of another event count, which the fold thread refuses
//! (`{source="mismatch"}`, then builds from the store); and an event that
//! entered the memory without being stored would be served, where a fresh
//! open does not serve it. Either fails here.

use serde_json::{Value, json};

use crate::pg::TestDb;
use crate::redteam2::{AT, caught_up, everything, ndjson, same};
use crate::redteam3::{run, steps};
use crate::support::Server;

const MEMORY: &str = "fusion_fold_refold_tails_total{source=\"memory\"}";
const STORE: &str = "fusion_fold_refold_tails_total{source=\"store\"}";
const MISMATCH: &str = "fusion_fold_refold_tails_total{source=\"mismatch\"}";
const FLAGS: [&str; 2] = ["--staleness", "0"];

/// Every refold of `s` took its tail from memory (at least `least`), none
/// read the store, none was refused as wrong.
fn refolded_from_memory(s: &Server, least: f64, what: &str) {
    let (memory, store, mismatch) = (s.metric(MEMORY), s.metric(STORE), s.metric(MISMATCH));
    let refolds = s.metric("fusion_fold_refolds_total");
    assert!(
        memory >= least,
        "{what}: premise, {memory} refolds from memory, {least} wanted"
    );
    assert_eq!(mismatch, 0.0, "{what}: a tail from memory was wrong");
    assert_eq!(store, 0.0, "{what}: a refold read the store");
    assert_eq!(memory, refolds, "{what}: every refold from memory");
}

/// Event `id` of day `day` (September 2026) at `hour`: a purchase, a
/// follow or a review among 9 people and 3 brands, by `i`.
fn event(id: &str, day: u32, hour: u32, i: u32) -> Value {
    let time = format!("2026-09-{day:02}T{hour:02}:00:00Z");
    let person = format!("p{}", i % 9);
    let brand = format!("b{}", (i / 3) % 3);
    match i % 3 {
        0 => json!({"id": id, "type": "purchase", "time": time,
            "person": person, "brand": brand, "amount": 10 + i % 7}),
        1 => json!({"id": id, "type": "follow", "time": time,
            "person": person, "target": format!("p{}", (i + 4) % 9)}),
        _ => json!({"id": id, "type": "review", "time": time,
            "person": person, "brand": brand, "rating": 1 + i % 5}),
    }
}

fn post(s: &Server, events: &[Value]) -> u64 {
    let r = s.post_ndjson(&ndjson(events));
    assert_eq!(r.status, 200, "{}", r.body);
    r.header("fusion-position")
        .expect("an ingest answer carries Fusion-Position")
        .parse()
        .unwrap()
}

/// `scenario` on a server on the embedded store, then on PostgreSQL: what
/// it serves (answered by `scenario`) is what a fresh open of the same log
/// serves (the whole log folded: snapshots removed, or a new server on the
/// database), with as many events.
fn on_both_backends(scenario: impl Fn(&Server) -> Value) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &FLAGS);
    let live = scenario(&s);
    let count = s.event_count();
    s.terminate();
    let _ = std::fs::remove_dir_all(dir.path().join("snapshots"));
    let fresh = Server::start(dir.path(), &FLAGS);
    caught_up(&fresh);
    assert_eq!(fresh.event_count(), count, "embedded");
    same(&live, &everything(&fresh), "embedded: a fresh open");

    let db = crate::pg_e2e::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_on_database(dir.path(), &db.url, &FLAGS);
    let live = scenario(&s);
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Server::start_on_database(fresh_dir.path(), &db.url, &FLAGS);
    caught_up(&fresh);
    assert_eq!(fresh.event_count(), s.event_count(), "postgres");
    same(&live, &everything(&fresh), "postgres: a fresh open");
}

/// Late rounds near and far, ties, duplicates, checkpoint origins,
/// registrations and erasures (red team h33's steps) on `s`: every
/// refold from memory.
fn late_rounds(s: &Server, seed: u64) -> Value {
    let acked = std::sync::Mutex::new(Vec::new());
    run(s, &steps(seed, 200, 560, 0.3), false, &acked);
    caught_up(s);
    refolded_from_memory(s, 20.0, &format!("seed {seed}"));
    everything(s)
}

#[test]
fn late_rounds_refold_from_memory_to_a_fresh_opens_bits() {
    on_both_backends(|s| late_rounds(s, 21));
    on_both_backends(|s| late_rounds(s, 22));
}

/// The events of days `days` at noon, ids `{prefix}{day}`.
fn days(prefix: &str, days: std::ops::Range<u32>) -> Vec<Value> {
    days.map(|d| event(&format!("{prefix}{d}"), d, 12, d))
        .collect()
}

/// An erasure between late rounds: the erased person's events, held in
/// memory for the refold before it, never come back through the refold
/// after it (the erasure builds whole, and the memory starts over).
fn erasure_between_late_rounds(s: &Server) -> Value {
    post(s, &days("h", 1..11));
    post(s, &days("l", 20..24));
    // Late: refolded from the open checkpoint, p3's events in the tail.
    post(s, &[event("m15", 15, 6, 15)]);
    let before = s.get(&format!("/v1/relationships/p3/b1?at={AT}"));
    assert_eq!(before.status, 200, "premise: {}", before.body);
    let r = s.delete("/v1/entities/p3");
    assert_eq!(r.status, 200, "{}", r.body);
    // After the erasure's build: later events, then late ones among them
    // (none names p3), then duplicates of both with another late one.
    post(s, &days("n", 25..30));
    let late = [event("m26", 26, 6, 7), event("m27", 27, 6, 11)];
    post(s, &late);
    let again = [
        late[0].clone(),
        event("n27", 27, 12, 27),
        event("m28", 28, 6, 28),
    ];
    post(s, &again);
    caught_up(s);
    refolded_from_memory(s, 3.0, "erasure");
    for path in [
        format!("/v1/relationships/p3/b1?at={AT}"),
        "/v1/entities/p3/events".to_string(),
    ] {
        assert_eq!(s.get(&path).status, 404, "{path}: the erased came back");
    }
    everything(s)
}

#[test]
fn an_erased_persons_events_do_not_come_back_through_a_refold_from_memory() {
    on_both_backends(erasure_between_late_rounds);
}

/// An atomic request refused by the store (one of its ids is stored with
/// other content), then a late round: the refused request's new event,
/// later than everything, was never stored, so it is in no tail.
fn atomic_refused_then_late(s: &Server) -> Value {
    post(s, &days("h", 1..11));
    post(s, &days("l", 20..24));
    let mut conflicting = event("h3", 3, 12, 3);
    conflicting["amount"] = json!(999);
    let body = json!([
        {"id": "ghost-1", "type": "purchase", "time": "2026-09-28T12:00:00Z",
         "person": "ghost", "brand": "b0", "amount": 5},
        conflicting
    ]);
    let count = s.event_count();
    let r = s.post(
        "/v1/events?atomic=true",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(s.event_count(), count, "the refused request stored nothing");
    post(s, &[event("m15", 15, 6, 15)]);
    post(s, &[event("m22", 22, 6, 22), event("l25", 25, 12, 25)]);
    caught_up(s);
    refolded_from_memory(s, 2.0, "atomic");
    assert_eq!(s.event_count(), count + 3);
    for path in [
        format!("/v1/relationships/ghost/b0?at={AT}"),
        "/v1/entities/ghost/events".to_string(),
    ] {
        assert_eq!(
            s.get(&path).status,
            404,
            "{path}: a refused event is served"
        );
    }
    everything(s)
}

#[test]
fn an_atomic_request_refused_then_a_late_round_folds_only_what_is_stored() {
    on_both_backends(atomic_refused_then_late);
}

/// Waits until `s` has folded through `position` (a read that waits on it).
fn reached(s: &Server, position: u64) {
    let r = s.get(&format!(
        "/v1/relationships/p0/b0?at={AT}&min_position={position}&wait=30"
    ));
    assert_eq!(r.status, 200, "position {position} not reached: {}", r.body);
}

/// Two servers on one database: B refolds late rounds whose tails hold
/// events A was sent and B folded by following the log. B's memory has
/// them (a tail without them would refold to fewer events); B, A and a
/// fresh open serve the same bits.
#[test]
fn a_followers_refolds_from_memory_hold_the_events_other_servers_stored() {
    let db: TestDb = crate::pg_e2e::fresh_db();
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_on_database(da.path(), &db.url, &FLAGS);
    let b = Server::start_on_database(db_dir.path(), &db.url, &FLAGS);
    let p = post(&a, &days("h", 1..11));
    reached(&b, p);
    post(&b, &days("l", 20..23));
    let p = post(&a, &days("a", 23..27));
    reached(&b, p);
    // Late on B: the tails hold A's days 23 to 26, followed, not sent.
    post(&b, &[event("m15", 15, 6, 15)]);
    post(&b, &[event("m24", 24, 6, 24), event("b28", 28, 12, 28)]);
    let p = post(&a, &[event("a29", 29, 12, 29), event("a25", 25, 6, 25)]);
    reached(&b, p);
    let p = post(&b, &[event("m25", 25, 8, 8)]);
    caught_up(&b);
    refolded_from_memory(&b, 3.0, "follower");
    reached(&a, p);
    caught_up(&a);
    let on_b = everything(&b);
    same(&on_b, &everything(&a), "the other server");
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Server::start_on_database(fresh_dir.path(), &db.url, &FLAGS);
    caught_up(&fresh);
    assert_eq!(fresh.event_count(), b.event_count());
    same(&on_b, &everything(&fresh), "a fresh open");
}
