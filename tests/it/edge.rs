//! The HTTP edge (issue 9, items 6, 8 and 9): bodies bounded in memory and
//! time, encodings and content types, byte order marks, duplicate keys,
//! problem types, bounded query parameters, `fusion ingest --server`, and
//! closed pipes. Each test's expected value is the right behaviour; the
//! regression tests say what broke.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::test as service;
use fusion::engine::Engine;
use fusion::http::{Limits, ProblemKind, Shared};
use fusion::ingest::{BodyFormat, parse_events};
use fusion::score::ScoringModel;
use fusion::store::EmbeddedStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::support::{STORY, Server, bin};

const BOM_CASE: &[u8] = include_bytes!("../../fixtures/field/04-bom.ndjson");
const PROBLEMS_DOC: &str = include_str!("../../docs/problems.md");

fn purchase(id: &str) -> Value {
    json!({"id": id, "type": "purchase", "time": "2026-11-01T10:00:00Z", "person": "ann", "brand": "acme", "amount": 12.5})
}

fn server(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), extra);
    (dir, s)
}

/// A raw HTTP/1.1 exchange, for heads ureq would not send (no Content-Type,
/// odd encodings) and bodies sent in pieces.
struct Raw {
    stream: TcpStream,
    /// The server's authority, sent as `Host` (the service answers only
    /// for its own names).
    host: String,
}

struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    fn connect(s: &Server) -> Raw {
        let addr = s.base.trim_start_matches("http://");
        let stream = TcpStream::connect(addr).unwrap();
        let host = addr.to_string();
        // A bound on every read: a server that never answers fails the test.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Raw { stream, host }
    }

    /// Sends a head with `headers` (each `Name: value`) for a body of `len` bytes.
    fn head(&mut self, method: &str, path: &str, headers: &[&str], len: usize) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {len}\r\n",
            self.host
        );
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).unwrap();
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads the whole answer (the server closes the connection after it).
    fn reply(mut self) -> RawReply {
        let mut buf = Vec::new();
        let _ = self.stream.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        RawReply {
            status,
            headers,
            body,
        }
    }

    /// One whole request. A server may answer before the body is all sent
    /// (a 413); the rest of the body is then not needed.
    fn request(s: &Server, method: &str, path: &str, headers: &[&str], body: &[u8]) -> RawReply {
        let mut raw = Raw::connect(s);
        raw.head(method, path, headers, body.len());
        let _ = raw.send(body);
        raw.reply()
    }

    /// A head that announces `len` bytes of body and sends none of them.
    fn head_only(s: &Server, method: &str, path: &str, headers: &[&str], len: usize) -> RawReply {
        let mut raw = Raw::connect(s);
        raw.head(method, path, headers, len);
        raw.reply()
    }
}

fn post_events(s: &Server, headers: &[&str], body: &[u8]) -> RawReply {
    Raw::request(s, "POST", "/v1/events", headers, body)
}

/// A problem answer: its status, content type and members agree, and its
/// type is one docs/problems.md lists.
fn assert_problem(r: &RawReply, status: u16, kind: ProblemKind) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    assert_eq!(r.body["type"], kind.type_uri(), "{}", r.body);
    assert_eq!(r.body["status"], status, "{}", r.body);
    assert!(r.body["title"].is_string() && r.body["detail"].is_string());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Regression (issue 9, item 6): an array of 0s gave one rejection per
/// element, an answer 47x the body; a 30 MB body took 4.4 GB.
#[test]
fn an_array_of_zeros_keeps_the_first_thousand_rejections_and_counts_all() {
    let (_d, s) = server(&[]);
    let mut body = vec![b'['];
    for i in 0..200_000 {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'0');
    }
    body.push(b']');
    let r = post_events(&s, &["Content-Type: application/json"], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rejected"].as_array().unwrap().len(), 1000);
    assert_eq!(r.body["rejected_count"], 200_000);
    assert_eq!(r.body["rejected"][999]["index"], 999);
    assert_eq!(r.body["accepted"], 0);
    assert_eq!(s.event_count(), 0);
}

/// Regression (issue 9, item 6): request bodies had no read timeout, so
/// 1,100 connections sending a byte a second held the service.
#[test]
fn a_body_that_stops_coming_gets_408_and_stores_nothing() {
    let (_d, s) = server(&["--body-idle-timeout", "0.3"]);
    let mut raw = Raw::connect(&s);
    raw.head(
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        1000,
    );
    raw.send(b"[{\"id\": \"slow-1\",").unwrap();
    let r = raw.reply();
    assert_problem(&r, 408, ProblemKind::RequestTimeout);
    assert_eq!(s.event_count(), 0);
}

#[test]
fn a_body_that_trickles_past_the_deadline_gets_408() {
    let (_d, s) = server(&["--body-deadline", "1", "--body-idle-timeout", "10"]);
    let mut raw = Raw::connect(&s);
    raw.head(
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        100_000,
    );
    let mut writer = raw.stream.try_clone().unwrap();
    // The slow client: a byte every 50 ms, never idle, never done.
    let trickle = std::thread::spawn(move || {
        for _ in 0..100_000 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let r = raw.reply();
    assert_problem(&r, 408, ProblemKind::RequestTimeout);
    assert!(started.elapsed() < Duration::from_secs(30));
    trickle.join().unwrap();
}

/// Bodies in flight share one byte budget: while one request holds it all,
/// another waits `--body-budget-wait` and gets 503 with Retry-After.
#[test]
fn bodies_past_the_budget_in_flight_get_503_with_retry_after() {
    let (_d, s) = server(&[
        "--max-body",
        "4096",
        "--max-bodies-in-flight",
        "4096",
        "--body-budget-wait",
        "0.2",
        "--body-idle-timeout",
        "60",
    ]);
    // The holder: a valid event padded to 4,000 bytes, of which 3,000 are
    // sent now and the rest once the other request has been turned away.
    let mut held = purchase("held").to_string().into_bytes();
    held.resize(4000, b' ');
    let mut holder = Raw::connect(&s);
    holder.head(
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        held.len(),
    );
    holder.send(&held[..3000]).unwrap();
    // Until the holder's bytes are charged, the other request may pass
    // (storing the same event again, a duplicate): poll for the 503.
    let other = purchase("other").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let busy = loop {
        let r = post_events(&s, &["Content-Type: application/json"], other.as_bytes());
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(Instant::now() < deadline, "the budget never filled");
    };
    assert_problem(&busy, 503, ProblemKind::Busy);
    assert!(busy.header("retry-after").is_some());
    holder.send(&held[3000..]).unwrap();
    let r = holder.reply();
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    // The budget is free again.
    let r = post_events(&s, &["Content-Type: application/json"], other.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Regression (issue 9, item 8): `text/plain` was parsed as JSON (a
/// cross-site request forgery hole: browsers send it without a preflight).
#[test]
fn only_json_and_ndjson_content_types_are_read() {
    let (_d, s) = server(&[]);
    let body = purchase("ct-1").to_string();
    for ct in [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("application/json; charset=iso-8859-1"),
        Some("nonsense"),
        None,
    ] {
        let headers: Vec<String> = ct.iter().map(|c| format!("Content-Type: {c}")).collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let r = post_events(&s, &headers, body.as_bytes());
        assert_problem(&r, 415, ProblemKind::UnsupportedMediaType);
    }
    assert_eq!(s.event_count(), 0);
    for (i, ct) in [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/x-ndjson",
        "application/jsonl",
    ]
    .iter()
    .enumerate()
    {
        let body = purchase(&format!("ct-ok-{i}")).to_string();
        let r = post_events(&s, &[&format!("Content-Type: {ct}")], body.as_bytes());
        assert_eq!((r.status, &r.body["accepted"]), (200, &json!(1)), "{ct}");
    }
}

/// Regression (issue 9, item 8): a gzip body got 400 "malformed JSON" and a
/// plain body labelled `br` got 200.
#[test]
fn gzip_and_zstd_are_decoded_and_other_encodings_get_415() {
    let (_d, s) = server(&[]);
    let nd = ndjson(&[purchase("enc-1"), purchase("enc-2")]);
    let ct = "Content-Type: application/x-ndjson";
    let r = post_events(&s, &[ct, "Content-Encoding: gzip"], &gzip(nd.as_bytes()));
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(2)),
        "{}",
        r.body
    );
    let nd = ndjson(&[purchase("enc-3")]);
    let zs = zstd::encode_all(nd.as_bytes(), 3).unwrap();
    let r = post_events(&s, &[ct, "Content-Encoding: zstd"], &zs);
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    let nd = ndjson(&[purchase("enc-4")]);
    let r = post_events(&s, &[ct, "Content-Encoding: identity"], nd.as_bytes());
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    for enc in ["br", "deflate", "compress", "gzip, zstd", "snappy"] {
        let r = post_events(
            &s,
            &[ct, &format!("Content-Encoding: {enc}")],
            nd.as_bytes(),
        );
        assert_problem(&r, 415, ProblemKind::UnsupportedEncoding);
    }
    // A plain body labelled gzip is not gzip.
    let nd = ndjson(&[purchase("enc-5")]);
    let r = post_events(&s, &[ct, "Content-Encoding: gzip"], nd.as_bytes());
    assert_problem(&r, 400, ProblemKind::MalformedBody);
    assert_eq!(s.event_count(), 4);
}

/// A zip bomb: the decompressed size is bounded by the body limit.
#[test]
fn a_compressed_body_past_the_limit_once_decompressed_gets_413() {
    let (_d, s) = server(&["--max-body", "1000000"]);
    let mut big = String::from("[");
    big.push_str(&" ".repeat(20_000_000));
    big.push(']');
    let bomb = gzip(big.as_bytes());
    assert!(bomb.len() < 100_000);
    let ct = "Content-Type: application/json";
    let r = post_events(&s, &[ct, "Content-Encoding: gzip"], &bomb);
    assert_problem(&r, 413, ProblemKind::BodyTooLarge);
    let bomb = zstd::encode_all(big.as_bytes(), 19).unwrap();
    let r = post_events(&s, &[ct, "Content-Encoding: zstd"], &bomb);
    assert_problem(&r, 413, ProblemKind::BodyTooLarge);
    // A plain body past the limit is refused from its Content-Length.
    let r = Raw::head_only(&s, "POST", "/v1/events", &[ct], big.len());
    assert_problem(&r, 413, ProblemKind::BodyTooLarge);
}

/// Field case 04: a UTF-8 byte order mark before the first event.
#[test]
fn field_case_04_a_byte_order_mark_is_skipped_over_http() {
    let (_d, s) = server(&[]);
    let r = post_events(&s, &["Content-Type: application/x-ndjson"], BOM_CASE);
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(2)),
        "{}",
        r.body
    );
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(json!([purchase("bom-3")]).to_string().as_bytes());
    let r = post_events(&s, &["Content-Type: application/json"], &body);
    assert_eq!(
        (r.status, &r.body["accepted"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    assert_eq!(s.event_count(), 3);
}

/// Regression (issue 9, item 8): with a key twice in one event, the last
/// silently won.
#[test]
fn a_duplicate_key_rejects_the_event_on_that_key() {
    let (_d, s) = server(&[]);
    let dup = r#"{"id":"dup-1","type":"purchase","time":"2026-11-01T10:00:00Z","person":"ann","brand":"acme","amount":1,"amount":1000}"#;
    let ok = purchase("dup-ok").to_string();
    for (ct, body) in [
        ("application/json", dup.to_string()),
        ("application/json", format!("[{ok},{dup}]")),
        ("application/x-ndjson", format!("{ok}\n{dup}\n")),
    ] {
        let r = post_events(&s, &[&format!("Content-Type: {ct}")], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        let rejected = &r.body["rejected"][0];
        assert_eq!(rejected["id"], "dup-1", "{}", r.body);
        assert_eq!(rejected["errors"][0]["field"], "amount", "{}", r.body);
        assert_eq!(r.body["rejected_count"], 1);
    }
    assert_eq!(s.event_count(), 1);
    assert_eq!(
        s.get("/v1/entities/ann/events").body["items"][0]["amount"],
        12.5
    );
}

/// Regression (issue 9, item 9): unknown routes and wrong methods answered
/// with empty bodies. Every error answer is a problem with a listed type.
#[test]
fn every_error_answer_is_a_problem_with_a_listed_type() {
    let (_d, s) = server(&["--demo"]);
    let r = Raw::request(&s, "GET", "/v2/nothing", &[], b"");
    assert_problem(&r, 404, ProblemKind::UnknownRoute);
    let r = Raw::request(&s, "GET", "/v1/events", &[], b"");
    assert_problem(&r, 405, ProblemKind::MethodNotAllowed);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = Raw::request(&s, "PATCH", "/v1/entities/ann", &[], b"");
    assert_problem(&r, 405, ProblemKind::MethodNotAllowed);
    let r = Raw::request(&s, "GET", "/v1/relationships/fan1/nobody", &[], b"");
    assert_problem(&r, 404, ProblemKind::NotFound);
    // The JSON extractor of entity bodies.
    let put = |ct: &str, body: &str| {
        Raw::request(
            &s,
            "PUT",
            "/v1/entities/zed",
            &[&format!("Content-Type: {ct}")],
            body.as_bytes(),
        )
    };
    assert_problem(
        &put("text/plain", r#"{"kind":"consumer"}"#),
        415,
        ProblemKind::UnsupportedMediaType,
    );
    assert_problem(
        &put("application/json", r#"{"kind":"#),
        400,
        ProblemKind::MalformedBody,
    );
    assert_problem(
        &put("application/json", r#"{"kind":"wizard"}"#),
        400,
        ProblemKind::InvalidBody,
    );
    assert_problem(
        &put(
            "application/json",
            r#"{"kind":"consumer","name":"x","followers":-1}"#,
        ),
        400,
        ProblemKind::InvalidBody,
    );
    let r = Raw::head_only(
        &s,
        "PUT",
        "/v1/entities/zed",
        &["Content-Type: application/json"],
        2 << 20,
    );
    assert_problem(&r, 413, ProblemKind::BodyTooLarge);
    assert_problem(
        &Raw::request(
            &s,
            "PUT",
            "/v1/entities/sweater",
            &["Content-Type: application/json"],
            br#"{"kind":"consumer"}"#,
        ),
        422,
        ProblemKind::EntityConflict,
    );
    let r = post_events(
        &s,
        &["Content-Type: application/json"],
        json!([{"id": "x"}]).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = Raw::request(
        &s,
        "POST",
        "/v1/events?atomic=true",
        &["Content-Type: application/json"],
        json!([{"id": "x"}]).to_string().as_bytes(),
    );
    assert_problem(&r, 422, ProblemKind::InvalidEvents);
    let r = Raw::request(
        &s,
        "POST",
        "/v1/events?atomic=yes",
        &["Content-Type: application/json"],
        json!([{"id": "x"}]).to_string().as_bytes(),
    );
    assert_problem(&r, 400, ProblemKind::InvalidParameter);
    assert_eq!(r.body["errors"][0]["field"], "atomic");
}

/// The answers actix-http gives before the app runs, which docs/problems.md
/// lists as the exceptions to problem+json.
#[test]
fn head_errors_are_the_documented_exceptions() {
    let (_d, s) = server(&[]);
    let raw_head = |head: &[u8]| {
        let mut raw = Raw::connect(&s);
        raw.send(head).unwrap();
        raw.reply()
    };
    let many: String = (0..120).map(|i| format!("X-{i}: y\r\n")).collect();
    for (head, status) in [
        (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
        ),
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
            431,
        ),
    ] {
        let r = raw_head(&head);
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&head));
        assert_eq!(r.body, Value::String(String::new()));
    }
    assert!(PROBLEMS_DOC.contains("| 431 |") && PROBLEMS_DOC.contains("duplicate `Host`"));
}

/// docs/problems.md lists every type the service answers with, and its status.
#[test]
fn every_problem_type_is_documented_with_its_status() {
    for kind in ProblemKind::ALL {
        let row = PROBLEMS_DOC
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", kind.type_uri())))
            .unwrap_or_else(|| panic!("docs/problems.md does not list {}", kind.type_uri()));
        assert!(row.split('|').nth(2).is_some_and(|s| !s.trim().is_empty()));
    }
}

/// Regression (issue 9, item 9): these steps panicked in the handler
/// (chrono overflow, a split inside `é`) and closed the connection unanswered.
#[test]
fn history_steps_that_panicked_are_400_on_step() {
    let (_d, s) = server(&["--demo"]);
    for step in [
        "99999999999999d",
        "9223372036854775807s",
        "%C3%A9",
        "0s",
        "-1d",
    ] {
        let r = Raw::request(
            &s,
            "GET",
            &format!("/v1/relationships/artist/bistro/history?step={step}"),
            &[],
            b"",
        );
        assert_problem(&r, 400, ProblemKind::InvalidParameter);
        assert_eq!(r.body["errors"][0]["field"], "step", "{step}");
    }
}

/// Regression (issue 9, item 2): NaN in `min_score` or in a cursor gave 200.
#[test]
fn nan_and_out_of_range_parameters_are_400_on_that_parameter() {
    let (_d, s) = server(&["--demo"]);
    let nan_cursor = format!("{:016x}.fan1", f64::NAN.to_bits());
    for (query, field) in [
        ("min_score=NaN".to_string(), "min_score"),
        ("max_score=nan".to_string(), "max_score"),
        ("min_score=inf".to_string(), "min_score"),
        ("min_score=101".to_string(), "min_score"),
        ("limit=0".to_string(), "limit"),
        ("limit=-1".to_string(), "limit"),
        ("limit=99999999999999999999999".to_string(), "limit"),
        (format!("cursor={nan_cursor}"), "cursor"),
        ("cursor=zzz".to_string(), "cursor"),
        ("sort=height".to_string(), "sort"),
        ("kind=brand".to_string(), "kind"),
        ("limit=1&limit=2".to_string(), "limit"),
    ] {
        let r = Raw::request(
            &s,
            "GET",
            &format!("/v1/brands/sweater/relationships?{query}"),
            &[],
            b"",
        );
        assert_problem(&r, 400, ProblemKind::InvalidParameter);
        assert_eq!(r.body["errors"][0]["field"], field, "{query}");
    }
}

/// Reads at any time within the accepted range answer; outside it, 400 on
/// the parameter. Regression (issue 9, item 9): a far-future `at` gave 404
/// (every share had decayed to 0) instead of a score decayed to 50.
#[test]
fn reads_far_ahead_score_50_and_times_outside_the_range_are_400() {
    let (_d, s) = server(&["--demo"]);
    let r = s.get("/v1/relationships/artist/bistro?at=2199-12-31T23:59:59Z");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["score"], 50.0, "{}", r.body);
    assert!(!r.body["contributions"].as_array().unwrap().is_empty());
    let r = s.get("/v1/relationships/artist/bistro/history?from=2190-01-01T00:00:00Z&to=2199-12-31T00:00:00Z&step=30d");
    assert_eq!(r.status, 200, "{}", r.body);
    for (path, field) in [
        (
            "/v1/relationships/artist/bistro?at=2200-01-01T00:00:00Z",
            "at",
        ),
        (
            "/v1/relationships/artist/bistro?at=1899-12-31T23:59:59Z",
            "at",
        ),
        (
            "/v1/relationships/artist/bistro?at=9999-12-31T23:59:59Z",
            "at",
        ),
        (
            "/v1/relationships/artist/bistro/history?to=2300-01-01T00:00:00Z",
            "to",
        ),
        (
            "/v1/relationships/artist/bistro/history?from=0001-01-01T00:00:00Z",
            "from",
        ),
    ] {
        let r = Raw::request(&s, "GET", path, &[], b"");
        assert_problem(&r, 400, ProblemKind::InvalidParameter);
        assert_eq!(r.body["errors"][0]["field"], field, "{path}");
    }
}

/// The routes and the parameters each reads.
const READS: &[(&str, &[&str])] = &[
    ("/v1/relationships/artist/bistro", &["at"]),
    (
        "/v1/relationships/artist/bistro/history",
        &["from", "to", "step"],
    ),
    (
        "/v1/brands/sweater/relationships",
        &["sort", "kind", "min_score", "max_score", "limit", "cursor"],
    ),
    ("/v1/brands/sweater", &[]),
    ("/v1/entities/artist", &[]),
    ("/v1/entities/artist/events", &["limit", "cursor"]),
];

/// Percent-encodes every byte but the unreserved ones.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Values worth trying for a parameter: any string, near-misses of valid
/// values, and numbers at and past every bound.
fn values() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        ("[0-9]{0,25}", any::<char>()).prop_map(|(n, c)| format!("{n}{c}")),
        "[0-9]{0,25}[smhd]",
        "-?[0-9]{1,4}(\\.[0-9]{0,3})?(e[0-9]{1,3})?",
        "(NaN|nan|inf|-inf|Infinity|1e309|-0|0x10)",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})",
        "[0-9a-f]{0,17}\\.[a-z0-9.]{0,6}",
        "(-?score|-?trend7d|consumer|influencer|true|false)",
    ]
}

/// No query string makes a read panic or answer an error that is not a
/// problem: every answer is 2xx, 304, or a problem whose members agree and
/// whose type is listed. In-process (actix's test service), so a panic in a
/// handler fails the case, and proptest shrinks it.
#[test]
fn no_query_string_makes_a_read_panic_or_answer_a_bare_error() {
    let sys = actix_web::rt::System::new();
    let dir = tempfile::tempdir().unwrap();
    let app = sys.block_on(async {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let engine = Engine::open(store, Arc::new(ScoringModel::default_model()))
            .await
            .unwrap();
        let story = parse_events(
            STORY.as_bytes(),
            BodyFormat::Ndjson,
            &fusion::score::ScoringModel::default_model().currency,
        )
        .unwrap();
        engine
            .submit(story.events, story.rejected, true, chrono::Utc::now())
            .await
            .unwrap();
        let limits = Limits::default();
        service::init_service(fusion::http::app(
            Arc::new(engine),
            limits,
            Shared::new(&limits),
        ))
        .await
    });
    // One parameter fuzzed alone (so the handler reaches it whatever it
    // checks first), sometimes with others and a raw tail: broken escapes,
    // empty pairs, repeated names.
    let targets: Vec<(usize, usize)> = READS
        .iter()
        .enumerate()
        .flat_map(|(r, (_, names))| (0..names.len().max(1)).map(move |i| (r, i)))
        .collect();
    let strategy = (
        proptest::sample::select(targets),
        values(),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec((0..8usize, values()), 1..4),
        ],
        prop_oneof![2 => Just(String::new()), 1 => "[A-Za-z0-9%&=._~+-]{1,24}"],
    );
    let mut runner = TestRunner::new(Config::with_cases(1000));
    runner
        .run(&strategy, |((route, param), value, others, raw)| {
            let (path, names) = READS[route];
            let mut query: Vec<String> = std::iter::once((param, value))
                .chain(others)
                .filter(|_| !names.is_empty())
                .map(|(i, v)| format!("{}={}", names[i % names.len()], encode(&v)))
                .collect();
            query.push(raw);
            let uri = format!("{path}?{}", query.join("&"));
            let (status, ct, body) = sys.block_on(async {
                let req = service::TestRequest::get().uri(&uri).to_request();
                let resp = service::call_service(&app, req).await;
                let status = resp.status().as_u16();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                (status, ct, service::read_body(resp).await)
            });
            if (200..300).contains(&status) || status == 304 {
                return Ok(());
            }
            prop_assert!(status < 500, "{} -> {}", uri, status);
            prop_assert_eq!(ct.as_str(), "application/problem+json", "{}", uri);
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            prop_assert_eq!(&v["status"], &json!(status), "{}", uri);
            let kind = v["type"].as_str().unwrap_or("");
            prop_assert!(
                ProblemKind::ALL.iter().any(|k| k.type_uri() == kind),
                "{}: {}",
                uri,
                kind
            );
            Ok(())
        })
        .unwrap();
}

fn ingest(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("ingest")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Field case 04 through `fusion ingest`, into the store and into a server.
#[test]
fn field_case_04_a_byte_order_mark_is_skipped_by_fusion_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let out = ingest(&[
        "fixtures/field/04-bom.ndjson",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "accepted=2 duplicates=0 rejected=0 warnings=0"
    );
    let (_d, s) = server(&[]);
    let out = ingest(&["fixtures/field/04-bom.ndjson", "--server", &s.base]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "accepted=2 duplicates=0 rejected=0 warnings=0"
    );
    assert_eq!(s.event_count(), 2);
}

/// Regression (issue 8, item 8): `fusion ingest --server` sent 5,000 lines
/// per request whatever their size, and on 413 loaded nothing and exited 1.
#[test]
fn fusion_ingest_splits_requests_the_server_finds_too_large() {
    let (_d, s) = server(&["--max-body", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let mut lines: Vec<Value> = (0..60).map(|i| purchase(&format!("split-{i}"))).collect();
    // One line alone is over the server's limit.
    lines.insert(
        30,
        json!({"id": "huge", "type": "post", "time": "2026-11-01T10:00:00Z", "person": "ann", "brand": "acme", "text": "great ".repeat(1000)}),
    );
    std::fs::write(&file, ndjson(&lines)).unwrap();
    let out = ingest(&[
        file.to_str().unwrap(),
        "--server",
        &s.base,
        "--request-bytes",
        "1000000",
        "--no-gzip",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "accepted=60 duplicates=0 rejected=1 warnings=0"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":31 (id huge)") && stderr.contains("413"),
        "{stderr}"
    );
    assert_eq!(s.event_count(), 60);
    // Sized in bytes (and gzip-compressed), the same file goes in without a 413.
    let (_d2, s2) = server(&["--max-body", "3000"]);
    let out = ingest(&[
        file.to_str().unwrap(),
        "--server",
        &s2.base,
        "--request-bytes",
        "2500",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s2.event_count(), 60);
}

/// `fusion ingest --server` waits out a busy server (503 with Retry-After)
/// instead of failing.
#[test]
fn fusion_ingest_retries_after_a_503() {
    let (_d, s) = server(&[
        "--max-body",
        "4096",
        "--max-bodies-in-flight",
        "4096",
        "--body-budget-wait",
        "0.1",
        "--body-idle-timeout",
        "60",
    ]);
    // Hold the whole body budget with a request that stops half-way.
    let mut held = purchase("held").to_string().into_bytes();
    held.resize(4000, b' ');
    let mut holder = Raw::connect(&s);
    holder.head(
        "POST",
        "/v1/events",
        &["Content-Type: application/json"],
        held.len(),
    );
    holder.send(&held[..3000]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, ndjson(&[purchase("r-1"), purchase("r-2")])).unwrap();
    let mut child = Command::new(bin())
        .args(["ingest", file.to_str().unwrap(), "--server", &s.base])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the client says it was asked to retry, free the budget.
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("retry later") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "fusion ingest ended without a retry: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    holder.send(&held[3000..]).unwrap();
    assert_eq!(holder.reply().status, 200);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "accepted=2 duplicates=0 rejected=0 warnings=0"
    );
}

/// Regression (issue 9, item 8): `fusion score … | head -1` panicked on the
/// closed pipe. Every command ends quietly, with status 0.
#[test]
fn commands_end_quietly_with_status_0_on_a_closed_pipe() {
    let mut child = Command::new(bin())
        .args(["generate", "--events", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    assert!(
        ingest(&["fixtures/seed_story.ndjson", "--data-dir", data])
            .status
            .success()
    );
    for args in [
        vec!["score", "artist", "sweater", "--at", "2026-11-13T00:00:00Z"],
        vec!["score", "artist", "sweater", "--json"],
        vec!["rescore"],
    ] {
        let mut child = Command::new(bin())
            .args(&args)
            .args(["--data-dir", data])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
