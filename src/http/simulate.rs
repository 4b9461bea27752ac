//! `POST /v1/simulate` (issue #13, what-if): reads the body through the one
//! ingest body extractor (`body.rs`: media type, encoding, size, the byte
//! budget), validates its events as ingest does (`ingest::validate_all`),
//! checks its bounds, and asks the engine (`Engine::simulate`). Nothing is
//! stored.
//!
//! Roles: the access table says `read`; a body with model overrides needs
//! `admin` (they cost a brand's worth of rescoring), which `auth::require`
//! decides, so this handler checks no key itself.
//!
//! Must not: score anything itself, or store anything.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use super::body::{BodyKind, IngestBody, media_type};
use super::error::rejection_items;
use super::params::parse_time;
use super::{ApiError, auth};
use crate::auth::Role;
use crate::domain::{CurrencyTable, EntityId};
use crate::engine::{Engine, WhatIf, WhatIfError};
use crate::ingest::{BodyError, validate_all};
use crate::score::ModelOverrides;
use crate::score::simulate::{MAX_EVENTS, SimulateError};
use crate::store::EventStore;

/// Movers listed by default, and at most.
const DEFAULT_TOP: usize = 20;
const MAX_TOP: usize = 1000;

/// Registers the route.
pub fn register<S: EventStore>(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/simulate").post(simulate::<S>));
}

#[derive(OpenApi)]
#[openapi(paths(simulate), components(schemas(SimulateBody, SimulationAnswer)))]
pub(super) struct SimulateApi;

/// The body of `POST /v1/simulate` (docs/api.md).
#[derive(ToSchema)]
#[allow(dead_code)] // the OpenAPI shape; the handler reads the JSON itself
struct SimulateBody {
    /// Events in the format of `POST /v1/events`, at most 10,000.
    events: Option<Vec<Value>>,
    /// Overrides of `weight`, `half_life_days` (per component) and
    /// `propagation` (`audience`, `association`); needs `admin`.
    model: Option<Value>,
    /// The brand of a model-only what-if (no events).
    brand: Option<String>,
    /// Evaluation time, RFC 3339 (default: now, or the latest simulated
    /// event if later).
    at: Option<String>,
    /// Movers to list, 1 to 1000 (default 20).
    top: Option<u32>,
}

/// What `POST /v1/simulate` answers (docs/api.md).
#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
struct SimulationAnswer {
    at: String,
    events: u64,
    scored: u64,
    truncated: bool,
    /// person, brand, before, after, delta, after_state (an explanation).
    movers: Vec<serde_json::Map<String, Value>>,
    /// brand, moved, mean_delta, up, down.
    brands: Vec<serde_json::Map<String, Value>>,
    /// quantiles, histogram.
    distribution: serde_json::Map<String, Value>,
    /// summaries (`exact` or `live_tolerance`), error_bound (score points):
    /// how exact `brands` and `distribution` are; the movers always are.
    precision: serde_json::Map<String, Value>,
    /// Ids of the request's events the log holds already: left out, as
    /// posting them would store nothing.
    already_stored: Vec<String>,
}

/// A what-if body, read on the blocking pool (its events validated there).
pub struct Simulation;

impl BodyKind for Simulation {
    type Head = ();
    type Parsed = Result<Read, ApiError>;

    fn head(req: &HttpRequest) -> Result<(), ApiError> {
        let send = "send the simulation as application/json (UTF-8)";
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

    fn parse(
        body: &[u8],
        _: &(),
        currencies: &CurrencyTable,
    ) -> Result<Result<Read, ApiError>, BodyError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| BodyError::Malformed {
            line: None,
            message: e.to_string(),
        })?;
        Ok(read(value, currencies))
    }
}

/// A body read: the question but its time default.
pub struct Read {
    what: WhatIf,
    at_given: bool,
}

fn read(value: Value, currencies: &CurrencyTable) -> Result<Read, ApiError> {
    let Value::Object(mut body) = value else {
        return Err(ApiError::body_field(
            "body",
            "must be an object: {\"events\": [...]} or {\"model\": {...}, \"brand\": \"...\"}",
        ));
    };
    for key in body.keys() {
        if !["events", "model", "brand", "at", "top"].contains(&key.as_str()) {
            return Err(ApiError::body_field(
                key,
                "is not a member of a simulation (events, model, brand, at, top)",
            ));
        }
    }
    let events = match body.remove("events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(events)) => events,
        Some(_) => return Err(ApiError::body_field("events", "must be an array of events")),
    };
    if events.len() > MAX_EVENTS {
        return Err(ApiError::TooManyEvents(format!(
            "{} events is more than a simulation takes ({MAX_EVENTS}); simulate fewer at a time",
            events.len()
        )));
    }
    let validation = validate_all(&events, currencies);
    if !validation.rejected.is_empty() {
        return Err(ApiError::InvalidSimulatedEvents(
            format!(
                "{} of the events are invalid; nothing was simulated",
                validation.rejected.len()
            ),
            rejection_items(&validation.rejected),
        ));
    }
    let model = match body.remove("model") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<ModelOverrides>(v)
                .map_err(|e| ApiError::body_field("model", e.to_string()))?,
        ),
    };
    let brand = match body.remove("brand") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            EntityId::new(&s).map_err(|e| ApiError::body_field("brand", format!("bad id: {e}")))?,
        ),
        Some(_) => return Err(ApiError::body_field("brand", "must be a brand id")),
    };
    let at = match body.remove("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_time("at", &s).map_err(|_| {
            ApiError::body_field(
                "at",
                "must be an RFC 3339 time from 1900 to 2200, such as 2026-11-01T18:30:00Z",
            )
        })?),
        Some(_) => return Err(ApiError::body_field("at", "must be an RFC 3339 time")),
    };
    let top = match body.remove("top") {
        None | Some(Value::Null) => DEFAULT_TOP,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_TOP as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| ApiError::body_field("top", "must be a whole number from 1 to 1000"))?,
    };
    let events = validation.good;
    if events.is_empty() {
        match (&model, &brand) {
            (Some(_), Some(_)) => {}
            (Some(_), None) => {
                return Err(ApiError::body_field(
                    "brand",
                    "a model-only what-if needs the brand whose relationships to rescore",
                ));
            }
            _ => {
                return Err(ApiError::body_field(
                    "events",
                    "give events to simulate, or model overrides and a brand",
                ));
            }
        }
    }
    if model.as_ref().is_some_and(ModelOverrides::is_empty) {
        return Err(ApiError::body_field(
            "model",
            "overrides nothing; leave it out",
        ));
    }
    Ok(Read {
        at_given: at.is_some(),
        what: WhatIf {
            events,
            model,
            brand,
            at: at.unwrap_or(DateTime::<Utc>::MIN_UTC),
            top,
        },
    })
}

#[utoipa::path(post, path = "/v1/simulate", tag = "scores",
    request_body(content = SimulateBody, content_type = "application/json",
        description = "Events to simulate (the format of POST /v1/events), and/or model overrides (admin) with a brand"),
    responses(
        (status = 200, description = "The score changes; nothing was stored", body = SimulationAnswer),
        (status = 400, description = "Malformed body, an invalid member, or invalid events (each named by index and field)", body = super::schema::Problem, content_type = "application/problem+json"),
        (status = 404, description = "A model-only what-if's brand has no relationships", body = super::schema::Problem, content_type = "application/problem+json"),
        (status = 413, description = "More than 10,000 events, or a body larger than the limit", body = super::schema::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JSON body", body = super::schema::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The simulation would take more than 5 s of work", body = super::schema::Problem, content_type = "application/problem+json"),
    ))]
async fn simulate<S: EventStore>(
    req: HttpRequest,
    engine: web::Data<Engine<S>>,
    body: IngestBody<Simulation>,
) -> Result<HttpResponse, ApiError> {
    let Read { mut what, at_given } = body.parsed?;
    if what.model.is_some() {
        auth::require(&req, Role::Admin, "model overrides")?;
    }
    if !at_given {
        let latest = what.events.iter().map(|(_, e)| e.time).max();
        what.at = latest.map_or(Utc::now(), |t| t.max(Utc::now()));
    }
    let engine = engine.into_inner();
    match engine.simulate(what).await? {
        Ok(answer) => {
            super::position::reflects(answer.position);
            if answer.provisional {
                super::position::provisional();
            }
            Ok(HttpResponse::Ok().json(answer))
        }
        Err(WhatIfError::Model(e)) => Err(ApiError::body_field("model", e.to_string())),
        Err(WhatIfError::UnknownBrand(b)) => {
            Err(ApiError::NotFound(WhatIfError::UnknownBrand(b).to_string()))
        }
        Err(WhatIfError::Simulate(e @ SimulateError::OutOfTime { .. })) => {
            Err(ApiError::SimulationTooCostly(e.to_string()))
        }
        Err(WhatIfError::Simulate(e @ SimulateError::Role { index, field, .. })) => {
            Err(simulated_event_problem(&e, index, field))
        }
        Err(WhatIfError::Simulate(e @ SimulateError::Unsupported { index, .. })) => {
            Err(simulated_event_problem(&e, index, "type"))
        }
    }
}

/// One simulated event's problem, named by index and field, as ingest names them.
fn simulated_event_problem(e: &SimulateError, index: usize, field: &str) -> ApiError {
    let message = e.to_string();
    let message = message
        .split_once(": ")
        .map_or(message.as_str(), |(_, m)| m)
        .to_string();
    ApiError::InvalidSimulatedEvents(
        "an event cannot be simulated; nothing was simulated".to_string(),
        vec![super::error::ProblemItem {
            index: Some(index),
            id: None,
            field: field.to_string(),
            message,
        }],
    )
}
