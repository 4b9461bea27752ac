//! A round of more than `FOLD_SLICE` (1,000) events is folded in place a
//! slice at a time (`engine::fold_in_slices`). A brand named first as a
//! follow target (which makes a provisional person) and as a brand only in
//! a later slice was refused by that slice's fold (`appends_in_order`: the
//! event "fixes a provisional entity's kind"): a panic of the fold thread
//! in a debug build, and in a release build the slice's acknowledged events
//! not folded until a restart (task h60's suite run, through
//! `pg_e2e::sigkill_mid_ingest…`). One fold of the whole round gives the
//! brand its kind before any event is folded; the slices must too.

use serde_json::{Value, json};

use crate::redteam2::{caught_up, everything, ndjson, same};
use crate::support::Server;

const FLAGS: [&str; 2] = ["--staleness", "0"];

/// 1,200 events of one day, in one request: the first follows `b2` (not
/// yet known: a provisional person), the last 150 name `b2` as their
/// brand, after the first slice of 1,000.
fn round() -> Vec<Value> {
    (0..1_200u32)
        .map(|i| {
            let time = format!(
                "2026-09-10T{:02}:{:02}:{:02}Z",
                i / 3600,
                (i / 60) % 60,
                i % 60
            );
            let id = format!("e{i:05}");
            let person = format!("p{}", i % 40);
            if i == 0 {
                json!({"id": id, "type": "follow", "time": time,
                    "person": person, "target": "b2"})
            } else if i >= 1_050 {
                json!({"id": id, "type": "purchase", "time": time,
                    "person": person, "brand": "b2", "amount": 10 + i % 7})
            } else {
                let brand = ["b0", "b1"][(i % 2) as usize];
                json!({"id": id, "type": "review", "time": time,
                    "person": person, "brand": brand, "rating": 1 + i % 5})
            }
        })
        .collect()
}

#[test]
fn a_brand_first_followed_then_named_in_a_later_slice_of_one_round_is_folded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &FLAGS);
    let r = s.post_ndjson(&ndjson(&round()));
    assert_eq!(r.status, 200, "{}", r.body);
    caught_up(&s);
    assert_eq!(s.get("/healthz").status, 200, "the fold thread failed");
    let ranked = s.get("/v1/brands/b2/relationships?limit=1000");
    assert_eq!(ranked.status, 200, "{}", ranked.body);
    assert_eq!(
        ranked.body["items"].as_array().map_or(0, Vec::len),
        40,
        "every buyer of b2 in the second slice is ranked: {}",
        ranked.body
    );
    let live = everything(&s);
    s.terminate();
    let _ = std::fs::remove_dir_all(dir.path().join("snapshots"));
    let fresh = Server::start(dir.path(), &FLAGS);
    caught_up(&fresh);
    assert_eq!(fresh.event_count(), 1_200);
    same(&live, &everything(&fresh), "a fresh open");
}
