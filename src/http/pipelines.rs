//! The customer-data-platform routes (issue #16): Segment's HTTP Tracking
//! API as a destination (`POST /v1/batch`, `/v1/track`, `/v1/identify`,
//! `/v1/group`; RudderStack speaks the same API) and CloudEvents 1.0 over
//! HTTP (`POST /v1/cloudevents`: structured, batch and binary mode).
//!
//! Bodies come through `IngestBody` with their own kind (`SegmentBody`,
//! `CloudEventsBody`): the same bounded reading as Fusion's event bodies.
//! Messages become events by the mapping file (`ingest::pipeline`), are
//! validated as any event, and are stored with their message's content key;
//! identify (and a mapped group) registers the entity through the same
//! checks as `PUT /v1/entities/{id}`. Every message is answered as stored,
//! ignored (the mapping lists it) or kept in the dead-letter store
//! (`rejected.rs`), which [`process`] also serves for replays.
//!
//! Segment's answers: `200 {"success": true, ...}`; an error is a problem
//! (`application/problem+json`) that also carries Segment's members
//! `success: false`, `code` and `message`, which Segment's and
//! RudderStack's libraries read. Segment documents 400 for a body that is
//! not JSON or too large; Fusion answers 400 for the first and 413 for
//! the second (both are not retried by those libraries).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::ApiError;
use super::body::{BodyKind, IngestBody, media_type};
use super::rejected::{self, Arrival, Intake};
use super::schema::{self, Problem};
use crate::domain::{CurrencyTable, Entity, EntityId, Event};
use crate::engine::{ContentKeys, Engine};
use crate::ingest::mapping::Mapping;
use crate::ingest::pipeline::{self, Origin, Source, Translation, Untranslated};
use crate::ingest::{BodyError, FieldError, MessageShape, Messages, parse_messages};
use crate::store::EventStore;
use crate::store::dead_letters::Reason;

/// Segment's routes and the message type each implies (`None`: a batch of
/// any types).
const SEGMENT_ROUTES: [(&str, Option<&str>); 4] = [
    ("/v1/batch", None),
    ("/v1/track", Some("track")),
    ("/v1/identify", Some("identify")),
    ("/v1/group", Some("group")),
];

/// The message type a Segment route implies, if the pattern is one.
pub fn segment_route(pattern: &str) -> Option<Option<&'static str>> {
    SEGMENT_ROUTES
        .iter()
        .find(|(p, _)| *p == pattern)
        .map(|(_, t)| *t)
}

/// Registers the routes of this file.
pub fn register<S: EventStore>(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/batch").post(segment_batch::<S>))
        .service(web::resource("/v1/track").post(segment_track::<S>))
        .service(web::resource("/v1/identify").post(segment_identify::<S>))
        .service(web::resource("/v1/group").post(segment_group::<S>))
        .service(web::resource("/v1/cloudevents").post(cloudevents::<S>))
        .service(
            web::resource("/v1/rejected")
                .get(rejected::list_rejected)
                .delete(rejected::delete_rejected),
        )
        .service(web::resource("/v1/rejected/replay").post(rejected::replay_rejected::<S>));
}

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    segment_batch,
    segment_track,
    segment_identify,
    segment_group,
    cloudevents
))]
pub(super) struct PipelinesApi;

// ---------------------------------------------------------------------------
// Body kinds.

/// A Segment body: `{"batch": [...]}` on `/v1/batch`, one message on the
/// others; `application/json`.
pub struct SegmentBatch;
/// One Segment message (`/v1/track`, `/v1/identify`, `/v1/group`).
pub struct SegmentMessage;

fn json_only(req: &HttpRequest) -> Result<(), ApiError> {
    let send = "send the messages as application/json (UTF-8)";
    let mime = media_type(req, send)?;
    if mime.essence_str() == "application/json" {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {} is not read here; {send}",
            mime.essence_str()
        )))
    }
}

impl BodyKind for SegmentBatch {
    type Head = ();
    type Parsed = Messages;
    fn head(req: &HttpRequest) -> Result<(), ApiError> {
        json_only(req)
    }
    fn parse(body: &[u8], _: &(), _: &CurrencyTable) -> Result<Messages, BodyError> {
        parse_messages(body, MessageShape::Batch)
    }
}

impl BodyKind for SegmentMessage {
    type Head = ();
    type Parsed = Messages;
    fn head(req: &HttpRequest) -> Result<(), ApiError> {
        json_only(req)
    }
    fn parse(body: &[u8], _: &(), _: &CurrencyTable) -> Result<Messages, BodyError> {
        parse_messages(body, MessageShape::Object)
    }
}

/// How a CloudEvents request is encoded (CloudEvents HTTP binding 1.0).
pub enum CloudEventsMode {
    /// `application/cloudevents+json`: one event, attributes and data.
    Structured,
    /// `application/cloudevents-batch+json`: an array of those.
    Batch,
    /// `ce-*` headers carry the attributes, the body is the data (JSON);
    /// the attributes as read from the headers (percent-decoded).
    Binary(Map<String, Value>),
}

pub struct CloudEventsBody;

/// The attributes of a binary-mode event: every `ce-` header, its name
/// without the prefix, its value percent-decoded (HTTP binding 3.1.3.2).
fn binary_attributes(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        if let Some(attr) = name.as_str().strip_prefix("ce-")
            && let Ok(v) = value.to_str()
        {
            let decoded = percent_decode(v);
            out.insert(attr.to_string(), Value::String(decoded));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl BodyKind for CloudEventsBody {
    type Head = CloudEventsMode;
    type Parsed = Messages;

    fn head(req: &HttpRequest) -> Result<CloudEventsMode, ApiError> {
        let send = "send application/cloudevents+json (structured), \
                    application/cloudevents-batch+json (batch), or ce-* headers with a JSON body \
                    (binary)";
        // A binary-mode event without datacontenttype has no Content-Type
        // (the CloudEvents SDKs send none): its data is JSON, as the
        // core spec reads an omitted datacontenttype.
        let binary = req.headers().contains_key("ce-specversion");
        if binary
            && !req
                .headers()
                .contains_key(actix_web::http::header::CONTENT_TYPE)
        {
            return Ok(CloudEventsMode::Binary(binary_attributes(req.headers())));
        }
        let mime = media_type(req, send)?;
        let essence = mime.essence_str();
        match essence {
            "application/cloudevents+json" => Ok(CloudEventsMode::Structured),
            "application/cloudevents-batch+json" => Ok(CloudEventsMode::Batch),
            _ if binary => {
                if essence == "application/json" || essence.ends_with("+json") {
                    Ok(CloudEventsMode::Binary(binary_attributes(req.headers())))
                } else {
                    Err(ApiError::UnsupportedMediaType(format!(
                        "a binary-mode event's data must be JSON to be mapped, not {essence}; {send}"
                    )))
                }
            }
            other => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other} is not read here; {send}"
            ))),
        }
    }

    fn parse(
        body: &[u8],
        head: &CloudEventsMode,
        _: &CurrencyTable,
    ) -> Result<Messages, BodyError> {
        match head {
            CloudEventsMode::Structured => parse_messages(body, MessageShape::Object),
            CloudEventsMode::Batch => parse_messages(body, MessageShape::Array),
            // The data is the whole body: one JSON value of any kind.
            CloudEventsMode::Binary(_) => {
                let text = std::str::from_utf8(body).map_err(|e| BodyError::Malformed {
                    line: None,
                    message: format!("the body is not UTF-8: {e}"),
                })?;
                let data: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
                    .map_err(|e| BodyError::Malformed {
                        line: None,
                        message: e.to_string(),
                    })?;
                let mut m = Messages::default();
                m.envelope.insert("data".into(), data);
                m.items.push(crate::ingest::Message {
                    span: 0..body.len(),
                    value: Ok(Map::new()),
                });
                Ok(m)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The pipeline: messages -> events and entities, stored, or kept.

/// How a message is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Fusion event (a replayed dead letter of `/v1/events`).
    Fusion,
    Segment(Option<&'static str>),
    CloudEvent,
}

/// One message on its way in (live or replayed).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its index in the request (or the replay).
    pub index: usize,
    pub value: Result<Map<String, Value>, Vec<FieldError>>,
    pub kind: Kind,
    pub received_at: DateTime<Utc>,
    pub key_id: Option<String>,
    pub batch_sent_at: Option<Value>,
}

/// What became of a request's messages.
#[derive(Debug, Default)]
pub struct Processed {
    pub accepted: usize,
    pub duplicates: usize,
    pub ignored: usize,
    pub entities: usize,
    /// By message index: why it was refused.
    pub rejected: BTreeMap<usize, (Reason, Vec<FieldError>)>,
}

/// What translation and validation made of the messages (blocking work).
struct Prepared {
    events: Vec<(usize, Event)>,
    keys: ContentKeys,
    /// Event index -> message index.
    owner: Vec<usize>,
    entities: Vec<(usize, pipeline::EntityUpdate)>,
    ignored: usize,
    rejected: BTreeMap<usize, (Reason, Vec<FieldError>)>,
}

fn prepare(mapping: &Mapping, currencies: &CurrencyTable, messages: Vec<Incoming>) -> Prepared {
    let mut p = Prepared {
        events: Vec::new(),
        keys: ContentKeys::new(),
        owner: Vec::new(),
        entities: Vec::new(),
        ignored: 0,
        rejected: BTreeMap::new(),
    };
    for m in messages {
        let value = match m.value {
            Ok(v) => v,
            Err(errors) => {
                p.rejected.insert(m.index, (Reason::Invalid, errors));
                continue;
            }
        };
        if m.kind == Kind::Fusion {
            match crate::ingest::validate(&Value::Object(value), currencies) {
                Ok(v) => {
                    p.owner.push(m.index);
                    p.events.push((p.owner.len() - 1, v.event));
                }
                Err(errors) => {
                    p.rejected.insert(m.index, (Reason::Invalid, errors));
                }
            }
            continue;
        }
        let origin = Origin {
            source: match m.kind {
                Kind::Segment(t) => Source::Segment(t),
                _ => Source::CloudEvent,
            },
            received_at: m.received_at,
            key_id: m.key_id.as_deref(),
            batch_sent_at: m.batch_sent_at.as_ref(),
        };
        let translated = match m.kind {
            Kind::CloudEvent => pipeline::cloudevent(mapping, &value, &origin),
            _ => pipeline::segment(mapping, &value, &origin),
        };
        match translated {
            Ok(Translation::Ignored(_)) => p.ignored += 1,
            Ok(Translation::Entity(update)) => p.entities.push((m.index, update)),
            Ok(Translation::Events(mapped)) => {
                // A message is stored whole or kept whole.
                let mut good = Vec::new();
                let mut errors = Vec::new();
                for e in mapped {
                    match crate::ingest::validate(&Value::Object(e.wire), currencies) {
                        Ok(v) => good.push((v.event, e.key)),
                        Err(errs) => errors.extend(pipeline::rename(errs, &e.paths)),
                    }
                }
                if errors.is_empty() {
                    for (event, key) in good {
                        let index = p.owner.len();
                        p.owner.push(m.index);
                        p.keys.insert(index, key);
                        p.events.push((index, event));
                    }
                } else {
                    p.rejected.insert(m.index, (Reason::Invalid, errors));
                }
            }
            Err(Untranslated { unmapped, errors }) => {
                let reason = if unmapped {
                    Reason::Unmapped
                } else {
                    Reason::Invalid
                };
                p.rejected.insert(m.index, (reason, errors));
            }
        }
    }
    p
}

/// The entity an identify (or group) message registers: the current
/// registration with the traits the message gives, checked as
/// `PUT /v1/entities/{id}` checks its body.
fn entity_of<S: EventStore>(
    engine: &Engine<S>,
    update: &pipeline::EntityUpdate,
) -> Result<Entity, Vec<FieldError>> {
    let bad = |field: &str, message: &str| vec![FieldError::new(field, message)];
    let id = EntityId::new(&update.id).map_err(|e| bad("userId", &format!("bad id: {e}")))?;
    let (current, known) = engine
        .registration(&id)
        .map_err(|e| bad("", &e.to_string()))?;
    let kind = current
        .as_ref()
        .map(|c| c.kind)
        .or(known.filter(|k| k.is_person() == update.kind.is_person()))
        .unwrap_or(update.kind);
    let name = match &update.name {
        None => current.as_ref().and_then(|c| c.name.clone()),
        Some((path, v)) => Some(
            v.as_str()
                .ok_or_else(|| bad(path, "must be a string"))?
                .to_string(),
        ),
    };
    let followers = match &update.followers {
        None => current.as_ref().and_then(|c| c.followers),
        Some((path, v)) => Some(
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| bad(path, "must be a whole number of followers"))?,
        ),
    };
    let interests = match &update.interests {
        None => current
            .as_ref()
            .map(|c| c.interests.clone())
            .unwrap_or_default(),
        Some((path, v)) => v
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| bad(path, "must be a list of strings"))?,
    };
    crate::ingest::check_entity(id, kind, name, followers, interests).map_err(|e| {
        let path = match e.field.as_str() {
            "name" => update.name.as_ref().map(|(p, _)| p.clone()),
            "followers" => update.followers.as_ref().map(|(p, _)| p.clone()),
            "interests" => update.interests.as_ref().map(|(p, _)| p.clone()),
            _ => None,
        };
        vec![FieldError::new(&path.unwrap_or(e.field), e.message)]
    })
}

/// Translates, validates and (unless `dry_run`) stores the messages:
/// events through the engine with their content keys, entities through
/// its registration. Answers what became of each (by index).
pub async fn process<S: EventStore>(
    engine: &Arc<Engine<S>>,
    mapping: &Arc<Mapping>,
    messages: Vec<Incoming>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Processed, ApiError> {
    let (m, currencies) = (Arc::clone(mapping), engine.model().currency.clone());
    let p = web::block(move || prepare(&m, &currencies, messages))
        .await
        .map_err(|e| {
            tracing::error!(cause = %e, "the pipeline's translation failed");
            ApiError::Internal
        })?;
    let mut out = Processed {
        ignored: p.ignored,
        rejected: p.rejected,
        ..Processed::default()
    };
    if dry_run {
        // What would pass validation and the mapping; the arrival checks
        // (time, roles, duplicates) run only when it is stored.
        out.accepted = p.events.len();
        out.entities = p.entities.len();
        return Ok(out);
    }
    if !p.events.is_empty() {
        let report = engine
            .submit_keyed(p.events, &p.keys, Vec::new(), false, now)
            .await?;
        out.accepted = report.accepted;
        out.duplicates = report.duplicates;
        for r in report.rejected {
            let message = p.owner[r.index];
            let reason = rejected::reason_of(&r.errors);
            let entry = out
                .rejected
                .entry(message)
                .or_insert_with(|| (reason, Vec::new()));
            if reason == Reason::Conflict {
                entry.0 = Reason::Conflict;
            }
            entry.1.extend(r.errors);
        }
    }
    for (index, update) in p.entities {
        match entity_of(engine, &update) {
            Ok(entity) => match engine.register(entity).await {
                Ok(()) => out.entities += 1,
                Err(crate::engine::EngineError::Invalid(m)) => {
                    out.rejected
                        .insert(index, (Reason::Invalid, vec![FieldError::new("userId", m)]));
                }
                Err(e) => return Err(e.into()),
            },
            Err(errors) => {
                out.rejected.insert(index, (Reason::Invalid, errors));
            }
        }
    }
    Ok(out)
}

/// Runs a request's messages and keeps its rejections: the answer of every
/// pipeline route.
async fn run<S: EventStore>(
    req: &HttpRequest,
    engine: web::Data<Engine<S>>,
    intake: web::Data<Intake>,
    body: IngestBody<impl BodyKind<Parsed = Messages>>,
    kind: Kind,
    binary: Option<Map<String, Value>>,
) -> Result<Value, ApiError> {
    let received_at = Utc::now();
    let arrival = Arrival::of(req, received_at);
    let IngestBody {
        parsed,
        bytes,
        share,
        ..
    } = body;
    let Messages { items, envelope } = parsed;
    let batch_sent_at = envelope.get("sentAt").cloned();
    // A binary-mode event: its attributes from the head, its data the body;
    // it is kept (and replayed) in structured form.
    let structured = binary.map(|mut attrs| {
        if let Some(data) = envelope.get("data") {
            attrs.insert("data".into(), data.clone());
        }
        attrs
    });
    let mut raws: Vec<Vec<u8>> = Vec::new();
    let messages: Vec<Incoming> = items
        .into_iter()
        .enumerate()
        .map(|(index, m)| {
            let value = match &structured {
                Some(s) => Ok(s.clone()),
                None => m.value,
            };
            raws.push(match &structured {
                Some(s) => serde_json::to_vec(s).unwrap_or_default(),
                None => bytes[m.span].to_vec(),
            });
            Incoming {
                index,
                value,
                kind,
                received_at,
                key_id: arrival.key_id.clone(),
                batch_sent_at: batch_sent_at.clone(),
            }
        })
        .collect();
    let count = messages.len();
    let engine = engine.into_inner();
    let outcome = process(&engine, &intake.mapping, messages, received_at, false).await?;
    let context = rejected::segment_context(&envelope).filter(|_| matches!(kind, Kind::Segment(_)));
    let letters = outcome
        .rejected
        .iter()
        .map(|(i, (reason, errors))| {
            arrival.letter(
                *reason,
                errors.clone(),
                &raws[*i],
                outcome.rejected.len(),
                context.clone(),
            )
        })
        .collect();
    rejected::keep(
        &intake.letters,
        intake.retention,
        letters,
        outcome.rejected.len(),
    )
    .await?;
    drop(share);
    let listed: Vec<Value> = outcome
        .rejected
        .iter()
        .take(crate::ingest::MAX_REJECTIONS)
        .map(|(i, (reason, errors))| {
            json!({"index": i, "reason": reason, "errors": rejected::errors_json(errors)})
        })
        .collect();
    Ok(json!({
        "success": true,
        "messages": count,
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "entities": outcome.entities,
        "ignored": outcome.ignored,
        "dead_lettered": outcome.rejected.len(),
        "rejected": listed,
    }))
}

/// Segment's code for a problem (what its libraries report).
fn segment_code(e: &ApiError) -> &'static str {
    use super::ProblemKind as K;
    match e.kind() {
        K::MalformedBody => "invalid_request",
        K::BodyTooLarge => "request_too_large",
        K::UnsupportedMediaType | K::UnsupportedEncoding => "unsupported_media_type",
        K::RequestTimeout => "request_timeout",
        K::Busy | K::StoreUnavailable | K::NotReady => "unavailable",
        K::StoreFull => "insufficient_storage",
        _ => "error",
    }
}

/// A problem with Segment's members (`success`, `code`, `message`).
fn segment_error(e: ApiError) -> HttpResponse {
    let mut members = Map::new();
    members.insert("success".into(), Value::Bool(false));
    members.insert("code".into(), Value::String(segment_code(&e).into()));
    members.insert("message".into(), Value::String(e.to_string()));
    e.response_with(members)
}

async fn segment<S: EventStore, K: BodyKind<Parsed = Messages, Head = ()>>(
    req: HttpRequest,
    engine: web::Data<Engine<S>>,
    intake: web::Data<Intake>,
    body: Result<IngestBody<K>, ApiError>,
) -> HttpResponse {
    let pattern = req.match_pattern().unwrap_or_default();
    let implied = segment_route(&pattern).flatten();
    let body = match body {
        Ok(b) => b,
        Err(e) => return segment_error(e),
    };
    match run(&req, engine, intake, body, Kind::Segment(implied), None).await {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(e) => segment_error(e),
    }
}

macro_rules! segment_doc {
    ($name:ident, $path:literal, $kind:ty, $what:literal) => {
        #[utoipa::path(post, path = $path, tag = "pipelines",
            description = $what,
            request_body(description = "Segment's HTTP Tracking API payload (application/json; gzip or zstd Content-Encoding). The writeKey is sent as HTTP Basic auth (the key as user name)", content = schema::SegmentBody, content_type = "application/json"),
            responses(
                (status = 200, description = "Every message stored, ignored by the mapping, or kept in the dead-letter store", body = schema::SegmentAnswer),
                (status = 400, description = "Not JSON of Segment's shape; the body is kept in the dead-letter store", body = schema::SegmentProblem, content_type = "application/problem+json"),
                (status = 408, description = "The body came too slowly", body = schema::SegmentProblem, content_type = "application/problem+json"),
                (status = 413, description = "The body is larger than the limit", body = schema::SegmentProblem, content_type = "application/problem+json"),
                (status = 415, description = "Not application/json, or an unknown encoding", body = schema::SegmentProblem, content_type = "application/problem+json"),
                (status = 507, description = "The store is full; nothing was stored", body = schema::SegmentProblem, content_type = "application/problem+json"),
            ))]
        async fn $name<S: EventStore>(
            req: HttpRequest,
            engine: web::Data<Engine<S>>,
            intake: web::Data<Intake>,
            body: Result<IngestBody<$kind>, ApiError>,
        ) -> HttpResponse {
            segment::<S, $kind>(req, engine, intake, body).await
        }
    };
}

segment_doc!(
    segment_batch,
    "/v1/batch",
    SegmentBatch,
    "A batch of Segment messages of any type: {\"batch\": [...], \"sentAt\": ...}"
);
segment_doc!(
    segment_track,
    "/v1/track",
    SegmentMessage,
    "One Segment track message"
);
segment_doc!(
    segment_identify,
    "/v1/identify",
    SegmentMessage,
    "One Segment identify message: its traits update the person"
);
segment_doc!(
    segment_group,
    "/v1/group",
    SegmentMessage,
    "One Segment group message (kept unmapped unless the mapping maps groups)"
);

#[utoipa::path(post, path = "/v1/cloudevents", tag = "pipelines",
    params(
        ("ce-specversion" = Option<String>, Header, description = "Binary mode: 1.0 (with ce-id, ce-source, ce-type; the body is the data, JSON)"),
    ),
    request_body(description = "CloudEvents 1.0: structured (application/cloudevents+json), batch (application/cloudevents-batch+json) or binary mode (ce-* headers, a JSON body)",
        content((schema::CloudEvent = "application/cloudevents+json"), (Vec<schema::CloudEvent> = "application/cloudevents-batch+json"), (Object = "application/json"))),
    responses(
        (status = 200, description = "Every event stored, ignored by the mapping, or kept in the dead-letter store", body = schema::SegmentAnswer),
        (status = 400, description = "Not JSON of the mode's shape; the body is kept in the dead-letter store", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body came too slowly", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a CloudEvents media type, or binary data that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store is full; nothing was stored", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cloudevents<S: EventStore>(
    req: HttpRequest,
    engine: web::Data<Engine<S>>,
    intake: web::Data<Intake>,
    body: IngestBody<CloudEventsBody>,
) -> Result<HttpResponse, ApiError> {
    let binary = match &body.head {
        CloudEventsMode::Binary(attrs) => Some(attrs.clone()),
        _ => None,
    };
    let mut answer = run(&req, engine, intake, body, Kind::CloudEvent, binary).await?;
    if let Some(m) = answer.as_object_mut() {
        m.remove("success");
    }
    Ok(HttpResponse::Ok().json(answer))
}
