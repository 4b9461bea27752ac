//! `ApiError`: the one mapping from every lower error to an HTTP status and an
//! `application/problem+json` body (RFC 9457). A 5xx body reveals nothing;
//! the log has the whole cause.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::engine::EngineError;
use crate::ingest::{BodyError, Rejection};
use crate::store::StoreError;

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

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String, Vec<ProblemItem>),
    #[error("the request body is larger than {0} bytes; split it into smaller requests")]
    TooLarge(usize),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unprocessable(String, Vec<ProblemItem>),
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
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest(
            format!("invalid parameter `{field}`: {message}"),
            vec![ProblemItem {
                index: None,
                id: None,
                field: field.to_string(),
                message,
            }],
        )
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(..) => "bad-request",
            ApiError::TooLarge(_) => "body-too-large",
            ApiError::NotFound(_) => "not-found",
            ApiError::Unprocessable(..) => "invalid-events",
            ApiError::Unavailable => "store-unavailable",
            ApiError::NotReady(_) => "not-ready",
            ApiError::StoreFull => "store-full",
            ApiError::Internal => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(..) => "Bad request",
            ApiError::TooLarge(_) => "Request body too large",
            ApiError::NotFound(_) => "Not found",
            ApiError::Unprocessable(..) => "Invalid events",
            ApiError::Unavailable => "Service unavailable",
            ApiError::NotReady(_) => "Not ready",
            ApiError::StoreFull => "Insufficient storage",
            ApiError::Internal => "Internal error",
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

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let field = match &e {
            BodyError::Malformed { line: Some(l), .. } => format!("line {l}"),
            _ => "body".to_string(),
        };
        ApiError::BadRequest(
            format!("{e}; nothing was stored"),
            vec![ProblemItem {
                index: None,
                id: None,
                field,
                message: e.to_string(),
            }],
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
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
            EngineError::AtomicRejected(rejected) => ApiError::Unprocessable(
                format!(
                    "{} of the events are invalid and the request was atomic; nothing was stored",
                    rejected.len()
                ),
                rejection_items(&rejected),
            ),
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Invalid(m) => ApiError::Unprocessable(m, Vec::new()),
            e @ (EngineError::NotReady(_) | EngineError::NotFolded { .. }) => {
                tracing::warn!(cause = %e, "not ready");
                ApiError::NotReady(e.to_string())
            }
            EngineError::Internal(cause) => {
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
    detail: String,
    #[serde(skip_serializing_if = "<[ProblemItem]>::is_empty")]
    errors: &'a [ProblemItem],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(..) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StoreFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let errors: &[ProblemItem] = match self {
            ApiError::BadRequest(_, items) | ApiError::Unprocessable(_, items) => items,
            _ => &[],
        };
        let status = self.status_code();
        let body = Problem {
            kind: format!("/problems/{}", self.slug()),
            title: self.title(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors,
        };
        let mut resp = HttpResponse::build(status);
        resp.content_type("application/problem+json");
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            resp.insert_header(("Retry-After", "5"));
        }
        resp.body(serde_json::to_string(&body).unwrap_or_default())
    }
}
