//! `/openapi.json` and `/docs`. The spec is generated from the code: each
//! handler carries its `#[utoipa::path]` (method, path, parameters, body,
//! answers), each module lists its handlers in a partial document, the
//! wire shapes are `schema.rs`, and `Access` walks the one access table
//! (`auth::ROUTES`) to declare what every operation needs (security, 401
//! and 403) and the answers every operation may get from the edge (421,
//! 429, 500, 503). `/docs` is Swagger UI from utoipa-swagger-ui's vendored
//! assets, compiled into the binary: nothing is fetched at build or run
//! time.

use std::sync::OnceLock;

use actix_web::{HttpResponse, web};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::auth::{Need, ROUTES, SESSION_COOKIE};
use super::schema;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fusion",
        description = "Explained Fusion Scores for person-brand relationships. \
            The contract is ../shared/API.md with the additions of docs/api.md; \
            keys, roles and limits are docs/security.md.",
        license(name = "MIT"),
    ),
    paths(openapi_json),
    components(schemas(
        schema::Problem, schema::ProblemItem, schema::Event, schema::EventType,
        schema::StoredEvent, schema::SentimentSource, schema::IngestReport, schema::Rejection,
        schema::FieldError, schema::EntityKind, schema::EntityBody, schema::Entity,
        schema::EntityRelationship, schema::EntityView, schema::Timeline, schema::Components,
        schema::Trend, schema::Sentiment, schema::Contribution, schema::Relationship,
        schema::HistoryPoint, schema::RankedRelationship, schema::Listing, schema::HistogramBin,
        schema::ScoreDistribution, schema::ServiceKpis, schema::Sales, schema::Reviews,
        schema::BrandSummary, schema::Erasure, schema::ConsentChange, schema::Export,
        schema::LiveStats, schema::RescoreReport, schema::Role, schema::Session,
        schema::Health, schema::Ready, schema::NotReady, schema::Warning, schema::Impact,
        schema::SegmentBody, schema::SegmentMessage, schema::SegmentAnswer, schema::SegmentProblem,
        schema::CloudEvent, schema::DeadLetter, schema::LetterRequest, schema::RejectedPage,
        schema::RejectedDeleted, schema::ReplayReport, schema::ReplayItem, schema::PipelineRejection,
    )),
    tags(
        (name = "events", description = "Sending events"),
        (name = "entities", description = "People, brands and occasions"),
        (name = "scores", description = "Fusion Scores, rankings, summaries"),
        (name = "privacy", description = "Erasure and access (admin)"),
        (name = "session", description = "Dashboard sessions"),
        (name = "operations", description = "Probes, metrics, the API description, rescore"),
        (name = "pipelines", description = "Segment's Tracking API and CloudEvents, mapped by the mapping file"),
        (name = "rejected", description = "The dead-letter store: every rejected event, for inspection and replay (admin)"),
    ),
    modifiers(&Access),
)]
struct ApiDoc;

/// The whole spec: this module's part, every handler module's, and the
/// access table applied to all of it.
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut api = ApiDoc::openapi();
    api.merge(super::routes::RoutesApi::openapi());
    api.merge(super::dashboard::DashboardApi::openapi());
    api.merge(super::privacy::PrivacyApi::openapi());
    api.merge(super::auth::SessionApi::openapi());
    api.merge(super::metrics::MetricsApi::openapi());
    api.merge(super::pipelines::PipelinesApi::openapi());
    api.merge(super::rejected::RejectedApi::openapi());
    api.merge(super::stream::StreamApi::openapi());
    api.merge(super::alerts::AlertsApi::openapi());
    api.merge(super::simulate::SimulateApi::openapi());
    // Merged paths came after the modifier ran: apply it to everything.
    Access.modify(&mut api);
    api
}

/// The spec, serialised once.
fn spec_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| spec().to_json().expect("the spec serialises"))
}

/// The OpenAPI 3.1 description of this API, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(spec_json())
}

/// Registers `/openapi.json` and the reference page under `/docs`.
pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route(
            "/docs",
            web::get().to(|| async {
                HttpResponse::PermanentRedirect()
                    .insert_header(("Location", "/docs/"))
                    .finish()
            }),
        )
        .service(
            utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
                .config(utoipa_swagger_ui::Config::from("/openapi.json")),
        );
}

/// Declares, from `ROUTES`, what each operation needs, and adds the
/// answers the edge may give to any of them.
struct Access;

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn add_response(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| problem(description).into());
}

/// Probes and scrapers come by address: no Host check there (limits.rs).
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

impl Modify for Access {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("fsk_<key id>_<secret>")
                    .description(Some("An API key: `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION_COOKIE,
                "The dashboard's session cookie (POST /v1/session); a request that changes \
                 state also needs the session's X-CSRF-Token",
            ))),
        );
        for (path, item) in api.paths.paths.iter_mut() {
            let operations = [
                ("GET", &mut item.get),
                ("PUT", &mut item.put),
                ("POST", &mut item.post),
                ("DELETE", &mut item.delete),
                ("PATCH", &mut item.patch),
            ];
            for (method, op) in operations {
                let Some(op) = op.as_mut() else { continue };
                let need = ROUTES
                    .iter()
                    .find(|r| r.method == method && r.path == path)
                    .map_or(Need::Key(crate::auth::Role::Admin), |r| r.need);
                match need {
                    Need::Public => op.security = Some(Vec::new()),
                    Need::Key(role) => {
                        op.security = Some(vec![
                            SecurityRequirement::new("bearer", Vec::<String>::new()),
                            SecurityRequirement::new("session", Vec::<String>::new()),
                        ]);
                        let note = format!(
                            "Needs an API key (or a dashboard session) with the role `{role}`; \
                             `admin` includes every role. Without keys configured the service \
                             is open (on loopback only)."
                        );
                        op.description = Some(match op.description.take() {
                            Some(d) => format!("{d}\n\n{note}"),
                            None => note,
                        });
                        add_response(op, "401", "No API key, or one that is not valid");
                        add_response(
                            op,
                            "403",
                            "The key's role does not allow this, or a session request that changes state lacks its CSRF token, or a foreign Origin",
                        );
                    }
                }
                if !PROBES.contains(&path.as_str()) {
                    add_response(op, "421", "The Host is not one this service answers for");
                    if need != Need::Public || method != "GET" {
                        add_response(op, "403", "A foreign Origin");
                    }
                }
                add_response(op, "429", "Past the rate limit; see Retry-After");
                add_response(op, "500", "An internal fault (the log has the cause)");
                add_response(op, "503", "The event store is unavailable; see Retry-After");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the spec is a row of the access table and every
    /// row an operation: a route cannot be described without saying what it
    /// needs, nor be in the table without being described.
    #[test]
    fn the_spec_and_the_access_table_name_the_same_routes() {
        let api = spec();
        let mut described = Vec::new();
        for (path, item) in &api.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    described.push((method.to_string(), path.clone()));
                }
            }
        }
        described.sort();
        let mut table: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        table.sort();
        assert_eq!(described, table);
    }

    #[test]
    fn keyed_operations_declare_security_and_public_ones_none() {
        let json: serde_json::Value = serde_json::from_str(spec_json()).unwrap();
        for r in ROUTES {
            let op = &json["paths"][r.path][r.method.to_lowercase()];
            let security = op["security"].as_array().unwrap();
            match r.need {
                Need::Public => assert!(security.is_empty(), "{} {}", r.method, r.path),
                Need::Key(_) => {
                    assert_eq!(security.len(), 2, "{} {}", r.method, r.path);
                    assert!(op["responses"]["401"].is_object());
                    assert!(op["responses"]["403"].is_object());
                }
            }
            assert!(op["responses"]["429"].is_object());
        }
    }
}
