//! Operating the service (issue 12): Prometheus metrics, request ids, JSON
//! logs, graceful shutdown on SIGTERM, HTTPS.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::certs::pki;
use crate::pg_e2e::{poll, stop_mid_ingest};
use crate::security::call;
use crate::support::{Launch, Server, bin, free_port};

/// The sum of the samples of `name` whose labels include every `k="v"`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub fn scrape(s: &Server) -> String {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    match r.body {
        Value::String(text) => text,
        other => panic!("not text: {other}"),
    }
}

/// Regression: `fusion_feed_cutoffs_total` (and every other counter) was
/// absent from `/metrics` until its first count, so a dashboard's `rate()`
/// had no series to start from. Every metric the service declares has its
/// `# HELP` line on a fresh server, and each unlabelled counter and gauge
/// its value.
#[test]
fn every_declared_metric_is_exposed_from_the_start() {
    use fusion::telemetry::{METRICS, MetricKind};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let text = scrape(&s);
    for m in METRICS {
        if matches!(m.kind, MetricKind::Counter | MetricKind::Gauge) {
            assert!(
                text.contains(&format!("\n{} ", m.name)),
                "{} missing on a fresh server:\n{text}",
                m.name
            );
            assert!(
                text.contains(&format!("# HELP {} ", m.name)),
                "{} has no help line:\n{text}",
                m.name
            );
        }
    }
    assert_eq!(metric(&text, "fusion_feed_cutoffs_total", &[]), 0.0);
}

#[test]
fn metrics_move_when_events_are_posted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let before = scrape(&s);
    let t = "2026-11-01T10:00:00Z";
    let good = |id: &str| json!({"id": id, "type": "purchase", "time": t, "person": "ann", "brand": "acme", "amount": 3});
    let body = json!([
        good("m1"), good("m2"), good("m3"), good("m1"),
        {"id": "bad1", "type": "purchase", "time": t, "person": "ann", "brand": "acme", "amount": -1},
        {"id": "bad2", "type": "purchase", "time": t, "person": "ann", "brand": "acme", "amount": 1, "colour": "red"},
    ]);
    let r = s.post_json("/v1/events", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get("/v1/relationships/ann/acme?at=2026-11-02T00:00:00Z")
            .status,
        200
    );
    let after = scrape(&s);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(moved("fusion_events_accepted_total", &[]), 3.0);
    assert_eq!(moved("fusion_events_duplicate_total", &[]), 1.0);
    assert_eq!(moved("fusion_events_rejected_total", &[]), 2.0);
    assert_eq!(
        moved("fusion_event_field_errors_total", &[("field", "amount")]),
        1.0
    );
    // A field no event has is counted as `other`: senders cannot grow the label set.
    assert_eq!(
        moved("fusion_event_field_errors_total", &[("field", "other")]),
        1.0
    );
    assert!(!after.contains("colour"));
    // The relationship read's phases (task h49): one sample each for the
    // one uncached read, at least one walk.
    for phase in ["lock", "pass", "reasons", "json", "total"] {
        assert_eq!(
            moved(
                "fusion_relationship_read_seconds_count",
                &[("phase", phase)]
            ),
            1.0,
            "{phase}"
        );
    }
    assert!(
        moved(
            "fusion_relationship_read_seconds_count",
            &[("phase", "walk")]
        ) >= 1.0
    );
    assert_eq!(moved("fusion_commit_seconds_count", &[]), 1.0);
    assert!(moved("fusion_commit_seconds_sum", &[]) > 0.0);
    // The fold thread's round, by phase (task h48): the events were folded
    // in place before the answer was sent.
    assert_eq!(
        moved("fusion_fold_round_seconds_count", &[("phase", "fold")]),
        1.0
    );
    assert!(metric(&after, "fusion_commit_seconds_bucket", &[("le", "+Inf")]) >= 1.0);
    let post = [
        ("method", "POST"),
        ("route", "/v1/events"),
        ("status", "200"),
    ];
    assert_eq!(
        moved("fusion_http_request_duration_seconds_count", &post),
        1.0
    );
    let read = [
        ("route", "/v1/relationships/{person}/{brand}"),
        ("status", "200"),
    ];
    assert_eq!(
        moved("fusion_http_request_duration_seconds_count", &read),
        1.0
    );
    // Only samples carry labels (the `# HELP` lines are the metrics' own
    // text, where "cannot" holds "ann").
    assert!(
        after
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| !l.contains("ann")),
        "labels name routes, never ids"
    );
    assert!(metric(&after, "fusion_open_connections", &[]) >= 1.0);
    assert_eq!(metric(&after, "fusion_events", &[]), 3.0);
    for gauge in [
        "fusion_fold_lag_events",
        "fusion_fold_lag_seconds",
        "fusion_live_lag_events",
        "fusion_live_lag_seconds",
    ] {
        assert!(
            after.contains(&format!("\n{gauge} ")),
            "{gauge} missing:\n{after}"
        );
    }
}

#[test]
fn metrics_can_have_an_address_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let s = Server::start(dir.path(), &["--metrics-bind", &bind]);
    assert_eq!(s.get("/metrics").status, 404);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(&format!("http://{bind}/metrics")).call().unwrap();
    assert_eq!(r.status(), 200);
    let text = r.body_mut().read_to_string().unwrap();
    assert!(text.contains("fusion_"), "{text}");
}

#[test]
fn every_answer_carries_a_request_id_and_problems_repeat_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mine = s.request(
        "GET",
        "/v1/relationships/nobody/nothing",
        &[("X-Request-Id", "trace-42.a_b:c")],
        None,
    );
    assert_eq!(mine.status, 404);
    assert_eq!(mine.header("x-request-id"), Some("trace-42.a_b:c"));
    assert_eq!(mine.body["request_id"], "trace-42.a_b:c");
    // An id that could forge log lines is replaced by one of ours.
    let odd = s.request(
        "GET",
        "/v1/brands/none",
        &[("X-Request-Id", "a b\"c")],
        None,
    );
    let id = odd.header("x-request-id").unwrap().to_string();
    assert_ne!(id, "a b\"c");
    assert_eq!(id.len(), 24);
    assert_eq!(odd.body["request_id"], id.as_str());
    let ok = s.get("/healthz");
    assert_eq!(ok.header("x-request-id").map(str::len), Some(24));
    // Problems made by actix itself (a bad JSON body) get it too.
    let bad = s.put_json("/v1/entities/x", &json!({"kind": 7}));
    assert_eq!(bad.status, 400);
    assert!(bad.body["request_id"].is_string(), "{}", bad.body);
}

#[test]
fn json_logs_carry_the_request_id_and_the_route_not_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let port = free_port();
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--log-format",
            "json",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/v1/relationships/alice/acme");
    poll("the server to answer", Duration::from_secs(60), || {
        agent
            .get(&url)
            .header("X-Request-Id", "log-test-1")
            .call()
            .ok()
            .map(|r| assert_eq!(r.status(), 404))
    });
    let line = poll("the access log line", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                v["span"]["request_id"] == "log-test-1" && v["fields"]["message"] == "answered"
            })
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line["span"]["route"], "/v1/relationships/{person}/{brand}");
    assert_eq!(line["fields"]["status"], 404);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "every line is JSON:\n{text}"
    );
    assert!(
        !text.contains("alice"),
        "paths hold ids; the log names routes:\n{text}"
    );
}

#[test]
fn sigterm_mid_ingest_answers_what_is_in_flight_loses_nothing_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    stop_mid_ingest(
        || Server::start(dir.path(), &[]),
        |s| {
            let status = s.terminate();
            assert!(status.success(), "exit status after SIGTERM: {status}");
        },
    );
}

#[test]
fn https_round_trip_with_a_certificate_made_in_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(&["localhost", "127.0.0.1"]);
    let admin = "t".repeat(40);
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let s = Server::launch(
        dir.path(),
        &Launch {
            extra: &["--demo", "--tls-cert", cert, "--tls-key", key],
            env: &[("FUSION_ADMIN_KEY", &admin)],
            ca_pem: Some(pki.ca_pem.as_bytes()),
        },
    );
    assert!(s.base.starts_with("https://"));
    let r = call(
        &s,
        "GET",
        "/v1/relationships/artist/sweater",
        Some(&admin),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["score"].is_number());
    // Session cookies are Secure over HTTPS.
    let session = call(&s, "POST", "/v1/session", Some(&admin), None);
    let cookie = session.header("set-cookie").unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");

    // fusion ingest speaks HTTPS too, trusting the test CA and sending the key.
    let file = dir.path().join("events.ndjson");
    std::fs::write(
        &file,
        "{\"id\":\"tls-1\",\"type\":\"purchase\",\"time\":\"2026-11-20T10:00:00Z\",\"person\":\"fan3\",\"brand\":\"sweater\",\"amount\":9}\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args([
            "ingest",
            "--server",
            &s.base,
            "--ca-cert",
            pki.ca.to_str().unwrap(),
        ])
        .arg(&file)
        .env("FUSION_API_KEY", &admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted=1"));
    // Without the key it is refused, and says why.
    let out = Command::new(bin())
        .args([
            "ingest",
            "--server",
            &s.base,
            "--ca-cert",
            pki.ca.to_str().unwrap(),
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // Plain HTTP to the HTTPS port gets no answer; another CA is not trusted.
    let plain = s.base.replace("https://", "http://");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let answered = agent
        .get(&format!("{plain}/healthz"))
        .call()
        .map(|mut r| {
            r.body_mut()
                .as_reader()
                .read_to_end(&mut Vec::new())
                .is_ok()
                && r.status() == 200
        })
        .unwrap_or(false);
    assert!(!answered, "plain HTTP was served on the HTTPS port");
    let other = pki_agent(&crate::certs::pki(&["localhost"]).ca_pem);
    assert!(other.get(&format!("{}/healthz", s.base)).call().is_err());
}

fn pki_agent(ca_pem: &str) -> ureq::Agent {
    let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .build(),
        )
        .build()
        .into()
}

/// Every operation the served spec describes is a registered route (the
/// latency metric labels each request with the route pattern it matched,
/// `unmatched` when none did), and the spec names exactly the access
/// table's routes (unit-tested in openapi.rs): so a route cannot be
/// registered without being described and given an access rule.
#[test]
fn every_operation_of_the_served_spec_is_a_registered_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let spec = s.get("/openapi.json");
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"], "3.1.0");
    let mut operations = Vec::new();
    for (path, item) in spec.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let concrete = crate::support::walkable_path(path, "artist", "sweater");
            let r = s.request(&method, &concrete, &[], None);
            assert_ne!(r.status, 405, "{method} {path}");
            operations.push((method, path.clone()));
        }
    }
    assert!(operations.len() >= 16, "{operations:?}");
    let metrics = scrape(&s);
    for (method, path) in &operations {
        assert!(
            metric(
                &metrics,
                "fusion_http_request_duration_seconds_count",
                &[("method", method), ("route", path)]
            ) >= 1.0,
            "{method} {path} did not reach its route"
        );
    }
    // The reference page is served from the binary.
    let page = s.get("/docs/");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    let css = s.get("/docs/swagger-ui.css");
    assert_eq!(css.status, 200);
    assert!(css.content_type.starts_with("text/css"));
}
