//! `POST /v1/simulate` (issue #13, what-if) against a real `fusion serve`
//! with the seed story: simulating events and then storing them gives the
//! same scores at the same `at`, to the bit; a simulation leaves the live
//! state bit-identical; the bounds, roles and invalid events answer their
//! problems; a model override moves a brand's distribution.

use serde_json::{Value, json};

use crate::security::{Creds, call};
use crate::support::{STORY, Server};

const AT: &str = "2026-11-20T00:00:00Z";

/// What-if events later than every event of the story: an influencer's
/// post (it spills to every follower), a purchase, a new customer, a
/// follow and an endorsement (they change rows).
fn what_if_events() -> Value {
    json!([
        {"id": "sim-1", "type": "post", "time": "2026-11-15T10:00:00Z", "person": "artist",
         "brand": "bistro", "text": "Best dinner of the tour, thank you bistro!"},
        {"id": "sim-2", "type": "purchase", "time": "2026-11-15T11:00:00Z", "person": "fan1",
         "brand": "sweater", "amount": 120, "currency": "USD"},
        {"id": "sim-3", "type": "purchase", "time": "2026-11-15T12:00:00Z", "person": "newfan",
         "brand": "bistro", "amount": 40, "currency": "EUR"},
        {"id": "sim-4", "type": "follow", "time": "2026-11-15T13:00:00Z", "person": "newfan",
         "target": "artist"},
        {"id": "sim-5", "type": "endorsement", "time": "2026-11-15T14:00:00Z", "person": "artist",
         "brand": "bistro", "strength": 0.8},
        {"id": "sim-6", "type": "review", "time": "2026-11-16T09:00:00Z", "person": "fan6",
         "brand": "bistro", "rating": 1, "text": "Cold food and a rude waiter."}
    ])
}

fn story_server(dir: &std::path::Path, extra: &[&str]) -> Server {
    let s = Server::start(dir, extra);
    let r = s.post_ndjson(STORY);
    assert_eq!(r.status, 200, "{}", r.body);
    s
}

/// A relationship's score at `AT` as the read route gives it (`None`: 404).
fn read_score(s: &Server, person: &str, brand: &str) -> Option<f64> {
    let r = s.get(&format!("/v1/relationships/{person}/{brand}?at={AT}"));
    match r.status {
        200 => Some(r.body["score"].as_f64().unwrap()),
        404 => None,
        other => panic!("{person}/{brand}: {other} {}", r.body),
    }
}

#[test]
fn simulating_events_then_posting_them_gives_the_same_scores_to_the_bit() {
    let dir = tempfile::tempdir().unwrap();
    let s = story_server(dir.path(), &[]);
    let events = what_if_events();
    // Once the live series has caught up with the story, the changes are
    // pushed from it and only the movers are walked (`score::simulate`):
    // the movers must still be bit-equal to storing the events.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let r = loop {
        let r = s.post_json(
            "/v1/simulate",
            &json!({"events": events, "at": AT, "top": 1000}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["precision"]["summaries"] == "live_tolerance" {
            break r;
        }
        assert_eq!(r.body["precision"]["summaries"], "exact", "{}", r.body);
        assert!(
            std::time::Instant::now() < deadline,
            "the live series never answered: {}",
            r.body
        );
        std::thread::yield_now();
    };
    let bound = r.body["precision"]["error_bound"].as_f64().unwrap();
    assert!((0.0..0.05).contains(&bound), "{}", r.body);
    let movers = r.body["movers"].as_array().unwrap().clone();
    let pairs: Vec<(String, String)> = movers
        .iter()
        .map(|m| {
            (
                m["person"].as_str().unwrap().to_string(),
                m["brand"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The post spills to the artist's followers, the new customer and the
    // new follow make relationships, the review moves its own.
    for want in [
        ("fan1", "bistro"),
        ("fan1", "sweater"),
        ("newfan", "bistro"),
        ("fan6", "bistro"),
    ] {
        assert!(
            pairs.iter().any(|(p, b)| (p.as_str(), b.as_str()) == want),
            "{want:?} not among the movers: {pairs:?}"
        );
    }
    let before: Vec<Option<f64>> = pairs.iter().map(|(p, b)| read_score(&s, p, b)).collect();
    for (m, b) in movers.iter().zip(&before) {
        assert_eq!(m["before"].as_f64(), *b, "before of {m}");
        assert!(m["after_state"]["contributions"].is_array(), "{m}");
    }
    // The reasons of the after-state name the simulated events.
    let fan6 = movers
        .iter()
        .find(|m| m["person"] == "fan6" && m["brand"] == "bistro")
        .unwrap();
    let reasons = fan6["after_state"]["contributions"].to_string();
    assert!(reasons.contains("sim-6"), "{reasons}");

    let posted = s.post_json("/v1/events", &events);
    assert_eq!(posted.status, 200, "{}", posted.body);
    for (m, (p, b)) in movers.iter().zip(&pairs) {
        let after = read_score(&s, p, b);
        // Bit-equal: the simulation's after-state is the stored state's,
        // summed by the same walk in the same order.
        assert_eq!(
            m["after"].as_f64().map(f64::to_bits),
            after.map(f64::to_bits),
            "{p}/{b}: simulated {m} read {after:?}"
        );
    }
}

/// Everything a client can read of the scores at `AT`, and the state's
/// position: every brand's ranked relationships (their ETag carries the
/// state version), each relationship explained, and the readiness report.
fn everything(s: &Server) -> Vec<String> {
    let mut out = vec![s.get("/readyz").body.to_string()];
    for brand in ["sweater", "bistro"] {
        let r = s.get(&format!(
            "/v1/brands/{brand}/relationships?at={AT}&limit=1000"
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        out.push(format!("{:?} {}", r.header("etag"), r.body));
        for item in r.body["items"].as_array().unwrap() {
            let person = item["person"].as_str().unwrap();
            let e = s.get(&format!("/v1/relationships/{person}/{brand}?at={AT}"));
            out.push(e.body.to_string());
        }
    }
    out
}

#[test]
fn a_simulation_leaves_the_live_state_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let s = story_server(dir.path(), &[]);
    let before = everything(&s);
    let r = s.post_json(
        "/v1/simulate",
        &json!({"events": what_if_events(), "at": AT}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body["movers"].as_array().unwrap().is_empty());
    assert_eq!(everything(&s), before);
    // Nothing was stored: the simulated ids are unknown.
    assert_eq!(s.get("/v1/events/sim-1").status, 404);
}

#[test]
fn bounds_invalid_events_and_roles_answer_their_problems() {
    let dir = tempfile::tempdir().unwrap();
    let c = Creds::create(dir.path());
    let s = Server::start(dir.path(), &[]);
    let r = call(&s, "POST", "/v1/events", Some(&c.ingest), None);
    assert_ne!(r.status, 200);
    let lines: Vec<Value> = crate::support::story_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = call(
        &s,
        "POST",
        "/v1/events",
        Some(&c.ingest),
        Some(&Value::Array(lines)),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // 10,001 events: 413, before any is looked at.
    let many: Vec<Value> = (0..10_001)
        .map(|i| {
            json!({"id": format!("m{i}"), "type": "purchase", "time": "2026-11-15T10:00:00Z",
                   "person": "fan1", "brand": "sweater", "amount": 1})
        })
        .collect();
    let r = call(
        &s,
        "POST",
        "/v1/simulate",
        Some(&c.read),
        Some(&json!({"events": many})),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["type"], "/problems/too-many-events");

    // An invalid event: 400 naming the event and the field, as ingest does.
    let bad = json!({"events": [
        {"id": "ok", "type": "purchase", "time": "2026-11-15T10:00:00Z", "person": "fan1",
         "brand": "sweater", "amount": 3},
        {"id": "bad", "type": "purchase", "time": "2026-11-15T10:00:00Z", "person": "fan1",
         "brand": "sweater", "amount": -5}
    ]});
    let r = call(&s, "POST", "/v1/simulate", Some(&c.read), Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["type"], "/problems/invalid-simulated-events");
    let e = &r.body["errors"][0];
    assert_eq!(
        (e["index"].clone(), e["id"].clone()),
        (json!(1), json!("bad")),
        "{e}"
    );
    assert_eq!(e["field"], "amount", "{e}");
    // An entity in a role its kind cannot play is named the same way.
    let role = json!({"events": [{"id": "r", "type": "purchase", "time": "2026-11-15T10:00:00Z",
        "person": "sweater", "brand": "bistro", "amount": 3}]});
    let r = call(&s, "POST", "/v1/simulate", Some(&c.read), Some(&role));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "person", "{}", r.body);

    // Roles: events need read; model overrides need admin.
    let events = json!({"events": what_if_events(), "at": AT});
    let model =
        json!({"model": {"half_life_days": {"sentiment": 30}}, "brand": "bistro", "at": AT});
    let status =
        |key: Option<&str>, body: &Value| call(&s, "POST", "/v1/simulate", key, Some(body)).status;
    assert_eq!(status(None, &events), 401);
    assert_eq!(status(Some(&c.ingest), &events), 403);
    assert_eq!(status(Some(&c.read), &events), 200);
    assert_eq!(status(Some(&c.admin), &events), 200);
    let r = call(&s, "POST", "/v1/simulate", Some(&c.read), Some(&model));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("model overrides"),
        "{}",
        r.body
    );
    assert_eq!(status(Some(&c.admin), &model), 200);
}

#[test]
fn a_model_override_moves_the_distribution_of_a_brands_relationships() {
    let dir = tempfile::tempdir().unwrap();
    let s = story_server(dir.path(), &[]);
    let whatif = |model: Value| {
        let r = s.post_json(
            "/v1/simulate",
            &json!({"model": model, "brand": "bistro", "at": AT}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let listed = s.get(&format!(
        "/v1/brands/bistro/relationships?at={AT}&limit=1000"
    ));
    let relationships = listed.body["items"].as_array().unwrap().len();
    // The model unchanged in effect: nothing moves.
    let same = whatif(json!({"weight": {"values": 1.0e-9}}));
    assert_eq!(same["scored"], json!(relationships), "{same}");
    // A shorter sentiment half-life forgets the story's posts and reviews faster.
    let short = whatif(json!({"half_life_days": {"sentiment": 1}}));
    assert_eq!(short["scored"], json!(relationships), "{short}");
    // An overridden model rescores every relationship: walked, exact.
    assert_eq!(short["precision"]["summaries"], "exact", "{short}");
    let moved: u64 = short["brands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["moved"].as_u64().unwrap())
        .sum();
    assert!(moved > 0, "{short}");
    let histogram: u64 = short["distribution"]["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram as usize, relationships, "{short}");
    assert_ne!(short["distribution"], same["distribution"]);
    // A stronger audience spill moves them another way.
    let spill = whatif(json!({"propagation": {"audience": 0.6}}));
    assert_ne!(spill["distribution"], short["distribution"]);
    // An override past the model's bounds is a 400 naming `model`.
    let r = s.post_json(
        "/v1/simulate",
        &json!({"model": {"propagation": {"audience": 0.9, "association": 0.9}}, "brand": "bistro"}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "model", "{}", r.body);
}

/// Regression (red team): a what-if of an event whose id the log holds
/// counted it a second time (ann–acme moved about 4 points, `b1` listed
/// twice in the reasons), where posting it again stores nothing. Such ids
/// are left out, and the answer names them.
#[test]
fn a_what_if_of_a_stored_id_moves_nothing_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let stored = json!({"id": "b1", "type": "purchase", "time": "2026-10-01T00:00:00Z",
        "person": "ann", "brand": "acme", "amount": 80});
    let r = s.post_json("/v1/events", &json!([stored]));
    assert_eq!(r.status, 200, "{}", r.body);
    // The same id with other content would be a conflict: stored nothing too.
    let other = json!({"id": "b1", "type": "purchase", "time": "2026-10-02T00:00:00Z",
        "person": "ann", "brand": "acme", "amount": 5});
    let fresh = json!({"id": "b2", "type": "purchase", "time": "2026-10-03T00:00:00Z",
        "person": "bob", "brand": "acme", "amount": 5});
    for at in ["2026-11-01T00:00:00Z", "2026-09-01T00:00:00Z"] {
        for events in [json!([stored]), json!([other])] {
            let r = s.post_json("/v1/simulate", &json!({"events": events, "at": at}));
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["already_stored"], json!(["b1"]), "{}", r.body);
            assert_eq!(r.body["events"], 0, "{}", r.body);
            let movers = r.body["movers"].as_array().unwrap();
            assert!(
                movers.iter().all(|m| m["delta"].as_f64() == Some(0.0)),
                "at {at}: a stored id simulated again moved {movers:?}"
            );
        }
    }
    // Beside a new event, only the new one is simulated.
    let r = s.post_json(
        "/v1/simulate",
        &json!({"events": [stored, fresh], "at": "2026-11-01T00:00:00Z"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["already_stored"], json!(["b1"]));
    assert_eq!(r.body["events"], 1);
    let movers = r.body["movers"].as_array().unwrap();
    assert!(
        movers.iter().all(|m| m["person"] == "bob"),
        "only bob's relationship moves: {movers:?}"
    );
}

/// Regression (red team): a simulated event earlier than stored changes of
/// what it touches was read as the latest change: a withdrawal before a
/// stored grant withdrew (after = null, posted: unchanged), and a follow
/// before a stored unfollow outlived it (51.09, posted: 50.59). A simulated
/// follow, unfollow or consent change takes its place in the history, as
/// storing it does.
#[test]
fn a_late_follow_or_consent_what_if_is_what_posting_it_gives() {
    let at = "2026-11-01T00:00:00Z";
    let base = json!([
        {"id": "b1", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "ann", "brand": "acme", "amount": 80},
        {"id": "b2", "type": "consent", "time": "2026-10-05T00:00:00Z", "person": "ann", "granted": true},
        {"id": "b3", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "bob", "brand": "acme", "amount": 80},
        {"id": "b4", "type": "follow", "time": "2026-10-02T00:00:00Z", "person": "cat", "target": "bob"},
        {"id": "b5", "type": "unfollow", "time": "2026-10-10T00:00:00Z", "person": "cat", "target": "bob"},
        {"id": "b6", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "cat", "brand": "acme", "amount": 5},
    ]);
    let late = [
        json!({"id": "w1", "type": "consent", "time": "2026-09-01T00:00:00Z", "person": "ann", "granted": false}),
        json!({"id": "w2", "type": "follow", "time": "2026-10-03T00:00:00Z", "person": "cat", "target": "bob"}),
        json!({"id": "w3", "type": "follow", "time": "2026-10-12T00:00:00Z", "person": "cat", "target": "bob"}),
    ];
    let mut wrong = Vec::new();
    for e in late {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(dir.path(), &[]);
        let r = s.post_json("/v1/events", &base);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = s.post_json(
            "/v1/simulate",
            &json!({"events": [e], "at": at, "top": 1000}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let r2 = s.post_json("/v1/events", &json!([e]));
        assert_eq!(r2.status, 200, "{}", r2.body);
        for m in r.body["movers"].as_array().unwrap() {
            let (p, b) = (m["person"].as_str().unwrap(), m["brand"].as_str().unwrap());
            let read = read_score_at(&s, p, b, at);
            if m["after"].as_f64().map(f64::to_bits) != read.map(f64::to_bits) {
                wrong.push(format!(
                    "{} {p}-{b}: simulated {} -> {}, posted then read {read:?}",
                    e["id"], m["before"], m["after"]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn read_score_at(s: &Server, person: &str, brand: &str, at: &str) -> Option<f64> {
    let r = s.get(&format!("/v1/relationships/{person}/{brand}?at={at}"));
    match r.status {
        200 => r.body["score"].as_f64(),
        404 => None,
        other => panic!("{person}-{brand}: {other} {}", r.body),
    }
}

/// Regression (red team h28's F1, in what-if): `POST /v1/simulate` chose
/// the live series or walks by whether the series had caught up at the
/// moment of the call, so a what-if sent right after a POST (the series
/// still catching up) answered other bits (exact summaries, another mover
/// set) than the same what-if once caught up, or after a restart. Now it
/// waits for the series, a bounded time, and an answer made without it is
/// sent provisional (`Cache-Control: no-store`, no `ETag`). Timing-
/// dependent before (the catch-up must still run when the what-if comes),
/// so several rounds.
#[test]
fn a_simulation_sent_before_the_live_series_caught_up_has_a_restarts_bits() {
    use crate::redteam2::{caught_up, ndjson};
    let at = "2026-12-01T00:00:00Z";
    let event = |i: u32| {
        let time = format!("2026-09-01T{:02}:{:02}:00Z", i / 60, i % 60);
        let (person, brand) = (format!("p{}", i % 12), format!("b{}", (i / 3) % 3));
        match i % 3 {
            0 => json!({"id": format!("e{i}"), "type": "purchase", "time": time,
                "person": person, "brand": brand, "amount": 10 + i % 7}),
            1 => json!({"id": format!("e{i}"), "type": "follow", "time": time,
                "person": person, "target": format!("p{}", (i + 5) % 12)}),
            _ => json!({"id": format!("e{i}"), "type": "review", "time": time,
                "person": person, "brand": brand, "rating": 1 + i % 5}),
        }
    };
    let what_if = json!({"events": [
        {"id": "w1", "type": "purchase", "time": "2026-11-30T00:00:00Z",
         "person": "p3", "brand": "b1", "amount": 400},
        {"id": "w2", "type": "review", "time": "2026-11-30T01:00:00Z",
         "person": "p7", "brand": "b0", "rating": 1}],
        "at": at, "top": 20});
    let simulate = |s: &Server| {
        let r = s.post_json("/v1/simulate", &what_if);
        assert_eq!(r.status, 200, "{}", r.body);
        r
    };
    for round in 0..3u32 {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(dir.path(), &["--staleness", "0"]);
        let n = 240 + 17 * round;
        let all: Vec<Value> = (0..n).map(event).collect();
        let posted = s.post_ndjson(&ndjson(&all));
        assert_eq!(posted.status, 200);
        let first = simulate(&s);
        let acknowledged: u64 = posted.header("fusion-position").unwrap().parse().unwrap();
        let reflects: u64 = first.header("fusion-position").unwrap().parse().unwrap();
        assert!(reflects >= acknowledged, "{reflects} before {acknowledged}");
        caught_up(&s);
        let settled = simulate(&s);
        assert_eq!(settled.header("cache-control"), None, "{round}");
        s.terminate();
        let s = Server::start(dir.path(), &["--staleness", "0"]);
        caught_up(&s);
        let restarted = simulate(&s);
        assert_eq!(
            settled.body, restarted.body,
            "round {round}: once caught up"
        );
        if first.header("cache-control") == Some("no-store") {
            // Made past the wait without the series: said so, untagged.
            assert_eq!(first.header("etag"), None);
        } else {
            assert_eq!(first.body, restarted.body, "round {round}: during catch-up");
        }
    }
}
