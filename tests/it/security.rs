//! Keys, roles, sessions, erasure and the edge checks (issue 12), through a
//! real `fusion serve` on the embedded store and the `fusion keys` command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use fusion::auth::{ApiKey, KeyRecord, Role};
use fusion::http::auth::{Need, ROUTES};
use fusion::store::KeyStore;
use fusion::store::keys::{KeyFile, secret};
use serde_json::{Value, json};

use crate::pg_e2e::poll;
use crate::support::{Launch, Reply, Server, bin};

/// Runs `fusion keys ARGS STORE...`, checks it succeeded, answers stdout.
pub fn keys(args: &[&str], store: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("keys")
        .args(args)
        .args(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fusion keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn data_dir(dir: &Path) -> [&str; 2] {
    ["--data-dir", dir.to_str().unwrap()]
}

/// One key of each kind the tests present.
pub struct Creds {
    pub admin: String,
    pub read: String,
    pub ingest: String,
    pub expired: String,
    pub revoked: String,
    /// The admin key's id with another secret.
    pub wrong: String,
}

impl Creds {
    /// Creates the keys with `fusion keys` (and, for the expired one, the
    /// key store itself: the command refuses an expiry in the past).
    pub fn create(dir: &Path) -> Creds {
        let store = data_dir(dir);
        let create = |role: &str| keys(&["create", "--role", role], &store);
        let admin = create("admin");
        let revoked = create("admin");
        keys(&["revoke", &revoked], &store);
        let expired = ApiKey::generate();
        let now = Utc::now();
        block_on(KeyFile::in_dir(dir).create_key(KeyRecord::new(
            &expired,
            Role::Admin,
            now - chrono::Duration::days(2),
            Some(now - chrono::Duration::days(1)),
        )))
        .unwrap();
        let admin_id = ApiKey::parse(&admin).unwrap().id;
        Creds {
            wrong: format!("fsk_{admin_id}_{}", "A".repeat(43)),
            read: create("read"),
            ingest: create("ingest"),
            expired: expired.reveal(),
            revoked,
            admin,
        }
    }
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A request with an optional bearer key and JSON body.
pub fn call(
    s: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let auth = key.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let bytes = body.map(|b| b.to_string().into_bytes());
    s.request(
        method,
        path,
        &headers,
        bytes.as_deref().map(|b| ("application/json", b)),
    )
}

/// A concrete request for a route pattern, on the seed story's ids.
fn concrete(pattern: &str) -> String {
    crate::support::walkable_path(pattern, "fan1", "sweater")
}

fn body_for(method: &str, pattern: &str, n: usize) -> Option<Value> {
    match (method, pattern) {
        ("POST", "/v1/events") => Some(json!({"id": format!("role-{n}"), "type": "purchase",
            "time": "2026-11-20T10:00:00Z", "person": "fan2", "brand": "sweater", "amount": 5})),
        ("PUT", "/v1/entities/{id}") => Some(json!({"kind": "consumer", "name": "Fan One"})),
        _ => None,
    }
}

/// Every route of the one access table, for each credential: no key, a
/// wrong key, an expired key, a revoked key, and a key of each role. A
/// route added to the table is covered here without a new line.
#[test]
fn every_route_answers_each_credential_as_its_role_allows() {
    let dir = tempfile::tempdir().unwrap();
    let c = Creds::create(dir.path());
    let s = Server::start(dir.path(), &["--demo"]);
    let cases: [(&str, Option<&str>, Option<Role>); 7] = [
        ("no key", None, None),
        ("a wrong key", Some(&c.wrong), None),
        ("an expired key", Some(&c.expired), None),
        ("a revoked key", Some(&c.revoked), None),
        ("an ingest key", Some(&c.ingest), Some(Role::Ingest)),
        ("a read key", Some(&c.read), Some(Role::Read)),
        ("an admin key", Some(&c.admin), Some(Role::Admin)),
    ];
    let mut n = 0;
    for route in ROUTES {
        let path = concrete(route.path);
        for (label, key, role) in &cases {
            n += 1;
            let body = body_for(route.method, route.path, n);
            let r = call(&s, route.method, &path, *key, body.as_ref());
            let refused = match (route.need, role) {
                (Need::Public, _) => None,
                (Need::Key(_), None) => Some(401),
                (Need::Key(needed), Some(role)) => (!role.grants(needed)).then_some(403),
            };
            let what = format!("{} {} with {label}", route.method, route.path);
            match refused {
                Some(status) => {
                    assert_eq!(r.status, status, "{what}: {}", r.body);
                    assert_eq!(r.content_type, "application/problem+json", "{what}");
                    assert!(r.body["request_id"].is_string(), "{what}: {}", r.body);
                    if status == 401 {
                        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
                    }
                }
                None => assert!(
                    r.status != 401 && r.status != 403 && r.status < 500,
                    "{what}: {} {}",
                    r.status,
                    r.body
                ),
            }
        }
    }
    // A scheme other than Bearer is no credential.
    let basic = s.request(
        "GET",
        "/v1/brands/sweater",
        &[("Authorization", "Basic YTpi")],
        None,
    );
    assert_eq!(basic.status, 401);
}

#[test]
fn revoked_and_new_keys_reach_a_running_server_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_dir(dir.path());
    keys(&["create", "--role", "admin"], &store);
    let read = keys(&["create", "--role", "read"], &store);
    let s = Server::start(dir.path(), &["--demo"]);
    let status = |key: &str| call(&s, "GET", "/v1/brands/sweater", Some(key), None).status;
    assert_eq!(status(&read), 200);

    // The server holds keys.redb only for moments, so the command works
    // while it runs.
    let id = ApiKey::parse(&read).unwrap().id.to_string();
    keys(&["revoke", &id], &store);
    poll(
        "the revoked key to be refused",
        Duration::from_secs(30),
        || (status(&read) == 401).then_some(()),
    );
    let fresh = keys(&["create", "--role", "read"], &store);
    poll(
        "the new key to be accepted",
        Duration::from_secs(30),
        || (status(&fresh) == 200).then_some(()),
    );

    // Last use is written back off the request path, within seconds of the
    // first use.
    let fresh_id = ApiKey::parse(&fresh).unwrap().id.to_string();
    let listed = poll("last_used of the new key", Duration::from_secs(30), || {
        let list = keys(&["list", "--json"], &store);
        list.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|k| k["id"] == fresh_id.as_str() && k["last_used"].is_string())
    });
    assert_eq!(listed["role"], "read");
    assert_eq!(listed["state"], "active");
    let table = keys(&["list"], &store);
    assert!(table.contains(&format!("{id}  read")), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.ends_with("revoked")),
        "{table}"
    );
}

/// The `fusion_session` and `fusion_csrf` cookies of a `POST /v1/session`.
fn session(s: &Server, key: &str) -> (String, String) {
    let r = call(s, "POST", "/v1/session", Some(key), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = |name: &str| {
        r.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .find(|v| v.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", r.headers))
            .to_string()
    };
    let session = cookie("fusion_session");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    let value = session.split(';').next().unwrap().to_string();
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    assert!(cookie("fusion_csrf").starts_with(&format!("fusion_csrf={csrf}")));
    (value, csrf)
}

#[test]
fn sessions_stand_for_their_key_and_need_the_csrf_token_to_change_state() {
    let dir = tempfile::tempdir().unwrap();
    let c = Creds::create(dir.path());
    let s = Server::start(dir.path(), &["--demo"]);
    let event = json!({"id": "via-cookie", "type": "purchase", "time": "2026-11-20T10:00:00Z",
                       "person": "fan2", "brand": "sweater", "amount": 5})
    .to_string();
    let post = |cookie: &str, csrf: Option<&str>| {
        let mut headers = vec![("Cookie", cookie)];
        if let Some(t) = csrf {
            headers.push(("X-CSRF-Token", t));
        }
        s.request(
            "POST",
            "/v1/events",
            &headers,
            Some(("application/json", event.as_bytes())),
        )
    };

    let (read_cookie, read_csrf) = session(&s, &c.read);
    let get = |cookie: &str| s.request("GET", "/v1/brands/sweater", &[("Cookie", cookie)], None);
    assert_eq!(get(&read_cookie).status, 200);
    // A read session cannot ingest, token or not.
    assert_eq!(post(&read_cookie, Some(&read_csrf)).status, 403);
    // An ingest key cannot open a session (the dashboard reads).
    assert_eq!(
        call(&s, "POST", "/v1/session", Some(&c.ingest), None).status,
        403
    );

    let (admin_cookie, admin_csrf) = session(&s, &c.admin);
    let count = || s.event_count();
    let before = count();
    assert_eq!(post(&admin_cookie, None).status, 403, "no CSRF token");
    assert_eq!(
        post(&admin_cookie, Some(&read_csrf)).status,
        403,
        "another session's token"
    );
    assert_eq!(count(), before, "a refused request stored nothing");
    let ok = post(&admin_cookie, Some(&admin_csrf));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(count(), before + 1);

    // A forged cookie is no session.
    let forged = read_cookie.replacen(".read.", ".admin.", 1);
    assert_eq!(get(&forged).status, 401);
    // Revoking the key ends its sessions.
    let read_id = ApiKey::parse(&c.read).unwrap().id.to_string();
    keys(&["revoke", &read_id], &data_dir(dir.path()));
    poll(
        "the revoked key's session to end",
        Duration::from_secs(30),
        || (get(&read_cookie).status == 401).then_some(()),
    );
    // Signing out removes both cookies.
    let out = s.request("DELETE", "/v1/session", &[("Cookie", &admin_cookie)], None);
    assert_eq!(out.status, 204);
    let removals = out
        .headers
        .iter()
        .filter(|(n, v)| n == "set-cookie" && v.contains("Max-Age=0"))
        .count();
    assert_eq!(removals, 2, "{:?}", out.headers);
}

#[test]
fn erasure_by_a_non_admin_is_refused_and_erases_nothing_and_an_admin_erasure_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let c = Creds::create(dir.path());
    let s = Server::start(dir.path(), &["--demo"]);
    let before = s.event_count();
    let fan1_events = call(&s, "GET", "/v1/entities/fan1", Some(&c.read), None).body["event_count"]
        .as_u64()
        .unwrap();
    assert!(fan1_events > 0);
    for key in [&c.read, &c.ingest] {
        let r = call(&s, "DELETE", "/v1/entities/fan1", Some(key), None);
        assert_eq!(r.status, 403, "{}", r.body);
    }
    let (cookie, csrf) = session(&s, &c.read);
    let r = s.request(
        "DELETE",
        "/v1/entities/fan1",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 403, "a read session, even with its token");
    assert_eq!(s.event_count(), before, "nothing was erased");
    assert_eq!(
        call(&s, "GET", "/v1/entities/fan1", Some(&c.read), None).status,
        200
    );
    let file = KeyFile::in_dir(dir.path());
    assert!(
        block_on(file.erasures()).unwrap().is_empty(),
        "a refusal is not audited"
    );

    let r = call(&s, "DELETE", "/v1/entities/fan1", Some(&c.admin), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["events_removed"], fan1_events);
    assert_eq!(s.event_count(), before - fan1_events);
    let audit = block_on(file.erasures()).unwrap();
    assert_eq!(audit.len(), 1);
    let salt = block_on(file.secret(secret::ERASURE_SALT)).unwrap();
    assert_eq!(audit[0].key_id, Some(ApiKey::parse(&c.admin).unwrap().id));
    assert_eq!(audit[0].events, Some(fan1_events));
    assert_eq!(
        audit[0].subject_hash,
        fusion::auth::subject_hash(&salt, "fan1")
    );
    assert!(!audit[0].subject_hash.contains("fan1"));
    let raw = std::fs::read(dir.path().join("keys.redb")).unwrap();
    assert!(
        !raw.windows(4).any(|w| w == b"fan1"),
        "the erased id appears nowhere in the key store"
    );
}

#[test]
fn an_export_holds_everything_about_a_person_and_needs_admin() {
    let dir = tempfile::tempdir().unwrap();
    let c = Creds::create(dir.path());
    let s = Server::start(dir.path(), &["--demo"]);
    for (i, granted) in [false, true].iter().enumerate() {
        let e = json!({"id": format!("consent-{i}"), "type": "consent",
                       "time": format!("2026-11-2{}T10:00:00Z", i + 1), "person": "fan1", "granted": granted});
        assert_eq!(
            call(&s, "POST", "/v1/events", Some(&c.ingest), Some(&e)).status,
            200
        );
    }
    assert_eq!(
        call(&s, "GET", "/v1/entities/fan1/export", Some(&c.read), None).status,
        403
    );
    let r = call(&s, "GET", "/v1/entities/fan1/export", Some(&c.admin), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let view = call(&s, "GET", "/v1/entities/fan1", Some(&c.read), None).body;
    let doc = r.body;
    assert_eq!(doc["id"], "fan1");
    assert_eq!(doc["kind"], view["kind"]);
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len() as u64, view["event_count"].as_u64().unwrap());
    assert!(events.iter().all(|e| e.to_string().contains("\"fan1\"")));
    let consent: Vec<bool> = doc["consent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["granted"].as_bool().unwrap())
        .collect();
    assert_eq!(consent, [false, true]);
    let brands: Vec<&str> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["brand"].as_str().unwrap())
        .collect();
    let served: Vec<&str> = view["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["brand"].as_str().unwrap())
        .collect();
    assert!(!brands.is_empty());
    assert_eq!(
        brands, served,
        "every relationship the API serves about them"
    );
    assert!(
        doc["relationships"][0]["contributions"].is_array(),
        "with the reasons"
    );
    assert_eq!(
        call(
            &s,
            "GET",
            "/v1/entities/nobody/export",
            Some(&c.admin),
            None
        )
        .status,
        404
    );
}

/// Sends `send` until it answers 429 (at most 20 times), checks the
/// refusal, then polls until the budget has refilled (`ok` again).
fn refused_then_refilled(what: &str, ok: u16, send: impl Fn() -> Reply) {
    let refusal = (0..20)
        .map(|_| send())
        .find(|r| r.status == 429)
        .unwrap_or_else(|| panic!("{what}: 20 quick requests and no 429"));
    assert_eq!(refusal.content_type, "application/problem+json", "{what}");
    assert_eq!(refusal.body["status"], 429);
    let wait: u64 = refusal.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{what}: Retry-After {wait}");
    poll(
        &format!("{what}: the budget to refill"),
        Duration::from_secs(20),
        || (send().status == ok).then_some(()),
    );
}

#[test]
fn past_the_rate_budget_requests_get_429_until_it_refills() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "b".repeat(40);
    let s = Server::launch(
        dir.path(),
        &Launch {
            extra: &["--demo", "--rate-per-key", "1", "--rate-per-address", "1"],
            env: &[("FUSION_ADMIN_KEY", &admin)],
            ..Launch::default()
        },
    );
    refused_then_refilled("per key", 200, || {
        call(&s, "GET", "/v1/brands/sweater", Some(&admin), None)
    });
    refused_then_refilled("per address", 200, || s.get("/healthz"));
    // Refused keys count against the address: guessing is throttled.
    refused_then_refilled("guessing keys", 401, || {
        call(&s, "GET", "/v1/brands/sweater", Some("fsk_x_guess"), None)
    });
}

#[test]
fn a_foreign_host_or_origin_is_refused_and_configured_origins_get_cors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--demo", "--cors-origin", "https://dash.example"],
    );
    let authority = s.base.trim_start_matches("http://").to_string();
    let get = |headers: &[(&str, &str)]| s.request("GET", "/v1/brands/sweater", headers, None);
    assert_eq!(get(&[]).status, 200);
    let rebound = get(&[("Host", "attacker.example")]);
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    assert_eq!(rebound.content_type, "application/problem+json");
    let port = authority.rsplit(':').next().unwrap();
    assert_eq!(get(&[("Host", &format!("localhost:{port}"))]).status, 200);
    // Probes come by address and carry no personal data.
    assert_eq!(
        s.request("GET", "/healthz", &[("Host", "10.1.2.3:80")], None)
            .status,
        200
    );

    assert_eq!(get(&[("Origin", "https://evil.example")]).status, 403);
    assert_eq!(
        get(&[("Origin", &format!("http://{authority}"))]).status,
        200
    );
    let allowed = get(&[("Origin", "https://dash.example")]);
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    let preflight = s.request(
        "OPTIONS",
        "/v1/events",
        &[
            ("Origin", "https://dash.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type, x-csrf-token",
            ),
        ],
        None,
    );
    assert_eq!(preflight.status, 200, "{:?}", preflight.headers);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
}

#[test]
fn without_keys_the_service_binds_loopback_only_and_with_one_any_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["serve", "--bind", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback only") && err.contains("fusion keys create"),
        "{err}"
    );

    let short = Command::new(bin())
        .args(["serve", "--bind", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("FUSION_ADMIN_KEY", "too-short")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(1));

    // With a key, any address. Readiness is checked through loopback.
    let admin = "c".repeat(40);
    let port = crate::support::free_port();
    let mut child = Command::new(bin())
        .args(["serve", "--bind", &format!("0.0.0.0:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("FUSION_ADMIN_KEY", &admin)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = poll(
        "the server on 0.0.0.0 to answer",
        Duration::from_secs(60),
        || {
            assert!(child.try_wait().unwrap().is_none(), "serve exited");
            agent
                .get(&format!("http://127.0.0.1:{port}/v1/brands/none"))
                .header("Authorization", &bearer(&admin))
                .call()
                .ok()
                .map(|r| r.status().as_u16())
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 404, "served, and the key was needed and accepted");
}

/// Sends raw request bytes to `s` and answers the status of its answer.
fn raw_status(s: &Server, request: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Red team (H8b): the Host check refused a foreign `Host` but let a request
/// with none through (HTTP/1.0 does not require one): the data routes
/// answered 200, so the check fails open. Right: a request with no Host the
/// service answers for is refused like a foreign one (`421`; probes, which
/// come by address, excepted).
#[test]
fn a_request_without_host_is_refused_like_a_foreign_host() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let status = raw_status(&s, "GET /v1/brands/sweater HTTP/1.0\r\n\r\n");
    assert_eq!(status, 421, "a data route answered a request without Host");
}

/// Red team (H8b): a request in absolute form names its authority in the
/// request line, and RFC 9112 (3.2.2) says a server must then ignore
/// `Host`. The check read only `Host`, so `GET http://attacker.example/...`
/// with the service's own Host was answered 200. Right: the authority of an
/// absolute-form target is the one checked: `421` for a foreign one.
#[test]
fn an_absolute_form_target_with_a_foreign_authority_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let own = s.base.trim_start_matches("http://").to_string();
    let status = raw_status(
        &s,
        &format!(
            "GET http://attacker.example/v1/brands/sweater HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(
        status, 421,
        "a foreign absolute-form authority was answered"
    );
}
