//! Alert rules at the HTTP edge (issue #13, item 2): `POST /v1/alerts`,
//! `GET /v1/alerts`, `GET`/`DELETE /v1/alerts/{id}`,
//! `GET /v1/alerts/{id}/events`, `GET /v1/alerts/{id}/deliveries` (all
//! `admin`, `auth::ROUTES`), and their wire shapes for the OpenAPI
//! document. A rule's secret is answered once, by the POST; no other
//! answer holds it.
//!
//! The routes are always registered; a service started without an alert
//! store (the app run in-process by tests) answers 503 on them.

#![allow(dead_code)] // the schema structs describe answers, they build none

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::ApiError;
use super::params::Params;
use super::path::Path;
use super::schema::Problem;
use crate::alerts::{AlertError, Alerts};
use crate::store::alerts::{AlertStore, Rule, RuleSpec};

/// Most alerts or deliveries in one page.
const MAX_PAGE: usize = 1000;

type Service = Option<web::Data<Alerts>>;

fn service(alerts: &Service) -> Result<&Alerts, ApiError> {
    alerts.as_ref().map(|a| a.get_ref()).ok_or_else(|| {
        ApiError::NotReady("alerts are not configured on this service (no alert store)".into())
    })
}

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::Invalid { field, message } => ApiError::body_field(field, message),
            AlertError::Store(s) => s.into(),
        }
    }
}

/// A rule as answered (never its secret).
fn rule_json(rule: &Rule, evaluated_at: Option<DateTime<Utc>>) -> Value {
    let mut v = serde_json::to_value(&rule.spec).expect("a rule serialises");
    let m = v.as_object_mut().expect("a rule is an object");
    m.insert("id".into(), json!(rule.id));
    m.insert("created_at".into(), json!(rule.created_at));
    m.insert("evaluated_at".into(), json!(evaluated_at));
    v
}

async fn find(alerts: &Alerts, id: u64) -> Result<Rule, ApiError> {
    alerts
        .book()
        .rules()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no alert rule {id}")))
}

pub fn register(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/alerts")
            .get(list_rules)
            .post(create_rule),
    )
    .service(
        web::resource("/v1/alerts/{id}")
            .get(get_rule)
            .delete(delete_rule),
    )
    .service(web::resource("/v1/alerts/{id}/events").get(rule_events))
    .service(web::resource("/v1/alerts/{id}/deliveries").get(rule_deliveries));
}

#[utoipa::path(post, path = "/v1/alerts", tag = "alerts",
    request_body(content = AlertRuleBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored; `secret` signs its webhooks and is never shown again", body = AlertRuleCreated),
        (status = 400, description = "A bad field (the item names it), or a webhook URL that is not a public http(s) URL", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a JSON body", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The store is full", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_rule(
    alerts: Service,
    body: web::Json<RuleSpec>,
) -> Result<HttpResponse, ApiError> {
    let alerts = service(&alerts)?;
    let rule = alerts.create(body.into_inner(), Utc::now()).await?;
    let mut v = rule_json(&rule, None);
    v["secret"] = json!(rule.secret);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/alerts/{}", rule.id)))
        .json(v))
}

#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    responses((status = 200, description = "Every rule, by id", body = AlertRuleList)))]
pub async fn list_rules(alerts: Service) -> Result<HttpResponse, ApiError> {
    let alerts = service(&alerts)?;
    let rules: Vec<Value> = alerts
        .book()
        .rules()
        .await?
        .iter()
        .map(|r| rule_json(r, alerts.evaluated_at(r.id)))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "alerts": rules })))
}

#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = u64, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "The rule, and when this server last evaluated it", body = AlertRule),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rule", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_rule(alerts: Service, id: Path<u64>) -> Result<HttpResponse, ApiError> {
    let alerts = service(&alerts)?;
    let rule = find(alerts, *id).await?;
    Ok(HttpResponse::Ok().json(rule_json(&rule, alerts.evaluated_at(rule.id))))
}

#[utoipa::path(delete, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = u64, Path, description = "The rule's id")),
    responses(
        (status = 204, description = "Deleted, with its alerts and deliveries (pending ones are not sent)"),
        (status = 400, description = "A bad id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rule", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_rule(alerts: Service, id: Path<u64>) -> Result<HttpResponse, ApiError> {
    let alerts = service(&alerts)?;
    match alerts.book().delete_rule(*id).await? {
        true => Ok(HttpResponse::NoContent().finish()),
        false => Err(ApiError::NotFound(format!("no alert rule {}", *id))),
    }
}

/// The page's limit and cursor (`limit` 1 to 1000, default 100; `cursor`
/// the last id of the previous page).
fn page(params: &Params) -> Result<(usize, Option<u64>), ApiError> {
    let limit = params.count("limit", MAX_PAGE)?.unwrap_or(100);
    let after = params
        .get("cursor")?
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| ApiError::parameter("cursor", "must be the next_cursor of a page"))
        })
        .transpose()?;
    Ok((limit, after))
}

fn next_cursor<T>(items: &mut Vec<T>, limit: usize, id: impl Fn(&T) -> u64) -> Option<String> {
    let more = items.len() > limit;
    items.truncate(limit);
    more.then(|| items.last().map(|x| id(x).to_string()))
        .flatten()
}

#[utoipa::path(get, path = "/v1/alerts/{id}/events", tag = "alerts",
    params(
        ("id" = u64, Path, description = "The rule's id"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The rule's alerts, oldest first; each is the body of its webhook", body = AlertEventPage),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rule", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rule_events(
    alerts: Service,
    id: Path<u64>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let alerts = service(&alerts)?;
    let (limit, after) = page(&params)?;
    let rule = find(alerts, *id).await?;
    let mut items = alerts.book().alerts(rule.id, after, limit + 1).await?;
    let next = next_cursor(&mut items, limit, |a| a.id);
    Ok(HttpResponse::Ok().json(json!({ "events": items, "next_cursor": next })))
}

#[utoipa::path(get, path = "/v1/alerts/{id}/deliveries", tag = "alerts",
    params(
        ("id" = u64, Path, description = "The rule's id"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "The rule's webhook deliveries, oldest first, with their state", body = DeliveryPage),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rule", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rule_deliveries(
    alerts: Service,
    id: Path<u64>,
    params: Params,
) -> Result<HttpResponse, ApiError> {
    let alerts = service(&alerts)?;
    let (limit, after) = page(&params)?;
    let rule = find(alerts, *id).await?;
    let mut items = alerts.book().deliveries(rule.id, after, limit + 1).await?;
    let next = next_cursor(&mut items, limit, |d| d.id);
    let items: Vec<Value> = items
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(d).expect("a delivery serialises");
            // The body is the alert, listed by /events.
            v.as_object_mut().map(|m| m.remove("body"));
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "deliveries": items, "next_cursor": next })))
}

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create_rule, list_rules, get_rule, delete_rule, rule_events, rule_deliveries),
    components(schemas(
        AlertRuleBody, AlertRule, AlertRuleCreated, AlertRuleList, AlertEvent, AlertEventPage,
        Delivery, DeliveryPage, Metric, Direction, PersonKind, DeliveryState,
    )),
    tags((name = "alerts", description = "Alert rules, their alerts and webhook deliveries (admin)")),
)]
pub(super) struct AlertsApi;

// ---------------------------------------------------------------------------
// Wire shapes (schemas only).

/// What a rule watches: the score (0 to 100) or its 7-day trend (points).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Score,
    #[serde(rename = "trend_7d")]
    Trend7d,
}

/// Which side of the threshold alerts.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Below,
    Above,
}

/// A person's kind.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonKind {
    Consumer,
    Influencer,
}

/// Where a delivery is.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

/// A rule as sent.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AlertRuleBody {
    /// The brand whose relationships it watches; absent or null: every brand.
    pub brand: Option<String>,
    /// Only relationships of people of this kind.
    pub kind: Option<PersonKind>,
    pub metric: Metric,
    pub direction: Direction,
    /// Crossing it (strictly) to `direction`'s side makes a relationship pending.
    pub threshold: f64,
    /// Hysteresis: after firing, a relationship re-arms once the value is back
    /// at or past this (at or above `threshold` for `below`, at or below for `above`).
    pub rearm: f64,
    /// Seconds, in event time, the value must stay past the threshold before
    /// the alert fires (default 0, at most 30 days).
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub dwell_seconds: Option<u64>,
    /// http(s) URL the alerts are POSTed to; loopback, private and
    /// link-local addresses are refused unless the server allows them.
    #[schema(max_length = 2048)]
    pub webhook_url: String,
}

/// A stored rule.
#[derive(Serialize, ToSchema)]
pub struct AlertRule {
    pub id: u64,
    pub brand: Option<String>,
    pub kind: Option<PersonKind>,
    pub metric: Metric,
    pub direction: Direction,
    pub threshold: f64,
    pub rearm: f64,
    pub dwell_seconds: u64,
    pub webhook_url: String,
    pub created_at: DateTime<Utc>,
    /// When this server last evaluated it (null: not yet since it started).
    pub evaluated_at: Option<DateTime<Utc>>,
}

/// A rule just stored, with its secret (shown only here).
#[derive(Serialize, ToSchema)]
pub struct AlertRuleCreated {
    #[serde(flatten)]
    pub rule: AlertRule,
    /// The key of its webhooks' `Fusion-Signature` (HMAC-SHA256 of `t.body`).
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct AlertRuleList {
    pub alerts: Vec<AlertRule>,
}

/// An alert: one relationship crossing a rule's threshold (also the body
/// of its webhook).
#[derive(Serialize, ToSchema)]
pub struct AlertEvent {
    pub id: u64,
    /// The rule's id.
    pub rule: u64,
    pub person: String,
    pub brand: String,
    /// The person's kind.
    pub kind: String,
    pub metric: Metric,
    pub direction: Direction,
    pub threshold: f64,
    /// The value when it fired.
    pub value: f64,
    /// When the value crossed the threshold.
    pub crossed_at: DateTime<Utc>,
    /// When it fired (the dwell after `crossed_at`).
    pub fired_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertEventPage {
    pub events: Vec<AlertEvent>,
    pub next_cursor: Option<String>,
}

/// One webhook delivery of the outbox.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: u64,
    pub rule: u64,
    /// The alert's id.
    pub alert: u64,
    pub url: String,
    /// Sent as `Fusion-Idempotency-Key` on every try.
    pub idempotency_key: String,
    pub state: DeliveryState,
    /// Tries made so far.
    pub tries: u32,
    /// When it is tried next (pending only).
    pub next_attempt: DateTime<Utc>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Why the last try failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

/// Keeps the wire enums and the store's in step (a unit test compares
/// their names).
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn wire_enums_name_the_stores_values() {
        use crate::store::alerts as s;
        let names = |v: Value| v.as_str().unwrap().to_string();
        let pairs: BTreeMap<String, String> = [
            (json!(s::Metric::Score), json!(Metric::Score)),
            (json!(s::Metric::Trend7d), json!(Metric::Trend7d)),
            (json!(s::Direction::Below), json!(Direction::Below)),
            (json!(s::Direction::Above), json!(Direction::Above)),
            (
                json!(s::DeliveryState::Pending),
                json!(DeliveryState::Pending),
            ),
            (
                json!(s::DeliveryState::Delivered),
                json!(DeliveryState::Delivered),
            ),
            (json!(s::DeliveryState::Dead), json!(DeliveryState::Dead)),
        ]
        .into_iter()
        .map(|(a, b)| (names(a), names(b)))
        .collect();
        for (store, wire) in pairs {
            assert_eq!(store, wire);
        }
    }
}
