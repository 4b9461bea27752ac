//! `GET /v1/brands/{brand}/impact?occasion=ID` (or `?cause=ID`), with
//! optional `at` (RFC 3339; default now, the only clock read) and `window`
//! (days, default 14): the measured effect of a brand's action
//! (`crate::validity::impact`; the answer's shape is in docs/api.md).
//!
//! Holds the state's read lock only to take two snapshots and the events
//! involved (`impact::gather`); the matching and the bootstrap run after it
//! is released, on the blocking pool. Must not estimate anything itself.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use super::routes::{entity_id, now_to_the_second, parse_time};
use crate::domain::{EntityKind, EventId};
use crate::engine::Engine;
use crate::store::EventStore;
use crate::validity::ValidityError;
use crate::validity::impact::{self, Action, ImpactSpec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImpactQuery {
    occasion: Option<String>,
    cause: Option<String>,
    at: Option<String>,
    window: Option<f64>,
}

pub(super) async fn get_impact<S: EventStore>(
    engine: web::Data<Engine<S>>,
    path: web::Path<String>,
    query: web::Query<ImpactQuery>,
) -> Result<HttpResponse, ApiError> {
    let brand = entity_id("brand", &path)?;
    if engine.state().kind(&brand) != Some(EntityKind::Brand) {
        return Err(ApiError::NotFound(format!("no brand '{brand}'")));
    }
    let query = query.into_inner();
    let action = match (&query.occasion, &query.cause) {
        (Some(o), None) => Action::Occasion(entity_id("occasion", o)?),
        (None, Some(c)) => Action::Cause(
            EventId::new(c.clone())
                .map_err(|e| ApiError::field("cause", format!("bad id: {e}")))?,
        ),
        _ => {
            return Err(ApiError::field(
                "occasion",
                "give exactly one of `occasion` (an occasion id) and `cause` (a cause event id)",
            ));
        }
    };
    let at = parse_time("at", query.at.as_deref())?.unwrap_or_else(now_to_the_second);
    let window_days = query.window.unwrap_or(impact::DEFAULT_WINDOW_DAYS);
    if !(window_days > 0.0 && window_days <= 3_650.0) {
        return Err(ApiError::field(
            "window",
            "must be a number of days in (0, 3650]",
        ));
    }
    let spec = ImpactSpec {
        brand,
        action,
        at,
        window_days,
        bootstrap: impact::DEFAULT_BOOTSTRAP,
    };
    let engine = engine.into_inner();
    let report = web::block(move || {
        let inputs = impact::gather(&engine.state(), &spec)?;
        Ok::<_, ValidityError>(impact::estimate(inputs))
    })
    .await
    .map_err(|e| {
        tracing::error!(cause = %e, "the impact task failed");
        ApiError::Internal
    })?
    .map_err(|e| match e {
        ValidityError::NotFound(m) => ApiError::NotFound(m),
        ValidityError::Invalid(m) => ApiError::BadRequest(m, Vec::new()),
    })?;
    Ok(HttpResponse::Ok().json(report))
}
