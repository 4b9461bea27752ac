//! Red team h38 on the change feed's positions and what-if (task h36): a
//! registration or an erasure takes a log position of its own, and a
//! what-if waits for the live series. Hostile input on the routes it
//! touched (ids and positions at the limits of u64, unicode ids), and the
//! positions' promises: never back, always reached once answered.

use serde_json::json;

use crate::redteam2::{caught_up, ndjson};
use crate::support::Server;

const MAX: u64 = u64::MAX;

/// Fails when a request answers a server error: hostile input gets a
/// clear 4xx (or a plain answer), never a 500.
fn no_server_error(r: &crate::support::Reply, what: &str) {
    assert!(r.status < 500, "{what}: {} {}", r.status, r.body);
}

/// Regression (red team h38, found by task h36's red team brief):
/// `DELETE /v1/alerts/18446744073709551615` answered 500: the rule's
/// phase rows were removed over `(id, "", "")..(id + 1, "", "")`, and
/// `id + 1` overflowed (a panic in the store's thread). Every id a request
/// names is now bounded without arithmetic (`store::bounds`), so ids and
/// cursors at u64's limits answer 404 or an empty page.
#[test]
fn ids_and_cursors_at_u64s_limits_answer_without_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--allow-private-webhooks"]);
    let rule = s.post_json(
        "/v1/alerts",
        &json!({"brand": "b0", "metric": "score", "direction": "below", "threshold": 40,
            "rearm": 45, "webhook_url": "http://127.0.0.1:9/hook"}),
    );
    for id in [MAX, MAX - 1, i64::MAX as u64, i64::MAX as u64 + 1, 0] {
        let r = s.delete(&format!("/v1/alerts/{id}"));
        assert_eq!(r.status, 404, "DELETE alert {id}: {}", r.body);
        for tail in ["", "/events", "/deliveries"] {
            let r = s.get(&format!("/v1/alerts/{id}{tail}"));
            no_server_error(&r, &format!("GET alert {id}{tail}"));
        }
    }
    assert_eq!(rule.status, 201, "{}", rule.body);
    {
        let id = rule.body["id"].as_u64().unwrap();
        for (tail, field) in [("/events", "events"), ("/deliveries", "deliveries")] {
            for cursor in [MAX, MAX - 1, i64::MAX as u64] {
                let r = s.get(&format!("/v1/alerts/{id}{tail}?cursor={cursor}"));
                assert_eq!(r.status, 200, "{tail} after {cursor}: {}", r.body);
                assert_eq!(r.body[field], json!([]), "{tail} after {cursor}");
            }
        }
        assert_eq!(s.delete(&format!("/v1/alerts/{id}")).status, 204);
    }
    for cursor in [MAX, MAX - 1] {
        let r = s.get(&format!("/v1/rejected?cursor={cursor}"));
        no_server_error(&r, "rejected cursor");
    }
    // Positions at the limits: a wait that cannot be met answers that it
    // was not met (504, `position-timeout`), in time.
    for p in [MAX, MAX - 1] {
        for path in ["/healthz", "/v1/brands"] {
            let r = s.get(&format!("{path}?min_position={p}&wait=0"));
            assert_eq!(r.status, 504, "{path} min_position {p}: {}", r.body);
        }
    }
    let r = s.get("/healthz?min_position=18446744073709551616");
    assert_eq!(r.status, 400, "{}", r.body);
    // Unicode and control ids on the routes that take a context position.
    for id in ["\u{10FFFF}", "é\u{301}", "%00", "a%2Fb", "%F0%9F%92%A9"] {
        let r = s.put_json(&format!("/v1/entities/{id}"), &json!({"kind": "consumer"}));
        no_server_error(&r, &format!("PUT {id}"));
        let r = s.delete(&format!("/v1/entities/{id}"));
        no_server_error(&r, &format!("DELETE {id}"));
    }
    let long = "x".repeat(4_000);
    let r = s.put_json(
        &format!("/v1/entities/{long}"),
        &json!({"kind": "consumer"}),
    );
    no_server_error(&r, "PUT a long id");
    let r = s.put_json(
        "/v1/entities/p0",
        &json!({"kind": "influencer", "followers": MAX}),
    );
    no_server_error(&r, "followers at u64::MAX");
    let e = json!({"id": "e0", "type": "purchase", "time": "2026-09-01T00:00:00Z",
        "person": "p1", "brand": "b0", "amount": 10});
    assert_eq!(s.post_ndjson(&ndjson(&[e])).status, 200);
    caught_up(&s);
    for at in [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
    ] {
        let r = s.post_json(
            "/v1/simulate",
            &json!({"at": at, "events": [{"id": "w", "type": "purchase", "time": at,
                "person": "p1", "brand": "b0", "amount": 1e308}]}),
        );
        no_server_error(&r, &format!("simulate at {at}"));
    }
}
