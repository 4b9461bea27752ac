//! Group commit under many concurrent requests (issue #11, item 4), through
//! real `fusion serve` processes on both backends: requests that arrive
//! together share a commit (each store's writer takes every waiting
//! request), so one request's conflict must refuse that request's event
//! alone, with which event, which field and why, and acknowledge the
//! others; ids sent twice at once are stored and folded once; and a kill
//! while 64 clients post single events loses no acknowledged one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::pg::TestDb;
use crate::support::Server;

fn purchase(id: &str, person: &str, amount: f64) -> Value {
    json!({"id": id, "type": "purchase", "time": "2026-11-15T12:00:00Z",
           "person": person, "brand": "knit", "amount": amount})
}

fn line(v: &Value) -> String {
    v.to_string() + "\n"
}

/// Requests sent at once (a barrier releases them together, so the
/// store's writer finds them waiting and commits them as one group, or a
/// few).
const AT_ONCE: usize = 49;
/// Of those, the first CONFLICTS resend a stored id with other content.
const CONFLICTS: usize = 4;
/// The next one is all-or-nothing: a new event and a conflicting one.
const ATOMIC: usize = CONFLICTS;

fn one_group_with_conflicts_and_duplicates(start: impl Fn() -> Server) {
    let s = start();
    let held: String = (0..CONFLICTS)
        .map(|i| line(&purchase(&format!("held-{i}"), "ann", 50.0)))
        .collect();
    let r = s.post_ndjson(&held);
    assert_eq!(r.body["accepted"], CONFLICTS, "{}", r.body);
    let before = s.event_count();
    let groups = |s: &Server| {
        let text = crate::ops::scrape(s);
        let m = |name| crate::ops::metric(&text, name, &[]);
        (
            m("fusion_commit_group_requests_count"),
            m("fusion_commit_group_requests_sum"),
        )
    };
    let (commits_before, requests_before) = groups(&s);

    let barrier = Barrier::new(AT_ONCE);
    let answers: Vec<(usize, u16, Value)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..AT_ONCE)
            .map(|k| {
                let (s, barrier) = (&s, &barrier);
                scope.spawn(move || {
                    let (path, body) = if k < CONFLICTS {
                        let id = format!("held-{k}");
                        ("/v1/events", line(&purchase(&id, "ann", 99.0)))
                    } else if k == ATOMIC {
                        let body = line(&purchase("atomic-new", "bob", 10.0))
                            + &line(&purchase("held-0", "bob", 10.0));
                        ("/v1/events?atomic=true", body)
                    } else {
                        // Two requests for each id, same content.
                        let id = format!("pair-{}", (k - ATOMIC - 1) / 2);
                        ("/v1/events", line(&purchase(&id, "cid", 20.0)))
                    };
                    barrier.wait();
                    let r = s.post(path, "application/x-ndjson", body.as_bytes());
                    (k, r.status, r.body)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });

    // The premise: requests sent at once shared commits (each store's
    // writer takes every request waiting).
    let (commits, requests) = groups(&s);
    assert!(
        requests - requests_before > commits - commits_before,
        "{AT_ONCE} requests sent at once were committed one at a time: \
         {} requests in {} commits",
        requests - requests_before,
        commits - commits_before
    );
    let mut pairs_accepted = std::collections::BTreeMap::<String, u64>::new();
    for (k, status, body) in &answers {
        let k = *k;
        if k < CONFLICTS {
            // Refused alone: which event (index, id), which field, why.
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["accepted"], 0, "{body}");
            let rejected = body["rejected"].as_array().unwrap();
            assert_eq!(rejected.len(), 1, "{body}");
            assert_eq!(rejected[0]["index"], 0, "{body}");
            assert_eq!(rejected[0]["id"], format!("held-{k}"), "{body}");
            assert_eq!(rejected[0]["errors"][0]["field"], "id", "{body}");
            let why = rejected[0]["errors"][0]["message"].as_str().unwrap();
            assert!(why.contains("conflicts with the stored event"), "{why}");
        } else if k == ATOMIC {
            // All or nothing: refused whole, the conflicting event named.
            assert_eq!(*status, 422, "{body}");
            assert!(body.to_string().contains("held-0"), "{body}");
        } else {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["rejected_count"], 0, "{body}");
            let (accepted, duplicates) = (
                body["accepted"].as_u64().unwrap(),
                body["duplicates"].as_u64().unwrap(),
            );
            assert_eq!(accepted + duplicates, 1, "{body}");
            let id = format!("pair-{}", (k - ATOMIC - 1) / 2);
            *pairs_accepted.entry(id).or_default() += accepted;
        }
    }
    let pairs = (AT_ONCE - ATOMIC - 1) / 2;
    assert_eq!(pairs_accepted.len(), pairs);
    for (id, accepted) in &pairs_accepted {
        assert_eq!(*accepted, 1, "{id}: stored once, reported new once");
    }
    // Folded once each, nothing of the refused requests.
    assert_eq!(s.event_count(), before + pairs as u64);
    for k in 0..CONFLICTS {
        let r = s.get(&format!("/v1/events/held-{k}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["amount"], 50.0, "the stored copy stays: {}", r.body);
    }
    assert_eq!(s.get("/v1/events/atomic-new").status, 404);
    // And that is what the store holds.
    drop(s.kill());
    let s = start();
    assert_eq!(s.event_count(), before + pairs as u64);
}

#[test]
fn a_conflict_in_a_group_commit_refuses_only_its_event_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    one_group_with_conflicts_and_duplicates(|| Server::start(&path, &[]));
}

#[test]
fn a_conflict_in_a_group_commit_refuses_only_its_event_on_postgres() {
    let db = runtime().block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    one_group_with_conflicts_and_duplicates(|| Server::start_on_database(&path, &db.url, &[]));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Clients posting one event per request, as the singles load.
const SINGLE_CLIENTS: usize = 64;
/// Acknowledged singles before the kill.
const ACKED_BEFORE_KILL: usize = 300;

/// 64 clients post single events until the server is killed (once
/// `ACKED_BEFORE_KILL` are acknowledged); after a restart every
/// acknowledged event is stored (posting it again is a duplicate) and the
/// state holds exactly what the store does. Answers the acknowledged ids.
fn singles_killed_mid_stream(start: impl Fn() -> Server) -> Vec<String> {
    let s = start();
    let acked = Mutex::new(Vec::<String>::new());
    let killed = AtomicBool::new(false);
    let endpoint = format!("{}/v1/events", s.base);
    std::thread::scope(|scope| {
        for c in 0..SINGLE_CLIENTS {
            let (acked, killed, endpoint) = (&acked, &killed, &endpoint);
            scope.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .into();
                for i in 0.. {
                    if killed.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = format!("s-{c}-{i}");
                    let body = line(&purchase(&id, &format!("p{c}"), 1.0 + i as f64));
                    let Ok(mut resp) = agent
                        .post(endpoint)
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes())
                    else {
                        return;
                    };
                    let Ok(text) = resp.body_mut().read_to_string() else {
                        return;
                    };
                    if resp.status() != 200 {
                        return;
                    }
                    let report: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(report["accepted"], 1, "{id}: {report}");
                    acked.lock().unwrap().push(id);
                }
            });
        }
        crate::pg_e2e::poll(
            "acknowledged singles before the kill",
            Duration::from_secs(120),
            || (acked.lock().unwrap().len() >= ACKED_BEFORE_KILL).then_some(()),
        );
        // SIGKILL with requests in flight; the clients' next requests
        // fail and they stop.
        killed.store(true, Ordering::SeqCst);
        drop(s.kill());
    });
    let acked: BTreeSet<String> = acked.into_inner().unwrap().into_iter().collect();
    let s = start();
    let stored = s.event_count();
    assert!(stored >= acked.len() as u64, "{stored} < {}", acked.len());
    for id in &acked {
        let r = s.get(&format!("/v1/events/{id}"));
        assert_eq!(r.status, 200, "acknowledged {id} was lost: {}", r.body);
    }
    acked.into_iter().collect()
}

#[test]
fn sigkill_among_64_single_event_clients_loses_no_acknowledged_event_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    singles_killed_mid_stream(|| Server::start(&path, &[]));
}

#[test]
fn sigkill_among_64_single_event_clients_loses_no_acknowledged_event_on_postgres() {
    let db = runtime().block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let acked = singles_killed_mid_stream(|| Server::start_on_database(&path, &db.url, &[]));
    // The database itself holds every acknowledged row.
    let sql = crate::pg_e2e::Sql::connect(&db.url);
    let found = sql.count("SELECT count(*) FROM events WHERE id = ANY($1)", &[&acked]);
    assert_eq!(found as usize, acked.len());
}
