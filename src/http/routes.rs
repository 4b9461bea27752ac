//! Route handlers: parse the request, call the engine, shape the answer.
//! Query parameters come through `Params` (bounded parsers), ingest bodies
//! through `IngestBody` (bounded reading); a handler never parses either.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::IngestBody;
use super::cache::ReadCache;
use super::error::ApiError;
use super::params::{Params, clamp_time};
use super::path::Path;
use super::rejected::{self, Arrival, Intake};
use super::schema::{self, Problem};
use crate::domain::{EntityId, EntityKind};
use crate::engine::{BrandFacts, Engine, EngineError, EntityFacts, ListingSort, ScoreSummary};
use crate::ingest::{self, MAX_REJECTIONS};
use crate::score::{Component, Explanation};
use crate::store::EventStore;

/// One resource per path, each method a route: a path with a wrong method
/// gets actix's 405 with `Allow` (made a problem by the net), an unknown path
/// its 404.
pub fn register<S: EventStore>(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").get(healthz))
        .service(web::resource("/readyz").get(readyz::<S>))
        .service(web::resource("/v1/events").post(post_events::<S>))
        .service(
            web::resource("/v1/entities/{id}")
                .put(put_entity::<S>)
                .get(get_entity::<S>)
                .delete(super::privacy::erase_entity::<S>),
        )
        .service(web::resource("/v1/entities/{id}/export").get(super::privacy::export_entity::<S>))
        .service(
            web::resource("/v1/session")
                .post(super::auth::create_session)
                .delete(super::auth::delete_session),
        )
        .service(web::resource("/v1/entities/{id}/events").get(entity_events::<S>))
        .service(web::resource("/v1/relationships/{person}/{brand}").get(get_relationship::<S>))
        .service(
            web::resource("/v1/relationships/{person}/{brand}/history")
                .get(relationship_history::<S>),
        )
        .service(web::resource("/v1/brands/{brand}/relationships").get(brand_relationships::<S>))
        .service(web::resource("/v1/brands/{brand}").get(brand_summary::<S>))
        .service(web::resource("/v1/brands/{brand}/impact").get(super::impact::get_impact::<S>))
        .service(web::resource("/v1/admin/rescore").post(rescore::<S>));
}

type Eng<S> = web::Data<Engine<S>>;

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    healthz,
    readyz,
    post_events,
    put_entity,
    get_entity,
    entity_events,
    get_relationship,
    relationship_history,
    brand_relationships,
    brand_summary,
    super::impact::get_impact,
    rescore,
))]
pub(super) struct RoutesApi;

pub(super) fn entity_id(field: &str, s: &str) -> Result<EntityId, ApiError> {
    EntityId::new(s).map_err(|e| ApiError::parameter(field, format!("bad id: {e}")))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = schema::Health)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The store is reachable and the state loaded", body = schema::Ready),
        (status = 503, description = "Not ready: the store is unreachable or the state is being rebuilt", body = schema::NotReady, content_type = "application/problem+json"),
    ))]
async fn readyz<S: EventStore>(engine: Eng<S>) -> HttpResponse {
    let readiness = engine.readiness().await;
    match &readiness.reason {
        None => HttpResponse::Ok().json(json!({
            "status": "ready",
            "events": readiness.events,
            "fold_failures": readiness.fold_failures,
            "recoveries": readiness.recoveries,
            "rankings": if readiness.rankings_ready { "ready" } else { "building" },
        })),
        Some(reason) => {
            tracing::debug!(%reason, "not ready");
            HttpResponse::ServiceUnavailable()
                .content_type("application/problem+json")
                .insert_header(("Retry-After", "5"))
                .json(json!({
                    "type": "/problems/not-ready",
                    "title": "Not ready",
                    "status": 503,
                    "detail": reason,
                    "fold_failures": readiness.fold_failures,
                    "recoveries": readiness.recoveries,
                }))
        }
    }
}

#[utoipa::path(post, path = "/v1/events", tag = "events",
    params(("atomic" = Option<bool>, Query, description = "Any invalid event rejects the whole request (422) and nothing is stored")),
    request_body(description = "One event, a JSON array of events, or NDJSON (one event per line); gzip or zstd Content-Encoding",
        content((schema::EventsBody = "application/json"), (String = "application/x-ndjson"))),
    responses(
        (status = 200, description = "Answered once the accepted events are durable", body = schema::IngestReport),
        (status = 400, description = "Malformed JSON or NDJSON, or a bad parameter; nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body came too slowly; nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JSON or NDJSON body, or an unknown encoding", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Atomic request with invalid events; nothing was stored", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Overloaded (back-pressure: too many events wait to be folded, or a write has waited too long for its fold), busy, or not ready; nothing was stored; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store is full; nothing was stored", body = Problem, content_type = "application/problem+json"),
    ))]
async fn post_events<S: EventStore>(
    req: HttpRequest,
    engine: Eng<S>,
    intake: web::Data<Intake>,
    params: Params,
    body: IngestBody,
) -> Result<HttpResponse, ApiError> {
    let atomic = params.flag("atomic")?;
    let arrival = Arrival::of(&req, Utc::now());
    let IngestBody {
        parsed,
        bytes,
        share,
        ..
    } = body;
    // Rejections the parser counted but did not list (past the first 1,000).
    let unlisted = parsed.rejected_count - parsed.rejected.len();
    let spans = parsed.spans;
    let result = engine
        .submit(parsed.events, parsed.rejected, atomic, Utc::now())
        .await;
    // Every rejection is kept before the answer says it was rejected.
    let rejected = match &result {
        Ok(report) => &report.rejected[..],
        Err(EngineError::AtomicRejected(rejected)) => &rejected[..],
        Err(_) => &[][..],
    };
    rejected::keep_rejections(
        &intake,
        &arrival,
        rejected,
        rejected.len() + unlisted,
        |i| spans.get(i).and_then(|s| bytes.get(s.clone())),
    )
    .await?;
    drop(share);
    match result {
        Ok(report) => {
            let mut report = report.with_warnings(parsed.warnings);
            super::position::reflects(report.position);
            report.rejected_count += unlisted;
            report.rejected.truncate(MAX_REJECTIONS);
            Ok(HttpResponse::Ok().json(report))
        }
        Err(EngineError::AtomicRejected(mut rejected)) => {
            let count = rejected.len() + unlisted;
            rejected.truncate(MAX_REJECTIONS);
            Err(ApiError::atomic(count, &rejected))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityBody {
    kind: EntityKind,
    name: Option<String>,
    #[serde(default, deserialize_with = "ingest::deserialize_whole_number")]
    followers: Option<u64>,
    #[serde(default)]
    interests: Vec<String>,
}

#[utoipa::path(put, path = "/v1/entities/{id}", tag = "entities",
    params(("id" = String, Path, example = "artist", description = "Entity id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    request_body(content = schema::EntityBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Registered", body = schema::Entity),
        (status = 400, description = "A bad id or body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JSON body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The id is known as another kind", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store is full", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_entity<S: EventStore>(
    engine: Eng<S>,
    path: Path<String>,
    body: web::Json<EntityBody>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let body = body.into_inner();
    let entity = ingest::check_entity(id, body.kind, body.name, body.followers, body.interests)
        .map_err(|e| ApiError::body_field(&e.field, e.message))?;
    engine.register(entity.clone()).await?;
    // The registration's own log position is in the state now (`store`).
    super::position::reflects(engine.position());
    Ok(HttpResponse::Ok().json(entity))
}

#[derive(Serialize)]
struct ComponentsView {
    sentiment: f64,
    sales: f64,
    service: f64,
    engagement: f64,
    influence: f64,
    values: f64,
}

fn components_view(c: &crate::score::Components) -> ComponentsView {
    let g = |x: Component| c[x.index()];
    ComponentsView {
        sentiment: g(Component::Sentiment),
        sales: g(Component::Sales),
        service: g(Component::Service),
        engagement: g(Component::Engagement),
        influence: g(Component::Influence),
        values: g(Component::Values),
    }
}

/// The answer of `GET /v1/relationships/{person}/{brand}` (API.md).
#[derive(Serialize)]
pub(super) struct RelationshipView<'a> {
    person: &'a EntityId,
    brand: &'a EntityId,
    score: f64,
    raw: f64,
    components: ComponentsView,
    trend: &'a crate::engine::Trend,
    updated_at: Option<DateTime<Utc>>,
    as_of: DateTime<Utc>,
    event_count: usize,
    contributions: &'a [crate::score::Contribution],
}

pub(super) fn relationship_view<'a>(
    e: &'a Explanation,
    trend: &'a crate::engine::Trend,
) -> RelationshipView<'a> {
    RelationshipView {
        person: &e.person,
        brand: &e.brand,
        score: e.score,
        raw: e.raw,
        components: components_view(&e.components),
        trend,
        updated_at: e.updated_at,
        as_of: e.at,
        event_count: e.event_count,
        contributions: &e.contributions,
    }
}

/// The current time to the second: the default `at` of reads, so that polls
/// within one second share one answer (and its ETag).
pub(super) fn now_to_the_second() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

#[utoipa::path(get, path = "/v1/relationships/{person}/{brand}", tag = "scores",
    params(
        ("person" = String, Path, example = "artist", description = "Person id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("brand" = String, Path, example = "sweater", description = "Brand id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("at" = Option<String>, Query, description = "Evaluation time, RFC 3339 (default: now, to the second)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer"),
    ),
    responses(
        (status = 200, description = "The score with its trend and reasons", body = schema::Relationship,
            headers(("ETag" = String, description = "Changes when the answer may change"))),
        (status = 304, description = "Not modified since the ETag sent"),
        (status = 400, description = "A bad id or time", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No relationship between them as of that time", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_relationship<S: EventStore>(
    engine: Eng<S>,
    cache: web::Data<ReadCache>,
    req: HttpRequest,
    path: Path<(String, String)>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let (person, brand) = path.into_inner();
    let person = entity_id("person", &person)?;
    let brand = entity_id("brand", &brand)?;
    let at = params.time("at")?.unwrap_or_else(now_to_the_second);
    let version = engine.version();
    let key = (person, brand, at.timestamp_micros());
    if let Some(tag) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && tag == cache.etag(version, key.2)
        && cache.get(version, &key).is_some()
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, tag.to_string()))
            .finish());
    }
    if let Some((body, etag)) = cache.get(version, &key) {
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .insert_header((header::ETAG, etag))
            .body(body));
    }
    let (person, brand, _) = &key;
    match engine.relationship(person, brand, at).await? {
        Some((e, trend)) => {
            let encoding = std::time::Instant::now();
            let body = serde_json::to_vec(&relationship_view(&e, &trend)).map_err(|e| {
                tracing::error!(cause = %e, "cannot serialise a relationship");
                ApiError::Internal
            })?;
            crate::telemetry::record_relationship_read("json", encoding.elapsed());
            let body = web::Bytes::from(body);
            let etag = cache.put(version, key.clone(), body.clone());
            Ok(HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((header::ETAG, etag))
                .body(body))
        }
        None => Err(ApiError::NotFound(format!(
            "no relationship between '{person}' and '{brand}' as of {}",
            at.to_rfc3339()
        ))),
    }
}

const MAX_HISTORY_POINTS: i64 = 1000;

#[utoipa::path(get, path = "/v1/relationships/{person}/{brand}/history", tag = "scores",
    params(
        ("person" = String, Path, example = "artist", description = "Person id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("brand" = String, Path, example = "sweater", description = "Brand id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("from" = Option<String>, Query, description = "RFC 3339 (default: 30 days before `to`)"),
        ("to" = Option<String>, Query, description = "RFC 3339 (default: now)"),
        ("step" = Option<String>, Query, description = "1d, 6h, 30m or 60s (default 1d); at most 1000 points"),
    ),
    responses(
        (status = 200, description = "The score at each step", body = Vec<schema::HistoryPoint>),
        (status = 400, description = "A bad id, time or step", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No relationship between them", body = Problem, content_type = "application/problem+json"),
    ))]
async fn relationship_history<S: EventStore>(
    engine: Eng<S>,
    path: Path<(String, String)>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let (person, brand) = path.into_inner();
    let h = history_points(&person, &brand, &params)?;
    let Some(scores) = engine.history(&h.person, &h.brand, &h.times, h.to)? else {
        return Err(h.not_found());
    };
    let series: Vec<Value> = h
        .times
        .iter()
        .zip(scores)
        .map(|(t, score)| json!({"time": t, "score": score}))
        .collect();
    Ok(HttpResponse::Ok().json(series))
}

/// The points of a history request: the pair, each point's time, and `to`.
/// Shared by the history and the events behind it (dashboard.rs), so both
/// answer for the same points.
pub(super) struct HistoryPoints {
    pub person: EntityId,
    pub brand: EntityId,
    pub times: Vec<DateTime<Utc>>,
    pub to: DateTime<Utc>,
}

impl HistoryPoints {
    /// A pair with no score at any point, nor at `to`.
    pub fn not_found(&self) -> ApiError {
        ApiError::NotFound(format!(
            "no relationship between '{}' and '{}'",
            self.person, self.brand
        ))
    }
}

/// The points of a history request (`from`, `to`, `step` of `params`).
pub(super) fn history_points(
    person: &str,
    brand: &str,
    params: &Params,
) -> Result<HistoryPoints, ApiError> {
    let person = entity_id("person", person)?;
    let brand = entity_id("brand", brand)?;
    let to = params.time("to")?.unwrap_or_else(Utc::now);
    let from = params
        .time("from")?
        .unwrap_or_else(|| clamp_time(to - Duration::days(30)));
    let step = params.step("step")?.unwrap_or(Duration::days(1));
    if from > to {
        return Err(ApiError::parameter("from", "must not be after `to`"));
    }
    // Both are in the accepted range and the step is at least a second: no
    // overflow below.
    let points = (to - from).num_seconds() / step.num_seconds() + 1;
    if points > MAX_HISTORY_POINTS {
        return Err(ApiError::parameter(
            "step",
            format!(
                "gives {points} points; at most {MAX_HISTORY_POINTS} are served, use a larger step"
            ),
        ));
    }
    let times = (0..points).map(|i| from + step * i as i32).collect();
    Ok(HistoryPoints {
        person,
        brand,
        times,
        to,
    })
}

/// Cursor: the sort value and person of the last item served (keyset
/// pagination, stable while scores move).
fn encode_cursor(value: f64, person: &EntityId) -> String {
    format!("{:016x}.{person}", value.to_bits())
}

/// The inverse of `encode_cursor`: exactly 16 hex digits of a finite sort
/// value within what scores and trends can be (|v| <= 100), and a person id.
fn decode_cursor(s: &str) -> Option<(f64, EntityId)> {
    let (bits, person) = s.split_once('.')?;
    if bits.len() != 16 {
        return None;
    }
    let value = f64::from_bits(u64::from_str_radix(bits, 16).ok()?);
    if !value.is_finite() || value.abs() > 100.0 {
        return None;
    }
    Some((value, EntityId::new(person).ok()?))
}

/// Most items in one page of a listing.
const MAX_PAGE: usize = 1000;

#[utoipa::path(get, path = "/v1/brands/{brand}/relationships", tag = "scores",
    params(
        ("brand" = String, Path, example = "sweater", description = "Brand id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("sort" = Option<String>, Query, description = "-score (default), score, -trend7d or trend7d"),
        ("kind" = Option<String>, Query, description = "consumer or influencer"),
        ("min_score" = Option<f64>, Query, description = "Only scores at or above (0 to 100)"),
        ("max_score" = Option<f64>, Query, description = "Only scores at or below (0 to 100)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 50)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("at" = Option<String>, Query, description = "As of this time, RFC 3339 (default: now)"),
    ),
    responses(
        (status = 200, description = "The brand's relationships, ranked", body = schema::Listing),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such brand", body = Problem, content_type = "application/problem+json"),
    ))]
async fn brand_relationships<S: EventStore>(
    engine: Eng<S>,
    path: Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let brand = entity_id("brand", &path)?;
    let sort = match params.choice("sort", &["-score", "score", "-trend7d", "trend7d"])? {
        None | Some("-score") => ListingSort::ScoreDescending,
        Some("score") => ListingSort::ScoreAscending,
        Some("-trend7d") => ListingSort::Trend7dDescending,
        Some(_) => ListingSort::Trend7dAscending,
    };
    let kind = match params.choice("kind", &["consumer", "influencer"])? {
        None => None,
        Some("consumer") => Some(EntityKind::Consumer),
        Some(_) => Some(EntityKind::Influencer),
    };
    let min_score = params.number("min_score", 0.0, 100.0)?;
    let max_score = params.number("max_score", 0.0, 100.0)?;
    let limit = params.count("limit", MAX_PAGE)?.unwrap_or(50);
    let after = match params.get("cursor")? {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            ApiError::parameter("cursor", "is not a cursor this service gave out")
        })?),
    };
    if engine.kind(&brand)? != Some(EntityKind::Brand) {
        return Err(ApiError::NotFound(format!("no brand '{brand}'")));
    }
    let engine = engine.into_inner();
    let ranking = super::dashboard::ranking_as_of(&engine, params.time("at")?).await?;
    // The brand's rows are kept in every listing order (`BrandRanking`):
    // a page is read from its cursor, as far as it needs, never sorted.
    let cursor = after.as_ref().map(|(value, person)| (*value, person));
    let mut items: Vec<_> = ranking
        .by_brand
        .get(&brand)
        .into_iter()
        .flat_map(|rows| rows.after(sort, cursor))
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| min_score.is_none_or(|m| r.score.score >= m))
        .filter(|r| max_score.is_none_or(|m| r.score.score <= m))
        .take(limit + 1)
        .collect();
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items
            .last()
            .map(|r| encode_cursor(sort.value(r), &r.person))
    } else {
        None
    };
    let items: Vec<Value> = items
        .iter()
        .map(|r| {
            json!({
                "person": r.person,
                "brand": r.brand,
                "kind": r.kind,
                "score": r.score.score,
                "raw": r.score.raw,
                "components": components_view(&r.score.components),
                "trend": r.trend,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "items": items,
        "next_cursor": next_cursor,
        "as_of": ranking.as_of,
    })))
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

#[utoipa::path(get, path = "/v1/brands/{brand}", tag = "scores",
    params(
        ("brand" = String, Path, example = "sweater", description = "Brand id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("at" = Option<String>, Query, description = "As of this time, RFC 3339 (default: now)"),
    ),
    responses(
        (status = 200, description = "Relationship count, score distribution, service KPIs, sales", body = schema::BrandSummary),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such brand", body = Problem, content_type = "application/problem+json"),
    ))]
async fn brand_summary<S: EventStore>(
    engine: Eng<S>,
    path: Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let brand = entity_id("brand", &path)?;
    let Some(BrandFacts { name, stats }) = engine.brand_facts(&brand)? else {
        return Err(ApiError::NotFound(format!("no brand '{brand}'")));
    };
    let engine = engine.into_inner();
    let ranking = super::dashboard::ranking_as_of(&engine, params.time("at")?).await?;
    // Made once per ranking (`BrandRanking::summary`).
    let none = ScoreSummary::default();
    let summary = ranking
        .by_brand
        .get(&brand)
        .map_or(&none, |rows| rows.summary());
    Ok(HttpResponse::Ok().json(json!({
        "brand": brand,
        "name": name,
        "as_of": ranking.as_of,
        "relationships": summary.relationships,
        "scores": {
            "mean": summary.mean,
            "p10": summary.p10, "p50": summary.p50, "p90": summary.p90,
            "histogram": summary.histogram.iter().enumerate().map(|(i, n)| json!({"from": i * 10, "to": i * 10 + 10, "count": n})).collect::<Vec<_>>(),
            "advocates": summary.advocates,
            "at_risk": summary.at_risk,
        },
        "service": {
            "contacts": stats.service_contacts,
            "csat": mean(stats.csat_sum, stats.csat_count),
            "customer_effort": mean(stats.effort_sum, stats.effort_count),
            "resolution_rate": ratio(stats.resolved_count, stats.resolution_known),
            "first_contact_resolution": ratio(stats.first_contact_resolved, stats.resolution_known),
            "wait_seconds_mean": mean(stats.wait_sum, stats.wait_count),
            "wait_seconds_max": (stats.wait_count > 0).then_some(stats.wait_max),
            "transfers_per_contact": mean(stats.transfers_sum as f64, stats.service_contacts),
        },
        "sales": {
            "purchases": stats.purchases,
            "purchase_amount": stats.sales_amount,
            "reported_sales": stats.reported_sales,
        },
        "reviews": {
            "count": stats.reviews,
            "mean_rating": mean(stats.rating_sum, stats.reviews),
        },
    })))
}

#[utoipa::path(get, path = "/v1/entities/{id}", tag = "entities",
    params(
        ("id" = String, Path, example = "artist", description = "Entity id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("at" = Option<String>, Query, description = "As of this time, RFC 3339 (default: now)"),
    ),
    responses(
        (status = 200, description = "The 360° view", body = schema::EntityView),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entity", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_entity<S: EventStore>(
    engine: Eng<S>,
    path: Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let at = params.time("at")?;
    let now = at.unwrap_or_else(Utc::now);
    let Some(facts) = engine.entity_facts(&id, now, 20).await? else {
        return Err(ApiError::NotFound(format!("no entity '{id}'")));
    };
    let EntityFacts {
        kind,
        registration,
        followers,
        event_count,
        recent,
    } = facts;
    let recent: Vec<Value> = recent.iter().map(ingest::to_wire).collect();
    let engine = engine.into_inner();
    let ranking = super::dashboard::ranking_as_of(&engine, at).await?;
    let relationships: Vec<Value> = if kind.is_person() {
        ranking
            .by_person
            .get(&id)
            .map(|v| {
                v.iter()
                    .map(|(b, s)| json!({"brand": b, "score": s}))
                    .collect()
            })
            .unwrap_or_default()
    } else if kind == EntityKind::Brand {
        ranking
            .by_brand
            .get(&id)
            .into_iter()
            .flat_map(|rows| rows.sorted(ListingSort::ScoreDescending))
            .take(20)
            .map(|r| json!({"person": r.person, "score": r.score.score}))
            .collect()
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "kind": kind,
        "name": registration.as_ref().and_then(|r| r.name.clone()),
        "interests": registration.as_ref().map(|r| r.interests.clone()).unwrap_or_default(),
        "followers": followers,
        "registered": registration.is_some(),
        "relationships": relationships,
        "event_count": event_count,
        "recent_events": recent,
        "as_of": ranking.as_of,
    })))
}

#[utoipa::path(get, path = "/v1/entities/{id}/events", tag = "entities",
    params(
        ("id" = String, Path, example = "artist", description = "Entity id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 50)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the timeline, newest first", body = schema::Timeline),
        (status = 400, description = "A bad id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entity", body = Problem, content_type = "application/problem+json"),
    ))]
async fn entity_events<S: EventStore>(
    engine: Eng<S>,
    path: Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let limit = params.count("limit", MAX_PAGE)?.unwrap_or(50);
    let cursor = params.get("cursor")?;
    if engine.kind(&id)?.is_none() {
        return Err(ApiError::NotFound(format!("no entity '{id}'")));
    }
    let Some(page) = engine.timeline(&id, limit, cursor).await? else {
        return Err(ApiError::parameter(
            "cursor",
            "is not an event of this timeline",
        ));
    };
    let items: Vec<Value> = page.events.iter().map(ingest::to_wire).collect();
    let next_cursor = page.next_cursor.map(|c| c.to_string());
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next_cursor})))
}

#[utoipa::path(post, path = "/v1/admin/rescore", tag = "operations",
    responses((status = 200, description = "Recomputed from the log; how far the live scores had drifted", body = schema::RescoreReport)))]
async fn rescore<S: EventStore>(engine: Eng<S>) -> Result<HttpResponse, ApiError> {
    let engine = engine.into_inner();
    let report = engine.rescore(Utc::now(), true).await?;
    Ok(HttpResponse::Ok().json(report))
}
