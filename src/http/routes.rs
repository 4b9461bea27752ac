//! Route handlers: parse the request, call the engine, shape the answer.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Limits;
use super::cache::ReadCache;
use super::error::ApiError;
use crate::domain::{Entity, EntityId, EntityKind};
use crate::engine::{Engine, RankedRelation};
use crate::ingest;
use crate::score::{Component, Explanation};
use crate::store::EventStore;

pub fn register<S: EventStore>(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz::<S>))
        .route("/v1/events", web::post().to(post_events::<S>))
        .route("/v1/entities/{id}", web::put().to(put_entity::<S>))
        .route("/v1/entities/{id}", web::get().to(get_entity::<S>))
        .route("/v1/entities/{id}", web::delete().to(delete_entity::<S>))
        .route(
            "/v1/entities/{id}/events",
            web::get().to(entity_events::<S>),
        )
        .route(
            "/v1/relationships/{person}/{brand}",
            web::get().to(get_relationship::<S>),
        )
        .route(
            "/v1/relationships/{person}/{brand}/history",
            web::get().to(relationship_history::<S>),
        )
        .route(
            "/v1/brands/{brand}/relationships",
            web::get().to(brand_relationships::<S>),
        )
        .route("/v1/brands/{brand}", web::get().to(brand_summary::<S>))
        .route("/v1/admin/rescore", web::post().to(rescore::<S>));
}

type Eng<S> = web::Data<Engine<S>>;

fn entity_id(field: &str, s: &str) -> Result<EntityId, ApiError> {
    EntityId::new(s).map_err(|e| ApiError::field(field, format!("bad id: {e}")))
}

fn parse_time(field: &str, s: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::field(
                    field,
                    "must be an RFC 3339 time such as 2026-11-01T18:30:00Z",
                )
            })
    })
    .transpose()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz<S: EventStore>(engine: Eng<S>) -> HttpResponse {
    let readiness = engine.readiness().await;
    match &readiness.reason {
        None => HttpResponse::Ok().json(json!({
            "status": "ready",
            "events": readiness.events,
            "fold_failures": readiness.fold_failures,
            "recoveries": readiness.recoveries,
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

#[derive(Deserialize)]
struct IngestQuery {
    #[serde(default)]
    atomic: bool,
}

async fn post_events<S: EventStore>(
    engine: Eng<S>,
    limits: web::Data<Limits>,
    req: HttpRequest,
    query: web::Query<IngestQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let max = limits.max_body;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(ApiError::TooLarge(max));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::field("body", e.to_string()))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/jsonl")
        });
    let values = ingest::parse_body(&body, ndjson)?;
    let (good, rejected) = ingest::validate_all(&values);
    let report = engine
        .submit(good, rejected, query.atomic, Utc::now())
        .await?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityBody {
    kind: EntityKind,
    name: Option<String>,
    followers: Option<u64>,
    #[serde(default)]
    interests: Vec<String>,
}

async fn put_entity<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<String>,
    body: web::Json<EntityBody>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let body = body.into_inner();
    if body.name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::field("name", "must be at most 256 bytes long"));
    }
    if body.interests.len() > 100
        || body
            .interests
            .iter()
            .any(|i| i.trim().is_empty() || i.len() > 128)
    {
        return Err(ApiError::field(
            "interests",
            "must be at most 100 non-empty strings of at most 128 bytes",
        ));
    }
    if body.followers.is_some() && !body.kind.is_person() {
        return Err(ApiError::field("followers", "only people have followers"));
    }
    let entity = Entity {
        id,
        kind: body.kind,
        name: body.name,
        followers: body.followers,
        interests: body
            .interests
            .iter()
            .map(|s| s.trim().to_string())
            .collect(),
    };
    engine.register(entity.clone()).await?;
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
struct RelationshipView<'a> {
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

fn relationship_view<'a>(
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

#[derive(Deserialize)]
struct AtQuery {
    at: Option<String>,
}

/// The current time to the second: the default `at` of reads, so that polls
/// within one second share one answer (and its ETag).
fn now_to_the_second() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

async fn get_relationship<S: EventStore>(
    engine: Eng<S>,
    cache: web::Data<ReadCache>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<AtQuery>,
) -> Result<HttpResponse, ApiError> {
    let (person, brand) = path.into_inner();
    let person = entity_id("person", &person)?;
    let brand = entity_id("brand", &brand)?;
    let at = parse_time("at", query.at.as_deref())?.unwrap_or_else(now_to_the_second);
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
    match engine.relationship(person, brand, at)? {
        Some((e, trend)) => {
            let body = serde_json::to_vec(&relationship_view(&e, &trend)).map_err(|e| {
                tracing::error!(cause = %e, "cannot serialise a relationship");
                ApiError::Internal
            })?;
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

#[derive(Deserialize)]
struct HistoryQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

/// `1d`, `6h`, `30m`, `3600s`.
fn parse_step(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = num.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "d" => Some(Duration::days(n)),
        "h" => Some(Duration::hours(n)),
        "m" => Some(Duration::minutes(n)),
        "s" => Some(Duration::seconds(n)),
        _ => None,
    }
}

const MAX_HISTORY_POINTS: i64 = 1000;

async fn relationship_history<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<(String, String)>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let (person, brand) = path.into_inner();
    let person = entity_id("person", &person)?;
    let brand = entity_id("brand", &brand)?;
    let to = parse_time("to", query.to.as_deref())?.unwrap_or_else(Utc::now);
    let from = parse_time("from", query.from.as_deref())?.unwrap_or(to - Duration::days(30));
    let step = match query.step.as_deref() {
        None => Duration::days(1),
        Some(s) => parse_step(s)
            .ok_or_else(|| ApiError::field("step", "must look like 1d, 6h, 30m or 60s"))?,
    };
    if from > to {
        return Err(ApiError::field("from", "must not be after `to`"));
    }
    let points = (to - from).num_seconds() / step.num_seconds() + 1;
    if points > MAX_HISTORY_POINTS {
        return Err(ApiError::field(
            "step",
            format!(
                "gives {points} points; at most {MAX_HISTORY_POINTS} are served, use a larger step"
            ),
        ));
    }
    let state = engine.state()?;
    if state.explain(&person, &brand, to).is_none()
        && (0..points).all(|i| {
            state
                .explain(&person, &brand, from + step * i as i32)
                .is_none()
        })
    {
        return Err(ApiError::NotFound(format!(
            "no relationship between '{person}' and '{brand}'"
        )));
    }
    let series: Vec<Value> = (0..points)
        .map(|i| {
            let t = from + step * i as i32;
            let score = state.explain(&person, &brand, t).map_or(50.0, |e| e.score);
            json!({"time": t, "score": score})
        })
        .collect();
    Ok(HttpResponse::Ok().json(series))
}

#[derive(Deserialize)]
struct ListQuery {
    sort: Option<String>,
    kind: Option<String>,
    min_score: Option<f64>,
    max_score: Option<f64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum SortKey {
    Score,
    Trend7d,
}

fn sort_value(r: &RankedRelation, key: SortKey) -> f64 {
    match key {
        SortKey::Score => r.score.score,
        SortKey::Trend7d => r.trend.d7,
    }
}

/// Cursor: the sort value and person of the last item served (keyset
/// pagination, stable while scores move).
fn encode_cursor(value: f64, person: &EntityId) -> String {
    format!("{:016x}.{person}", value.to_bits())
}

fn decode_cursor(s: &str) -> Option<(f64, EntityId)> {
    let (bits, person) = s.split_once('.')?;
    let value = f64::from_bits(u64::from_str_radix(bits, 16).ok()?);
    Some((value, EntityId::new(person).ok()?))
}

async fn brand_relationships<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let brand = entity_id("brand", &path)?;
    if engine.state()?.kind(&brand) != Some(EntityKind::Brand) {
        return Err(ApiError::NotFound(format!("no brand '{brand}'")));
    }
    let (key, descending) = match query.sort.as_deref().unwrap_or("-score") {
        "-score" => (SortKey::Score, true),
        "score" => (SortKey::Score, false),
        "-trend7d" => (SortKey::Trend7d, true),
        "trend7d" => (SortKey::Trend7d, false),
        other => {
            return Err(ApiError::field(
                "sort",
                format!("unknown sort {other:?}; use -score, score, -trend7d or trend7d"),
            ));
        }
    };
    let kind = match query.kind.as_deref() {
        None => None,
        Some("consumer") => Some(EntityKind::Consumer),
        Some("influencer") => Some(EntityKind::Influencer),
        Some(other) => {
            return Err(ApiError::field(
                "kind",
                format!("unknown kind {other:?}; use consumer or influencer"),
            ));
        }
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::field("limit", "must be in [1, 1000]"));
    }
    let after =
        match query.cursor.as_deref() {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::field("cursor", "is not a cursor this service gave out")
            })?),
        };
    let engine = engine.into_inner();
    let ranking = engine.ranking(Utc::now()).await?;
    let mut items: Vec<&RankedRelation> = ranking
        .by_brand
        .get(&brand)
        .into_iter()
        .flatten()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .filter(|r| query.min_score.is_none_or(|m| r.score.score >= m))
        .filter(|r| query.max_score.is_none_or(|m| r.score.score <= m))
        .collect();
    let order = |a: &&RankedRelation, b: &&RankedRelation| {
        let (x, y) = (sort_value(a, key), sort_value(b, key));
        let o = if descending {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        o.then_with(|| a.person.cmp(&b.person))
    };
    items.sort_by(order);
    if let Some((value, person)) = &after {
        items.retain(|r| {
            let v = sort_value(r, key);
            let o = if descending {
                value.total_cmp(&v)
            } else {
                v.total_cmp(value)
            };
            o.then_with(|| r.person.cmp(person)) == std::cmp::Ordering::Greater
        });
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items
            .last()
            .map(|r| encode_cursor(sort_value(r, key), &r.person))
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

async fn brand_summary<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let brand = entity_id("brand", &path)?;
    if engine.state()?.kind(&brand) != Some(EntityKind::Brand) {
        return Err(ApiError::NotFound(format!("no brand '{brand}'")));
    }
    let stats = engine.state()?.brand_stats(&brand);
    let name = engine
        .state()?
        .registration(&brand)
        .and_then(|e| e.name.clone());
    let engine = engine.into_inner();
    let ranking = engine.ranking(Utc::now()).await?;
    let mut scores: Vec<f64> = ranking
        .by_brand
        .get(&brand)
        .map(|v| v.iter().map(|r| r.score.score).collect())
        .unwrap_or_default();
    scores.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> Option<f64> {
        (!scores.is_empty()).then(|| scores[((scores.len() - 1) as f64 * q).round() as usize])
    };
    let mut histogram = [0u64; 10];
    for s in &scores {
        histogram[((s / 10.0) as usize).min(9)] += 1;
    }
    let advocates = scores.iter().filter(|s| **s >= 60.0).count();
    let at_risk = scores.iter().filter(|s| **s < 40.0).count();
    Ok(HttpResponse::Ok().json(json!({
        "brand": brand,
        "name": name,
        "as_of": ranking.as_of,
        "relationships": scores.len(),
        "scores": {
            "mean": mean(scores.iter().sum(), scores.len() as u64),
            "p10": quantile(0.1), "p50": quantile(0.5), "p90": quantile(0.9),
            "histogram": histogram.iter().enumerate().map(|(i, n)| json!({"from": i * 10, "to": i * 10 + 10, "count": n})).collect::<Vec<_>>(),
            "advocates": advocates,
            "at_risk": at_risk,
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

async fn get_entity<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let (kind, registration, recent, total_events) = {
        let state = engine.state()?;
        let Some(kind) = state.kind(&id) else {
            return Err(ApiError::NotFound(format!("no entity '{id}'")));
        };
        let tl = state.timeline(&id);
        let recent: Vec<Value> = tl
            .iter()
            .rev()
            .take(20)
            .map(|&p| ingest::to_wire(state.event_at(p)))
            .collect();
        (kind, state.registration(&id).cloned(), recent, tl.len())
    };
    let engine = engine.into_inner();
    let now = Utc::now();
    let ranking = engine.ranking(now).await?;
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
        let mut v: Vec<&RankedRelation> = ranking
            .by_brand
            .get(&id)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| {
            b.score
                .score
                .total_cmp(&a.score.score)
                .then_with(|| a.person.cmp(&b.person))
        });
        v.iter()
            .take(20)
            .map(|r| json!({"person": r.person, "score": r.score.score}))
            .collect()
    } else {
        Vec::new()
    };
    let followers = if kind.is_person() {
        Some(engine.state()?.followers_at(&id, now))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "kind": kind,
        "name": registration.as_ref().and_then(|r| r.name.clone()),
        "interests": registration.as_ref().map(|r| r.interests.clone()).unwrap_or_default(),
        "followers": followers,
        "registered": registration.is_some(),
        "relationships": relationships,
        "event_count": total_events,
        "recent_events": recent,
        "as_of": ranking.as_of,
    })))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn entity_events<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::field("limit", "must be in [1, 1000]"));
    }
    let state = engine.state()?;
    if state.kind(&id).is_none() {
        return Err(ApiError::NotFound(format!("no entity '{id}'")));
    }
    // Newest first; the cursor is the id of the last event served.
    let tl = state.timeline(&id);
    let start = match query.cursor.as_deref() {
        None => tl.len(),
        Some(c) => tl
            .iter()
            .position(|&p| state.event_at(p).id.as_str() == c)
            .ok_or_else(|| ApiError::field("cursor", "is not an event of this timeline"))?,
    };
    let page: Vec<u32> = tl[..start].iter().rev().take(limit).copied().collect();
    let next_cursor = (start > page.len())
        .then(|| page.last().map(|&p| state.event_at(p).id.to_string()))
        .flatten();
    let items: Vec<Value> = page
        .iter()
        .map(|&p| ingest::to_wire(state.event_at(p)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items, "next_cursor": next_cursor})))
}

async fn delete_entity<S: EventStore>(
    engine: Eng<S>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let removed = engine.erase(&id).await?;
    Ok(HttpResponse::Ok().json(json!({"erased": id, "events_removed": removed})))
}

async fn rescore<S: EventStore>(engine: Eng<S>) -> Result<HttpResponse, ApiError> {
    let engine = engine.into_inner();
    let report = engine.rescore(Utc::now(), true).await?;
    Ok(HttpResponse::Ok().json(report))
}
