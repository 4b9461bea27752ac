//! The engine never falls over (issue #9, item 1): a fold that fails is
//! reported and repaired without a restart, a store holding any events
//! opens and scores, and event times from a broken sender clock are refused
//! when they arrive. Through real `fusion serve` processes and commands.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fusion::domain::Event;
use fusion::store::{EmbeddedStore, EventStore, PostgresStore};
use serde_json::{Value, json};

use crate::numerics::{ZERO_TIME_POISON, events_of};
use crate::pg::TestDb;
use crate::support::{STORY, Server, bin, story_lines};

/// Polls `f` until it gives a value, for at most `bound`.
pub fn poll<T>(what: &str, bound: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PAIRS: [(&str, &str); 4] = [
    ("artist", "sweater"),
    ("artist", "bistro"),
    ("fan1", "bistro"),
    ("fan3", "sweater"),
];

fn relationships(s: &Server) -> Vec<Value> {
    PAIRS
        .iter()
        .map(|(p, b)| {
            let r = s.get(&format!(
                "/v1/relationships/{p}/{b}?at=2026-11-20T00:00:00Z"
            ));
            assert_eq!(r.status, 200, "{p}-{b}: {}", r.body);
            r.body
        })
        .collect()
}

/// Regression: a fold that panicked was swallowed: the request was still
/// acknowledged, the lock was poisoned and every later read dropped its
/// connection. Now the request fails with a 503 that says the events are
/// durable, `/readyz` says why it is not ready, reads answer 503 rather than
/// a half-folded state, and the state is rebuilt from the log by itself.
#[test]
fn a_failed_fold_fails_the_request_and_the_service_recovers_by_itself() {
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Server::start(reference_dir.path(), &["--demo"]);
    let dir = tempfile::tempdir().unwrap();
    // The fold of the request fails, then the first two rebuilds (1 s and
    // 2 s of back-off): the service is not ready for at least 3 s.
    let s = Server::start_with_env(dir.path(), &[], &[("FUSION_FAULT_INJECT", "fold:3")]);

    let r = s.post_ndjson(STORY);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(r.body["type"], "/problems/not-ready");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("stored durably") && detail.contains("duplicates"),
        "{detail}"
    );

    let ready = s.get("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.content_type, "application/problem+json");
    let reason = ready.body["detail"].as_str().unwrap();
    assert!(reason.contains("a fold failed"), "{reason}");
    // Reads never drop their connection: a 503 while the state is rebuilt.
    let read = s.get("/v1/relationships/artist/sweater?at=2026-11-20T00:00:00Z");
    assert!(matches!(read.status, 200 | 503), "{}", read.body);

    let ready = poll("/readyz to answer 200", Duration::from_secs(60), || {
        let r = s.get("/readyz");
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(ready["fold_failures"], 3, "{ready}");
    assert_eq!(ready["recoveries"], 1, "{ready}");
    assert_eq!(ready["events"], story_lines().len());
    // The rebuilt state is the log's: bit for bit what a plain load gives.
    assert_eq!(relationships(&s), relationships(&reference));
    // A retry of the failed request is answered as duplicates.
    let again = s.post_ndjson(STORY);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["accepted"], 0);
    assert_eq!(again.body["duplicates"], story_lines().len());
    // And writes fold again.
    let r = s.post_json(
        "/v1/events",
        &json!({"id": "after-1", "type": "purchase", "time": "2026-11-15T12:00:00Z",
                "person": "fan2", "brand": "sweater", "amount": 30}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 1);
}

/// A log that cannot be folded when the server starts leaves a server that
/// runs, says why it is not ready and rebuilds by itself: a store always
/// opens. (Regression: a store whose fold panicked could not be started.)
#[test]
fn a_log_that_fails_to_fold_at_start_still_opens_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let reference = relationships(&s);
    let dir_path = s.kill();
    // `start` waits for readiness: it comes after the rebuild (1 s back-off).
    let s = Server::start_with_env(&dir_path, &[], &[("FUSION_FAULT_INJECT", "open")]);
    let ready = s.get("/readyz").body;
    assert_eq!(ready["fold_failures"], 1, "{ready}");
    assert_eq!(ready["recoveries"], 1, "{ready}");
    assert_eq!(ready["events"], story_lines().len());
    assert_eq!(relationships(&s), reference);
}

/// The fault-injection hook is read by `serve` only: other commands on the
/// same store ignore it.
#[test]
fn the_fault_hook_is_inert_outside_serve() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let dir_path = s.kill();
    let out = Command::new(bin())
        .args([
            "score",
            "artist",
            "sweater",
            "--at",
            "2026-11-20T00:00:00Z",
            "--data-dir",
        ])
        .arg(&dir_path)
        .env("FUSION_FAULT_INJECT", "fold:100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn purchase_at(id: &str, time: DateTime<Utc>) -> Value {
    json!({"id": id, "type": "purchase", "time": time.to_rfc3339(),
           "person": "kim", "brand": "acme", "amount": 10})
}

/// Regression: one event dated years ahead made every later event "late",
/// so each later batch refolded the whole log. Times more than the
/// configured skew ahead of the server clock are refused on `time`.
#[test]
fn events_from_a_clock_ahead_are_refused_on_time_when_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let r = s.post_json(
        "/v1/events",
        &json!([
            purchase_at("future", now() + chrono::Duration::days(3 * 365)),
            purchase_at("tomorrow", now() + chrono::Duration::hours(23)),
            purchase_at("past", now() - chrono::Duration::days(1)),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 2, "{}", r.body);
    let rejected = &r.body["rejected"][0];
    assert_eq!(rejected["index"], 0);
    assert_eq!(rejected["id"], "future");
    assert_eq!(rejected["errors"][0]["field"], "time");
    let message = rejected["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("24h ahead of the server clock"),
        "{message}"
    );
    // atomic: the whole request is refused, nothing stored.
    let r = s.post(
        "/v1/events?atomic=true",
        "application/json",
        json!([
            purchase_at("a1", now()),
            purchase_at("a2", now() + chrono::Duration::days(2))
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(s.event_count(), 2);

    let dir = tempfile::tempdir().unwrap();
    let strict = Server::start(dir.path(), &["--max-future-skew", "30m"]);
    let r = strict.post_json(
        "/v1/events",
        &purchase_at("soon", now() + chrono::Duration::hours(1)),
    );
    assert_eq!(r.body["accepted"], 0, "{}", r.body);
    assert_eq!(r.body["rejected"][0]["errors"][0]["field"], "time");
}

#[test]
fn fusion_ingest_refuses_a_clock_ahead_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let lines = [
        purchase_at("ok-1", now() - chrono::Duration::hours(2)).to_string(),
        purchase_at("future-1", now() + chrono::Duration::days(400)).to_string(),
        purchase_at("ok-2", now() - chrono::Duration::hours(1)).to_string(),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = Command::new(bin())
        .args(["ingest", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("accepted=2 duplicates=0 rejected=1"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("events.ndjson:2 (id future-1): time: is more than 24h ahead"),
        "{stderr}"
    );
}

/// The events written straight into a store, as older code accepted them:
/// two thousand years apart, and the last second the wire format allows.
fn out_of_range_events() -> Vec<Event> {
    let mut events = events_of(ZERO_TIME_POISON);
    events.extend(events_of(concat!(
        r#"{"id":"far-1","type":"post","time":"9999-12-31T23:59:59Z","person":"alice","brand":"acme","sentiment":0.5}"#,
        "\n",
        r#"{"id":"old-1","type":"follow","time":"0001-01-02T00:00:00Z","person":"carl","target":"alice"}"#,
        "\n",
    )));
    events
}

/// `fusion serve`, `fusion score` and `fusion rescore` on a store, with
/// `store_args` (`--data-dir DIR` or `--database-url URL`).
fn opens_and_scores(data_dir: &std::path::Path, store_args: &[&str]) {
    let s = Server::start(data_dir, store_args);
    assert_eq!(s.event_count(), out_of_range_events().len() as u64);
    // Reads at a time within the accepted range (reads outside it are
    // refused on `at`).
    let r = s.get("/v1/relationships/alice/acme?at=2026-11-02T00:00:00Z");
    assert_eq!(r.status, 200, "{}", r.body);
    let score = r.body["score"].as_f64().unwrap();
    assert!(score > 50.0 && score <= 100.0, "{score}");
    let r = s.get("/v1/brands/acme/relationships");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(s);
    for args in [
        vec!["score", "alice", "acme", "--at", "2026-11-02T00:00:00Z"],
        vec!["rescore"],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .arg("--data-dir")
            .arg(data_dir)
            .args(store_args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fusion {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Regression: a store holding events ~2,000 years apart could no longer be
/// opened (the replay panicked in forward decay), by `serve`, `score` or
/// `rescore`. Replaying the log never consults the clock or the validator:
/// whatever a store holds opens and scores.
#[test]
fn an_embedded_store_holding_events_outside_the_accepted_range_opens_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .append(out_of_range_events(), fusion::store::AppendMode::EachEvent)
            .await
            .unwrap();
        store.close().await;
    });
    opens_and_scores(dir.path(), &[]);
}

#[test]
fn a_postgres_store_holding_events_outside_the_accepted_range_opens_and_scores() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        let db = TestDb::new().await;
        let store = PostgresStore::connect(&db.url).await.unwrap();
        store
            .append(out_of_range_events(), fusion::store::AppendMode::EachEvent)
            .await
            .unwrap();
        db
    });
    let dir = tempfile::tempdir().unwrap();
    opens_and_scores(dir.path(), &["--database-url", &db.url]);
}
