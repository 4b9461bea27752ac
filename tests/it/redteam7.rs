//! Red team h50: the session's merged work (issue #11; tasks h46..h49)
//! through a real server: what a listing read at once from a shared
//! ranking may still show after an erasure or a consent withdrawal was
//! acknowledged. Owns only these checks; must not time anything.

use serde_json::{Value, json};

use crate::support::Server;

const T: &str = "2026-11-01T10:00:00Z";

fn bought(id: &str, person: &str) -> Value {
    json!({"id": id, "type": "purchase", "time": T, "person": person, "brand": "acme", "amount": 3})
}

/// The people a listing of acme's relationships names.
fn listed(s: &Server) -> Vec<String> {
    listed_at(s, None)
}

/// As [`listed`], asked at a log position (`min_position`) when one is
/// given: a listing without one may be answered by any shared ranking
/// within the staleness, such as the one the alert evaluator's first tick
/// built of the empty store while the purchases were posted.
fn listed_at(s: &Server, position: Option<&str>) -> Vec<String> {
    let path = match position {
        Some(p) => format!("/v1/brands/acme/relationships?min_position={p}"),
        None => "/v1/brands/acme/relationships".to_string(),
    };
    let r = s.get(&path);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["person"].as_str().unwrap().to_string())
        .collect()
}

/// A server whose ranking stays a minute (nothing rebuilds it meanwhile)
/// holding ann's and bob's purchases at acme (the two tests below), and
/// the purchases' acknowledged log position.
fn ann_and_bob_at_a_staleness_of_a_minute() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--staleness", "60"]);
    let r = s.post_json(
        "/v1/events",
        &json!([bought("a1", "ann"), bought("b1", "bob")]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let position = r.header("fusion-position").expect("a position").to_string();
    (dir, s, position)
}

/// A listing is answered at once from the shared ranking, whatever its
/// age (task h46), with a staleness long enough that nothing rebuilds it
/// meanwhile: an erased person must still never be listed once the
/// erasure was acknowledged (the erasure's rebuild makes the old ranking
/// one that may not answer, `lineage.rs`).
#[test]
fn an_erased_person_is_never_listed_after_the_erasure_was_acknowledged() {
    let (_dir, s, bought_at) = ann_and_bob_at_a_staleness_of_a_minute();
    let mut before = listed_at(&s, Some(&bought_at));
    before.sort();
    assert_eq!(before, ["ann", "bob"]);
    let r = s.delete("/v1/entities/ann");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(listed(&s), ["bob"], "an erased person listed");
    let summary = s.get("/v1/brands/acme");
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert_eq!(summary.body["relationships"], 1, "{}", summary.body);
}

/// As above for a consent withdrawal, an event folded in place (the old
/// ranking's generation only lacks it, so it may answer a read without a
/// position, within the staleness): a listing asked at the withdrawal's
/// acknowledged position (`min_position`, API.md) must not list the
/// person, however young the shared ranking is.
#[test]
fn a_listing_at_a_withdrawal_s_position_does_not_list_the_person() {
    let (_dir, s, bought_at) = ann_and_bob_at_a_staleness_of_a_minute();
    assert_eq!(listed_at(&s, Some(&bought_at)).len(), 2);
    let withdrawn = json!({"id": "w1", "type": "consent", "time": "2026-11-01T11:00:00Z",
        "person": "bob", "granted": false});
    let r = s.post_json("/v1/events", &json!([withdrawn]));
    assert_eq!(r.status, 200, "{}", r.body);
    let position = r.header("fusion-position").expect("a position").to_string();
    let r = s.get(&format!(
        "/v1/brands/acme/relationships?min_position={position}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let people: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["person"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["ann"], "a person who withdrew consent listed");
}

/// Relationship reads (`Derived::read_brief`, task h49) from 32 clients
/// in a loop, overlapping, while another client posts events one by one:
/// every acknowledgement comes (within a generous 10 s: a bound that
/// fails only on a writer starved by the readers, red team h50 finding 1,
/// whose exact interleaving `engine::tests::
/// brief_readers_back_to_back_do_not_starve_a_waiting_writer` pins), and
/// a read right after an acknowledgement reflects its event
/// (read-your-writes).
#[test]
fn relationship_readers_do_not_hold_off_acknowledgements_or_hide_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    // No per-address limit: every client here is one address.
    let s = Server::start(dir.path(), &["--rate-per-address", "0"]);
    let seed: Vec<Value> = (0..64)
        .map(|i| bought(&format!("s{i}"), &format!("p{i}")))
        .collect();
    let r = s.post_json("/v1/events", &Value::Array(seed));
    assert_eq!(r.status, 200, "{}", r.body);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for c in 0..32 {
            let (s, stop) = (&s, &stop);
            scope.spawn(move || {
                let mut i = c;
                while !stop.load(Ordering::SeqCst) {
                    let r = s.get(&format!("/v1/relationships/p{}/acme?at={T}", i % 64));
                    assert_eq!(r.status, 200, "{}", r.body);
                    i += 7;
                }
            });
        }
        let finish = || stop.store(true, Ordering::SeqCst);
        for n in 0..30 {
            let sent = Instant::now();
            let r = s.post_json(
                "/v1/events",
                &json!([bought(&format!("n{n}"), &format!("new{n}"))]),
            );
            let waited = sent.elapsed();
            if r.status != 200 || waited > Duration::from_secs(10) {
                finish();
                panic!(
                    "acknowledgement {n}: {} after {waited:?}: {}",
                    r.status, r.body
                );
            }
            let read = s.get(&format!("/v1/relationships/new{n}/acme?at={T}"));
            if read.status != 200 {
                finish();
                panic!("event {n} acknowledged but not read: {}", read.status);
            }
        }
        finish();
    });
}
