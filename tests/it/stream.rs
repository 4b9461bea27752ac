//! A live stream against a real `fusion serve` (issue #11): every answer
//! carries the log position it reflects, `min_position` waits for it or
//! answers a timeout problem, back-pressure answers 503 `overloaded`, and
//! once a stream stops the rankings reach the last acknowledged position,
//! with the scores a fold of the same log gives, whatever the order and
//! batching the stream came in. Waits are on positions, never on time.

use serde_json::{Value, json};

use crate::support::Server;

/// A stream of purchases and reviews by 40 people of 4 brands over 40 days,
/// with follows, in event-time order (ids unique).
fn stream() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..240u32 {
        let (p, b) = (i % 40, i % 4);
        let time = format!("2026-09-{:02}T{:02}:{:02}:00Z", 1 + i / 8, i % 24, i % 60);
        let event = match i % 3 {
            0 => json!({"id": format!("s{i}"), "type": "purchase", "time": time,
                "person": format!("p{p}"), "brand": format!("b{b}"), "amount": 10 + i % 7}),
            1 => json!({"id": format!("s{i}"), "type": "review", "time": time,
                "person": format!("p{p}"), "brand": format!("b{b}"), "rating": 1 + i % 5}),
            _ => json!({"id": format!("s{i}"), "type": "follow", "time": time,
                "person": format!("p{p}"), "target": format!("p{}", (p + 7) % 40),
                "strength": 0.5}),
        };
        events.push(event);
    }
    events
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

fn position_of(r: &crate::support::Reply) -> u64 {
    r.header("fusion-position")
        .unwrap_or_else(|| panic!("no Fusion-Position on {}: {}", r.status, r.body))
        .parse()
        .expect("a position is a whole number")
}

#[test]
fn every_answer_carries_the_position_it_reflects() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let before = position_of(&s.get("/healthz"));
    let posted = s.post_ndjson(&ndjson(&stream()[..30]));
    assert_eq!(posted.status, 200, "{}", posted.body);
    let p = position_of(&posted);
    assert!(
        p > before,
        "the answer of a write reflects its events: {p} > {before}"
    );
    assert_eq!(
        posted.body["position"].as_u64(),
        Some(p),
        "body and header agree"
    );
    for path in [
        "/healthz",
        "/readyz",
        "/v1/relationships/p0/b0",
        "/v1/brands/b0",
        "/v1/brands/b0/relationships",
        "/v1/entities/p0",
        "/v1/relationships/nobody/b0",
    ] {
        let r = s.get(path);
        assert!(
            position_of(&r) >= p,
            "{path} answered {} reflecting less than the acknowledged {p}",
            r.status
        );
    }
    // A duplicate changes nothing and still says where the state is.
    let again = s.post_ndjson(&ndjson(&stream()[..30]));
    assert_eq!(again.body["duplicates"], 30);
    assert_eq!(position_of(&again), p);
}

#[test]
fn min_position_returns_a_state_that_includes_it_or_a_timeout_problem() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let posted = s.post_ndjson(&ndjson(&stream()[..12]));
    let p = position_of(&posted);
    let r = s.get(&format!("/v1/relationships/p0/b0?min_position={p}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(position_of(&r) >= p);
    let r = s.get(&format!("/v1/brands/b0/relationships?min_position={p}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(position_of(&r) >= p);

    let ahead = p + 1_000;
    let r = s.get(&format!(
        "/v1/relationships/p0/b0?min_position={ahead}&wait=0.2"
    ));
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["type"], "/problems/position-timeout");
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&ahead.to_string()) && detail.contains(&p.to_string()),
        "the problem says what was asked and how far the server got: {detail}"
    );
    assert!(position_of(&r) >= p);

    for bad in [
        "min_position=abc",
        "min_position=-1",
        "min_position=1&wait=99",
    ] {
        let r = s.get(&format!("/v1/relationships/p0/b0?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["type"], "/problems/invalid-parameter");
    }
}

#[test]
fn overloaded_ingest_answers_503_with_its_problem_type_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A queue of 2 events: a batch of 3 can never fit, deterministically.
    let s = Server::start(dir.path(), &["--max-fold-queue", "2"]);
    let r = s.post_ndjson(&ndjson(&stream()[..3]));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["type"], "/problems/overloaded");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );
    assert_eq!(s.event_count(), 0, "nothing of a refused request is stored");
    let r = s.post_ndjson(&ndjson(&stream()[..2]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.event_count(), 2);
}

/// The listing of a brand's relationships at `at` (scores to the bit), and
/// the position it reflects.
fn listing(s: &Server, brand: &str, query: &str) -> (Value, u64) {
    let r = s.get(&format!(
        "/v1/brands/{brand}/relationships?limit=1000&{query}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    (r.body["items"].clone(), position_of(&r))
}

#[test]
fn once_a_stream_stops_rankings_reach_the_last_acknowledged_position_with_the_folds_scores() {
    let events = stream();
    // Server A takes the stream from 4 writers at once, in shuffled batches
    // of different sizes (late events included); rankings may lag 1 s.
    let dir_a = tempfile::tempdir().unwrap();
    let a = Server::start(dir_a.path(), &["--staleness", "1"]);
    let mut batches: Vec<Vec<Value>> = Vec::new();
    let mut i = 0;
    for (k, size) in [7usize, 30, 1, 50, 13, 2, 60, 77]
        .iter()
        .cycle()
        .enumerate()
    {
        if i >= events.len() {
            break;
        }
        let end = (i + size).min(events.len());
        let mut batch = events[i..end].to_vec();
        if k % 2 == 1 {
            batch.reverse();
        }
        batches.push(batch);
        i = end;
    }
    batches.swap(0, 3);
    let last = std::sync::Mutex::new(0u64);
    std::thread::scope(|scope| {
        for writer in 0..4 {
            let (a, batches, last) = (&a, &batches, &last);
            scope.spawn(move || {
                for batch in batches.iter().skip(writer).step_by(4) {
                    let r = a.post_ndjson(&ndjson(batch));
                    assert_eq!(r.status, 200, "{}", r.body);
                    let p = position_of(&r);
                    let mut last = last.lock().unwrap();
                    *last = (*last).max(p);
                }
            });
        }
    });
    let last = *last.lock().unwrap();
    assert_eq!(a.event_count(), events.len() as u64);

    // Server B folds the same log, sent whole in event-time order.
    let dir_b = tempfile::tempdir().unwrap();
    let b = Server::start(dir_b.path(), &[]);
    let r = b.post_ndjson(&ndjson(&events));
    assert_eq!(r.status, 200, "{}", r.body);

    // A fixed time after every event: both answer for the same `at`.
    let at = "at=2026-12-01T00:00:00Z";
    for brand in ["b0", "b1", "b2", "b3"] {
        // The current ranking reaches the last acknowledged position.
        let (now_a, reached) = listing(&a, brand, &format!("min_position={last}"));
        assert!(
            reached >= last,
            "{brand}: reached {reached}, acknowledged {last}"
        );
        let (now_b, _) = listing(&b, brand, "");
        let people = |v: &Value| -> Vec<String> {
            let mut p: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["person"].as_str().unwrap().to_string())
                .collect();
            p.sort();
            p
        };
        assert_eq!(
            people(&now_a),
            people(&now_b),
            "{brand}: the same relationships"
        );
        // And the scores are the fold's, to the bit.
        let (at_a, _) = listing(&a, brand, at);
        let (at_b, _) = listing(&b, brand, at);
        assert_eq!(
            at_a, at_b,
            "{brand}: the stream's scores differ from the fold's"
        );
    }
    for p in 0..40 {
        let path = format!("/v1/relationships/p{p}/b{}?{at}", p % 4);
        assert_eq!(a.get(&path).body, b.get(&path).body, "{path}");
    }
}
