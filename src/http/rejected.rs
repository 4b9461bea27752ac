//! The dead-letter store at the HTTP edge: `Intake` (the store, its
//! retention and the mapping every ingest route shares), how a request's
//! rejections become letters (route, raw text as sent, errors, time, key
//! id), and the routes that read, replay and delete them:
//! `GET /v1/rejected`, `POST /v1/rejected/replay`, `DELETE /v1/rejected`
//! (all `admin`, `auth::ROUTES`).
//!
//! Every ingest route keeps its rejections here before it answers, so a
//! client that got its answer has each message either stored or kept; a
//! malformed body is kept by the body extractor itself (`body.rs`), so no
//! route can forget it.

use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::ApiError;
use super::params::Params;
use super::pipelines::{self, Incoming, Kind};
use super::schema::{self, Problem};
use crate::engine::{CONFLICT_MESSAGE, Engine};
use crate::ingest::mapping::Mapping;
use crate::ingest::{BodyError, FieldError, Rejection};
use crate::store::dead_letters::{
    DeadLetter, DeadLetterStore, DeadLetters, Filter, LetterError, MAX_LETTERS_PER_REQUEST,
    MemoryDeadLetters, NewLetter, Reason, RequestInfo, Retention,
};
use crate::store::{EventStore, StoreError};

/// What every ingest route shares: where rejections are kept, for how
/// long, and the mapping of pipeline messages.
pub struct Intake {
    pub letters: DeadLetters,
    pub retention: Retention,
    pub mapping: Arc<Mapping>,
}

impl Intake {
    /// In memory, with the default mapping: the service run in-process.
    pub fn in_memory() -> Self {
        Intake {
            letters: DeadLetters::Memory(MemoryDeadLetters::default()),
            retention: Retention::default(),
            mapping: Arc::new(Mapping::default_mapping()),
        }
    }
}

/// Who sent a request, when, on which route: what each of its letters says.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub route: String,
    pub key_id: Option<String>,
    /// The credential as presented, only to redact it from raw text.
    presented: Option<String>,
    pub request_id: String,
    pub received_at: DateTime<Utc>,
}

impl Arrival {
    pub fn of(req: &HttpRequest, received_at: DateTime<Utc>) -> Arrival {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .and_then(|(scheme, token)| {
                if scheme.eq_ignore_ascii_case("basic") {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(token.trim())
                        .ok()?;
                    let text = String::from_utf8(decoded).ok()?;
                    Some(text.split(':').next().unwrap_or("").to_string())
                } else {
                    Some(token.trim().to_string())
                }
            });
        Arrival {
            route: req
                .match_pattern()
                .unwrap_or_else(|| req.path().to_string()),
            key_id: super::auth::principal(req).map(|p| p.key_id.to_string()),
            presented,
            request_id: req
                .extensions()
                .get::<super::observe::RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            received_at,
        }
    }

    /// For `fusion ingest`: the route is the command, the request its file.
    pub fn command(source: &str, received_at: DateTime<Utc>) -> Arrival {
        Arrival {
            route: "fusion ingest".into(),
            key_id: None,
            presented: None,
            request_id: source.to_string(),
            received_at,
        }
    }

    /// A letter of this request.
    pub fn letter(
        &self,
        reason: Reason,
        errors: Vec<FieldError>,
        raw: &[u8],
        rejected: usize,
        context: Option<Value>,
    ) -> NewLetter {
        NewLetter {
            received_at: self.received_at,
            route: self.route.clone(),
            key_id: self.key_id.clone(),
            reason,
            raw: String::new(),
            raw_base64: false,
            truncated: false,
            errors: errors
                .into_iter()
                .map(|e| LetterError {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
            request: RequestInfo {
                id: self.request_id.clone(),
                rejected: rejected as u64,
            },
            context,
        }
        .with_raw(raw, self.presented.as_deref())
    }
}

/// The reason of an event the validator or the engine refused.
pub fn reason_of(errors: &[FieldError]) -> Reason {
    if errors.iter().any(|e| e.message == CONFLICT_MESSAGE) {
        Reason::Conflict
    } else {
        Reason::Invalid
    }
}

/// Keeps the letters of one request (the first
/// [`MAX_LETTERS_PER_REQUEST`], the rest counted, of `total`) durably,
/// and counts them in `/metrics`.
pub async fn keep(
    letters: &DeadLetters,
    retention: Retention,
    mut made: Vec<NewLetter>,
    total: usize,
) -> Result<(), StoreError> {
    if total == 0 && made.is_empty() {
        return Ok(());
    }
    made.truncate(MAX_LETTERS_PER_REQUEST);
    let not_kept = total.saturating_sub(made.len()) as u64;
    let routes: Vec<String> = made.iter().map(|l| l.route.clone()).collect();
    let kept = letters.keep(made, not_kept, retention, Utc::now()).await?;
    crate::telemetry::record_dead_letters(&routes, not_kept, kept.dropped);
    Ok(())
}

/// Keeps the rejected events of a Fusion event body: each as sent (its
/// span in `bytes`). `total` counts those not listed too.
pub async fn keep_rejections<'a>(
    intake: &Intake,
    arrival: &Arrival,
    rejected: &[Rejection],
    total: usize,
    raw: impl Fn(usize) -> Option<&'a [u8]>,
) -> Result<(), ApiError> {
    let letters = rejected
        .iter()
        .take(MAX_LETTERS_PER_REQUEST)
        .map(|r| {
            arrival.letter(
                reason_of(&r.errors),
                r.errors.clone(),
                raw(r.index).unwrap_or_default(),
                total,
                None,
            )
        })
        .collect();
    keep(&intake.letters, intake.retention, letters, total)
        .await
        .map_err(ApiError::from)
}

/// Keeps a body that could not be read as its route's shape. A failure to
/// keep it is logged: the client gets its 400 either way (a malformed body
/// sent again is malformed again).
pub async fn keep_malformed(
    req: &HttpRequest,
    received_at: DateTime<Utc>,
    bytes: &[u8],
    error: &BodyError,
) {
    if matches!(error, BodyError::TooLarge { .. }) {
        return;
    }
    let Some(intake) = req.app_data::<web::Data<Intake>>() else {
        return;
    };
    let arrival = Arrival::of(req, received_at);
    let field = match error {
        BodyError::Malformed { line: Some(l), .. } => format!("line {l}"),
        _ => "body".to_string(),
    };
    let letter = arrival.letter(
        Reason::Malformed,
        vec![FieldError {
            field,
            message: error.to_string(),
        }],
        bytes,
        1,
        None,
    );
    if let Err(e) = keep(&intake.letters, intake.retention, vec![letter], 1).await {
        crate::telemetry::record_store_error(&e);
        tracing::error!(cause = %e, "could not keep a malformed body in the dead-letter store");
    }
}

/// The filter of a request's query: `reason`, `field`, `route`, `from`,
/// `to`, `cursor`.
fn filter(params: &Params) -> Result<Filter, ApiError> {
    let reason = match params.get("reason")? {
        None => None,
        Some(r) => Some(Reason::parse(r).ok_or_else(|| {
            ApiError::parameter("reason", "must be malformed, unmapped, invalid or conflict")
        })?),
    };
    let after =
        match params.get("cursor")? {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| {
                ApiError::parameter("cursor", "is not a cursor this service gave out")
            })?),
        };
    Ok(Filter {
        reason,
        field: params.get("field")?.map(str::to_string),
        route: params.get("route")?.map(str::to_string),
        from: params.time("from")?,
        to: params.time("to")?,
        after,
    })
}

/// Most letters in one page or one replay.
const MAX_PAGE: usize = 1000;

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_rejected, replay_rejected, delete_rejected))]
pub(super) struct RejectedApi;

#[utoipa::path(get, path = "/v1/rejected", tag = "rejected",
    params(
        ("reason" = Option<String>, Query, description = "malformed, unmapped, invalid or conflict"),
        ("field" = Option<String>, Query, description = "Letters with an error on this field (amount, properties.revenue, ...)"),
        ("route" = Option<String>, Query, description = "The route they came in on (/v1/events, /v1/batch, ..., or `fusion ingest`)"),
        ("from" = Option<String>, Query, description = "Received at or after, RFC 3339"),
        ("to" = Option<String>, Query, description = "Received before, RFC 3339"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "Kept rejections, oldest first, and the store's counts", body = schema::RejectedPage),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_rejected(
    intake: web::Data<Intake>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let filter = filter(&params)?;
    let limit = params.count("limit", MAX_PAGE)?.unwrap_or(100);
    let mut items = intake.letters.list(filter, limit + 1).await?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten();
    let stats = intake.letters.stats().await?;
    Ok(HttpResponse::Ok().json(json!({
        "items": items,
        "next_cursor": next_cursor,
        "held": stats.held,
        "dropped_by_retention": stats.dropped,
        "not_kept": stats.not_kept,
    })))
}

#[utoipa::path(delete, path = "/v1/rejected", tag = "rejected",
    params(
        ("reason" = Option<String>, Query, description = "malformed, unmapped, invalid or conflict"),
        ("field" = Option<String>, Query, description = "Letters with an error on this field"),
        ("route" = Option<String>, Query, description = "The route they came in on"),
        ("from" = Option<String>, Query, description = "Received at or after, RFC 3339"),
        ("to" = Option<String>, Query, description = "Received before, RFC 3339"),
    ),
    responses(
        (status = 200, description = "Removed: every letter that matches (all of them without a filter)", body = schema::RejectedDeleted),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_rejected(
    intake: web::Data<Intake>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let filter = Filter {
        after: None,
        ..filter(&params)?
    };
    let deleted = intake.letters.delete(filter).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": deleted})))
}

/// A letter as the pipeline sees it again: its kind by route, its message.
fn incoming(d: &DeadLetter) -> Result<Incoming, &'static str> {
    let l = &d.letter;
    if l.reason == Reason::Malformed || l.truncated || l.raw_base64 {
        return Err(
            "a malformed body stays malformed whatever the mapping or model; delete it once read",
        );
    }
    let kind = match l.route.as_str() {
        "/v1/events" | "fusion ingest" => Kind::Fusion,
        "/v1/cloudevents" => Kind::CloudEvent,
        route => match pipelines::segment_route(route) {
            Some(implied) => Kind::Segment(implied),
            None => return Err("it came in on a route that no longer exists"),
        },
    };
    let value = match serde_json::from_str::<Value>(&l.raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(vec![FieldError {
            field: String::new(),
            message: "the kept text is not a JSON object".into(),
        }]),
    };
    let batch_sent_at = l.context.as_ref().and_then(|c| c.get("sentAt")).cloned();
    Ok(Incoming {
        index: 0,
        value,
        kind,
        received_at: l.received_at,
        key_id: l.key_id.clone(),
        batch_sent_at,
    })
}

#[utoipa::path(post, path = "/v1/rejected/replay", tag = "rejected",
    params(
        ("dry_run" = Option<bool>, Query, description = "Say what would pass; store nothing, remove nothing"),
        ("reason" = Option<String>, Query, description = "malformed, unmapped, invalid or conflict"),
        ("field" = Option<String>, Query, description = "Letters with an error on this field"),
        ("route" = Option<String>, Query, description = "The route they came in on"),
        ("from" = Option<String>, Query, description = "Received at or after, RFC 3339"),
        ("to" = Option<String>, Query, description = "Received before, RFC 3339"),
        ("limit" = Option<u32>, Query, description = "Letters replayed, 1 to 1000 (default 1000), oldest first", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous replay"),
    ),
    responses(
        (status = 200, description = "Each letter re-validated with the current mapping and model; those that pass are ingested and removed", body = schema::ReplayReport),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn replay_rejected<S: EventStore>(
    engine: web::Data<Engine<S>>,
    intake: web::Data<Intake>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let dry_run = params.flag("dry_run")?;
    let filter = filter(&params)?;
    let limit = params.count("limit", MAX_PAGE)?.unwrap_or(MAX_PAGE);
    let mut letters = intake.letters.list(filter, limit + 1).await?;
    let more = letters.len() > limit;
    letters.truncate(limit);
    let next_cursor = more
        .then(|| letters.last().map(|d| d.id.to_string()))
        .flatten();
    let mut items: Vec<Value> = Vec::with_capacity(letters.len());
    let mut batch = Vec::new();
    let mut ids = Vec::new();
    for d in &letters {
        match incoming(d) {
            Ok(mut inc) => {
                inc.index = batch.len();
                batch.push(inc);
                ids.push(d.id);
            }
            Err(why) => items.push(json!({"id": d.id, "outcome": "not_replayable", "errors": [{"field": "", "message": why}]})),
        }
    }
    let outcome = pipelines::process(
        &engine.into_inner(),
        &intake.mapping,
        batch,
        Utc::now(),
        dry_run,
    )
    .await?;
    let mut passed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match outcome.rejected.get(&i) {
            Some((_, errors)) => {
                items.push(json!({"id": id, "outcome": "rejected", "errors": errors}))
            }
            None => {
                passed.push(*id);
                items.push(
                    json!({"id": id, "outcome": if dry_run { "would_pass" } else { "ingested" }}),
                );
            }
        }
    }
    let removed = if dry_run || passed.is_empty() {
        0
    } else {
        let n = intake.letters.remove(passed.clone()).await?;
        crate::telemetry::record_replayed(n);
        n
    };
    items.sort_by_key(|v| v["id"].as_u64());
    Ok(HttpResponse::Ok().json(json!({
        "dry_run": dry_run,
        "examined": letters.len(),
        "passed": passed.len(),
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "ignored": outcome.ignored,
        "entities": outcome.entities,
        "removed": removed,
        "items": items,
        "next_cursor": next_cursor,
    })))
}

/// The dead letters of a request's answer, for the JSON answers of the
/// pipeline routes: each rejected message's errors by index.
pub fn errors_json(errors: &[FieldError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    )
}

/// The context a replay of a Segment message needs from its batch.
pub fn segment_context(envelope: &Map<String, Value>) -> Option<Value> {
    envelope.get("sentAt").map(|s| json!({"sentAt": s}))
}
