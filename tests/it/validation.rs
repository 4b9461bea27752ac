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
use actix_web::{App, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use fusion::domain::{EntityId, Event};
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

fn accepted(v: &Value) -> Validated {
    check(v).unwrap_or_else(|e| panic!("rejected, but should not be: {v} -> {e:?}"))
}

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn engine(dir: &Path) -> Arc<Engine<EmbeddedStore>> {
    let store = EmbeddedStore::open(dir).unwrap();
    Arc::new(Engine::open(store, model()).await.unwrap())
}

/// The service's routes over `engine`, in-process.
macro_rules! app {
    ($engine:expr) => {
        atest::init_service(App::new().configure(fusion::http::configure(
            Arc::clone(&$engine),
            fusion::http::Limits::default(),
            web::Data::new(fusion::http::ReadCache::default()),
        )))
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
    let state = ScoreState::build(model(), Vec::new(), vec![accepted(&post).event]);
    let id = |s: &str| EntityId::new(s).unwrap();
    let e = state
        .explain(&id("ann"), &id("acme"), time("2026-11-02T00:00:00Z"))
        .expect("a relationship");
    assert_eq!((e.score, e.event_count), (50.0, 1));
}
