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
    ids_and_cursors_at_u64s_limits(&Server::start(dir.path(), &["--allow-private-webhooks"]));
}

#[test]
fn ids_and_cursors_at_u64s_limits_answer_without_a_server_error_on_postgres() {
    let db = crate::pg_e2e::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    ids_and_cursors_at_u64s_limits(&Server::start_on_database(
        dir.path(),
        &db.url,
        &["--allow-private-webhooks"],
    ));
}

fn ids_and_cursors_at_u64s_limits(s: &Server) {
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
    // Percent-encoded (a raw non-ASCII request line is refused by the
    // HTTP layer, which closes the connection): U+10FFFF, a combining
    // accent, NUL, an encoded slash, an emoji, invalid UTF-8.
    for id in [
        "%F4%8F%BF%BF",
        "e%CC%81",
        "%00",
        "a%2Fb",
        "%F0%9F%92%A9",
        "%FF%FE",
    ] {
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
    caught_up(s);
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

/// The answer's `Fusion-Position`.
fn position(r: &crate::support::Reply) -> u64 {
    r.header("fusion-position")
        .expect("every answer carries Fusion-Position")
        .parse()
        .unwrap()
}

/// A purchase of `person` at `brand`, minute `m` of 2026-09-01 and after.
fn purchase(id: &str, person: &str, brand: &str, m: u32) -> serde_json::Value {
    json!({"id": id, "type": "purchase",
        "time": format!("2026-09-{:02}T{:02}:{:02}:00Z", 1 + m / 1440, (m / 60) % 24, m % 60),
        "person": person, "brand": brand, "amount": 10 + m % 17})
}

/// Two servers on one PostgreSQL: one registers, buys for and erases
/// people while both take streams of events from other clients. Every
/// answer's `Fusion-Position` goes forward for its client, and is reached
/// on the other server: once it is, the other server has the registration
/// and, after an erasure, no longer serves the erased person (red team
/// h38: a follower that read the log's context before its positions could
/// publish a position past another server's erasure without it; the unit
/// test `a_position_past_another_servers_erasure_is_published_only_with_the_erasure`
/// holds that interleaving exactly; its window, between two queries, is
/// too narrow for this test, which passed 3 runs of 3 before that fix: it
/// holds the promises on real servers, not the race).
#[test]
fn positions_from_erasures_on_one_server_are_reached_with_the_erasure_on_the_other() {
    let db = crate::pg_e2e::fresh_db();
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = ["--staleness", "0", "--follow-interval", "0.2"];
    let a = Server::start_on_database(da.path(), &db.url, &flags);
    let b = Server::start_on_database(db_dir.path(), &db.url, &flags);
    let rounds = 12u32;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Streams on both servers from their own clients, until the
        // erasures are done.
        for (n, s) in [(0u32, &b), (1, &a), (2, &b)] {
            let done = &done;
            scope.spawn(move || {
                let mut last = 0u64;
                let mut i = 0u32;
                while !done.load(std::sync::atomic::Ordering::SeqCst) && i < 2000 {
                    let batch: Vec<_> = (0..5)
                        .map(|k| {
                            let m = i * 5 + k;
                            purchase(
                                &format!("s{n}-{m}"),
                                &format!("c{}", m % 9),
                                &format!("b{}", m % 3),
                                m,
                            )
                        })
                        .collect();
                    let r = s.post_ndjson(&ndjson(&batch));
                    assert_eq!(r.status, 200, "{}", r.body);
                    let p = position(&r);
                    assert!(p > last, "client {n}: {p} after {last}");
                    last = p;
                    i += 1;
                }
            });
        }
        let mut last = 0u64;
        let mut forward = |r: &crate::support::Reply, what: &str| {
            assert!(r.status < 300, "{what}: {} {}", r.status, r.body);
            let p = position(r);
            assert!(p > last, "{what}: {p} after {last}");
            last = p;
            p
        };
        for k in 0..rounds {
            let v = format!("v{k}");
            let r = a.put_json(
                &format!("/v1/entities/{v}"),
                &json!({"kind": "influencer", "followers": 1000 + k}),
            );
            let registered = forward(&r, "registration");
            let r = b.get(&format!(
                "/v1/entities/{v}?min_position={registered}&wait=30"
            ));
            assert_eq!(r.status, 200, "{v} registered at {registered}: {}", r.body);
            assert_eq!(r.body["kind"], "influencer", "{v}: {}", r.body);
            let r = a.post_ndjson(&ndjson(&[purchase(&format!("w{k}"), &v, "b0", 5000 + k)]));
            forward(&r, "purchase");
            let r = a.delete(&format!("/v1/entities/{v}"));
            let erased = forward(&r, "erasure");
            for (name, s) in [("the other server", &b), ("the erasing server", &a)] {
                let r = s.get(&format!("/v1/entities/{v}?min_position={erased}&wait=30"));
                assert_eq!(
                    r.status,
                    404,
                    "{name} serves {v} at {} after its erasure at {erased}: {}",
                    position(&r),
                    r.body
                );
                let r = s.get(&format!(
                    "/v1/relationships/{v}/b0?min_position={erased}&wait=30"
                ));
                assert_eq!(r.status, 404, "{name}: {v}'s relationship: {}", r.body);
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

/// Registrations and erasures from one client while three others post
/// late events, consent changes and duplicates, a subscriber on the feed;
/// then a SIGKILL and a start from the snapshot and the log. The feed's ids
/// only go forward, a change's position is never below one published
/// before it, every answer's position goes forward for its client, a
/// restart answers at least every position answered, and a client resuming
/// with the last id it read either resumes after it or is told to reload.
#[test]
fn feed_ids_and_positions_go_forward_through_context_changes_concurrent_writes_and_a_sigkill() {
    use crate::feed::Stream;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--staleness", "0", "--snapshot-every", "53"];
    let s = Server::start(dir.path(), &flags);
    let head: Vec<_> = (0..60)
        .map(|m| {
            purchase(
                &format!("h{m}"),
                &format!("c{}", m % 7),
                &format!("b{}", m % 3),
                600 + m,
            )
        })
        .collect();
    assert_eq!(s.post_ndjson(&ndjson(&head)).status, 200);
    caught_up(&s);
    let mut feed = Stream::open(&s, "", &[]);
    let answered = std::sync::Mutex::new(0u64);
    std::thread::scope(|scope| {
        for n in 0..3u32 {
            let (s, answered, head) = (&s, &answered, &head);
            scope.spawn(move || {
                let mut last = 0u64;
                for i in 0..40u32 {
                    let m = i * 3 + n;
                    // Late by up to ten hours, with a consent change now and then.
                    let minute = if i % 4 == 0 { 10 * m % 600 } else { 700 + m };
                    let mut batch = vec![purchase(
                        &format!("x{n}-{i}"),
                        &format!("c{}", m % 7),
                        &format!("b{}", m % 3),
                        minute,
                    )];
                    if i % 5 == 0 {
                        batch.push(json!({"id": format!("k{n}-{i}"), "type": "consent",
                            "time": format!("2026-09-01T{:02}:00:00Z", 12 + i % 10),
                            "person": format!("c{}", m % 7), "granted": i % 10 != 0}));
                    }
                    if i % 7 == 3 {
                        batch.push(head[(m % 60) as usize].clone());
                    }
                    let r = s.post_ndjson(&ndjson(&batch));
                    assert_eq!(r.status, 200, "{}", r.body);
                    let p = position(&r);
                    assert!(p >= last, "client {n}: {p} after {last}");
                    last = p;
                    let mut a = answered.lock().unwrap();
                    *a = (*a).max(p);
                }
            });
        }
        let (s, answered) = (&s, &answered);
        scope.spawn(move || {
            let mut last = 0u64;
            for k in 0..8u32 {
                let v = format!("v{k}");
                let r = s.put_json(&format!("/v1/entities/{v}"), &json!({"kind": "influencer"}));
                assert!(r.status < 300, "{}", r.body);
                let r = s.post_ndjson(&ndjson(&[
                    purchase(&format!("w{k}"), &v, "b0", 800 + k),
                    json!({"id": format!("f{k}"), "type": "follow",
                        "time": "2026-09-01T14:00:00Z", "person": "c1", "target": v}),
                ]));
                assert_eq!(r.status, 200, "{}", r.body);
                let r = s.put_json(
                    &format!("/v1/entities/{v}"),
                    &json!({"kind": "influencer", "followers": 50_000 * (k + 1)}),
                );
                assert!(r.status < 300, "{}", r.body);
                let p = position(&r);
                assert!(p > last, "registration: {p} after {last}");
                last = p;
                if k % 2 == 0 {
                    let r = s.delete(&format!("/v1/entities/{v}"));
                    assert!(r.status < 300, "{}", r.body);
                    let p = position(&r);
                    assert!(p > last, "erasure: {p} after {last}");
                    last = p;
                }
                let mut a = answered.lock().unwrap();
                *a = (*a).max(last);
            }
        });
    });
    caught_up(&s);
    let sentinel = purchase("sentinel", "zz", "bz", 2000);
    assert_eq!(s.post_ndjson(&ndjson(&[sentinel])).status, 200);
    let (mut last_id, mut last_at) = (None::<u64>, 0u64);
    loop {
        let e = feed.next().expect("the feed ended");
        assert_eq!(e.event, "change", "{e:?}");
        let at = e.data["position"].as_u64().unwrap();
        assert!(
            at >= last_at,
            "a change at {at} after one at {last_at}: {:?}",
            e.data
        );
        last_at = at;
        if let Some(id) = &e.id {
            let id: u64 = id.parse().unwrap();
            assert!(last_id.is_none_or(|l| id > l), "id {id} after {last_id:?}");
            last_id = Some(id);
        }
        if e.data["person"] == "zz" {
            break;
        }
    }
    let last_id = last_id.expect("the sentinel's change has an id");
    let answered = *answered.lock().unwrap();
    // One more erasure, then a SIGKILL right after it was answered.
    let r = s.delete("/v1/entities/c6");
    assert!(r.status < 300, "{}", r.body);
    let erased = position(&r);
    assert!(
        erased > answered.max(last_id),
        "{erased} after {answered}, {last_id}"
    );
    s.kill();
    let s = Server::start(dir.path(), &flags);
    caught_up(&s);
    let r = s.get("/v1/brands");
    assert!(
        position(&r) >= erased,
        "a restart answers {} after {erased}",
        position(&r)
    );
    let r = s.get("/v1/entities/c6");
    assert_eq!(
        r.status, 404,
        "the erasure answered before the SIGKILL: {}",
        r.body
    );
    let mut resumed = Stream::open(&s, "", &[("Last-Event-ID", &last_id.to_string())]);
    let after = purchase("after", "yy", "by", 2100);
    assert_eq!(s.post_ndjson(&ndjson(&[after])).status, 200);
    let e = resumed.next().expect("a reset or a change");
    match e.event.as_str() {
        "reset" => {}
        "change" => {
            let at = e.data["position"].as_u64().unwrap();
            assert!(
                at > last_id,
                "resumed after {last_id} at {at}: {:?}",
                e.data
            );
        }
        other => panic!("{other}: {e:?}"),
    }
}

/// What-ifs sent right after a registration and an erasure (the state is
/// rebuilt and its live series replays): each is either marked provisional
/// (`Cache-Control: no-store`) or has the bits a restart's what-if has, and
/// once the series caught up it has them; its `Fusion-Position` is at least
/// the change's.
#[test]
fn a_what_if_right_after_a_registration_or_an_erasure_has_a_restarts_bits_or_says_it_is_provisional()
 {
    let at = "2026-12-01T00:00:00Z";
    let what_if = json!({"events": [
        purchase("w1", "c3", "b1", 3000),
        json!({"id": "w2", "type": "review", "time": "2026-09-03T02:00:00Z",
            "person": "c5", "brand": "b0", "rating": 1})],
        "at": at, "top": 20});
    let model_only = json!({"brand": "b0", "at": at, "model": {"half_life_days": {"sales": 30}}});
    let simulate = |s: &Server, body: &serde_json::Value| {
        let r = s.post_json("/v1/simulate", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--staleness", "0"]);
    let head: Vec<_> = (0..300)
        .map(|m| {
            purchase(
                &format!("h{m}"),
                &format!("c{}", m % 11),
                &format!("b{}", m % 3),
                m,
            )
        })
        .collect();
    assert_eq!(s.post_ndjson(&ndjson(&head)).status, 200);
    let follows: Vec<_> = (0..11)
        .map(|k| {
            json!({"id": format!("f{k}"), "type": "follow",
            "time": "2026-09-01T06:00:00Z", "person": format!("c{k}"), "target": "c0"})
        })
        .collect();
    assert_eq!(s.post_ndjson(&ndjson(&follows)).status, 200);
    let mut firsts = Vec::new();
    for change in ["register", "erase"] {
        let r = match change {
            "register" => s.put_json(
                "/v1/entities/c0",
                &json!({"kind": "influencer", "followers": 900_000}),
            ),
            _ => s.delete("/v1/entities/c7"),
        };
        assert!(r.status < 300, "{change}: {}", r.body);
        let changed = position(&r);
        for body in [&what_if, &model_only] {
            let first = simulate(&s, body);
            assert!(
                position(&first) >= changed,
                "{change}: a what-if at {} after {changed}",
                position(&first)
            );
            firsts.push(first);
        }
    }
    caught_up(&s);
    let settled: Vec<_> = [&what_if, &model_only]
        .map(|b| simulate(&s, b))
        .into_iter()
        .collect();
    for r in &settled {
        assert_eq!(r.header("cache-control"), None, "{}", r.body);
    }
    s.terminate();
    let s = Server::start(dir.path(), &["--staleness", "0"]);
    caught_up(&s);
    for (n, body) in [&what_if, &model_only].into_iter().enumerate() {
        let restarted = simulate(&s, body);
        assert_eq!(
            settled[n].body, restarted.body,
            "what-if {n} once caught up"
        );
        // The ones sent after the erasure (the last change) are of this log.
        let first = &firsts[2 + n];
        if first.header("cache-control") != Some("no-store") {
            assert_eq!(
                first.body, restarted.body,
                "what-if {n} right after the erasure"
            );
        }
    }
}

/// Regression (red team h38): an erasure made on one server left the
/// erased person's past changes in the other server's feed window (only
/// the erasing server's feed forgot them: `Engine::erase`), so a client
/// resuming there after the erasure was answered, and reached, was sent
/// the erased person's id and scores.
#[test]
fn another_servers_feed_forgets_an_erased_person_once_it_reaches_the_erasure() {
    use crate::feed::Stream;
    let db = crate::pg_e2e::fresh_db();
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = ["--staleness", "0", "--follow-interval", "0.2"];
    let a = Server::start_on_database(da.path(), &db.url, &flags);
    let b = Server::start_on_database(db_dir.path(), &db.url, &flags);
    let events: Vec<_> = (0..12)
        .map(|m| {
            purchase(
                &format!("e{m}"),
                if m % 2 == 0 { "gone" } else { "kept" },
                &format!("b{}", m % 2),
                m,
            )
        })
        .collect();
    let r = a.post_ndjson(&ndjson(&events));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = b.get(&format!("/healthz?min_position={}&wait=30", position(&r)));
    assert_eq!(r.status, 200, "{}", r.body);
    caught_up(&b);
    let mut feed = Stream::open(&b, "", &[]);
    let more: Vec<_> = (12..20)
        .map(|m| {
            purchase(
                &format!("e{m}"),
                if m % 2 == 0 { "gone" } else { "kept" },
                &format!("b{}", m % 2),
                100 + m,
            )
        })
        .collect();
    let r = a.post_ndjson(&ndjson(&more));
    assert_eq!(r.status, 200);
    let r = b.get(&format!("/healthz?min_position={}&wait=30", position(&r)));
    assert_eq!(r.status, 200, "{}", r.body);
    // B's feed published the person's changes.
    let mut first_id = None;
    let mut named = false;
    while !named {
        let e = feed.next().expect("the feed ended");
        assert_eq!(e.event, "change", "{e:?}");
        first_id = first_id.or(e.data["position"].as_u64());
        named = e.data["person"] == "gone";
    }
    let r = a.delete("/v1/entities/gone");
    assert!(r.status < 300, "{}", r.body);
    let erased = position(&r);
    let r = b.get(&format!("/v1/entities/gone?min_position={erased}&wait=30"));
    assert_eq!(r.status, 404, "{}", r.body);
    let r = a.post_ndjson(&ndjson(&[purchase("sentinel", "zz", "bz", 900)]));
    let r = b.get(&format!("/healthz?min_position={}&wait=30", position(&r)));
    assert_eq!(r.status, 200, "{}", r.body);
    // A client resuming on B from before the person's changes.
    let before = first_id.unwrap() - 1;
    let mut resumed = Stream::open(&b, "", &[("Last-Event-ID", &before.to_string())]);
    loop {
        let e = resumed.next().expect("the feed ended");
        if e.event == "reset" {
            break;
        }
        assert_eq!(e.event, "change", "{e:?}");
        assert_ne!(
            e.data["person"], "gone",
            "the erased person, after its erasure: {e:?}"
        );
        if e.data["person"] == "zz" {
            break;
        }
    }
}
