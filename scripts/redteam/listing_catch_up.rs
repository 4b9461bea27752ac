//! Red team h28, finding F1 (left out of the build: timing-dependent, and
//! the fix is not small). Copy into tests/it/redteam2.rs to run.
//!
//! What broke: a brand listing at a fixed `at`, read right after a POST
//! with `--staleness 0`, while the live series is still applying the
//! batch (`fusion_live_lag_events` > 0), is a batch evaluation; once the
//! live series has caught up (and after a restart) it is the live series'.
//! The two agree within the tolerance (here 2e-5 points) but not in bits,
//! so the same log serves two listings, depending on when it was read.
//! The ranking built during catch-up is then kept (`ranking_as_of`'s cache,
//! keyed on version and `at`) until the next write, so the batch bits stay.
//! Fails about one run in two on 240 events (never below 128: one live
//! checkpoint).
#[test]
fn a_listing_read_before_the_live_series_caught_up_has_a_restarts_bits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--staleness", "0"]);
    let mut all: Vec<Value> = (0..240).map(event).collect();
    all.sort_by_key(|e| e["time"].as_str().unwrap().to_string());
    assert_eq!(s.post_ndjson(&ndjson(&all)).status, 200);
    rankings_ready(&s);
    let listing = |s: &Server| {
        s.get(&format!("/v1/brands/b0/relationships?limit=3&at={AT}")).body["items"].clone()
    };
    let first = listing(&s);
    s.terminate();
    let s = Server::start(dir.path(), &["--staleness", "0"]);
    caught_up(&s);
    assert_eq!(first, listing(&s));
}
