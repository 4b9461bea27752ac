//! What the validator accepts (issue 9): the time range, the bound of every
//! number, currencies, strings both stores can hold, context fields kept
//! with a warning, ids as pipelines have them (and their round trip through
//! every route's URL), and the guarantee that whatever it accepts folds into
//! finite scores. The field cases are `fixtures/field/*.ndjson` (copied from
//! ../shared/field, whose README gives the right behaviour).
//!
//! HTTP is exercised in-process (`actix_web::test` on `fusion::http::configure`
//! over a real embedded store), which is fast enough for property tests.

use std::path::Path;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test as atest;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use fusion::domain::{self, EntityId, Event};
use fusion::engine::Engine;
use fusion::ingest::{self, Validated};
use fusion::score::{ScoreState, ScoringModel};
use fusion::store::EmbeddedStore;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// Validates one wire event against the default model's currency table.
fn check(v: &Value) -> Result<Validated, Vec<ingest::FieldError>> {
    ingest::validate(v, &model().currency)
}

/// The fields the validator named, for an event it must reject.
fn rejected_on(v: &Value) -> Vec<String> {
    match check(v) {
        Ok(e) => panic!("accepted, but should not be: {v} -> {:?}", e.event),
        Err(errors) => errors.into_iter().map(|e| e.field).collect(),
    }
}

/// The message of the error on `field`, for an event it must reject.
fn message_on(v: &Value, field: &str) -> String {
    match check(v) {
        Ok(e) => panic!("accepted, but should not be: {v} -> {:?}", e.event),
        Err(errors) => {
            errors
                .into_iter()
                .find(|e| e.field == field)
                .unwrap_or_else(|| panic!("no error on `{field}` for {v}"))
                .message
        }
    }
}

fn accepted(v: &Value) -> Validated {
    check(v).unwrap_or_else(|e| panic!("rejected, but should not be: {v} -> {e:?}"))
}

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn field_case(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/field")
        .join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ingest::parse_ndjson(&text).unwrap()
}

/// `base` with `field` set to `value`.
fn with(base: &Value, field: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[field] = value;
    v
}

async fn engine(dir: &Path) -> Arc<Engine<EmbeddedStore>> {
    let store = EmbeddedStore::open(dir).unwrap();
    Arc::new(Engine::open(store, model()).await.unwrap())
}

/// The service's routes over `engine`, in-process.
macro_rules! app {
    ($engine:expr) => {
        atest::init_service(fusion::http::app(
            Arc::clone(&$engine),
            fusion::http::Limits::default(),
            fusion::http::Shared::new(&fusion::http::Limits::default()),
        ))
        .await
    };
}

/// Sends a request; answers the status and the JSON body (`Null` if none).
async fn send<S, R, B>(app: &S, req: R) -> (u16, Value)
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let resp = atest::call_service(app, req).await;
    let status = resp.status().as_u16();
    let bytes = atest::read_body(resp).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post(body: &Value) -> atest::TestRequest {
    atest::TestRequest::post()
        .uri("/v1/events")
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string())
}

fn get(uri: &str) -> atest::TestRequest {
    atest::TestRequest::get().uri(uri)
}

const T: &str = "2026-11-01T10:00:00Z";

// ---------------------------------------------------------------- numbers

/// Regression (issue 9, kind 2): a purchase of 0 pushed no impulse, so the
/// pair had no relationship and the read answered 404.
#[actix_web::test]
async fn a_free_item_is_still_a_purchase() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let free = json!({"id": "free-1", "type": "purchase", "time": T, "person": "ann", "brand": "acme", "amount": 0});
    let (status, report) = send(&app, post(&free).to_request()).await;
    assert_eq!((status, report["accepted"].as_u64()), (200, Some(1)));
    let (status, r) = send(
        &app,
        get("/v1/relationships/ann/acme?at=2026-11-02T00:00:00Z").to_request(),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["score"], 50.0);
    assert_eq!(r["event_count"], 1);
    assert_eq!(r["contributions"][0]["event"], "free-1");
    assert_eq!(r["contributions"][0]["delta"], 0.0);
    let (_, brand) = send(&app, get("/v1/brands/acme").to_request()).await;
    assert_eq!(brand["sales"]["purchases"], 1);
    assert_eq!(brand["sales"]["purchase_amount"], 0.0);
}

/// A free item spills nothing: the followers of the buyer get no
/// relationship from it (as in the batch, where a spill of 0 is pruned).
#[test]
fn a_free_item_makes_only_its_own_relationship() {
    let events: Vec<Event> = [
        json!({"id": "f", "type": "follow", "time": "2026-11-01T09:00:00Z", "person": "fan", "target": "ann"}),
        json!({"id": "p", "type": "purchase", "time": T, "person": "ann", "brand": "acme", "amount": 0}),
    ]
    .iter()
    .map(|v| accepted(v).event)
    .collect();
    let state = ScoreState::build(model(), Vec::new(), events);
    let at = time("2026-11-02T00:00:00Z");
    let id = |s: &str| EntityId::new(s).unwrap();
    assert_eq!(state.score_at(&id("ann"), &id("acme"), at), Some(50.0));
    assert_eq!(state.score_at(&id("fan"), &id("acme"), at), None);
    let batch = state.batch(at);
    assert_eq!(batch.scores[&(id("ann"), id("acme"))].score, 50.0);
    assert!(!batch.scores.contains_key(&(id("fan"), id("acme"))));
}

/// A neutral interaction (a post of sentiment 0) is a relationship at 50
/// too: the same kind as a free item.
#[test]
fn a_neutral_post_makes_a_relationship_at_50() {
    let post = json!({"id": "n", "type": "post", "time": T, "person": "ann", "brand": "acme", "sentiment": 0});
    let events = vec![accepted(&post).event];
    let state = ScoreState::build(model(), Vec::new(), events.clone());
    let id = |s: &str| EntityId::new(s).unwrap();
    let at = time("2026-11-02T00:00:00Z");
    let e = crate::support::explain(&state, &events, &id("ann"), &id("acme"), at)
        .expect("a relationship");
    assert_eq!((e.score, e.event_count), (50.0, 1));
}

/// Regression (issue 9, item 9): a relationship read far in the future
/// answered 404 once its impulses had decayed to nothing; it has decayed
/// to 50.
#[actix_web::test]
async fn a_relationship_read_far_in_the_future_has_decayed_to_50() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let buy = json!({"id": "b-1", "type": "purchase", "time": T, "person": "ann", "brand": "acme", "amount": 500});
    assert_eq!(send(&app, post(&buy).to_request()).await.0, 200);
    let (status, r) = send(
        &app,
        get("/v1/relationships/ann/acme?at=2199-12-31T00:00:00Z").to_request(),
    )
    .await;
    assert_eq!((status, &r["score"]), (200, &json!(50.0)), "{r}");
}

/// Every number has a documented bound (domain::bounds): the bound itself
/// is accepted, the next value past it is rejected on that field.
#[test]
fn every_number_has_a_bound_and_is_rejected_on_its_field_beyond_it() {
    let purchase =
        json!({"id": "e", "type": "purchase", "time": T, "person": "a", "brand": "b", "amount": 1});
    let sales = json!({"id": "e", "type": "brand_sales", "time": T, "brand": "b", "amount": 1});
    let cause = json!({"id": "e", "type": "cause", "time": T, "brand": "b", "tags": ["x"]});
    let service = json!({"id": "e", "type": "service", "time": T, "person": "a", "brand": "b"});
    let audience = json!({"id": "e", "type": "audience", "time": T, "person": "a", "followers": 1});
    let endorse = json!({"id": "e", "type": "endorsement", "time": T, "person": "a", "brand": "b"});
    let follow = json!({"id": "e", "type": "follow", "time": T, "person": "a", "target": "b"});
    let post = json!({"id": "e", "type": "post", "time": T, "person": "a", "brand": "b"});
    let review =
        json!({"id": "e", "type": "review", "time": T, "person": "a", "brand": "b", "rating": 3});
    // (event, field, largest accepted, smallest rejected above, and below)
    let cases: Vec<(&Value, &str, Value, Value, Value)> = vec![
        (
            &purchase,
            "amount",
            json!(1e12),
            json!(1.000_000_1e12),
            json!(-0.01),
        ),
        (
            &purchase,
            "amount",
            json!(1e12),
            json!(1.2e29),
            json!(-1e-300),
        ),
        (&sales, "amount", json!(1e12), json!(1e13), json!(-1)),
        (&cause, "amount", json!(1e12), json!(1e300), json!(-1)),
        (
            &service,
            "wait_seconds",
            json!(31_536_000),
            json!(31_536_001),
            json!(-1),
        ),
        (&service, "transfers", json!(1000), json!(1001), json!(-1)),
        (&service, "csat", json!(5), json!(6), json!(0)),
        (&service, "effort", json!(7), json!(8), json!(0)),
        (
            &audience,
            "followers",
            json!(100_000_000_000u64),
            json!(100_000_000_001u64),
            json!(-1),
        ),
        (&endorse, "strength", json!(1), json!(1.000_001), json!(0)),
        (&follow, "strength", json!(1), json!(2), json!(-0.5)),
        (
            &post,
            "sentiment",
            json!(1),
            json!(1.000_001),
            json!(-1.000_001),
        ),
        (&review, "rating", json!(5), json!(6), json!(0)),
    ];
    for (base, field, ok, above, below) in cases {
        accepted(&with(base, field, ok.clone()));
        for bad in [above, below] {
            let v = with(base, field, bad);
            assert_eq!(rejected_on(&v), vec![field.to_string()], "{v}");
        }
    }
    // The message gives the bound readably.
    let m = message_on(&with(&purchase, "amount", json!(1.2e29)), "amount");
    assert!(m.contains("[0, 1e12]") && m.contains("1.2e29"), "{m}");
}

/// Regression (issue 9, kind 2): `-0.0` was stored and served as `-0.0`.
#[test]
fn negative_zero_is_stored_and_served_as_zero() {
    let cases = [
        json!({"id": "e", "type": "purchase", "time": T, "person": "a", "brand": "b", "amount": -0.0}),
        json!({"id": "e", "type": "post", "time": T, "person": "a", "brand": "b", "sentiment": -0.0}),
        json!({"id": "e", "type": "service", "time": T, "person": "a", "brand": "b", "wait_seconds": -0.0}),
        json!({"id": "e", "type": "cause", "time": T, "brand": "b", "tags": ["x"], "amount": -0.0}),
    ];
    fn negative_zero(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.as_f64().is_some_and(|x| x == 0.0 && x.is_sign_negative()),
            Value::Array(items) => items.iter().any(negative_zero),
            Value::Object(m) => m.values().any(negative_zero),
            _ => false,
        }
    }
    for v in cases {
        assert!(negative_zero(&v));
        let event = accepted(&v).event;
        let wire = ingest::to_wire(&event);
        assert!(!negative_zero(&wire), "{v} -> {wire}");
        // And as stored (the stores keep the domain event's JSON).
        assert!(!negative_zero(&serde_json::to_value(&event).unwrap()));
    }
    // VADER's score of a neutral text is a zero too.
    let text =
        json!({"id": "e", "type": "post", "time": T, "person": "a", "brand": "b", "text": "the"});
    let wire = ingest::to_wire(&accepted(&text).event).to_string();
    assert!(wire.contains(r#""sentiment":0.0"#), "{wire}");
}

/// Field case 03: amounts past the bound are rejected on `amount`, and no
/// total in any answer becomes `null` or infinite, even at the bound.
#[actix_web::test]
async fn field_case_03_huge_amounts_are_rejected_and_totals_stay_finite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let huge = field_case("03-huge-amount.ndjson");
    let (status, report) = send(&app, post(&json!(huge)).to_request()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 0, "{report}");
    let rejected = report["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 3);
    for r in rejected {
        assert_eq!(r["errors"][0]["field"], "amount", "{r}");
    }
    // Purchases and sales reports at the bound, in the currency converting
    // to the most base units per unit: the totals stay finite numbers.
    let big: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("max-{i}"), "type": "purchase", "time": T, "person": format!("p{i}"), "brand": "acme", "amount": 1e12, "currency": "GBP"}))
        .chain((0..50).map(|i| json!({"id": format!("rep-{i}"), "type": "brand_sales", "time": format!("2026-10-{:02}T00:00:00Z", i % 28 + 1), "brand": "acme", "amount": 1e12, "currency": "GBP"})))
        .collect();
    let (status, report) = send(&app, post(&json!(big)).to_request()).await;
    assert_eq!(
        (status, report["accepted"].as_u64()),
        (200, Some(100)),
        "{report}"
    );
    let (_, summary) = send(&app, get("/v1/brands/acme").to_request()).await;
    for total in [
        &summary["sales"]["purchase_amount"],
        &summary["sales"]["reported_sales"],
    ] {
        let x = total
            .as_f64()
            .unwrap_or_else(|| panic!("not a number: {summary}"));
        assert!(x.is_finite() && x > 5e13, "{summary}");
    }
    let (status, r) = send(
        &app,
        get("/v1/relationships/p0/acme?at=2026-11-02T00:00:00Z").to_request(),
    )
    .await;
    assert_eq!(status, 200);
    let score = r["score"].as_f64().unwrap();
    assert!(score > 50.0 && score < 100.0, "{r}");
}

/// Field case 07: 10,000 JPY and 10,000 USD do not score alike; the brand
/// total is in the base currency; the events keep what was sent.
#[actix_web::test]
async fn field_case_07_currencies_are_converted_by_the_rate_table() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let events = field_case("07-currency-ignored.ndjson");
    let (status, report) = send(&app, post(&json!(events)).to_request()).await;
    assert_eq!(
        (status, report["accepted"].as_u64()),
        (200, Some(2)),
        "{report}"
    );
    let at = "?at=2026-11-02T00:00:00Z";
    let score = |r: Value| r["score"].as_f64().unwrap();
    let usd = score(
        send(
            &app,
            get(&format!("/v1/relationships/kim/acme{at}")).to_request(),
        )
        .await
        .1,
    );
    let jpy = score(
        send(
            &app,
            get(&format!("/v1/relationships/lee/acme{at}")).to_request(),
        )
        .await
        .1,
    );
    assert!(usd > jpy + 1.0, "10,000 USD {usd} vs 10,000 JPY {jpy}");
    assert!(
        jpy > 50.0,
        "10,000 JPY (about 62 USD) is still a purchase: {jpy}"
    );
    let rates = &model().currency;
    let yen = 10_000.0 * rates.rates[&domain::Currency::new("USD").unwrap()]
        / rates.rates[&domain::Currency::new("JPY").unwrap()];
    let (_, summary) = send(&app, get("/v1/brands/acme").to_request()).await;
    let total = summary["sales"]["purchase_amount"].as_f64().unwrap();
    assert!(
        (total - (10_000.0 + yen)).abs() < 1e-6,
        "{total} vs {}",
        10_000.0 + yen
    );
    let (_, timeline) = send(&app, get("/v1/entities/lee/events").to_request()).await;
    assert_eq!(timeline["items"][0]["amount"], 10_000.0);
    assert_eq!(timeline["items"][0]["currency"], "JPY");
}

#[test]
fn a_currency_missing_from_the_rate_table_is_rejected_on_currency() {
    let v = json!({"id": "e", "type": "purchase", "time": T, "person": "a", "brand": "b", "amount": 5, "currency": "XYZ"});
    let m = message_on(&v, "currency");
    assert!(
        m.contains("XYZ") && m.contains("rate table") && m.contains("JPY"),
        "{m}"
    );
    for bad in [json!("usd"), json!("EURO"), json!(978)] {
        assert_eq!(rejected_on(&with(&v, "currency", bad)), vec!["currency"]);
    }
    // brand_sales and cause take a currency too.
    let sales = json!({"id": "e", "type": "brand_sales", "time": T, "brand": "b", "amount": 5, "currency": "XYZ"});
    assert_eq!(rejected_on(&sales), vec!["currency"]);
    let cause = json!({"id": "e", "type": "cause", "time": T, "brand": "b", "tags": ["x"], "amount": 5, "currency": "XYZ"});
    assert_eq!(rejected_on(&cause), vec!["currency"]);
}

#[test]
fn an_amount_without_a_currency_is_in_usd() {
    let v = json!({"id": "e", "type": "brand_sales", "time": T, "brand": "b", "amount": 5});
    let wire = ingest::to_wire(&accepted(&v).event);
    assert_eq!(wire["currency"], "USD");
}

/// Brand sales reports in another currency are converted before the lift
/// is computed: the same sales in yen and in dollars give the same lift.
#[test]
fn sales_lift_is_computed_in_the_base_currency() {
    let report = |id: &str, day: u32, usd: f64, currency: &str, rate: f64| json!({"id": id, "type": "brand_sales", "time": format!("2026-10-{day:02}T23:59:00Z"), "brand": "knit", "amount": usd * rate, "currency": currency});
    let rates = &model().currency;
    let per_usd = |c: &str| {
        rates.rates[&domain::Currency::new(c).unwrap()]
            / rates.rates[&domain::Currency::new("USD").unwrap()]
    };
    let run = |second_currency: &str| {
        let events: Vec<Event> = [
            json!({"id": "o", "type": "occasion", "time": "2026-10-20T18:00:00Z", "occasion": "gig", "brand": "knit", "performers": ["star"]}),
            report("s1", 10, 1000.0, "USD", 1.0),
            report("s2", 22, 1500.0, second_currency, per_usd(second_currency)),
        ]
        .iter()
        .map(|v| accepted(v).event)
        .collect();
        let state = ScoreState::build(model(), Vec::new(), events);
        let id = |s: &str| EntityId::new(s).unwrap();
        state
            .score_at(&id("star"), &id("knit"), time("2026-10-23T00:00:00Z"))
            .unwrap()
    };
    let (usd, jpy) = (run("USD"), run("JPY"));
    assert!((usd - jpy).abs() < 1e-9, "{usd} vs {jpy}");
}

// ---------------------------------------------------------------- time

/// Field case 01 (the validator's half): a placeholder date 2,000 years
/// before the other event is rejected on `time`, with the range in the
/// message; the other event is accepted.
#[test]
fn field_case_01_a_placeholder_date_is_rejected_on_time() {
    let events = field_case("01-zero-time-poison.ndjson");
    let checked = ingest::validate_all(&events, &model().currency);
    assert_eq!(checked.good.len(), 1);
    assert_eq!(checked.rejected.len(), 1);
    let r = &checked.rejected[0];
    assert_eq!((r.index, r.id.as_deref()), (1, Some("zt-2")));
    assert_eq!(r.errors[0].field, "time");
    assert!(
        r.errors[0].message.contains("1900-01-01T00:00:00Z")
            && r.errors[0].message.contains("2200-01-01T00:00:00Z"),
        "{:?}",
        r.errors
    );
}

#[test]
fn the_accepted_time_range_is_1900_up_to_2200() {
    let base = json!({"id": "e", "type": "consent", "person": "a", "granted": true});
    for ok in [
        "1900-01-01T00:00:00Z",
        "1900-01-01T01:00:00+01:00",
        "1970-01-01T00:00:00Z",
        "2199-12-31T23:59:59.999999999Z",
    ] {
        accepted(&with(&base, "time", json!(ok)));
    }
    for bad in [
        "0001-01-01T00:00:00Z",
        "1899-12-31T23:59:59.999Z",
        "1900-01-01T00:00:00+00:01",
        "2200-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ] {
        assert_eq!(
            rejected_on(&with(&base, "time", json!(bad))),
            vec!["time"],
            "{bad}"
        );
    }
    assert!(domain::check_time(time("2199-12-31T23:59:59Z")).is_ok());
    assert!(domain::check_time(time("2200-01-01T00:00:00Z")).is_err());
}

// ---------------------------------------------------------------- strings

/// Regression (issue 9, kind 5): `\u0000` passed validation and then failed
/// PostgreSQL's COPY. It is refused on its field, wherever it is.
#[test]
fn nul_is_rejected_on_its_field_wherever_it_is() {
    let nul = "a\u{0}b";
    let post = json!({"id": "e", "type": "post", "time": T, "person": "a", "brand": "b", "sentiment": 0.1});
    let occasion = json!({"id": "e", "type": "occasion", "time": T, "occasion": "o", "brand": "b"});
    let cases: Vec<(Value, &str)> = vec![
        (with(&post, "text", json!(nul)), "text"),
        (with(&post, "channel", json!(nul)), "channel"),
        (with(&post, "id", json!(nul)), "id"),
        (with(&post, "person", json!(nul)), "person"),
        (with(&post, "brand", json!(nul)), "brand"),
        (with(&occasion, "tags", json!(["ok", nul])), "tags[1]"),
        (
            with(&occasion, "performers", json!(["ok", nul])),
            "performers[1]",
        ),
        (with(&post, "attributes", json!({nul: 1})), "attributes"),
        (with(&post, "attributes", json!({"k": nul})), "attributes"),
        (
            with(&post, "attributes", json!({"k": [{"deep": [nul]}]})),
            "attributes",
        ),
        // A contract field this type does not use is kept, so it must be
        // storable too.
        (with(&post, "target", json!(nul)), "target"),
    ];
    for (v, field) in cases {
        assert_eq!(rejected_on(&v), vec![field.to_string()], "{v}");
    }
    let m = message_on(&with(&post, "text", json!(nul)), "text");
    assert!(m.contains("U+0000"), "{m}");
}

/// `attributes` is bounded: 64 KiB of JSON, 16 levels (the object is 1).
#[test]
fn attributes_are_bounded_in_size_and_depth() {
    let base = json!({"id": "e", "type": "consent", "time": T, "person": "a", "granted": true});
    let nested = |levels: usize| {
        let mut v = json!(1);
        for _ in 1..levels {
            v = json!({ "k": v });
        }
        v
    };
    accepted(&with(&base, "attributes", nested(16)));
    assert_eq!(
        rejected_on(&with(&base, "attributes", nested(17))),
        vec!["attributes"]
    );
    let fits = "x".repeat(64 * 1024 - 16);
    accepted(&with(&base, "attributes", json!({ "k": fits })));
    let big = "x".repeat(64 * 1024);
    let m = message_on(
        &with(&base, "attributes", json!({ "k": big })),
        "attributes",
    );
    assert!(m.contains("65536 bytes"), "{m}");
}

// ---------------------------------------------------------------- context fields

/// Regression (issue 9, kind 8): a post carrying `channel` was rejected
/// ("is not used by post events") and the event was lost.
#[actix_web::test]
async fn channel_is_stored_and_shown_on_every_interaction_without_warning() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let t = |h: u32| format!("2026-11-01T{h:02}:00:00Z");
    let events = json!([
        {"id": "c-1", "type": "purchase", "time": t(1), "person": "ann", "brand": "acme", "amount": 20, "channel": "web"},
        {"id": "c-2", "type": "post", "time": t(2), "person": "ann", "brand": "acme", "sentiment": 0.5, "channel": "instagram"},
        {"id": "c-3", "type": "mention", "time": t(3), "person": "ann", "brand": "acme", "sentiment": 0.5, "channel": "x"},
        {"id": "c-4", "type": "review", "time": t(4), "person": "ann", "brand": "acme", "rating": 4, "channel": "store"},
        {"id": "c-5", "type": "service", "time": t(5), "person": "ann", "brand": "acme", "csat": 4, "channel": "phone"},
    ]);
    let (status, report) = send(&app, post(&events).to_request()).await;
    assert_eq!(
        (status, report["accepted"].as_u64()),
        (200, Some(5)),
        "{report}"
    );
    assert_eq!(report["warnings"], json!([]), "{report}");
    let (_, timeline) = send(&app, get("/v1/entities/ann/events").to_request()).await;
    let channels: Vec<&str> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["phone", "store", "x", "instagram", "web"]);
    let (_, r) = send(
        &app,
        get("/v1/relationships/ann/acme?at=2026-11-02T00:00:00Z").to_request(),
    )
    .await;
    let purchase = r["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["event"] == "c-1")
        .unwrap();
    assert_eq!(purchase["channel"], "web");
}

/// A field the contract knows but the type does not use costs nothing: the
/// event is kept with it, and the answer names it in `warnings`. A field
/// the contract does not know stays an error.
#[actix_web::test]
async fn unused_contract_fields_are_kept_with_a_warning_and_unknown_ones_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let events = json!([
        {"id": "w-1", "type": "purchase", "time": T, "person": "ann", "brand": "acme", "amount": 20, "rating": 5, "text": "gift"},
        {"id": "w-2", "type": "endorsement", "time": T, "person": "star", "brand": "acme", "channel": "tiktok"},
        {"id": "w-3", "type": "purchase", "time": T, "person": "bob", "brand": "acme", "amount": 20, "colour": "red"},
    ]);
    let (status, report) = send(&app, post(&events).to_request()).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["rejected"][0]["index"], 2);
    assert_eq!(report["rejected"][0]["errors"][0]["field"], "colour");
    let warnings: Vec<(u64, &str, &str)> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert!(w["message"].as_str().unwrap().contains("is not used by"));
            (
                w["index"].as_u64().unwrap(),
                w["id"].as_str().unwrap(),
                w["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        warnings,
        [
            (0, "w-1", "rating"),
            (0, "w-1", "text"),
            (1, "w-2", "channel")
        ]
    );
    // Kept with the event, and shown again as sent.
    let (_, timeline) = send(&app, get("/v1/entities/ann/events").to_request()).await;
    let e = &timeline["items"][0];
    assert_eq!((&e["rating"], &e["text"]), (&json!(5), &json!("gift")));
    let (_, timeline) = send(&app, get("/v1/entities/star/events").to_request()).await;
    assert_eq!(timeline["items"][0]["channel"], "tiktok");
    // An answer always carries the list, empty or not.
    let clean = json!({"id": "w-4", "type": "purchase", "time": T, "person": "cy", "brand": "acme", "amount": 1});
    assert_eq!(
        send(&app, post(&clean).to_request()).await.1["warnings"],
        json!([])
    );
}

// ---------------------------------------------------------------- ids

/// Characters that URLs, path matching or normalisation treat specially,
/// and some that are merely unusual; mixed with any character at all.
fn id_strategy() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '/', '%', '?', '#', ' ', '+', '.', '&', '=', ';', ':', '@', '~', '\'', '"', '<', '>', '\\',
        '^', '`', '{', '}', '|', '[', ']', '!', '$', '(', ')', '*', ',', '-', '_', 'a', 'Z', '0',
        'é', 'e', '\u{301}', 'ß', 'İ', '中', '👩', '\u{200D}', '\u{FEFF}', '\u{A0}', '\u{3000}',
    ]);
    prop::collection::vec(prop_oneof![4 => special, 1 => any::<char>()], 1..24)
        .prop_map(|cs| cs.into_iter().collect::<String>())
        .prop_filter("an id the validator accepts", |s| EntityId::new(s).is_ok())
}

/// What must be percent-encoded in a path segment (RFC 3986: everything but
/// unreserved characters, sub-delimiters, `:` and `@`): what a careful
/// client leaves as it is.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every accepted id reaches its entity through the percent-encoded URL
    /// of every route that takes an id, whether the client encodes every
    /// byte or only what RFC 3986 requires.
    #[test]
    fn every_accepted_id_round_trips_through_every_route(
        person in id_strategy(),
        brand in id_strategy(),
        event in id_strategy(),
        every_byte in any::<bool>(),
    ) {
        let (p, b) = (EntityId::new(&person).unwrap(), EntityId::new(&brand).unwrap());
        let event_id = fusion::domain::EventId::new(&event).unwrap();
        prop_assume!(p != b && event_id.as_str() != "earlier");
        let set = if every_byte { percent_encoding::NON_ALPHANUMERIC } else { SEGMENT };
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, set).to_string();
        let (ep, eb) = (enc(&person), enc(&brand));
        actix_web::rt::System::new().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let engine = engine(dir.path()).await;
            let app = app!(engine);
            let buy = json!({"id": event, "type": "purchase", "time": "2020-01-01T00:00:00Z",
                             "person": person, "brand": brand, "amount": 30});
            let (status, report) = send(&app, post(&buy).to_request()).await;
            assert_eq!((status, report["accepted"].as_u64()), (200, Some(1)), "{report}");

            let at = "at=2020-01-02T00:00:00Z";
            let routes: Vec<(String, &str, &EntityId)> = vec![
                (format!("/v1/entities/{ep}"), "/id", &p),
                (format!("/v1/entities/{ep}/events"), "/items/0/person", &p),
                (format!("/v1/relationships/{ep}/{eb}?{at}"), "/brand", &b),
                (format!("/v1/relationships/{ep}/{eb}?{at}"), "/person", &p),
                (
                    format!("/v1/relationships/{ep}/{eb}/history?from=2020-01-01T00:00:00Z&to=2020-01-03T00:00:00Z"),
                    "/0/time",
                    &p,
                ),
                (format!("/v1/brands/{eb}"), "/brand", &b),
                (format!("/v1/brands/{eb}/relationships"), "/items/0/person", &p),
                (format!("/v1/entities/{eb}"), "/id", &b),
            ];
            for (uri, pointer, id) in routes {
                let (status, body) = send(&app, get(&uri).to_request()).await;
                assert_eq!(status, 200, "{uri} -> {body}");
                if pointer != "/0/time" {
                    assert_eq!(body.pointer(pointer), Some(&json!(id.as_str())), "{uri} -> {body}");
                }
            }
            // The event's id comes back as sent (NFC) in the timeline, and
            // works as the timeline's cursor in a query string.
            let earlier = json!({"id": "earlier", "type": "post", "time": "2019-12-31T00:00:00Z",
                                 "person": person, "brand": brand, "sentiment": 0.5});
            assert_eq!(send(&app, post(&earlier).to_request()).await.0, 200);
            let (_, page) = send(&app, get(&format!("/v1/entities/{ep}/events?limit=1")).to_request()).await;
            assert_eq!(page["items"][0]["id"], json!(event_id.as_str()), "{page}");
            let cursor = page["next_cursor"].as_str().unwrap_or_else(|| panic!("{page}"));
            assert_eq!(cursor, event_id.as_str());
            // A query string is form-encoded: `+` is a space there, so a
            // value is encoded more than a path segment.
            let query = percent_encoding::utf8_percent_encode(cursor, percent_encoding::NON_ALPHANUMERIC);
            let uri = format!("/v1/entities/{ep}/events?limit=1&cursor={query}");
            let (status, page) = send(&app, get(&uri).to_request()).await;
            assert_eq!(status, 200, "{uri} -> {page}");
            assert_eq!(page["items"][0]["id"], "earlier", "{page}");
            // Register and erase by URL too.
            let put = atest::TestRequest::put()
                .uri(&format!("/v1/entities/{ep}"))
                .set_json(json!({"kind": "consumer", "name": "x"}))
                .to_request();
            let (status, body) = send(&app, put).await;
            assert_eq!((status, &body["id"]), (200, &json!(p.as_str())), "{body}");
            let delete = atest::TestRequest::delete().uri(&format!("/v1/entities/{ep}")).to_request();
            let (status, body) = send(&app, delete).await;
            assert_eq!((status, &body["erased"]), (200, &json!(p.as_str())), "{body}");
        });
    }
}

/// The same id typed two ways (composed, or a letter and a combining
/// accent) is one person, in events and in URLs.
#[actix_web::test]
async fn one_name_typed_two_ways_is_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let composed = "Jos\u{e9} \u{c1}lvarez";
    let decomposed = "Jose\u{301} A\u{301}lvarez";
    let events = json!([
        {"id": "n-1", "type": "purchase", "time": T, "person": composed, "brand": "acme", "amount": 10},
        {"id": "n-2", "type": "purchase", "time": "2026-11-01T11:00:00Z", "person": decomposed, "brand": "acme", "amount": 10},
    ]);
    let (status, report) = send(&app, post(&events).to_request()).await;
    assert_eq!(
        (status, report["accepted"].as_u64()),
        (200, Some(2)),
        "{report}"
    );
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    for typed in [composed, decomposed] {
        let (status, r) = send(
            &app,
            get(&format!(
                "/v1/relationships/{}/acme?at=2026-11-02T00:00:00Z",
                enc(typed)
            ))
            .to_request(),
        )
        .await;
        assert_eq!(
            (status, &r["person"], &r["event_count"]),
            (200, &json!(composed), &json!(2)),
            "{r}"
        );
    }
}

/// A registered entity's strings and numbers follow the events' rules: a
/// name with U+0000 cannot be stored by PostgreSQL, and a follower count
/// has the same bound as in `audience` events.
#[actix_web::test]
async fn entity_registrations_follow_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let put = |body: Value| {
        atest::TestRequest::put()
            .uri("/v1/entities/ann%2B1%40example.com")
            .set_json(body)
            .to_request()
    };
    for (body, field) in [
        (json!({"kind": "consumer", "name": "a\u{0}"}), "name"),
        (
            json!({"kind": "consumer", "interests": ["ok", "a\u{0}"]}),
            "interests",
        ),
        (
            json!({"kind": "influencer", "followers": 100_000_000_001u64}),
            "followers",
        ),
    ] {
        let (status, r) = send(&app, put(body)).await;
        assert_eq!(
            (status, &r["errors"][0]["field"]),
            (400, &json!(field)),
            "{r}"
        );
    }
    let ok = json!({"kind": "influencer", "name": "Ann", "followers": 100_000_000_000u64});
    let (status, r) = send(&app, put(ok)).await;
    assert_eq!(
        (status, &r["id"]),
        (200, &json!("ann+1@example.com")),
        "{r}"
    );
}

// ---------------------------------------------------------------- red team (H8b)

/// Red team (H8b): a path segment whose percent escapes are not UTF-8
/// (`%FF`) was decoded lossily to U+FFFD: `PUT /v1/entities/%FF` registered
/// the entity `\u{FFFD}` (an id the client never sent), and `%FE`, another
/// id, then read the same entity. A body with invalid UTF-8 is refused; a
/// path must be too. Right: `400` naming `id`, and nothing registered.
#[actix_web::test]
async fn a_path_id_that_is_not_utf8_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let app = app!(engine);
    let put = atest::TestRequest::put()
        .uri("/v1/entities/%FF")
        .set_json(json!({"kind": "brand", "name": "x"}))
        .to_request();
    let (status, body) = send(&app, put).await;
    assert_eq!(status, 400, "PUT /v1/entities/%FF -> {body}");
    assert_eq!(body["errors"][0]["field"], "id", "{body}");
    let (status, body) = send(&app, get("/v1/entities/%EF%BF%BD").to_request()).await;
    assert_eq!(status, 404, "U+FFFD was registered in place of %FF: {body}");
    let (status, body) = send(&app, get("/v1/entities/%FE/events").to_request()).await;
    assert_eq!(status, 400, "GET /v1/entities/%FE/events -> {body}");
}

/// Red team (H8b): `-0` is how JSON writes the integer zero, but every
/// integer field (`transfers`, `followers`, ...) refused it with "must be
/// an integer ..., got -0.0", a value the sender never wrote, while README
/// promises that `-0.0` is stored as 0. Right: `-0` in an integer field is 0.
#[test]
fn minus_zero_in_an_integer_field_is_zero() {
    for text in [
        r#"{"id":"e","type":"service","time":"2026-11-01T10:00:00Z","person":"a","brand":"b","transfers":-0}"#,
        r#"{"id":"e","type":"audience","time":"2026-11-01T10:00:00Z","person":"a","followers":-0}"#,
    ] {
        let v: Value = serde_json::from_str(text).unwrap();
        accepted(&v);
    }
}
