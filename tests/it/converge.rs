//! Two `fusion serve` processes on one PostgreSQL database converge
//! (issue #11, item 4; `engine::follow`): what one is sent, the other
//! folds, through the same ordered path as its own writes. Reads wait on
//! log positions (`min_position`) with deadlines, never on time.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fusion::store::{AppendMode, EventStore, SharedLog};
use serde_json::{Value, json};

use crate::feed::Stream;
use crate::ops::{metric, scrape};
use crate::pg::TestDb;
use crate::pg_e2e::{fresh_db, poll};
use crate::support::{Server, bin};

/// Generous: the follower wakes on a notification within milliseconds;
/// this only bounds a failing test.
const WAIT_SECONDS: u32 = 30;

fn purchase(id: &str, person: &str, brand: &str, minute: u32, amount: f64) -> Value {
    json!({"id": id, "type": "purchase", "time": format!("2026-11-01T10:{minute:02}:00Z"),
           "person": person, "brand": brand, "amount": amount, "currency": "USD"})
}

/// Posts events; answers the answer's `Fusion-Position`.
fn post(s: &Server, events: &[Value]) -> u64 {
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let r = s.post_ndjson(&body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.header("fusion-position")
        .expect("an ingest answer carries Fusion-Position")
        .parse()
        .unwrap()
}

/// A relationship read once the server has folded through `position`.
fn read_at(s: &Server, person: &str, brand: &str, at: &str, position: u64) -> (u16, Value) {
    let r = s.get(&format!(
        "/v1/relationships/{person}/{brand}?at={at}&min_position={position}&wait={WAIT_SECONDS}"
    ));
    assert_ne!(r.status, 503, "position {position} not reached: {}", r.body);
    let reflects: u64 = r.header("fusion-position").unwrap().parse().unwrap();
    assert!(
        reflects >= position,
        "answered at {reflects}, asked {position}"
    );
    (r.status, crate::support::comparable(r.body))
}

fn pair(db: &TestDb) -> (tempfile::TempDir, Server, tempfile::TempDir, Server) {
    let (da, db_) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_on_database(da.path(), &db.url, &[]);
    let b = Server::start_on_database(db_.path(), &db.url, &[]);
    (da, a, db_, b)
}

#[test]
fn an_event_posted_to_one_server_is_read_on_the_other_at_its_position() {
    let db = fresh_db();
    let (_da, a, _db, b) = pair(&db);
    let at = "2026-11-02T00:00:00Z";
    let p = post(&a, &[purchase("a1", "ann", "acme", 1, 80.0)]);
    let (status, on_b) = read_at(&b, "ann", "acme", at, p);
    assert_eq!(status, 200, "{on_b}");
    assert!(on_b["score"].as_f64().unwrap() > 50.0, "{on_b}");
    assert_eq!(on_b, read_at(&a, "ann", "acme", at, p).1);
    // And the other way round, the position B gives past A's.
    let q = post(&b, &[purchase("b1", "bob", "acme", 2, 30.0)]);
    assert!(q > p, "{q} after {p}");
    let (status, on_a) = read_at(&a, "bob", "acme", at, q);
    assert_eq!(status, 200, "{on_a}");
    assert_eq!(on_a, read_at(&b, "bob", "acme", at, q).1);
}

#[test]
fn concurrent_posts_to_both_servers_converge_to_the_same_scores() {
    let db = fresh_db();
    let (_da, a, _db, b) = pair(&db);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let people = ["p0", "p1", "p2", "p3", "p4"];
    let brands = ["acme", "bistro"];
    // Four clients, two per server; later batches carry earlier times
    // (late events: the servers refold), and some ids are sent twice, to
    // both servers.
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let s = Arc::clone(if c % 2 == 0 { &a } else { &b });
            std::thread::spawn(move || {
                let mut highest = 0;
                for batch in 0..8u32 {
                    let events: Vec<Value> = (0..10u32)
                        .map(|i| {
                            let n = batch * 10 + i;
                            let id = if i == 0 {
                                format!("shared-{batch}")
                            } else {
                                format!("c{c}-{n}")
                            };
                            let minute = (59 - batch * 7 - i) % 60;
                            let (person, brand) =
                                (people[(n as usize + c) % 5], brands[i as usize % 2]);
                            purchase(&id, person, brand, minute, 10.0 + f64::from(n % 7) * 5.0)
                        })
                        .collect();
                    highest = highest.max(post(&s, &events));
                }
                highest
            })
        })
        .collect();
    let highest = clients
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap();
    let at = "2026-11-03T00:00:00Z";
    for person in people {
        for brand in brands {
            let on_a = read_at(&a, person, brand, at, highest);
            let on_b = read_at(&b, person, brand, at, highest);
            assert_eq!(on_a, on_b, "{person}-{brand}");
            if on_a.0 != 200 {
                continue;
            }
            // Bit-equal to a fold of the whole database by `fusion score`.
            let out = Command::new(bin())
                .args([
                    "score",
                    person,
                    brand,
                    "--at",
                    at,
                    "--json",
                    "--database-url",
                    &db.url,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                on_a.1["score"].as_f64().unwrap().to_bits(),
                cli["score"].as_f64().unwrap().to_bits(),
                "{person}-{brand}: served {}, fusion score {}",
                on_a.1["score"],
                cli["score"]
            );
        }
    }
}

#[test]
fn registrations_and_erasures_on_one_server_reach_the_other() {
    let db = fresh_db();
    let (_da, a, _db, b) = pair(&db);
    let at = "2026-11-02T00:00:00Z";
    let p = post(
        &a,
        &[
            purchase("e1", "eve", "acme", 1, 50.0),
            purchase("e2", "ann", "acme", 2, 50.0),
        ],
    );
    assert_eq!(read_at(&b, "eve", "acme", at, p).0, 200);

    let r = a.put_json(
        "/v1/entities/acme",
        &json!({"kind": "brand", "name": "Acme Corp"}),
    );
    assert!(r.status < 300, "{}", r.body);
    poll("the registration on B", Duration::from_secs(30), || {
        let r = b.get("/v1/entities/acme");
        (r.body.to_string().contains("Acme Corp")).then_some(())
    });

    let r = a.delete("/v1/entities/eve");
    assert_eq!(r.status, 200, "{}", r.body);
    poll("the erasure on B", Duration::from_secs(30), || {
        (b.get(&format!("/v1/relationships/eve/acme?at={at}")).status == 404).then_some(())
    });
    // The rest stays, and both servers agree on it.
    let (status, ann) = read_at(&b, "ann", "acme", at, p);
    assert_eq!(status, 200);
    assert_eq!(ann, read_at(&a, "ann", "acme", at, p).1);
    // B rebuilt once for each; A, which rebuilt for its own as it made
    // them, never for them again (they once came back to it as foreign:
    // its follower had not kept the epoch it had seen).
    let rebuilds = |s: &Server| metric(&scrape(s), "fusion_followed_rebuilds_total", &[]);
    assert_eq!(rebuilds(&b), 2.0);
    assert_eq!(rebuilds(&a), 0.0);
    let followed = metric(&scrape(&b), "fusion_followed_events_total", &[]);
    assert_eq!(followed, 2.0);
}

#[test]
fn the_change_feed_of_one_server_publishes_events_posted_to_the_other() {
    let db = fresh_db();
    let (_da, a, _db, b) = pair(&db);
    let mut feed = Stream::open(&b, "", &[]);
    assert_eq!(feed.status, 200);
    let p = post(&a, &[purchase("f1", "fay", "acme", 1, 60.0)]);
    let change = feed.next().expect("a change before the stream ends");
    assert_eq!(change.event, "change", "{change:?}");
    assert_eq!(change.data["cause"]["event"], "f1", "{change:?}");
    assert_eq!(change.data["person"], "fay");
    assert!(change.data["position"].as_u64().unwrap() < p);
}

#[test]
fn a_server_killed_and_restarted_catches_up_and_follows_again() {
    let db = fresh_db();
    let (_da, a, db_dir, b) = pair(&db);
    let at = "2026-11-02T00:00:00Z";
    post(&a, &[purchase("k1", "kim", "acme", 1, 40.0)]);
    b.kill();
    let p = post(&a, &[purchase("k2", "kim", "acme", 2, 40.0)]);
    let b = Server::start_on_database(db_dir.path(), &db.url, &[]);
    let (status, on_b) = read_at(&b, "kim", "acme", at, p);
    assert_eq!(status, 200);
    assert_eq!(on_b, read_at(&a, "kim", "acme", at, p).1);
    // Following resumes after the restart.
    let q = post(&a, &[purchase("k3", "kim", "acme", 3, 40.0)]);
    assert_eq!(
        read_at(&b, "kim", "acme", at, q),
        read_at(&a, "kim", "acme", at, q)
    );
}

/// Why `pos > last seen` misses nothing: positions are numbered and
/// committed under one row lock (`log_head`), so a reader that sees a
/// position has every lower one. Two stores (two servers) append
/// concurrently while a reader follows by `positions_after` its last
/// position; it must see every stored position, each once.
#[test]
fn following_by_position_misses_no_commit_of_concurrent_servers() {
    crate::pg::with_connected_stores(3, |_url, mut writers| async move {
        let follower = writers.pop().expect("three stores");
        let log = follower.shared_log();
        let appends: Vec<_> = writers
            .iter()
            .enumerate()
            .flat_map(|(w, store)| {
                (0..4).map(move |t| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for n in 0..25 {
                            let id = format!("w{w}-t{t}-{n}");
                            let appended = store
                                .append(
                                    vec![crate::store::purchase(&id, i64::from(n), "p", "b")],
                                    AppendMode::EachEvent,
                                )
                                .await
                                .unwrap();
                            assert_eq!(appended.accepted(), 1);
                        }
                    })
                })
            })
            .collect();
        let mut seen: Vec<u64> = Vec::new();
        let mut cursor = None;
        let done = |a: &Vec<tokio::task::JoinHandle<()>>| a.iter().all(|h| h.is_finished());
        loop {
            let finished = done(&appends);
            let positions = log.positions_after(cursor, 7).await.unwrap();
            if let Some(&last) = positions.last() {
                cursor = Some(last);
            }
            let empty = positions.is_empty();
            seen.extend(positions);
            if finished && empty {
                break;
            }
            tokio::task::yield_now().await;
        }
        for h in appends {
            h.await.unwrap();
        }
        let all = log.positions_after(None, 1_000).await.unwrap();
        assert_eq!(all.len(), 200);
        assert_eq!(seen, all, "the follower skipped or repeated positions");
    });
}
