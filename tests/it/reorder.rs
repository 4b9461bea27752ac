//! The fold's reorder window (issue #11, items 1 and 3; `engine/reorder.rs`)
//! against a real `fusion serve`: an event stamped before one sent at the
//! same time by another sender is folded in place with it, not refolded,
//! and an acknowledgement still means folded (read your writes).

use serde_json::{Value, json};

use crate::support::Server;

fn purchase(id: &str, time: chrono::DateTime<chrono::Utc>, person: &str) -> Value {
    json!({"id": id, "type": "purchase",
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "person": person, "brand": "b0", "amount": 10})
}

/// Two senders at once, the second's event stamped 50 ms before the
/// first's: within the window, both are folded in order (no refold) and
/// each answer reads its own write. Without a window the same straggler,
/// sent once the first is folded, refolds: what the window saves (under
/// `benches/stream.sh` single events from 64 clients, nearly every round
/// refolded: 1,036 refolds in 15 s, 28 ms each at 200,000 events).
#[test]
fn a_straggler_within_the_reorder_window_is_folded_in_place_not_refolded() {
    let dir = tempfile::tempdir().unwrap();
    // A window of a second: the straggler's request surely arrives within it.
    let s = Server::start(dir.path(), &["--reorder-window-ms", "1000"]);
    let now = chrono::Utc::now();
    let first = purchase("first", now, "p1");
    let straggler = purchase("straggler", now - chrono::Duration::milliseconds(50), "p2");
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| s.post_json("/v1/events", &first));
        let b = scope.spawn(|| s.post_json("/v1/events", &straggler));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(s.metric("fusion_fold_refolds_total"), 0.0);
    assert_eq!(s.metric("fusion_fold_rebuilds_total{cause=\"late\"}"), 0.0);
    // Acknowledged means folded: both relationships read at once.
    for person in ["p1", "p2"] {
        let r = s.get(&format!("/v1/relationships/{person}/b0"));
        assert_eq!(r.status, 200, "{person}: {}", r.body);
    }

    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--reorder-window-ms", "0"]);
    assert_eq!(s.post_json("/v1/events", &first).status, 200);
    assert_eq!(s.post_json("/v1/events", &straggler).status, 200);
    assert_eq!(s.metric("fusion_fold_refolds_total"), 1.0);
}

/// An event dated ahead of the server clock (within `--max-future-skew`)
/// is held at most one window, not until its date: the answer comes, and
/// the event is folded.
#[test]
fn an_event_dated_ahead_of_the_clock_is_held_one_window_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--reorder-window-ms", "50"]);
    let ahead = purchase(
        "ahead",
        chrono::Utc::now() + chrono::Duration::hours(2),
        "p1",
    );
    let r = s.post_json("/v1/events", &ahead);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 1);
    assert_eq!(s.event_count(), 1);
}
