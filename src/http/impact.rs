//! `GET /v1/brands/{brand}/impact?occasion=ID` (or `?cause=ID`), with
//! optional `at` (RFC 3339; default now, the only clock read) and `window`
//! (days, default 14): the measured effect of a brand's action
//! (`crate::validity::impact`; the answer's shape is in docs/api.md).
//!
//! The engine holds the state's read lock only to take two snapshots and
//! the events involved (`Engine::impact_inputs`); the matching and the
//! bootstrap run after it is released, on the blocking pool. Must not
//! estimate anything itself.

use actix_web::{HttpResponse, web};

use super::Params;
use super::error::ApiError;
use super::path::Path;
use super::routes::{entity_id, now_to_the_second};
use crate::domain::{EntityKind, EventId};
use crate::engine::Engine;
use crate::store::EventStore;
use crate::validity::ValidityError;
use crate::validity::impact::{self, Action, ImpactSpec};

#[utoipa::path(get, path = "/v1/brands/{brand}/impact", tag = "scores",
    params(
        ("brand" = String, Path, example = "sweater", description = "Brand id", pattern = r"^[A-Za-z0-9._:@-]{1,128}$"),
        ("occasion" = Option<String>, Query, description = "The occasion whose effect is measured (or `cause`)"),
        ("cause" = Option<String>, Query, description = "The cause event whose effect is measured (or `occasion`)"),
        ("at" = Option<String>, Query, description = "RFC 3339 (default: now)"),
        ("window" = Option<f64>, Query, description = "Days before and after the action, in (0, 3650] (default 14)"),
    ),
    responses(
        (status = 200, description = "The measured effect, with interval and group sizes (docs/api.md)", body = super::schema::Impact),
        (status = 400, description = "A bad parameter, or the action is not before `at`", body = super::schema::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such brand or action", body = super::schema::Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn get_impact<S: EventStore>(
    engine: web::Data<Engine<S>>,
    path: Path<String>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let brand = entity_id("brand", &path)?;
    if engine.kind(&brand)? != Some(EntityKind::Brand) {
        return Err(ApiError::NotFound(format!("no brand '{brand}'")));
    }
    let action = match (params.get("occasion")?, params.get("cause")?) {
        (Some(o), None) => Action::Occasion(entity_id("occasion", o)?),
        (None, Some(c)) => Action::Cause(
            EventId::new(c).map_err(|e| ApiError::parameter("cause", format!("bad id: {e}")))?,
        ),
        _ => {
            return Err(ApiError::parameter(
                "occasion",
                "give exactly one of `occasion` (an occasion id) and `cause` (a cause event id)",
            ));
        }
    };
    let at = params.time("at")?.unwrap_or_else(now_to_the_second);
    let window_days = params
        .number("window", 0.0, 3_650.0)?
        .unwrap_or(impact::DEFAULT_WINDOW_DAYS);
    if window_days <= 0.0 {
        return Err(ApiError::parameter(
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
    let inputs = engine.impact_inputs(&spec).await?;
    let report = web::block(move || {
        let inputs = inputs.map_err(|e| match e {
            ValidityError::NotFound(m) => ApiError::NotFound(m),
            // The window is checked above, so what is left is about
            // `at`: the action is not before it.
            ValidityError::Invalid(m) => ApiError::parameter("at", m),
        })?;
        Ok::<_, ApiError>(impact::estimate(inputs))
    })
    .await
    .map_err(|e| {
        tracing::error!(cause = %e, "the impact task failed");
        ApiError::Internal
    })??;
    Ok(HttpResponse::Ok().json(report))
}
