//! Back-pressure in time (issue #11, item 5; `engine/queue.rs`) against a
//! real `fusion serve`: once the oldest write has waited past
//! `--max-fold-wait` for its commit and fold, a new write is answered 503
//! `overloaded` with Retry-After before anything of it is stored; the
//! waiting write is still acknowledged (a refusal never follows an
//! acknowledgement), and writes are taken again once it is folded.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

fn purchase(id: &str, time: &str, person: &str) -> Value {
    json!({"id": id, "type": "purchase", "time": time,
        "person": person, "brand": "b0", "amount": 10})
}

/// A write held 3 s by the reorder window stands for a fold that has
/// fallen behind: once it has waited past the bound of 0.2 s (the fold
/// lag gauge says so; polled, not slept on), the next write is refused
/// with its problem type and Retry-After and is not stored; the held
/// write is acknowledged; then the refused one is taken.
#[test]
fn a_write_past_the_wait_bound_is_refused_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--reorder-window-ms",
            "1000",
            "--max-fold-wait",
            "0.2",
            // The gauge is polled without pause.
            "--rate-per-address",
            "0",
        ],
    );
    // Dated ahead of the clock, so held a whole window whatever the
    // machine's load; a second window for margin is not needed: the
    // gauge is polled.
    let ahead = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let held = purchase("held", &ahead, "p1");
    let late = purchase("late", "2026-01-01T00:00:00Z", "p2");
    std::thread::scope(|scope| {
        let first = scope.spawn(|| s.post_json("/v1/events", &held));
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.metric("fusion_fold_lag_seconds") <= 0.3 {
            assert!(
                Instant::now() < deadline,
                "the held write never showed as waiting"
            );
            std::thread::yield_now();
        }
        let r = s.post_json("/v1/events", &late);
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["type"], "/problems/overloaded");
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was stored"),
            "{}",
            r.body
        );
        let first = first.join().unwrap();
        assert_eq!(
            first.status, 200,
            "the waiting write is acknowledged: {}",
            first.body
        );
    });
    assert!(s.metric("fusion_events_overloaded_total") >= 1.0);
    let r = s.post_json("/v1/events", &late);
    assert_eq!(r.status, 200, "taken once the queue is folded: {}", r.body);
    // New, not a duplicate: the refused request stored nothing.
    assert_eq!(r.body["accepted"], 1, "{}", r.body);
    assert_eq!(r.body["duplicates"], 0, "{}", r.body);
    assert_eq!(s.event_count(), 2);
}
