//! Alerts (issue #13, item 2) through a real `fusion serve` and a local
//! webhook receiver started by the test: hysteresis (an oscillating score
//! fires once), dwell, the outbox across SIGKILL (delivered exactly once
//! per idempotency key), signatures, retries to the dead state, request
//! forgery refusals and roles. The alert store's contract runs against
//! `alerts.redb` and PostgreSQL (tests/it/pg.rs).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use fusion::store::PostgresStore;
use fusion::store::alerts::{
    AlertBook, AlertFile, AlertStore, DeliveryState, Direction, Metric, NewAlert, Phase,
    PhaseChange, RuleSpec,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::pg::TestDb;
use crate::security::{Creds, block_on, call};
use crate::support::{Reply, Server};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    key: String,
    signature: String,
    body: String,
    /// The status it answered.
    answered: u16,
}

/// A webhook receiver on a loopback port: records every request and
/// answers the status it is set to.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let (g, s) = (Arc::clone(&got), Arc::clone(&status));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (g, s) = (Arc::clone(&g), Arc::clone(&s));
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut headers = BTreeMap::new();
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap_or(0);
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':') {
                            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
                        }
                    }
                    let len: usize = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answered = s.load(Ordering::SeqCst);
                    g.lock().push(Received {
                        key: headers
                            .get("fusion-idempotency-key")
                            .cloned()
                            .unwrap_or_default(),
                        signature: headers.get("fusion-signature").cloned().unwrap_or_default(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        answered,
                    });
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                });
            }
        });
        Receiver { url, got, status }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().clone()
    }
}

/// Polls `f` until it answers `Some`, for at most 60 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A mention of `brand` by `person` with this sentiment, `i` seconds after
/// a fixed start ten minutes ago (the same times for every relationship).
fn mention(
    id: &str,
    person: &str,
    brand: &str,
    sentiment: f64,
    start: DateTime<Utc>,
    i: i64,
) -> Value {
    json!({"id": id, "type": "mention", "time": rfc3339(start + chrono::Duration::seconds(i)),
           "person": person, "brand": brand, "sentiment": sentiment})
}

fn post_event(s: &Server, key: Option<&str>, event: &Value) {
    let r = call(s, "POST", "/v1/events", key, Some(event));
    assert!(
        r.status == 200 || r.status == 201 || r.status == 202,
        "{}: {}",
        r.status,
        r.body
    );
}

fn score(s: &Server, key: Option<&str>, person: &str, brand: &str) -> f64 {
    let r = call(
        s,
        "GET",
        &format!("/v1/relationships/{person}/{brand}"),
        key,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["score"].as_f64().unwrap()
}

fn create_rule(s: &Server, key: Option<&str>, rule: &Value) -> Reply {
    call(s, "POST", "/v1/alerts", key, Some(rule))
}

/// Waits until the rule was evaluated after `after` (server and test share
/// the clock): every change acknowledged before `after` has been seen.
fn evaluated_after(s: &Server, key: Option<&str>, id: u64, after: DateTime<Utc>) {
    eventually("an evaluation", || {
        let r = call(s, "GET", &format!("/v1/alerts/{id}"), key, None);
        assert_eq!(r.status, 200, "{}", r.body);
        let at: DateTime<Utc> = r.body["evaluated_at"].as_str()?.parse().ok()?;
        (at > after).then_some(())
    });
}

fn list(s: &Server, key: Option<&str>, id: u64, what: &str) -> Vec<Value> {
    let r = call(s, "GET", &format!("/v1/alerts/{id}/{what}"), key, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body[what].as_array().unwrap().clone()
}

/// Checks `Fusion-Signature: t=UNIX,v1=HEX` against the secret.
fn signature_verifies(secret: &str, header: &str, body: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Some((t, v1)) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == v1
}

const PRIVATE: &str = "--allow-private-webhooks";

#[test]
fn a_score_oscillating_inside_the_hysteresis_band_fires_one_signed_alert() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(200);
    let s = Server::start(dir.path(), &[PRIVATE, "--alert-sweep", "0.5"]);
    let start = Utc::now() - chrono::Duration::minutes(10);
    let sentiments = [-0.8, 0.8, -0.8, 0.8, -0.8];
    // Calibration on a relationship of its own: the scores each step gives.
    let mut calibration = Vec::new();
    for (i, v) in sentiments.iter().enumerate() {
        post_event(
            &s,
            None,
            &mention(&format!("cal-{i}"), "pc", "bc", *v, start, i as i64),
        );
        calibration.push(score(&s, None, "pc", "bc"));
    }
    let lows = [calibration[0], calibration[2], calibration[4]];
    let highs = [calibration[1], calibration[3]];
    let low = lows.iter().cloned().fold(f64::MIN, f64::max);
    let high = highs.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        low + 0.1 < high,
        "the steps must alternate: {calibration:?}"
    );
    let threshold = (low + high) / 2.0;
    // Re-arms only above every high: the oscillation stays inside the band.
    let rearm = high + 5.0;
    let created = create_rule(
        &s,
        None,
        &json!({"brand": "b1", "metric": "score", "direction": "below", "threshold": threshold,
                "rearm": rearm, "webhook_url": receiver.url}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_u64().unwrap();
    let secret = created.body["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32);
    // The change feed announces the alert too (issue #13: "in the store
    // and on the change feed"), to a subscriber of its brand.
    let mut feed = crate::feed::Stream::open(&s, "?brand=b1", &[]);
    for (i, v) in sentiments.iter().enumerate() {
        post_event(
            &s,
            None,
            &mention(&format!("osc-{i}"), "p1", "b1", *v, start, i as i64),
        );
        let acked = Utc::now();
        evaluated_after(&s, None, id, acked);
    }
    // Every crossing was evaluated; one alert.
    let events = list(&s, None, id, "events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["person"], "p1");
    assert_eq!(events[0]["brand"], "b1");
    assert!(events[0]["value"].as_f64().unwrap() < threshold);
    let delivered = eventually("the delivery", || {
        let d = list(&s, None, id, "deliveries");
        (d.len() == 1 && d[0]["state"] == "delivered").then_some(d)
    });
    assert_eq!(delivered[0]["tries"], 1);
    assert!(delivered[0].get("body").is_none());
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].key,
        delivered[0]["idempotency_key"].as_str().unwrap()
    );
    assert!(
        signature_verifies(&secret, &got[0].signature, &got[0].body),
        "{got:?}"
    );
    assert!(!signature_verifies(
        "whsec_other",
        &got[0].signature,
        &got[0].body
    ));
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["id"], events[0]["id"]);
    assert_eq!(body["rule"], id);
    let announced = std::iter::from_fn(|| feed.next())
        .find(|e| e.event == "alert")
        .expect("the alert on the change feed");
    assert_eq!(
        announced.data, body,
        "the feed announces the webhook's body"
    );
    assert_eq!(announced.id, None, "an alert is not a resumable position");
    // The secret is shown once: never in a listing or a read.
    let read = call(&s, "GET", &format!("/v1/alerts/{id}"), None, None);
    assert!(read.body.get("secret").is_none(), "{}", read.body);
    let all = call(&s, "GET", "/v1/alerts", None, None);
    assert!(!all.body.to_string().contains(&secret));
}

#[test]
fn an_alert_fires_only_after_its_dwell_in_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(200);
    let s = Server::start(dir.path(), &[PRIVATE, "--alert-sweep", "0.3"]);
    let start = Utc::now() - chrono::Duration::minutes(10);
    post_event(&s, None, &mention("d-0", "p1", "b1", -0.8, start, 0));
    post_event(&s, None, &mention("d-1", "p2", "b2", -0.8, start, 0));
    let low = score(&s, None, "p1", "b1");
    let rule = |brand: &str, dwell: u64| {
        let r = create_rule(
            &s,
            None,
            &json!({"brand": brand, "metric": "score", "direction": "below", "threshold": low + 1.0,
                    "rearm": low + 2.0, "dwell_seconds": dwell, "webhook_url": receiver.url}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_u64().unwrap()
    };
    // Held for 2 s: fires, no sooner than the dwell after the crossing.
    let held = rule("b1", 2);
    let events = eventually("the alert after its dwell", || {
        let e = list(&s, None, held, "events");
        (!e.is_empty()).then_some(e)
    });
    let at = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let waited = at(&events[0]["fired_at"]) - at(&events[0]["crossed_at"]);
    assert!(waited >= chrono::Duration::seconds(2), "{events:?}");
    // A dip shorter than the dwell (an hour) never fires: down, then back up.
    let dip = rule("b2", 3600);
    evaluated_after(&s, None, dip, Utc::now());
    post_event(&s, None, &mention("d-2", "p2", "b2", 0.8, start, 1));
    post_event(&s, None, &mention("d-3", "p2", "b2", 0.8, start, 2));
    assert!(score(&s, None, "p2", "b2") > low + 2.0);
    evaluated_after(&s, None, dip, Utc::now());
    assert!(list(&s, None, dip, "events").is_empty());
}

/// The outbox across SIGKILL on the store `launch` opens (called twice: the
/// server's first start and its restart, on the same store).
fn outbox_survives_sigkill(launch: impl Fn(&[&str]) -> Server) {
    let receiver = Receiver::start(503);
    let flags = [PRIVATE, "--alert-sweep", "0.5", "--webhook-backoff", "0.2"];
    let s = launch(&flags);
    let start = Utc::now() - chrono::Duration::minutes(10);
    post_event(&s, None, &mention("k-0", "p1", "b1", -0.8, start, 0));
    let low = score(&s, None, "p1", "b1");
    let created = create_rule(
        &s,
        None,
        &json!({"brand": "b1", "metric": "score", "direction": "below", "threshold": low + 1.0,
                "rearm": low + 2.0, "webhook_url": receiver.url}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_u64().unwrap();
    let secret = created.body["secret"].as_str().unwrap().to_string();
    // Tried and refused by the receiver: pending when the server dies.
    eventually("a failed try", || {
        let d = list(&s, None, id, "deliveries");
        (d.len() == 1 && d[0]["tries"].as_u64() >= Some(1) && d[0]["state"] == "pending")
            .then_some(())
    });
    s.kill();
    receiver.status.store(200, Ordering::SeqCst);
    let s = launch(&flags);
    let d = eventually("the delivery after the restart", || {
        let d = list(&s, None, id, "deliveries");
        (d.len() == 1 && d[0]["state"] == "delivered").then_some(d)
    });
    let key = d[0]["idempotency_key"].as_str().unwrap().to_string();
    let got = receiver.received();
    let ok: Vec<&Received> = got.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(ok.len(), 1, "{got:?}");
    assert!(
        got.iter().all(|r| r.key == key),
        "one key on every try: {got:?}"
    );
    assert!(signature_verifies(&secret, &ok[0].signature, &ok[0].body));
    // The relationship stayed fired across the restart: no second alert.
    evaluated_after(&s, None, id, Utc::now());
    assert_eq!(list(&s, None, id, "events").len(), 1);
}

#[test]
fn the_outbox_survives_sigkill_and_delivers_once_per_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    outbox_survives_sigkill(|flags| Server::start(dir.path(), flags));
}

#[test]
fn the_outbox_survives_sigkill_on_postgres() {
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    outbox_survives_sigkill(|flags| Server::start_on_database(dir.path(), &db.url, flags));
}

#[test]
fn a_delivery_retries_with_backoff_and_goes_dead_after_its_tries() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(500);
    let s = Server::start(
        dir.path(),
        &[
            PRIVATE,
            "--webhook-max-tries",
            "3",
            "--webhook-backoff",
            "0.05",
        ],
    );
    let start = Utc::now() - chrono::Duration::minutes(10);
    post_event(&s, None, &mention("r-0", "p1", "b1", -0.8, start, 0));
    let low = score(&s, None, "p1", "b1");
    let created = create_rule(
        &s,
        None,
        &json!({"brand": null, "kind": "consumer", "metric": "score", "direction": "below",
                "threshold": low + 1.0, "rearm": low + 2.0, "webhook_url": receiver.url}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_u64().unwrap();
    let d = eventually("the dead state", || {
        let d = list(&s, None, id, "deliveries");
        (d.len() == 1 && d[0]["state"] == "dead").then_some(d)
    });
    assert_eq!(d[0]["tries"], 3);
    assert!(
        d[0]["last_error"].as_str().unwrap().contains("500"),
        "{d:?}"
    );
    let got = receiver.received();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|r| r.key == got[0].key));
}

#[test]
fn webhooks_to_private_addresses_and_other_schemes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.1/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "ftp://93.184.216.34/hook",
        "http://user:pw@93.184.216.34/hook",
    ] {
        let r = create_rule(
            &s,
            None,
            &json!({"metric": "score", "direction": "below", "threshold": 30, "rearm": 40,
                    "webhook_url": url}),
        );
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        assert_eq!(
            r.body["errors"][0]["field"], "webhook_url",
            "{url}: {}",
            r.body
        );
    }
    // A public address literal needs no resolution.
    let ok = create_rule(
        &s,
        None,
        &json!({"metric": "trend_7d", "direction": "below", "threshold": -10, "rearm": -5,
                "webhook_url": "https://93.184.216.34/hook"}),
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    // Hysteresis on the wrong side of the threshold.
    let wrong = create_rule(
        &s,
        None,
        &json!({"metric": "score", "direction": "below", "threshold": 30, "rearm": 20,
                "webhook_url": "https://93.184.216.34/hook"}),
    );
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body["errors"][0]["field"], "rearm");
    let id = ok.body["id"].as_u64().unwrap();
    assert_eq!(
        call(&s, "DELETE", &format!("/v1/alerts/{id}"), None, None).status,
        204
    );
    assert_eq!(
        call(&s, "GET", &format!("/v1/alerts/{id}"), None, None).status,
        404
    );
}

#[test]
fn alert_rules_need_the_admin_role() {
    let dir = tempfile::tempdir().unwrap();
    let c = Creds::create(dir.path());
    let s = Server::start(dir.path(), &[PRIVATE]);
    let rule = json!({"metric": "score", "direction": "below", "threshold": 30, "rearm": 40,
                      "webhook_url": "http://127.0.0.1:9/hook"});
    for key in [&c.read, &c.ingest] {
        assert_eq!(create_rule(&s, Some(key), &rule).status, 403);
        assert_eq!(call(&s, "GET", "/v1/alerts", Some(key), None).status, 403);
    }
    assert_eq!(create_rule(&s, None, &rule).status, 401);
    let r = create_rule(&s, Some(&c.admin), &rule);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_u64().unwrap();
    for what in ["events", "deliveries"] {
        let path = format!("/v1/alerts/{id}/{what}");
        assert_eq!(call(&s, "GET", &path, Some(&c.read), None).status, 403);
        assert_eq!(call(&s, "GET", &path, Some(&c.admin), None).status, 200);
    }
    assert_eq!(
        call(
            &s,
            "DELETE",
            &format!("/v1/alerts/{id}"),
            Some(&c.read),
            None
        )
        .status,
        403
    );
}

// ---------------------------------------------------------------------------
// The store's contract, on both backends.

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn spec(brand: &str) -> RuleSpec {
    RuleSpec {
        brand: Some(brand.into()),
        kind: None,
        metric: Metric::Score,
        direction: Direction::Below,
        threshold: 40.0,
        rearm: 45.0,
        dwell_seconds: 0,
        webhook_url: "https://93.184.216.34/hook".into(),
    }
}

fn alert(person: &str) -> NewAlert {
    NewAlert {
        person: person.into(),
        brand: "b".into(),
        kind: fusion::domain::EntityKind::Consumer,
        metric: Metric::Score,
        direction: Direction::Below,
        threshold: 40.0,
        value: 39.0,
        crossed_at: t(0),
        fired_at: t(1),
    }
}

async fn contract(book: &AlertBook) {
    let a = book
        .create_rule(spec("a"), "sa".into(), t(0))
        .await
        .unwrap();
    let b = book
        .create_rule(spec("b"), "sb".into(), t(0))
        .await
        .unwrap();
    assert!(b.id > a.id);
    let rules = book.rules().await.unwrap();
    assert_eq!(rules, vec![a.clone(), b.clone()]);
    // Phases, alerts and deliveries in one commit.
    let change = |p: &str, from, phase| PhaseChange {
        person: p.into(),
        brand: "b".into(),
        from,
        phase,
        alert: None,
    };
    let fire = |p: &str, at| PhaseChange {
        alert: Some(alert(p)),
        ..change(p, Phase::Armed, Phase::Fired { at })
    };
    let fired = book
        .commit(
            b.id,
            vec![
                fire("p1", t(1)),
                change("p2", Phase::Armed, Phase::Pending { since: t(1) }),
            ],
            b.spec.webhook_url.clone(),
            t(1),
        )
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    // Compare-and-set: the same crossing committed again (another server's
    // evaluation of the same scores) finds p1 fired, not armed, and records
    // nothing; a change from a phase no longer stored is dropped too.
    let again = book
        .commit(
            b.id,
            vec![
                fire("p1", t(1)),
                change("p2", Phase::Armed, Phase::Fired { at: t(1) }),
            ],
            b.spec.webhook_url.clone(),
            t(1),
        )
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let mut phases = book.phases(b.id).await.unwrap();
    phases.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        phases,
        vec![
            (("p1".into(), "b".into()), Phase::Fired { at: t(1) }),
            (("p2".into(), "b".into()), Phase::Pending { since: t(1) }),
        ]
    );
    assert!(book.phases(a.id).await.unwrap().is_empty());
    // Armed removes the phase.
    book.commit(
        b.id,
        vec![change("p2", Phase::Pending { since: t(1) }, Phase::Armed)],
        String::new(),
        t(2),
    )
    .await
    .unwrap();
    assert_eq!(book.phases(b.id).await.unwrap().len(), 1);
    assert_eq!(book.alerts(b.id, None, 10).await.unwrap(), fired);
    assert!(
        book.alerts(b.id, Some(fired[0].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let deliveries = book.deliveries(b.id, None, 10).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    let mut d = deliveries[0].clone();
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.idempotency_key, fired[0].idempotency_key());
    assert_eq!(
        serde_json::from_str::<Value>(&d.body).unwrap()["person"],
        "p1"
    );
    // Due at its time, not before; claimed for a lease; written back after
    // a try.
    assert!(book.claim_due(t(0), t(30), 10).await.unwrap().0.is_empty());
    let (due, rest) = book.claim_due(t(5), t(35), 10).await.unwrap();
    assert_eq!((due.len(), rest), (1, None));
    assert_eq!(due[0].next_attempt, t(35));
    // Claimed: another deliverer does not get it during the lease, and
    // gets it again once the lease is over (its first deliverer died).
    let (during, rest) = book.claim_due(t(6), t(36), 10).await.unwrap();
    assert_eq!((during.len(), rest), (0, Some(t(35))));
    let (after, _) = book.claim_due(t(35), t(65), 10).await.unwrap();
    assert_eq!(after.len(), 1);
    d.tries = 1;
    d.next_attempt = t(60);
    d.last_error = Some("the receiver answered 503".into());
    book.update_deliveries(vec![d.clone()]).await.unwrap();
    let (due, rest) = book.claim_due(t(5), t(35), 10).await.unwrap();
    assert_eq!((due.len(), rest), (0, Some(t(60))));
    assert_eq!(
        book.deliveries(b.id, None, 10).await.unwrap(),
        vec![d.clone()]
    );
    d.state = DeliveryState::Delivered;
    book.update_deliveries(vec![d]).await.unwrap();
    assert_eq!(
        book.claim_due(t(100), t(130), 10).await.unwrap(),
        (vec![], None)
    );
    // Deleting a rule takes everything of it; a commit for it writes nothing.
    assert!(book.delete_rule(b.id).await.unwrap());
    assert!(!book.delete_rule(b.id).await.unwrap());
    assert_eq!(book.rules().await.unwrap(), vec![a.clone()]);
    assert!(book.phases(b.id).await.unwrap().is_empty());
    assert!(book.alerts(b.id, None, 10).await.unwrap().is_empty());
    assert!(book.deliveries(b.id, None, 10).await.unwrap().is_empty());
    let late = book
        .commit(b.id, vec![fire("p3", t(3))], String::new(), t(3))
        .await
        .unwrap();
    assert!(late.is_empty());
    assert!(book.phases(b.id).await.unwrap().is_empty());
    // Erasure takes every alert, phase and delivery naming the entity.
    book.commit(
        a.id,
        vec![fire("p1", t(4)), fire("p9", t(4))],
        a.spec.webhook_url.clone(),
        t(4),
    )
    .await
    .unwrap();
    assert_eq!(book.erase("p1").await.unwrap(), 1);
    let left = book.alerts(a.id, None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].alert.person, "p9");
    let phases = book.phases(a.id).await.unwrap();
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0].0.0, "p9");
    let deliveries = book.deliveries(a.id, None, 10).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].alert, left[0].id);
}

#[test]
fn the_redb_file_keeps_the_alert_contract_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let book = AlertBook::File(AlertFile::open(dir.path()).unwrap());
        contract(&book).await;
        drop(book);
        let reopened = AlertBook::File(AlertFile::open(dir.path()).unwrap());
        let rules = reopened.rules().await.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].secret, "sa");
        assert_eq!(
            reopened.alerts(rules[0].id, None, 10).await.unwrap().len(),
            1
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_tables_keep_the_alert_contract() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    contract(&AlertBook::Postgres(store)).await;
}

/// Two servers on one database evaluate the same rule over the same scores
/// and commit the same crossing at once: the alert is recorded once (each
/// commit compares and sets the phase it read), and its delivery is claimed
/// by one deliverer (`FOR UPDATE SKIP LOCKED`, then a lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_committing_one_crossing_record_one_alert() {
    let db = TestDb::new().await;
    let one = AlertBook::Postgres(PostgresStore::connect(&db.url).await.unwrap());
    let two = AlertBook::Postgres(PostgresStore::connect(&db.url).await.unwrap());
    let rule = one.create_rule(spec("b"), "s".into(), t(0)).await.unwrap();
    for round in 0..20 {
        let person = format!("p{round}");
        let crossing = || {
            vec![PhaseChange {
                person: person.clone(),
                brand: "b".into(),
                from: Phase::Armed,
                phase: Phase::Fired { at: t(round) },
                alert: Some(alert(&person)),
            }]
        };
        let url = rule.spec.webhook_url.clone();
        let (a, b) = tokio::join!(
            one.commit(rule.id, crossing(), url.clone(), t(round)),
            two.commit(rule.id, crossing(), url.clone(), t(round)),
        );
        let recorded = a.unwrap().len() + b.unwrap().len();
        assert_eq!(recorded, 1, "round {round}: {recorded} alerts recorded");
    }
    assert_eq!(one.alerts(rule.id, None, 100).await.unwrap().len(), 20);
    assert_eq!(one.deliveries(rule.id, None, 100).await.unwrap().len(), 20);
    // Their deliverers claim the outbox at once: each delivery goes to one.
    let (a, b) = tokio::join!(
        one.claim_due(t(30), t(60), 15),
        two.claim_due(t(30), t(60), 15),
    );
    let mut ids: Vec<u64> = a.unwrap().0.iter().map(|d| d.id).collect();
    let second: Vec<u64> = b.unwrap().0.iter().map(|d| d.id).collect();
    let claimed = ids.len() + second.len();
    ids.extend(second);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "a delivery claimed twice");
    assert_eq!(claimed, 20);
}
