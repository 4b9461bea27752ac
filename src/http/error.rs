//! Problems: the one mapping from every lower error to an HTTP status and an
//! `application/problem+json` body (RFC 9457), and the net that turns any
//! other error answer (an unknown route, a wrong method, a framework error)
//! into one. Every kind of problem has its own stable `type`, a relative URI
//! `/problems/<slug>` listed with its status in docs/problems.md, so clients
//! can branch on it. A 5xx body reveals nothing; the log has the whole cause.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::engine::EngineError;
use crate::ingest::{BodyError, Rejection};
use crate::store::StoreError;

/// Seconds a client is told to wait before retrying a 503 or 507.
const RETRY_AFTER_SECS: u32 = 5;

/// Every kind of problem the service answers with. The `type` of a problem
/// is `/problems/` and the slug; docs/problems.md lists them all (a test
/// checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: a query or path parameter is invalid; `errors[0].field` names it.
    InvalidParameter,
    /// 400: the body is not JSON of the expected shape; nothing was stored.
    MalformedBody,
    /// 400: a field of a JSON body (not an event) is invalid.
    InvalidBody,
    /// 400: a request the framework could not read, otherwise unclassified.
    BadRequest,
    /// 404: no such relationship, brand or entity.
    NotFound,
    /// 404: no route has this path.
    UnknownRoute,
    /// 405: the route exists, the method does not (`Allow` lists the methods).
    MethodNotAllowed,
    /// 408: the body came too slowly.
    RequestTimeout,
    /// 413: the body (or its decompressed form) is larger than the limit.
    BodyTooLarge,
    /// 415: the Content-Type is not one the route reads.
    UnsupportedMediaType,
    /// 415: the Content-Encoding is not identity, gzip or zstd.
    UnsupportedEncoding,
    /// 422: an atomic request held invalid events; nothing was stored.
    InvalidEvents,
    /// 422: an entity cannot take the kind asked for.
    EntityConflict,
    /// 401: no API key, or one that is not valid (unknown, expired, revoked).
    Unauthorized,
    /// 403: the key's role does not allow the route; or a session request
    /// that changes state lacks its CSRF token; or a foreign `Origin`.
    Forbidden,
    /// 421: a `Host` the service does not answer for.
    MisdirectedRequest,
    /// 429: past a rate limit; retry after `Retry-After`.
    RateLimited,
    /// 503: too many request bodies are in flight; retry after `Retry-After`.
    Busy,
    /// 503: the event store cannot be reached; retry after `Retry-After`.
    StoreUnavailable,
    /// 503: `/readyz` says the service cannot serve yet.
    NotReady,
    /// 507: the event store is out of space; retry after `Retry-After`.
    StoreFull,
    /// 503: back-pressure: events wait to be folded past the bound; nothing
    /// was stored; retry after `Retry-After` (1 s).
    Overloaded,
    /// 504: `min_position` was not reached within `wait`.
    PositionTimeout,
    /// 500: a fault of the service; the log has the cause.
    Internal,
    /// Any other error status the framework answers with (the status says
    /// which); kept so that even those are problems.
    HttpError,
    /// 400: events of a simulation are invalid (`errors`: index, id, field).
    InvalidSimulatedEvents,
    /// 413: a simulation holds more events than it takes.
    TooManyEvents,
    /// 422: a simulation would take more work than its bound.
    SimulationTooCostly,
}

impl ProblemKind {
    /// Every kind, for the documentation check.
    pub const ALL: [ProblemKind; 28] = [
        Self::InvalidParameter,
        Self::MalformedBody,
        Self::InvalidBody,
        Self::BadRequest,
        Self::NotFound,
        Self::UnknownRoute,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::BodyTooLarge,
        Self::UnsupportedMediaType,
        Self::UnsupportedEncoding,
        Self::InvalidEvents,
        Self::EntityConflict,
        Self::Unauthorized,
        Self::Forbidden,
        Self::MisdirectedRequest,
        Self::RateLimited,
        Self::Busy,
        Self::StoreUnavailable,
        Self::NotReady,
        Self::StoreFull,
        Self::Overloaded,
        Self::PositionTimeout,
        Self::Internal,
        Self::HttpError,
        Self::InvalidSimulatedEvents,
        Self::TooManyEvents,
        Self::SimulationTooCostly,
    ];

    /// The last segment of the type URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::InvalidParameter => "invalid-parameter",
            Self::MalformedBody => "malformed-body",
            Self::InvalidBody => "invalid-body",
            Self::BadRequest => "bad-request",
            Self::NotFound => "not-found",
            Self::UnknownRoute => "unknown-route",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::RequestTimeout => "request-timeout",
            Self::BodyTooLarge => "body-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::InvalidEvents => "invalid-events",
            Self::EntityConflict => "entity-conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::MisdirectedRequest => "misdirected-request",
            Self::RateLimited => "rate-limited",
            Self::Busy => "busy",
            Self::StoreUnavailable => "store-unavailable",
            Self::NotReady => "not-ready",
            Self::StoreFull => "store-full",
            Self::Overloaded => "overloaded",
            Self::PositionTimeout => "position-timeout",
            Self::Internal => "internal",
            Self::HttpError => "http-error",
            Self::InvalidSimulatedEvents => "invalid-simulated-events",
            Self::TooManyEvents => "too-many-events",
            Self::SimulationTooCostly => "simulation-too-costly",
        }
    }

    /// The `type` member: `/problems/<slug>`.
    pub fn type_uri(self) -> String {
        format!("/problems/{}", self.slug())
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidParameter => "Invalid parameter",
            Self::MalformedBody => "Malformed body",
            Self::InvalidBody => "Invalid body",
            Self::BadRequest => "Bad request",
            Self::NotFound => "Not found",
            Self::UnknownRoute => "Unknown route",
            Self::MethodNotAllowed => "Method not allowed",
            Self::RequestTimeout => "Request timeout",
            Self::BodyTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::UnsupportedEncoding => "Unsupported content encoding",
            Self::InvalidEvents => "Invalid events",
            Self::EntityConflict => "Entity conflict",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::MisdirectedRequest => "Misdirected request",
            Self::RateLimited => "Too many requests",
            Self::Busy => "Busy",
            Self::StoreUnavailable => "Service unavailable",
            Self::NotReady => "Not ready",
            Self::StoreFull => "Insufficient storage",
            Self::Overloaded => "Overloaded",
            Self::PositionTimeout => "Position not reached",
            Self::Internal => "Internal error",
            Self::HttpError => "HTTP error",
            Self::InvalidSimulatedEvents => "Invalid simulated events",
            Self::TooManyEvents => "Too many events",
            Self::SimulationTooCostly => "Simulation too costly",
        }
    }

    /// The kind of an error answer nobody shaped (the framework's own).
    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::BadRequest,
            404 => Self::UnknownRoute,
            405 => Self::MethodNotAllowed,
            408 => Self::RequestTimeout,
            413 => Self::BodyTooLarge,
            415 => Self::UnsupportedMediaType,
            500..=599 => Self::Internal,
            _ => Self::HttpError,
        }
    }
}

/// One problem with one field, optionally of one event of the request.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub field: String,
    pub message: String,
}

impl ProblemItem {
    fn field(field: &str, message: &str) -> Self {
        Self {
            index: None,
            id: None,
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// Every error the handlers answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter; the item names it.
    #[error("invalid parameter `{}`: {}", .0.field, .0.message)]
    InvalidParameter(ProblemItem),
    /// A field of a JSON body that is not an event body.
    #[error("invalid field `{}`: {}", .0.field, .0.message)]
    InvalidBody(ProblemItem),
    #[error("{0}; nothing was stored")]
    Body(#[from] BodyError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    InvalidEvents(String, Vec<ProblemItem>),
    #[error("{0}")]
    EntityConflict(String),
    #[error("too many request bodies are being read; retry in a few seconds")]
    Busy,
    #[error("the event store is unavailable; retry later")]
    Unavailable,
    /// 503 with Retry-After: the engine cannot serve now (its state is
    /// being rebuilt after a failed fold); the detail says why.
    #[error("{0}")]
    NotReady(String),
    /// 507 with Retry-After: the store has no space left; nothing of the
    /// request was stored.
    #[error("the event store is full; nothing was stored, retry later")]
    StoreFull,
    /// 503 with `Retry-After: 1`: back-pressure (the detail says how full
    /// the fold queue is); nothing of the request was stored.
    #[error("{0}")]
    Overloaded(String),
    /// 504: `min_position` not reached in time; the detail says how far.
    #[error("{0}")]
    PositionTimeout(String),
    /// No credentials, or ones that are not valid (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials without the role the route needs, a missing CSRF
    /// token, or a foreign `Origin` (403).
    #[error("{0}")]
    Forbidden(String),
    /// Past a rate limit; the client may retry after this many seconds (429).
    #[error("too many requests; retry after {0} s")]
    TooManyRequests(u64),
    /// A `Host` this service does not answer for (421).
    #[error("{0}")]
    Misdirected(String),
    #[error("internal error")]
    Internal,
    /// Invalid events of a simulation (400), per event and field.
    #[error("{0}")]
    InvalidSimulatedEvents(String, Vec<ProblemItem>),
    /// A simulation with more events than it takes (413).
    #[error("{0}")]
    TooManyEvents(String),
    /// A simulation past its work bound (422).
    #[error("{0}")]
    SimulationTooCostly(String),
}

impl ApiError {
    /// 400 on a query or path parameter.
    pub fn parameter(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidParameter(ProblemItem::field(field, &message.into()))
    }

    /// 400 on a field of a JSON body.
    pub fn body_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidBody(ProblemItem::field(field, &message.into()))
    }

    /// 422: an atomic request with `count` invalid events, the first listed.
    pub fn atomic(count: usize, rejected: &[Rejection]) -> Self {
        ApiError::InvalidEvents(
            format!(
                "{count} of the events are invalid and the request was atomic; nothing was stored"
            ),
            rejection_items(rejected),
        )
    }

    pub fn kind(&self) -> ProblemKind {
        match self {
            ApiError::InvalidParameter(_) => ProblemKind::InvalidParameter,
            ApiError::InvalidBody(_) => ProblemKind::InvalidBody,
            ApiError::Body(BodyError::TooLarge { .. }) => ProblemKind::BodyTooLarge,
            ApiError::Body(_) => ProblemKind::MalformedBody,
            ApiError::NotFound(_) => ProblemKind::NotFound,
            ApiError::RequestTimeout(_) => ProblemKind::RequestTimeout,
            ApiError::UnsupportedMediaType(_) => ProblemKind::UnsupportedMediaType,
            ApiError::UnsupportedEncoding(_) => ProblemKind::UnsupportedEncoding,
            ApiError::InvalidEvents(..) => ProblemKind::InvalidEvents,
            ApiError::EntityConflict(_) => ProblemKind::EntityConflict,
            ApiError::Busy => ProblemKind::Busy,
            ApiError::Unavailable => ProblemKind::StoreUnavailable,
            ApiError::NotReady(_) => ProblemKind::NotReady,
            ApiError::StoreFull => ProblemKind::StoreFull,
            ApiError::Overloaded(_) => ProblemKind::Overloaded,
            ApiError::PositionTimeout(_) => ProblemKind::PositionTimeout,
            ApiError::Unauthorized(_) => ProblemKind::Unauthorized,
            ApiError::Forbidden(_) => ProblemKind::Forbidden,
            ApiError::TooManyRequests(_) => ProblemKind::RateLimited,
            ApiError::Misdirected(_) => ProblemKind::MisdirectedRequest,
            ApiError::Internal => ProblemKind::Internal,
            ApiError::InvalidSimulatedEvents(..) => ProblemKind::InvalidSimulatedEvents,
            ApiError::TooManyEvents(_) => ProblemKind::TooManyEvents,
            ApiError::SimulationTooCostly(_) => ProblemKind::SimulationTooCostly,
        }
    }

    fn items(&self) -> Vec<ProblemItem> {
        match self {
            ApiError::InvalidParameter(item) | ApiError::InvalidBody(item) => vec![item.clone()],
            ApiError::InvalidEvents(_, items) | ApiError::InvalidSimulatedEvents(_, items) => {
                items.clone()
            }
            ApiError::Body(e) => {
                let field = match e {
                    BodyError::Malformed { line: Some(l), .. } => format!("line {l}"),
                    _ => "body".to_string(),
                };
                vec![ProblemItem {
                    index: None,
                    id: None,
                    field,
                    message: e.to_string(),
                }]
            }
            _ => Vec::new(),
        }
    }
}

pub fn rejection_items(rejected: &[Rejection]) -> Vec<ProblemItem> {
    rejected
        .iter()
        .flat_map(|r| {
            r.errors.iter().map(|e| ProblemItem {
                index: Some(r.index),
                id: r.id.clone(),
                field: e.field.clone(),
                message: e.message.clone(),
            })
        })
        .collect()
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        crate::telemetry::record_store_error(&e);
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "event store unavailable");
                ApiError::Unavailable
            }
            StoreError::Full(cause) => {
                tracing::warn!(%cause, "event store full");
                ApiError::StoreFull
            }
            StoreError::Internal(cause) => {
                tracing::error!(%cause, "event store failure");
                ApiError::Internal
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::AtomicRejected(rejected) => ApiError::atomic(rejected.len(), &rejected),
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Invalid(m) => ApiError::EntityConflict(m),
            e @ (EngineError::NotReady(_) | EngineError::NotFolded { .. }) => {
                tracing::warn!(cause = %e, "not ready");
                ApiError::NotReady(e.to_string())
            }
            e @ (EngineError::Overloaded { .. } | EngineError::OverloadedWait { .. }) => {
                ApiError::Overloaded(e.to_string())
            }
            e @ EngineError::PositionTimeout { .. } => ApiError::PositionTimeout(e.to_string()),
            EngineError::Internal(cause) | EngineError::TooLarge(cause) => {
                tracing::error!(%cause, "engine failure");
                ApiError::Internal
            }
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[ProblemItem]>::is_empty")]
    errors: &'a [ProblemItem],
    /// Extension members (RFC 9457 3.2): those a route's clients read,
    /// such as Segment's `code` and `message`.
    #[serde(flatten)]
    members: serde_json::Map<String, serde_json::Value>,
}

/// A problem+json answer; 503 and 507 carry `Retry-After`.
pub fn problem(
    kind: ProblemKind,
    status: StatusCode,
    detail: &str,
    errors: &[ProblemItem],
) -> HttpResponse {
    problem_with(kind, status, detail, errors, serde_json::Map::new())
}

/// `problem`, with extension members.
fn problem_with(
    kind: ProblemKind,
    status: StatusCode,
    detail: &str,
    errors: &[ProblemItem],
    members: serde_json::Map<String, serde_json::Value>,
) -> HttpResponse {
    let body = Problem {
        kind: kind.type_uri(),
        title: kind.title(),
        status: status.as_u16(),
        detail,
        errors,
        members,
    };
    let mut resp = HttpResponse::build(status);
    resp.content_type("application/problem+json");
    if matches!(status.as_u16(), 503 | 507) {
        resp.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
    }
    resp.body(serde_json::to_string(&body).unwrap_or_default())
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self.kind() {
            ProblemKind::InvalidParameter
            | ProblemKind::MalformedBody
            | ProblemKind::InvalidBody
            | ProblemKind::InvalidSimulatedEvents
            | ProblemKind::BadRequest => StatusCode::BAD_REQUEST,
            ProblemKind::NotFound | ProblemKind::UnknownRoute => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemKind::BodyTooLarge | ProblemKind::TooManyEvents => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::UnsupportedMediaType | ProblemKind::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ProblemKind::InvalidEvents
            | ProblemKind::EntityConflict
            | ProblemKind::SimulationTooCostly => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            ProblemKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Busy
            | ProblemKind::StoreUnavailable
            | ProblemKind::NotReady
            | ProblemKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProblemKind::PositionTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProblemKind::StoreFull => StatusCode::INSUFFICIENT_STORAGE,
            ProblemKind::Internal | ProblemKind::HttpError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.response_with(serde_json::Map::new())
    }
}

impl ApiError {
    /// The problem answer, with extension members (a route whose clients
    /// read their own error shape: Segment's `code` and `message`).
    pub fn response_with(
        &self,
        members: serde_json::Map<String, serde_json::Value>,
    ) -> HttpResponse {
        let mut resp = problem_with(
            self.kind(),
            self.status_code(),
            &self.to_string(),
            &self.items(),
            members,
        );
        let extra = match self {
            ApiError::TooManyRequests(secs) => Some((header::RETRY_AFTER, secs.to_string())),
            // The fold queue drains in about a second at the rates measured
            // (benches/stream.sh): sooner than the general 5 s.
            ApiError::Overloaded(_) => Some((header::RETRY_AFTER, "1".to_string())),
            ApiError::Unauthorized(_) => Some((header::WWW_AUTHENTICATE, "Bearer".to_string())),
            _ => None,
        };
        if let Some((name, value)) = extra
            && let Ok(value) = header::HeaderValue::from_str(&value)
        {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// The net under every route (`ErrorHandlers` default): an error answer
/// that is not already a problem (the framework's 404 for an unknown path,
/// its 405 for a wrong method, an extractor's error) becomes one, keeping its
/// status and headers (such as `Allow`).
pub fn ensure_problem<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/problem+json"));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let kind = ProblemKind::of_status(status);
    let detail = match kind {
        ProblemKind::UnknownRoute => format!(
            "no route for {}; see ../shared/API.md for the routes",
            res.request().path()
        ),
        ProblemKind::MethodNotAllowed => {
            let allow = res
                .headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!(
                "{} is not allowed on {}; use {allow}",
                res.request().method(),
                res.request().path()
            )
        }
        ProblemKind::Internal => "internal error".to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (req, old) = res.into_parts();
    let mut new = problem(kind, status, &detail, &[]);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let new: HttpResponse<BoxBody> = new;
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, new).map_into_right_body::<B>(),
    ))
}
