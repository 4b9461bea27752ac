//! The data-protection routes: erasure (`DELETE /v1/entities/{id}`, with
//! its audit record) and access (`GET /v1/entities/{id}/export`, everything
//! Fusion holds about an entity as one document). Both need `admin`
//! (`auth::ROUTES`).
//!
//! Erasure reaches every copy that exists: the event log and registration
//! (the store), derived state (the engine refolds without them), the
//! materialised `relationship_scores` on PostgreSQL (its rows go in the
//! erasure's transaction, and every refresh replaces the table, so
//! relationships that existed only through the erased entity go too), and
//! the dead letters that name it (`store::dead_letters::mentions`).
//! ARCHITECTURE.md keeps the list of copies a new feature must add here.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::{Security, principal};
use super::path::Path;
use super::routes::{entity_id, relationship_view};
use super::schema::{self, Problem};
use crate::domain::{EntityKind, EventKind};
use crate::engine::Engine;
use crate::ingest;
use crate::store::{EventStore, KeyStore};

type Eng<S> = web::Data<Engine<S>>;

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(erase_entity, export_entity))]
pub(super) struct PrivacyApi;

/// Erases an entity. The audit record (key id, time, salted hash of the
/// id) is written first, so no erasure runs unaudited; the number of
/// events completes it afterwards.
#[utoipa::path(delete, path = "/v1/entities/{id}", tag = "privacy",
    params(("id" = String, Path, example = "artist", description = "Entity id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses(
        (status = 200, description = "Erased, and audited", body = schema::Erasure),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entity", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn erase_entity<S: EventStore>(
    engine: Eng<S>,
    security: web::Data<Security>,
    intake: web::Data<super::Intake>,
    alerts: Option<web::Data<crate::alerts::Alerts>>,
    req: HttpRequest,
    path: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    if engine.kind(&id)?.is_none() {
        return Err(ApiError::NotFound(format!("no entity '{id}'")));
    }
    let key_id = principal(&req).map(|p| p.key_id);
    let subject = crate::auth::subject_hash(&security.erasure_salt, id.as_str());
    let audit = security
        .keys
        .begin_erasure(Utc::now(), key_id.clone(), subject)
        .await?;
    // The rejected events that name it are copies too (issue #16). They go
    // first: once the log's erasure is done the entity is unknown, and a
    // retry after a failure here would answer 404 with the letters left.
    let letters = {
        use crate::store::DeadLetterStore;
        intake.letters.erase(id.as_str()).await?
    };
    // Alerts, their phases and deliveries name people too (issue 13).
    if let Some(alerts) = &alerts {
        use crate::store::AlertStore;
        alerts.book().erase(id.as_str()).await?;
    }
    let removed = engine.erase(&id).await?;
    // The erasure's own log position is in the state now (`store`).
    super::position::reflects(engine.position());
    security.keys.finish_erasure(audit, removed).await?;
    // The id stays out of the log, as out of the audit.
    let by = key_id
        .as_ref()
        .map_or("none (no keys configured)", |k| k.as_str());
    tracing::info!(
        audit,
        key_id = by,
        events = removed,
        dead_letters = letters,
        "erased an entity"
    );
    Ok(HttpResponse::Ok()
        .json(json!({"erased": id, "events_removed": removed, "dead_letters_removed": letters})))
}

/// Everything held about an entity: registration, every event that names
/// it (as sent, oldest first), its consent history, and every relationship
/// it is part of with score, components, trend and reasons, now.
#[utoipa::path(get, path = "/v1/entities/{id}/export", tag = "privacy",
    params(("id" = String, Path, example = "artist", description = "Entity id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$")),
    responses(
        (status = 200, description = "Everything held about the entity", body = schema::Export),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entity", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_entity<S: EventStore>(
    engine: Eng<S>,
    path: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = entity_id("id", &path)?;
    let now = Utc::now();
    let Some((kind, registration, log)) = engine.entity_events(&id).await? else {
        return Err(ApiError::NotFound(format!("no entity '{id}'")));
    };
    let events: Vec<Value> = log.iter().map(ingest::to_wire).collect();
    let consent: Vec<Value> = log
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Consent { person, granted } if *person == id => {
                Some(json!({"time": e.time, "granted": granted, "event": e.id}))
            }
            _ => None,
        })
        .collect();
    let engine = engine.into_inner();
    let ranking = engine.ranking(now, 0).await?;
    let pairs: Vec<(crate::domain::EntityId, crate::domain::EntityId)> = if kind.is_person() {
        ranking
            .by_person
            .get(&id)
            .map(|v| v.iter().map(|(b, _)| (id.clone(), b.clone())).collect())
            .unwrap_or_default()
    } else if kind == EntityKind::Brand {
        ranking
            .by_brand
            .get(&id)
            .map(|v| v.iter().map(|r| (r.person.clone(), id.clone())).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut relationships = Vec::with_capacity(pairs.len());
    for (person, brand) in &pairs {
        if let Some((e, trend)) = engine.relationship(person, brand, now).await? {
            relationships
                .push(serde_json::to_value(relationship_view(&e, &trend)).unwrap_or(Value::Null));
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "kind": kind,
        "registration": registration,
        "exported_at": now,
        "events": events,
        "consent": consent,
        "relationships": relationships,
    })))
}
