//! The change feed's ids through changes of the log's context (red team
//! h33, finding 3; `store` module docs): a registration or an erasure takes
//! a log position of its own, so what it moves is published after every id
//! served before it, on both backends, and a restart neither publishes
//! lower ids nor lets a client that has not seen an erasure resume past it.

use std::path::Path;

use serde_json::{Value, json};

use crate::feed::{Sse, Stream};
use crate::pg_e2e::fresh_db;
use crate::redteam2::{caught_up, ndjson};
use crate::support::Server;

fn minute(m: u32) -> String {
    format!("2026-09-01T{:02}:{:02}:00Z", m / 60, m % 60)
}

/// The answer's `Fusion-Position`.
fn position(r: &crate::support::Reply) -> u64 {
    r.header("fusion-position")
        .expect("every answer carries Fusion-Position")
        .parse()
        .unwrap()
}

/// The changes a subscriber reads before the change of `person`'s
/// relationship (a sentinel posted last), and that change.
fn until(feed: &mut Stream, person: &str) -> (Vec<Sse>, Sse) {
    let mut changes = Vec::new();
    loop {
        let e = feed.next().expect("the feed ended");
        assert_eq!(e.event, "change", "{e:?}");
        if e.data["person"] == person {
            return (changes, e);
        }
        changes.push(e);
    }
}

fn at(e: &Sse) -> u64 {
    e.data["position"].as_u64().unwrap()
}

/// Ids never repeat nor go back, and a change's position is never below
/// one published before it.
fn strictly_in_order(changes: &[Sse], what: &str) {
    let (mut last_id, mut last_at) = (None, 0u64);
    for (n, e) in changes.iter().enumerate() {
        assert!(
            at(e) >= last_at,
            "{what}, change {n} at {} after {last_at}",
            at(e)
        );
        last_at = at(e);
        if let Some(id) = &e.id {
            let id: u64 = id.parse().unwrap();
            assert!(
                last_id.is_none_or(|l| id > l),
                "{what}, change {n}: id {id} after {last_id:?}: {:?}",
                e.data
            );
            last_id = Some(id);
        }
    }
}

/// Purchases of p0..p3 at b0; p9, followed by all of them, reviews b0 and
/// posts about it: erasing p9 moves them.
fn head() -> Vec<Value> {
    let mut head: Vec<Value> = (0..40)
        .map(|i| {
            json!({"id": format!("a{i}"), "type": "purchase", "time": minute(i),
            "person": format!("p{}", i % 4), "brand": "b0", "amount": 20 + i})
        })
        .collect();
    head.push(json!({"id": "r9", "type": "review", "time": minute(41),
        "person": "p9", "brand": "b0", "rating": 5}));
    // A post's reach is the poster's registered audience.
    head.push(json!({"id": "t9", "type": "post", "time": minute(41),
        "person": "p9", "brand": "b0", "sentiment": 0.9, "text": "b0 is great"}));
    for k in 0..4 {
        head.push(
            json!({"id": format!("f{k}"), "type": "follow", "time": minute(42),
            "person": format!("p{k}"), "target": "p9"}),
        );
    }
    head
}

/// p9's last purchase: the latest event of the log.
fn last() -> Value {
    json!({"id": "last", "type": "purchase", "time": minute(50),
        "person": "p9", "brand": "b0", "amount": 900})
}

fn sentinel() -> Value {
    json!({"id": "sentinel", "type": "purchase",
        "time": minute(60), "person": "zz", "brand": "bz", "amount": 500})
}

/// Regression (red team h33, finding 3, `scripts/redteam/feed_erasure.rs`
/// before): an erasure had no log position, and its rebuild published its
/// moves at the largest position left in the log; when the erased person's
/// events held the largest ones, the feed's id went back (45, then 39), so
/// a client resuming with the id of p9's last purchase never learnt that
/// erasing p9 moved p0..p3 (a registration, which changes how p9's post
/// scores, had the same fault). Then, after a restart, the feed's floor was the
/// largest event left: a client whose last id was the erased sentinel's
/// resumed without a reset, past an erasure it never saw.
fn an_erasure_of_the_latest_events_person_publishes_after_every_id(
    dir: &Path,
    start: &dyn Fn(&Path) -> Server,
    what: &str,
) {
    let s = start(dir);
    let r = s.put_json("/v1/entities/p9", &json!({"kind": "influencer"}));
    assert!(r.status < 300, "{}", r.body);
    assert_eq!(s.post_ndjson(&ndjson(&head())).status, 200);
    caught_up(&s);
    let mut feed = Stream::open(&s, "", &[]);
    assert_eq!(s.post_ndjson(&ndjson(&[last()])).status, 200);
    caught_up(&s);
    // A registration changes how p9's events score: it takes a position.
    let r = s.put_json(
        "/v1/entities/p9",
        &json!({"kind": "influencer", "followers": 2_000_000}),
    );
    assert!(r.status < 300, "{}", r.body);
    let registered = position(&r);
    caught_up(&s);
    let r = s.delete("/v1/entities/p9");
    assert!(r.status < 300, "{}", r.body);
    let erased = position(&r);
    caught_up(&s);
    assert_eq!(s.post_ndjson(&ndjson(&[sentinel()])).status, 200);
    let (mut changes, sentinel) = until(&mut feed, "zz");
    changes.push(sentinel.clone());
    strictly_in_order(&changes, what);
    let bought = changes
        .iter()
        .find(|e| e.data["cause"]["event"] == "last")
        .unwrap_or_else(|| panic!("{what}: p9's last purchase published nothing"));
    let bought = at(bought);
    let registration: Vec<&Sse> = changes.iter().filter(|e| at(e) == registered - 1).collect();
    assert!(
        !registration.is_empty(),
        "{what}: p9's audience moved nothing: {changes:?}"
    );
    let moved: Vec<&Sse> = changes
        .iter()
        .filter(|e| e.data["person"] != "p9" && e.data["delta"].as_f64().unwrap() < 0.0)
        .collect();
    assert!(
        !moved.is_empty(),
        "{what}: erasing p9 moved nobody: {changes:?}"
    );
    for e in &moved {
        assert!(
            at(e) > bought,
            "{what}: the erasure's move {:?} at or before {bought}",
            e.data
        );
        assert!(at(e) < erased, "{what}: {:?} not within {erased}", e.data);
    }
    // A client that had read up to p9's last purchase learns the erasure.
    let mut resumed = Stream::open(&s, "", &[("Last-Event-ID", &bought.to_string())]);
    let (again, _) = until(&mut resumed, "zz");
    for e in &registration {
        assert!(at(e) > bought, "{what}: {:?} at or before {bought}", e.data);
    }
    // (The window forgets p9's own changes with p9.)
    for e in &moved {
        assert!(
            again.iter().any(|a| a.data == e.data),
            "{what}: resuming after {bought} misses {:?}",
            e.data
        );
    }

    // Erasing the sentinel's person (the latest event), then a restart.
    let r = s.delete("/v1/entities/zz");
    assert!(r.status < 300, "{}", r.body);
    let erased_zz = position(&r);
    assert!(erased_zz > erased, "{what}: {erased_zz} after {erased}");
    s.terminate();
    let s = start(dir);
    caught_up(&s);
    let r = s.get("/v1/brands");
    assert!(
        position(&r) >= erased_zz,
        "{what}: a restart answers {} after {erased_zz} was answered",
        position(&r)
    );
    // A client whose last id is the sentinel's did not see its erasure:
    // it cannot resume past it.
    let seen = sentinel
        .id
        .clone()
        .expect("the sentinel's change has an id");
    let mut past = Stream::open(&s, "", &[("Last-Event-ID", &seen)]);
    let e = past.next().expect("a reset");
    assert_eq!(e.event, "reset", "{what}: {e:?}");
    // One that has everything resumes, and later changes come after.
    let mut fresh = Stream::open(&s, "", &[("Last-Event-ID", &(erased_zz - 1).to_string())]);
    let after = json!({"id": "after", "type": "purchase", "time": minute(70),
        "person": "yy", "brand": "by", "amount": 500});
    assert_eq!(s.post_ndjson(&ndjson(&[after])).status, 200);
    let e = fresh.next().expect("a change");
    assert_eq!(e.event, "change", "{what}: {e:?}");
    assert_eq!(e.data["cause"]["event"], "after");
    assert!(at(&e) >= erased_zz, "{what}: {} after {erased_zz}", at(&e));
}

#[test]
fn an_erasure_of_the_latest_events_person_publishes_after_every_id_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    an_erasure_of_the_latest_events_person_publishes_after_every_id(
        dir.path(),
        &|d| Server::start(d, &["--staleness", "0"]),
        "embedded",
    );
}

#[test]
fn an_erasure_of_the_latest_events_person_publishes_after_every_id_on_postgres() {
    let db = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    an_erasure_of_the_latest_events_person_publishes_after_every_id(
        dir.path(),
        &|d| Server::start_on_database(d, &db.url, &["--staleness", "0"]),
        "postgres",
    );
}

/// Positions mean the same on every server of one database: an erasure
/// made on one server is published by another's feed at the erasure's own
/// position, after the erased person's last purchase (before, at the
/// largest event position left: lower than ids that feed had served).
#[test]
fn an_erasure_on_one_server_is_published_at_its_position_by_the_other() {
    let db = fresh_db();
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::start_on_database(da.path(), &db.url, &["--staleness", "0"]);
    let b = Server::start_on_database(db_dir.path(), &db.url, &["--staleness", "0"]);
    let r = a.put_json("/v1/entities/p9", &json!({"kind": "influencer"}));
    assert!(r.status < 300, "{}", r.body);
    let r = a.post_ndjson(&ndjson(&head()));
    assert_eq!(r.status, 200);
    let reached = |s: &Server, p: u64| {
        let r = s.get(&format!("/healthz?min_position={p}&wait=30"));
        assert_eq!(r.status, 200, "position {p}: {}", r.body);
    };
    reached(&b, position(&r));
    caught_up(&b);
    let mut feed = Stream::open(&b, "", &[]);
    let r = a.post_ndjson(&ndjson(&[last()]));
    assert_eq!(r.status, 200);
    reached(&b, position(&r));
    caught_up(&b);
    let r = a.delete("/v1/entities/p9");
    assert!(r.status < 300, "{}", r.body);
    let erased = position(&r);
    // The other server folds the erasure before the sentinel is stored:
    // its rebuild for another server's erasure holds every event stored
    // by then (`follow.rs`, "Context"), so under load (red team h50,
    // item 5: failed twice at load ~29, "position 49 ... not within 49")
    // it also held the sentinel and published the erasure's moves at the
    // sentinel's position, as the contract allows ("at or after"). Server
    // A's answered position did include its erasure.
    reached(&b, erased);
    let r = a.post_ndjson(&ndjson(&[sentinel()]));
    assert_eq!(r.status, 200);
    reached(&b, position(&r));
    let (mut changes, sentinel) = until(&mut feed, "zz");
    changes.push(sentinel);
    strictly_in_order(&changes, "the other server");
    let bought = changes
        .iter()
        .find(|e| e.data["cause"]["event"] == "last")
        .map(at)
        .expect("p9's last purchase published");
    let moved: Vec<&Sse> = changes
        .iter()
        .filter(|e| e.data["person"] != "p9" && e.data["delta"].as_f64().unwrap() < 0.0)
        .collect();
    assert!(!moved.is_empty(), "erasing p9 moved nobody: {changes:?}");
    for e in moved {
        assert!(at(e) > bought, "{:?} at or before {bought}", e.data);
        assert!(at(e) < erased, "{:?} not within {erased}", e.data);
    }
}
