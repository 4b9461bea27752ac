//! The dashboard (issue 14): its assets over HTTP (types, caching, the
//! Content-Security-Policy), conditional GETs on the polled read routes,
//! and its pages in a real headless Chromium driven through chromedriver
//! (fantoccini), against a real `fusion serve` with the seed story and
//! keys configured. Every number a page shows is compared with what the API
//! answers for the same question, never with a number written here.
//!
//! One browser for the module's browser test: starting Chromium costs more
//! than the checks. Chromium and chromedriver come from Debian's packages
//! (`scripts/test` installs them); without them the test fails, saying so.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::security::keys;
use crate::support::{Reply, Server, free_port};

const AT: &str = "2026-11-13";
const AT_API: &str = "2026-11-13T00:00:00Z";
/// Generous: a loaded machine shared by several builds.
const PATIENCE: Duration = Duration::from_secs(30);

/// A score as the pages show it: one decimal.
fn score(x: f64) -> String {
    format!("{x:.1}")
}

/// A change as the pages show it: sign (U+2212 for minus) and one decimal.
fn delta(x: f64) -> String {
    let s = format!("{:.1}", x.abs());
    if s == "0.0" {
        s
    } else if x < 0.0 {
        format!("\u{2212}{s}")
    } else {
        format!("+{s}")
    }
}

fn store(dir: &Path) -> [&str; 2] {
    ["--data-dir", dir.to_str().unwrap()]
}

/// The seed story on a server with keys: (server, read key, admin key).
fn story_server(dir: &Path) -> (Server, String, String) {
    let read = keys(&["create", "--role", "read"], &store(dir));
    let admin = keys(&["create", "--role", "admin"], &store(dir));
    (Server::start(dir, &["--demo"]), read, admin)
}

fn get(s: &Server, key: &str, path: &str) -> Reply {
    let auth = format!("Bearer {key}");
    let r = s.request("GET", path, &[("Authorization", &auth)], None);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r
}

#[test]
fn assets_are_served_with_their_types_revalidation_and_a_strict_csp() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _) = story_server(dir.path());
    // The page and its assets need no key: they hold no data.
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let csp = page.header("content-security-policy").unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    // No inline script: every <script> has a src, and no element has an
    // on* handler attribute.
    let html = page.body.as_str().unwrap();
    for tag in html.split("<script").skip(1) {
        let head = &tag[..tag.find('>').unwrap()];
        assert!(head.contains("src="), "an inline script: <script{head}>");
    }
    assert!(!html.contains(" onclick=") && !html.contains(" onload="));
    for (path, ty) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        (
            "/assets/vendor/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.content_type, ty, "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        let tag = r.header("etag").unwrap().to_string();
        let again = s.request("GET", path, &[("If-None-Match", &tag)], None);
        assert_eq!(again.status, 304, "{path}");
    }
    // Compressed when asked (read as bytes: support's client reads text).
    let gzip = ureq::get(&format!("{}/assets/pages.js", s.base))
        .header("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(
        gzip.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert_eq!(s.get("/assets/nothing.js").status, 404);
    assert_eq!(s.get("/assets/../Cargo.toml").status, 404);
}

#[test]
fn polled_reads_answer_304_until_an_event_is_folded() {
    let dir = tempfile::tempdir().unwrap();
    let (s, read, admin) = story_server(dir.path());
    let auth = format!("Bearer {read}");
    // Answers from a batch stand-in while the live series catches up after
    // the start are provisional and rightly get no tag (`http/etag.rs`);
    // the claims here are of settled answers. Under load the first ranking
    // was such a stand-in (CI of main b1a414b: "/v1/brands: no ETag").
    crate::redteam2::caught_up(&s);
    let deadline = Instant::now() + PATIENCE;
    while get(&s, &read, "/v1/brands").header("etag").is_none() {
        assert!(
            Instant::now() < deadline,
            "the shared ranking never settled after the live series caught up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for path in [
        "/v1/brands",
        "/v1/brands/sweater?at=2026-11-13T00:00:00Z",
        "/v1/brands/sweater/relationships?at=2026-11-13T00:00:00Z",
        "/v1/entities/artist?at=2026-11-13T00:00:00Z",
        "/v1/entities/artist/events",
        "/v1/entities/artist/followers?at=2026-11-13T00:00:00Z",
        "/v1/relationships/artist/sweater/history?from=2026-11-01T00:00:00Z&to=2026-11-13T00:00:00Z",
        "/v1/relationships/artist/sweater/history/events?from=2026-11-01T00:00:00Z&to=2026-11-13T00:00:00Z",
    ] {
        let first = get(&s, &read, path);
        let tag = first
            .header("etag")
            .unwrap_or_else(|| panic!("{path}: no ETag"))
            .to_string();
        let again = s.request(
            "GET",
            path,
            &[("Authorization", &auth), ("If-None-Match", &tag)],
            None,
        );
        // Without `at` the tag also carries the minute: a poll that
        // crossed one gets the answer again, never a stale 304.
        assert!(
            again.status == 304 || (!path.contains("at=") && again.status == 200),
            "{path}: {}",
            again.status
        );
        let other = s.request(
            "GET",
            path,
            &[("Authorization", &auth), ("If-None-Match", "\"other\"")],
            None,
        );
        assert_eq!(other.status, 200, "{path}");
        // No credential, no 304: the tag is checked after the key.
        let anonymous = s.request("GET", path, &[("If-None-Match", &tag)], None);
        assert_eq!(anonymous.status, 401, "{path}");
    }
    let path = "/v1/brands/bistro?at=2026-11-13T00:00:00Z";
    let tag = get(&s, &read, path).header("etag").unwrap().to_string();
    let listed = "/v1/brands/bistro/relationships?at=2026-11-13T00:00:00Z";
    let fan3 = |body: &Value| {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["person"] == "fan3")
            .map(|r| r["score"].clone())
    };
    let before = fan3(&get(&s, &read, listed).body);
    let r = s.request(
        "POST",
        "/v1/events",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(("application/json", json!({"id": "etag-1", "type": "purchase", "time": "2026-11-10T12:00:00Z", "person": "fan3", "brand": "bistro", "amount": 20.0}).to_string().as_bytes())),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let after = s.request(
        "GET",
        path,
        &[("Authorization", &auth), ("If-None-Match", &tag)],
        None,
    );
    assert_eq!(
        after.status, 200,
        "an event was folded, the tag must change"
    );
    assert_ne!(after.header("etag").unwrap(), tag);
    // The ranking at a past time kept for a page's routes (dashboard.rs)
    // is not served once an event has been folded.
    assert_ne!(
        fan3(&get(&s, &read, listed).body),
        before,
        "a stale ranking"
    );
}

#[test]
fn the_brand_list_searches_ids_and_names_and_an_event_is_found_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let (s, read, _) = story_server(dir.path());
    let all = get(&s, &read, "/v1/brands").body;
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sweater") && ids.contains(&"bistro"), "{all}");
    let found = get(&s, &read, "/v1/brands?q=BIST").body;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["items"][0]["id"], "bistro");
    let listed = get(
        &s,
        &read,
        &format!("/v1/brands/bistro/relationships?limit=1000&at={AT_API}"),
    )
    .body;
    let at = get(&s, &read, &format!("/v1/brands?q=bistro&at={AT_API}")).body;
    assert_eq!(
        at["items"][0]["relationships"],
        listed["items"].as_array().unwrap().len()
    );
    let e = get(&s, &read, "/v1/events/story-025").body;
    assert_eq!(e["id"], "story-025");
    assert_eq!(e["person"], "artist");
    let auth = format!("Bearer {read}");
    assert_eq!(
        s.request(
            "GET",
            "/v1/events/nothing-here",
            &[("Authorization", &auth)],
            None
        )
        .status,
        404
    );
}

/// The events behind a history series are the reasons of its points: each
/// point's contributions (as `GET /v1/relationships/...?at=` gives them) are
/// among them, each listed once, at the first point it counts in, by time.
#[test]
fn the_events_behind_a_history_series_are_the_reasons_of_its_points() {
    let dir = tempfile::tempdir().unwrap();
    let (s, read, _) = story_server(dir.path());
    let window = "from=2026-10-30T00:00:00Z&to=2026-11-13T00:00:00Z&step=1d";
    let series = get(
        &s,
        &read,
        &format!("/v1/relationships/artist/bistro/history?{window}"),
    )
    .body;
    let behind = get(
        &s,
        &read,
        &format!("/v1/relationships/artist/bistro/history/events?{window}"),
    )
    .body;
    let events = behind["events"].as_array().unwrap();
    let mut want = std::collections::BTreeMap::new();
    for point in series.as_array().unwrap() {
        let at = point["time"].as_str().unwrap();
        let auth = format!("Bearer {read}");
        let r = s.request(
            "GET",
            &format!("/v1/relationships/artist/bistro?at={at}"),
            &[("Authorization", &auth)],
            None,
        );
        if r.status == 404 {
            continue;
        }
        for c in r.body["contributions"].as_array().unwrap() {
            want.entry(c["event"].as_str().unwrap().to_string())
                .or_insert_with(|| (at.to_string(), c["delta"].as_f64().unwrap()));
        }
    }
    assert!(
        want.contains_key("story-025"),
        "the tweet moved artist-bistro: {want:?}"
    );
    assert_eq!(events.len(), want.len(), "{behind}");
    for e in events {
        let (at, delta) = &want[e["event"].as_str().unwrap()];
        let shown: chrono::DateTime<chrono::Utc> = e["at"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            shown,
            at.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
            "{e}"
        );
        assert_eq!(e["delta"].as_f64().unwrap(), *delta, "{e}");
        assert!(
            e["time"].as_str().unwrap() <= e["at"].as_str().unwrap(),
            "{e}"
        );
    }
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.is_sorted(), "{times:?}");
    let auth = format!("Bearer {read}");
    let status = |path: &str| {
        s.request("GET", path, &[("Authorization", &auth)], None)
            .status
    };
    assert_eq!(
        status("/v1/relationships/nobody/bistro/history/events"),
        404
    );
    assert_eq!(
        status("/v1/relationships/artist/bistro/history/events?step=1s&from=2026-01-01T00:00:00Z"),
        400
    );
}

// ---- the browser --------------------------------------------------------

/// chromedriver (and through it Chromium), stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    for binary in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: run scripts/test, which installs Debian's chromium and \
             chromium-driver packages (apt-get install -y chromium chromium-driver)"
        );
    }
    let port = free_port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let deadline = Instant::now() + PATIENCE;
    while ureq::get(&format!("{}/status", driver.url)).call().is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--no-first-run", "--disable-sync", "--window-size=1280,1000"],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Ends the browser session once every claim of a test has been checked.
///
/// The session's end is teardown, not a claim: chromedriver answers an error
/// when Chromium takes longer than its own 20 s to close the window, which a
/// loaded CI machine can make happen (CI run of main b729b33 failed on it
/// after every assertion of the What-if test had passed). Such an error is
/// printed, and `Driver`'s drop kills chromedriver whatever happened here.
async fn end_session(c: Client) {
    if let Err(e) = c.close().await {
        eprintln!("the Chromium session did not end cleanly (teardown only): {e}");
    }
}

/// The browser's console since the last call (chromedriver drains it).
async fn console(driver: &Driver, c: &Client) -> Vec<Value> {
    let id = c.session_id().await.unwrap().unwrap();
    let mut r = ureq::post(&format!("{}/session/{id}/se/log", driver.url))
        .header("Content-Type", "application/json")
        .send(json!({"type": "browser"}).to_string().as_bytes())
        .expect("the browser's log");
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    body["value"].as_array().cloned().unwrap_or_default()
}

/// Fails on any console error (a failed request, a script error, a CSP
/// violation) since the last check.
async fn no_console_errors(driver: &Driver, c: &Client, when: &str) {
    let errors: Vec<Value> = console(driver, c)
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors {when}: {errors:#?}");
}

/// Waits until `css` matches an element whose text is not empty; answers it.
async fn text(c: &Client, css: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && !t.trim().is_empty()
        {
            return t.trim().to_string();
        }
        assert!(Instant::now() < deadline, "gave up waiting for {css}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `css` shows `want`.
async fn shows(c: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if t.trim() == want {
                return;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} shows {last:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `hash` and waits until its page is rendered.
async fn open(c: &Client, s: &Server, hash: &str) {
    c.goto(&format!("{}/{hash}", s.base)).await.unwrap();
    rendered(c, hash).await;
}

/// Waits until the page rendered is the one of a hash starting with
/// `prefix` (app.js marks <main> with the hash it shows): a finished page,
/// never the one before it.
async fn rendered(c: &Client, prefix: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let route = c
            .execute(
                "const m = document.getElementById('main'); return m ? (m.dataset.route || '') : '';",
                vec![],
            )
            .await
            .unwrap();
        let route = route.as_str().unwrap_or("");
        if route.starts_with(prefix) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the page of {prefix} was not rendered (now {route:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seed story in Chromium: sign-in, each page's numbers against the
/// API's, navigation, `at` in the URL, a reason chip leading to its event,
/// empty states, Live polling picking up a posted event, and no console
/// error (a CSP violation is one) anywhere after signing in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_the_apis_numbers_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (s, read, admin) = story_server(dir.path());
    let driver = start_driver();
    let c = browser(&driver).await;
    let api = |path: &str| get(&s, &read, path).body;

    // Signing in: the page asks for a key, exchanges it for the cookie.
    c.goto(&format!("{}/#/brand/sweater?at={AT}", s.base))
        .await
        .unwrap();
    rendered(&c, "sign-in").await;
    // Before signing in the one error is the refused request that made the
    // page ask for a key.
    for e in console(&driver, &c).await {
        if e["level"] == "SEVERE" {
            assert!(e["message"].as_str().unwrap().contains("401"), "{e}");
        }
    }
    let key = c.find(Locator::Css("#key")).await.unwrap();
    key.send_keys(&read).await.unwrap();
    c.find(Locator::Css("#login-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    rendered(&c, "#/brand/sweater").await;

    // Brand overview at the story's date.
    let summary = api(&format!("/v1/brands/sweater?at={AT_API}"));
    shows(
        &c,
        "[data-field=mean]",
        &score(summary["scores"]["mean"].as_f64().unwrap()),
    )
    .await;
    shows(
        &c,
        "[data-field=relationships]",
        &summary["relationships"].to_string(),
    )
    .await;
    let top = api(&format!(
        "/v1/brands/sweater/relationships?sort=-score&limit=5&at={AT_API}"
    ));
    for r in top["items"].as_array().unwrap() {
        let person = r["person"].as_str().unwrap();
        let css = format!("#advocates tr[data-person='{person}'] [data-field=score]");
        shows(&c, &css, &score(r["score"].as_f64().unwrap())).await;
    }
    let artist = api(&format!("/v1/relationships/artist/sweater?at={AT_API}"));
    shows(
        &c,
        "#advocates tr[data-person='artist'] [data-field=score]",
        &score(artist["score"].as_f64().unwrap()),
    )
    .await;
    // The service KPIs of the story's one sweater contact.
    let service = &summary["service"];
    let one = |v: &Value| format!("{:.1}", v.as_f64().unwrap());
    shows(&c, "[data-field=csat]", &one(&service["csat"])).await;
    shows(&c, "[data-field=effort]", &one(&service["customer_effort"])).await;
    shows(
        &c,
        "[data-field=transfers]",
        &one(&service["transfers_per_contact"]),
    )
    .await;
    let fcr = service["first_contact_resolution"].as_f64().unwrap();
    shows(&c, "[data-field=fcr]", &format!("{:.0}%", fcr * 100.0)).await;
    let (mean_wait, max_wait) = (
        service["wait_seconds_mean"].as_f64().unwrap(),
        service["wait_seconds_max"].as_f64().unwrap(),
    );
    assert!(
        mean_wait < 90.0 && max_wait < 90.0,
        "the story's waits are short"
    );
    shows(
        &c,
        "[data-field=wait]",
        &format!("{} s / {} s", mean_wait.round(), max_wait.round()),
    )
    .await;
    shows(
        &c,
        "[data-field=purchases]",
        &summary["sales"]["purchases"].to_string(),
    )
    .await;
    // The concert and its measured effect, as the API's.
    let impact = api(&format!(
        "/v1/brands/sweater/impact?occasion=teen-concert&at={AT_API}"
    ));
    let row = "#occasions tr[data-occasion='teen-concert']";
    shows(
        &c,
        &format!("{row} [data-field=reached]"),
        &impact["groups"]["reached"].to_string(),
    )
    .await;
    // Too few people in the story to compare: the brand's change instead.
    assert!(impact["estimate"].is_null(), "{impact}");
    let level = &impact["brand_level"];
    let effect = text(&c, &format!("{row} [data-field=effect]")).await;
    let change = format!(
        "{} \u{2192} {}",
        score(level["mean_score_before"].as_f64().unwrap()),
        score(level["mean_score_after"].as_f64().unwrap())
    );
    assert!(effect.contains(&change), "{effect} lacks {change}");
    no_console_errors(&driver, &c, "on the brand page").await;

    // A reason chip leads to its event.
    let chip_css = "#advocates tr[data-person='artist'] a.chip";
    text(&c, chip_css).await;
    let chip = c.find(Locator::Css(chip_css)).await.unwrap();
    let event = chip.attr("data-event").await.unwrap().unwrap();
    chip.click().await.unwrap();
    rendered(&c, &format!("#/event/{event}")).await;
    shows(&c, "[data-key=id]", &event).await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .fragment()
            .unwrap()
            .starts_with(&format!("/event/{event}"))
    );

    // Relationship: the score, the tweet's delta and its path.
    open(&c, &s, &format!("#/rel/artist/bistro?at={AT}")).await;
    let rel = api(&format!("/v1/relationships/artist/bistro?at={AT_API}"));
    shows(
        &c,
        "[data-field=score]",
        &score(rel["score"].as_f64().unwrap()),
    )
    .await;
    let tweet = rel["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["event"] == "story-025")
        .unwrap();
    shows(
        &c,
        "tr[data-event='story-025'] [data-field=delta]",
        &delta(tweet["delta"].as_f64().unwrap()),
    )
    .await;
    shows(
        &c,
        "tr[data-event='story-025'] .path",
        "artist \u{2192} bistro",
    )
    .await;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(".chart canvas"))
        .await
        .unwrap();
    // The chart marks the events behind its 60 days, as the API lists them.
    let to: chrono::DateTime<chrono::Utc> = rel["as_of"].as_str().unwrap().parse().unwrap();
    let from = to - chrono::Duration::days(60);
    let behind = api(&format!(
        "/v1/relationships/artist/bistro/history/events?from={}&to={}&step=1d",
        from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ));
    let within = behind["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["time"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
                >= from
        })
        .count();
    assert!(within >= 2, "the purchase and the tweet: {behind}");
    let marked = c
        .find(Locator::Css(".chart"))
        .await
        .unwrap()
        .attr("data-marks")
        .await
        .unwrap();
    assert_eq!(marked, Some(within.to_string()));
    // A spill reaches a fan through the artist.
    open(&c, &s, &format!("#/rel/fan1/bistro?at={AT}")).await;
    shows(
        &c,
        "tr[data-event='story-025'] .path",
        "fan1 \u{2192} artist \u{2192} bistro",
    )
    .await;

    // `at` in the URL changes the numbers, as the API's.
    let mut seen = Vec::new();
    for day in ["2026-11-02", AT] {
        open(&c, &s, &format!("#/rel/artist/sweater?at={day}")).await;
        let r = api(&format!(
            "/v1/relationships/artist/sweater?at={day}T00:00:00Z"
        ));
        let want = score(r["score"].as_f64().unwrap());
        shows(&c, "[data-field=score]", &want).await;
        seen.push(want);
        let picked = c
            .find(Locator::Css("#at"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap();
        assert_eq!(picked.as_deref(), Some(day));
    }
    assert_ne!(seen[0], seen[1], "the story's score moved between the days");

    // Navigation: brands → brand → relationship → person.
    open(&c, &s, &format!("#/?at={AT}")).await;
    for b in api(&format!("/v1/brands?at={AT_API}"))["items"]
        .as_array()
        .unwrap()
    {
        let css = format!(
            "tr[data-brand='{}'] [data-field=mean]",
            b["id"].as_str().unwrap()
        );
        shows(&c, &css, &score(b["mean_score"].as_f64().unwrap())).await;
    }
    c.find(Locator::Css("tr[data-brand='bistro'] a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    rendered(&c, "#/brand/bistro").await;
    c.find(Locator::Css("#advocates tr[data-person] td a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    rendered(&c, "#/rel/").await;
    c.find(Locator::Css("h1 a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    rendered(&c, "#/person/").await;
    text(&c, "[data-field=followers]").await;

    // Person 360°: followers and brands as the API's.
    open(&c, &s, &format!("#/person/artist?at={AT}")).await;
    let person = api(&format!("/v1/entities/artist?at={AT_API}"));
    let followers = person["followers"].as_u64().unwrap();
    shows(&c, "[data-field=followers]", &format_count(followers)).await;
    let follows = api(&format!(
        "/v1/entities/artist/followers?limit=1000&at={AT_API}"
    ));
    let total = follows["followers_total"].as_u64().unwrap();
    assert!(total > 0, "the story's fans follow the artist: {follows}");
    shows(&c, "[data-field=followers_total]", &format_count(total)).await;
    for f in follows["followers"].as_array().unwrap() {
        let css = format!("#followers a[data-person='{}']", f["id"].as_str().unwrap());
        text(&c, &css).await;
    }
    for r in person["relationships"].as_array().unwrap() {
        let css = format!(
            "tr[data-brand='{}'] [data-field=score]",
            r["brand"].as_str().unwrap()
        );
        shows(&c, &css, &score(r["score"].as_f64().unwrap())).await;
    }
    text(&c, "tr[data-event='story-025']").await;
    no_console_errors(&driver, &c, "on the relationship and person pages").await;

    // Empty states say what to do.
    open(&c, &s, "#/?q=no-such-brand").await;
    assert!(text(&c, ".empty").await.starts_with(
        "No brand matches \u{201c}no-such-brand\u{201d}: search part of an id or a name"
    ));
    open(&c, &s, "#/rel/fan1/sweater?at=2026-10-01").await;
    assert!(text(&c, ".empty").await.contains("fusion ingest"));
    // The API's 404 for the pair is the one error there: the browser logs
    // every refused request.
    for e in console(&driver, &c).await {
        if e["level"] == "SEVERE" {
            let m = e["message"].as_str().unwrap();
            assert!(
                m.contains("/v1/relationships/fan1/sweater?") && m.contains("404"),
                "{e}"
            );
        }
    }

    // Live: a posted event shows up and its score on screen, no reload.
    open(&c, &s, "#/live").await;
    let status = text(&c, "#live-status").await;
    assert!(
        status.starts_with("Taking") || status.starts_with("Watching"),
        "{status}"
    );
    let deadline = Instant::now() + PATIENCE;
    while !text(&c, "#live-status").await.starts_with("Watching") {
        assert!(
            Instant::now() < deadline,
            "Live never took its first reading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.execute("window.fusionNoReload = true;", vec![])
        .await
        .unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let posted = s.request(
        "POST",
        "/v1/events",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(("application/json", json!({"id": "live-1", "type": "purchase", "time": now, "person": "artist", "brand": "bistro", "amount": 400.0}).to_string().as_bytes())),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    let shown = text(
        &c,
        "#moved tr[data-person='artist'][data-brand='bistro'] [data-field=score]",
    )
    .await;
    let current = api("/v1/relationships/artist/bistro")["score"]
        .as_f64()
        .unwrap();
    let shown: f64 = shown.parse().unwrap();
    // Evaluated at two seconds a moment apart: decay between them is far
    // below the shown precision.
    assert!(
        (shown - current).abs() <= 0.1,
        "Live shows {shown}, the API {current}"
    );
    // It came over the change feed (a poll knows no cause): the row names
    // the event that caused it.
    shows(
        &c,
        "#moved tr[data-person='artist'][data-brand='bistro'] [data-field=cause]",
        "live-1",
    )
    .await;
    let kept = c
        .execute("return window.fusionNoReload === true;", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(true), "the page was reloaded");
    let inline = c
        .execute(
            "return document.querySelectorAll('script:not([src])').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(inline, json!(0), "an inline script in the page");
    no_console_errors(&driver, &c, "on the Live page").await;

    // A page showing now renders again when the state changes.
    open(&c, &s, "#/rel/artist/bistro").await;
    let before = text(&c, "[data-field=score]").await;
    c.execute("window.fusionNoReload = true;", vec![])
        .await
        .unwrap();
    let posted = s.request(
        "POST",
        "/v1/events",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(("application/json", json!({"id": "live-2", "type": "purchase", "time": now, "person": "artist", "brand": "bistro", "amount": 400.0}).to_string().as_bytes())),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let shown = text(&c, "[data-field=score]").await;
        let current = api("/v1/relationships/artist/bistro")["score"]
            .as_f64()
            .unwrap();
        if shown != before && (shown.parse::<f64>().unwrap() - current).abs() <= 0.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relationship page still shows {shown}, the API {current}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = c
        .execute("return window.fusionNoReload === true;", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(true), "the page was reloaded");
    no_console_errors(&driver, &c, "on a page that refreshed itself").await;

    // What a pipeline sent is shown as text, never run as markup.
    let evil =
        "<img src=x onerror=\"document.title='owned'\"><script>document.title='owned'</script>";
    let posted = s.request(
        "POST",
        "/v1/events",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(("application/json", json!({"id": "markup-1", "type": "post", "time": now, "person": "fan2", "brand": "bistro", "text": evil}).to_string().as_bytes())),
    );
    assert_eq!(posted.status, 200, "{}", posted.body);
    open(&c, &s, "#/event/markup-1").await;
    shows(&c, "[data-key=text]", evil).await;
    open(&c, &s, "#/person/fan2").await;
    text(&c, "tr[data-event='markup-1']").await;
    let injected = c
        .execute(
            "return [document.querySelectorAll('main img, main script').length, document.title];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        injected,
        json!([0, "Fusion"]),
        "markup from a pipeline was rendered"
    );
    no_console_errors(&driver, &c, "on pages showing markup sent as text").await;
    end_session(c).await;
}

/// The issue's "Usable" list in Chromium, on the seed story without keys:
/// the keyboard reaches the links and inputs with a visible focus and Enter
/// follows a link; no horizontal scroll at phone width (390 px), several
/// columns on a wall screen (2560 px); text against its background at
/// 4.5:1 or more (WCAG 2 contrast, from computed styles); numbers rounded
/// for people; times in the viewer's zone (Chromium set to Asia/Tokyo,
/// +09:00) with the zone shown; and empty states that say what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_usable_by_keyboard_on_a_phone_and_a_wall_in_another_zone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--demo"]);
    let driver = start_driver();
    let c = browser(&driver).await;

    // Times in the viewer's zone: Chromium is told it is in Tokyo, and the
    // page (loaded again, as a reader there would) says so and shows the
    // tweet's 22:15 UTC as 07:15 the next day.
    let id = c.session_id().await.unwrap().unwrap();
    let cdp = ureq::post(&format!("{}/session/{id}/goog/cdp/execute", driver.url))
        .header("Content-Type", "application/json")
        .send(
            json!({"cmd": "Emulation.setTimezoneOverride", "params": {"timezoneId": "Asia/Tokyo"}})
                .to_string()
                .as_bytes(),
        );
    assert!(cdp.is_ok(), "chromedriver refused the time zone: {cdp:?}");
    c.goto(&format!("{}/#/event/story-025", s.base))
        .await
        .unwrap();
    c.refresh().await.unwrap();
    rendered(&c, "#/event/story-025").await;
    shows(&c, "#zone", "times in Asia/Tokyo").await;
    let when = text(&c, "[data-key=time]").await;
    assert!(
        when.contains("Nov 13, 2026") && when.contains("07:15") && when.contains("GMT+9"),
        "the tweet (2026-11-12T22:15:00Z) in Tokyo shows as {when:?}"
    );

    // Keyboard: Tab from the top reaches the skip link, the navigation,
    // the date, the search box and a brand, each with a visible outline.
    open(&c, &s, &format!("#/?at={AT}")).await;
    c.execute(
        "document.activeElement.blur(); window.scrollTo(0, 0);",
        vec![],
    )
    .await
    .unwrap();
    let mut reached = Vec::new();
    for _ in 0..20 {
        c.active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
        let focused = c
            .execute(
                "const e = document.activeElement; const s = getComputedStyle(e);
                 return [e.id || e.getAttribute('href') || e.tagName,
                         s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2, s.outlineStyle + ' ' + s.outlineWidth + ' ' + e.matches(':focus-within')];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            focused[1],
            json!(true),
            "no visible focus on {}: {}",
            focused[0],
            focused[2]
        );
        let name = focused[0].as_str().unwrap().to_string();
        let brand = name.starts_with("#/brand/");
        reached.push(name);
        if brand {
            break;
        }
    }
    for want in ["#main", "#/", "#/live", "at", "brand-search"] {
        assert!(
            reached.iter().any(|r| r == want),
            "Tab never reached {want}: {reached:?}"
        );
    }
    let link = reached.last().unwrap().clone();
    assert!(
        link.starts_with("#/brand/"),
        "Tab never reached a brand: {reached:?}"
    );
    c.active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    rendered(&c, &link).await;

    // Phone and wall: no page wider than the screen; the wall uses it.
    let pages = [
        format!("#/?at={AT}"),
        format!("#/brand/sweater?at={AT}"),
        format!("#/rel/artist/sweater?at={AT}"),
        format!("#/person/artist?at={AT}"),
    ];
    for (width, height) in [(390, 844), (2560, 1440)] {
        c.set_window_size(width, height).await.unwrap();
        for page in &pages {
            open(&c, &s, page).await;
            let sizes = c
                .execute(
                    "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
                    vec![],
                )
                .await
                .unwrap();
            let (scroll, client) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
            assert!(
                scroll <= client,
                "{page} at {width} px scrolls sideways: {scroll} px of content in {client}"
            );
        }
        open(&c, &s, &format!("#/brand/sweater?at={AT}")).await;
        let columns = c
            .execute(
                "return new Set([...document.querySelectorAll('.brand .grid > .card')].map((e) => e.offsetTop)).size
                        < document.querySelectorAll('.brand .grid > .card').length;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            columns,
            json!(width > 1000),
            "cards side by side at {width} px: {columns}"
        );
    }
    c.set_window_size(1280, 1000).await.unwrap();

    // Contrast and rounding on every page: every element with text of its
    // own against the first opaque background behind it.
    for page in &pages {
        open(&c, &s, page).await;
        let low = c
            .execute(
                r#"
                const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
                const lum = ([r, g, b]) => [r, g, b]
                  .map((v) => v / 255).map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
                  .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
                const behind = (e) => {
                  for (; e; e = e.parentElement) {
                    const c = rgb(getComputedStyle(e).backgroundColor);
                    if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
                  }
                  return [255, 255, 255];
                };
                const low = [];
                for (const e of document.querySelectorAll('body *')) {
                  const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
                  if (!own || !e.getClientRects().length || e.closest('.skip')) continue;
                  const a = lum(rgb(getComputedStyle(e).color)), b = lum(behind(e));
                  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
                  if (ratio < 4.5) low.push(`${e.tagName}.${e.className} "${e.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
                }
                return low;"#,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(low, json!([]), "text below 4.5:1 on {page}");
        let long = c
            .execute(
                "return document.getElementById('main').innerText.match(/\\d\\.\\d{4,}/g);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            long,
            Value::Null,
            "numbers not rounded for people on {page}"
        );
    }

    // Empty states say what to do: how to add data, or a way out.
    open(&c, &s, "#/?q=no-such-brand").await;
    c.find(Locator::Css(".empty a[href='#/']")).await.unwrap();
    let empty_dir = tempfile::tempdir().unwrap();
    let bare = Server::start(empty_dir.path(), &[]);
    for page in ["#/", "#/live"] {
        open(&c, &bare, page).await;
        let says = text(&c, ".empty").await;
        assert!(
            says.contains("fusion ingest FILE") && says.contains("POST /v1/events"),
            "the empty {page} says {says:?}"
        );
    }
    no_console_errors(&driver, &c, "in the usability checks").await;
    end_session(c).await;
}

/// A count as the pages show it (en-US grouping).
fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The What-if page (issue 14) in Chromium: a pasted event is simulated
/// (through the session, with its CSRF token) and its mover shows with the
/// delta the API answers for the same question; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_what_if_page_shows_the_mover_of_a_pasted_event_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (s, read, _) = story_server(dir.path());
    let driver = start_driver();
    let c = browser(&driver).await;
    let event = json!({"id": "whatif-review", "type": "review", "time": "2026-11-20T12:00:00Z",
        "person": "fan6", "brand": "bistro", "rating": 1, "text": "Cold food, rude waiter."});
    let at = "2026-11-25";
    // Signing in on the brand list (the What-if page reads nothing until run).
    c.goto(&format!("{}/#/", s.base)).await.unwrap();
    rendered(&c, "sign-in").await;
    console(&driver, &c).await;
    let key = c.find(Locator::Css("#key")).await.unwrap();
    key.send_keys(&read).await.unwrap();
    c.find(Locator::Css("#login-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    rendered(&c, "#/").await;
    c.find(Locator::Css("[data-nav=whatif]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    rendered(&c, "#/whatif").await;
    c.goto(&format!("{}/#/whatif?at={at}", s.base))
        .await
        .unwrap();
    rendered(&c, &format!("#/whatif?at={at}")).await;
    let nav = c
        .find(Locator::Css("[data-nav=whatif]"))
        .await
        .unwrap()
        .attr("aria-current")
        .await
        .unwrap();
    assert_eq!(nav.as_deref(), Some("page"));
    c.find(Locator::Css("#whatif-events"))
        .await
        .unwrap()
        .send_keys(&event.to_string())
        .await
        .unwrap();
    c.find(Locator::Css("#whatif-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let auth = format!("Bearer {read}");
    let body = json!({"events": [event], "at": format!("{at}T00:00:00Z")});
    let api = s.request(
        "POST",
        "/v1/simulate",
        &[("Authorization", &auth)],
        Some(("application/json", body.to_string().as_bytes())),
    );
    assert_eq!(api.status, 200, "{}", api.body);
    let mover = api.body["movers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["person"] == "fan6" && m["brand"] == "bistro")
        .unwrap()
        .clone();
    shows(
        &c,
        "tr[data-mover='fan6/bistro'] [data-field=delta]",
        &delta(mover["delta"].as_f64().unwrap()),
    )
    .await;
    let chips = text(&c, "tr[data-mover='fan6/bistro'] .chips").await;
    assert!(chips.contains("whatif-review"), "{chips}");
    text(&c, "tr[data-brand=bistro]").await;
    no_console_errors(&driver, &c, "on the What-if page").await;
    // Nothing was stored.
    let stored = s.request(
        "GET",
        "/v1/events/whatif-review",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(stored.status, 404, "{}", stored.body);
    end_session(c).await;
}
