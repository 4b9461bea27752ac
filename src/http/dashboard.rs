//! The dashboard (issue 14): its static assets, compiled into the binary
//! from `web/static/` and served at `/` and `/assets/{file}` with their
//! content types, revalidation by ETag and a strict Content-Security-Policy
//! (no inline script or style, nothing from another origin); and the one
//! read routes its pages needed that the API lacked: the brand list, one
//! event by id (where a reason chip leads), a person's followers and the
//! events behind a history series (the marks on the relationship chart).
//! Owns no score logic: pages read the same routes as any client.

use std::sync::{Arc, OnceLock};

use actix_web::http::header;
use actix_web::middleware::Compress;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::ApiError;
use super::params::Params;
use super::path::Path;
use super::schema::{self, Problem};
use crate::domain::EntityId;
use crate::engine::{Engine, Ranking};
use crate::store::EventStore;

/// Every page's policy: scripts, styles, images and requests from this
/// origin only; no inline script or style, no plugins, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One compiled-in file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../web/static/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The dashboard's files (`web/static/`; README lists their sizes).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("format.js", JS),
    asset!("pages.js", JS),
    asset!("live.js", JS),
    asset!("whatif.js", JS),
    asset!("style.css", CSS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
];

/// Each asset's ETag: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                // Weak: the same bytes are sent in several encodings.
                format!("W/\"{hex}\"")
            })
            .collect()
    })
}

/// Registers `/`, `/assets/{file}` and `GET /v1/brands`.
pub fn register<S: EventStore>(cfg: &mut web::ServiceConfig) {
    // gzip (or brotli, zstd) when the browser asks: the assets are text.
    cfg.service(web::resource("/").wrap(Compress::default()).get(index))
        .service(
            web::resource("/assets/{file:.*}")
                .wrap(Compress::default())
                .get(asset),
        )
        .service(web::resource("/v1/brands").get(brands::<S>))
        .service(web::resource("/v1/events/{id}").get(event::<S>))
        .service(web::resource("/v1/entities/{id}/followers").get(followers::<S>))
        .service(
            web::resource("/v1/relationships/{person}/{brand}/history/events")
                .get(history_events::<S>),
        );
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, 0)
}

async fn asset(req: HttpRequest, file: Path<String>) -> HttpResponse {
    match ASSETS.iter().position(|a| a.name == file.as_str()) {
        // index.html is the page at `/`, not an asset of its own.
        Some(i) if i > 0 => serve(&req, i),
        _ => HttpResponse::NotFound()
            .content_type("application/problem+json")
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .json(serde_json::json!({
                "type": "/problems/not-found", "title": "Not found", "status": 404,
                "detail": format!("no dashboard asset '{file}'"),
            })),
    }
}

/// One asset with its headers. `no-cache`: the browser keeps it but asks
/// each time (a 304 for the same build), so a new binary's pages are never
/// mixed with an old one's scripts.
fn serve(req: &HttpRequest, i: usize) -> HttpResponse {
    let a = &ASSETS[i];
    let tag = &etags()[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == &tag[2..])
        });
    let mut answer = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::ETAG, tag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if fresh {
        answer.finish()
    } else {
        answer.content_type(a.content_type).body(a.bytes)
    }
}

/// The last ranking at a past time, with the engine it came from. A brand
/// page asks four routes for the same `at` at once (the summary, the list,
/// the advocates, the at-risk) and each was a batch evaluation of every
/// relationship of its own (15 to 20 s each at a million events,
/// benches/dashboard.sh): the first computes it while the others wait, then
/// share it. One slot: a ranking holds every relationship.
static PAST: tokio::sync::Mutex<Option<(usize, Arc<Ranking>)>> =
    tokio::sync::Mutex::const_new(None);

/// The ranking as of `at` (default: now), for the routes that take `at`.
pub(super) async fn ranking_as_of<S: EventStore>(
    engine: &Arc<Engine<S>>,
    at: Option<DateTime<Utc>>,
) -> Result<Arc<Ranking>, ApiError> {
    let Some(at) = at else {
        let r = engine
            .ranking(Utc::now(), super::position::min_position())
            .await?;
        super::position::reflects(r.position);
        let (age, events) = engine.ranking_lag(&r);
        crate::telemetry::record_ranking_served(age, events);
        if !r.settled {
            super::position::provisional();
        }
        return Ok(r);
    };
    let mine = Arc::as_ptr(engine) as usize;
    let mut past = PAST.lock().await;
    if let Some((owner, r)) = past.as_ref()
        && *owner == mine
        && r.version == engine.version()
        && r.as_of == at
    {
        return Ok(Arc::clone(r));
    }
    let r = engine.ranking_at(at).await?;
    // Kept only when its bits are the log's whatever the timing: the
    // version does not move when the live series catches up (red team
    // h28, F1: a batch stand-in stayed until the next write).
    if r.settled {
        *past = Some((mine, Arc::clone(&r)));
    } else {
        super::position::provisional();
    }
    Ok(r)
}

/// One brand of `GET /v1/brands`.
#[derive(Serialize, ToSchema)]
pub struct BrandItem {
    pub id: String,
    /// The registered name, if any.
    pub name: Option<String>,
    /// Relationships with a score as of `as_of`.
    pub relationships: usize,
    /// Their mean score (0 to 100); none without relationships.
    pub mean_score: Option<f64>,
}

/// The answer of `GET /v1/brands`.
#[derive(Serialize, ToSchema)]
pub struct BrandList {
    pub items: Vec<BrandItem>,
    /// Brands that matched, of which `items` holds the first `limit`.
    pub total: usize,
    pub as_of: DateTime<Utc>,
}

/// Most brands in one answer.
const MAX_BRANDS: usize = 1000;

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(brands, event, followers, history_events),
    components(schemas(BrandItem, BrandList, Follow, Follows, SeriesEvent, SeriesEvents))
)]
pub(super) struct DashboardApi;

#[utoipa::path(get, path = "/v1/brands", tag = "scores",
    params(
        ("q" = Option<String>, Query, description = "Only brands whose id or name contains this, ignoring case"),
        ("limit" = Option<u32>, Query, description = "At most this many, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("at" = Option<String>, Query, description = "As of this time, RFC 3339 (default: now)"),
    ),
    responses(
        (status = 200, description = "Brands by id, with their relationship count and mean score", body = BrandList),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
    ))]
async fn brands<S: EventStore>(
    engine: web::Data<Engine<S>>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let q = params.get("q")?.map(str::to_lowercase);
    let limit = params.count("limit", MAX_BRANDS)?.unwrap_or(100);
    let at = params.time("at")?;
    let mut found: Vec<(EntityId, Option<String>)> = engine
        .brands()?
        .into_iter()
        .filter(|(id, name)| {
            q.as_deref().is_none_or(|q| {
                id.as_str().to_lowercase().contains(q)
                    || name.as_ref().is_some_and(|n| n.to_lowercase().contains(q))
            })
        })
        .collect();
    found.sort();
    let total = found.len();
    let engine = engine.into_inner();
    let ranking = ranking_as_of(&engine, at).await?;
    let items = found
        .into_iter()
        .take(limit)
        .map(|(id, name)| {
            let scores: Vec<f64> = ranking
                .by_brand
                .get(&id)
                .map(|v| v.iter().map(|r| r.score.score).collect())
                .unwrap_or_default();
            BrandItem {
                relationships: scores.len(),
                mean_score: (!scores.is_empty())
                    .then(|| scores.iter().sum::<f64>() / scores.len() as f64),
                id: id.to_string(),
                name,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(BrandList {
        items,
        total,
        as_of: ranking.as_of,
    }))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path, example = "story-025", description = "Event id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses(
        (status = 200, description = "The event as stored (as sent, with the sentiment Fusion gave its text)", body = schema::StoredEvent),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
    ))]
async fn event<S: EventStore>(
    engine: web::Data<Engine<S>>,
    path: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = crate::domain::EventId::new(path.as_str())
        .map_err(|e| ApiError::parameter("id", format!("bad id: {e}")))?;
    let found = engine.event(&id).await?;
    match found {
        Some(e) => Ok(HttpResponse::Ok().json(crate::ingest::to_wire(&e))),
        None => Err(ApiError::NotFound(format!("no event '{id}'"))),
    }
}

/// One follow edge of `GET /v1/entities/{id}/followers`.
#[derive(Serialize, ToSchema)]
pub struct Follow {
    pub id: String,
    /// The follow's strength (0 to 1].
    pub strength: f64,
}

/// The answer of `GET /v1/entities/{id}/followers`.
#[derive(Serialize, ToSchema)]
pub struct Follows {
    /// The people following this one at `as_of`, by id (the first `limit`).
    pub followers: Vec<Follow>,
    pub followers_total: usize,
    /// The people this one follows at `as_of`, by id (the first `limit`).
    pub follows: Vec<Follow>,
    pub follows_total: usize,
    pub as_of: DateTime<Utc>,
}

#[utoipa::path(get, path = "/v1/entities/{id}/followers", tag = "entities",
    params(
        ("id" = String, Path, example = "artist", description = "Person id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("at" = Option<String>, Query, description = "As of this time, RFC 3339 (default: now)"),
        ("limit" = Option<u32>, Query, description = "At most this many of each list, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "Who follows the person in Fusion's graph, and whom they follow", body = Follows),
        (status = 400, description = "A bad id or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such person", body = Problem, content_type = "application/problem+json"),
    ))]
async fn followers<S: EventStore>(
    engine: web::Data<Engine<S>>,
    path: Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let id = super::routes::entity_id("id", &path)?;
    let at = params.time("at")?.unwrap_or_else(Utc::now);
    let limit = params.count("limit", MAX_BRANDS)?.unwrap_or(100);
    let Some(follows) = engine.follows(&id, at)? else {
        return Err(ApiError::NotFound(format!("no person '{id}'")));
    };
    let list = |edges: Vec<(EntityId, f64)>| -> (Vec<Follow>, usize) {
        let total = edges.len();
        let items = edges
            .into_iter()
            .take(limit)
            .map(|(id, strength)| Follow {
                id: id.to_string(),
                strength,
            })
            .collect();
        (items, total)
    };
    let (followers, followers_total) = list(follows.followers);
    let (follows, follows_total) = list(follows.follows);
    Ok(HttpResponse::Ok().json(Follows {
        followers,
        followers_total,
        follows,
        follows_total,
        as_of: at,
    }))
}

/// One event behind a history series.
#[derive(Serialize, ToSchema)]
pub struct SeriesEvent {
    /// The event's id (`GET /v1/events/{id}` has it whole).
    pub event: String,
    #[serde(rename = "type")]
    #[schema(example = "post")]
    pub kind: String,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The first point of the series at which it counts: where the series
    /// shows its move.
    pub at: DateTime<Utc>,
    /// Its points in the score at `at` (the score minus the score without it).
    pub delta: f64,
    /// How it reached the relationship (`person:a`, `brand:b`, ...).
    pub path: Vec<String>,
}

/// The answer of `GET /v1/relationships/{person}/{brand}/history/events`.
#[derive(Serialize, ToSchema)]
pub struct SeriesEvents {
    /// By time, then id.
    pub events: Vec<SeriesEvent>,
}

#[utoipa::path(get, path = "/v1/relationships/{person}/{brand}/history/events", tag = "scores",
    params(
        ("person" = String, Path, example = "artist", description = "Person id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("brand" = String, Path, example = "sweater", description = "Brand id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("from" = Option<String>, Query, description = "RFC 3339 (default: 30 days before `to`)"),
        ("to" = Option<String>, Query, description = "RFC 3339 (default: now)"),
        ("step" = Option<String>, Query, description = "1d, 6h, 30m or 60s (default 1d); at most 1000 points"),
    ),
    responses(
        (status = 200, description = "The events behind the points of the same history request: each among the score's reasons at one point at least", body = SeriesEvents),
        (status = 400, description = "A bad id, time or step", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No relationship between them", body = Problem, content_type = "application/problem+json"),
    ))]
async fn history_events<S: EventStore>(
    engine: web::Data<Engine<S>>,
    path: Path<(String, String)>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let (person, brand) = path.into_inner();
    let h = super::routes::history_points(&person, &brand, &params)?;
    let Some(series) = engine
        .explanations(&h.person, &h.brand, &h.times, h.to)
        .await?
    else {
        return Err(h.not_found());
    };
    // An event's reasons are the model's largest contributions at a point:
    // the union over the points is every event the series shows moving it.
    let mut seen = std::collections::HashSet::new();
    let mut events = Vec::new();
    for (at, explanation) in h.times.iter().zip(&series) {
        for c in explanation.iter().flat_map(|e| &e.contributions) {
            if seen.insert(c.event.clone()) {
                events.push(SeriesEvent {
                    event: c.event.to_string(),
                    kind: c.event_type.to_string(),
                    time: c.time,
                    at: *at,
                    delta: c.delta,
                    path: c.path.clone(),
                });
            }
        }
    }
    events.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.event.cmp(&b.event)));
    Ok(HttpResponse::Ok().json(SeriesEvents { events }))
}
