//! The outermost middleware: gives every request an id (a sane incoming
//! `X-Request-Id`, else a fresh one), runs it inside a tracing span that
//! carries the id, the route pattern and (once known) the key id, writes one
//! access-log line and the latency histogram, returns the id in
//! `X-Request-Id`, and adds it as `request_id` to every problem+json body,
//! whoever produced it (a handler, the edge checks, actix's own errors).
//!
//! Logs and metrics name the route pattern, never the raw path: paths hold
//! people's ids.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Largest problem body rewritten (ours are a few hundred bytes).
const MAX_PROBLEM: usize = 256 * 1024;

/// The request's id, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An incoming id is kept if it is 1 to 128 characters of `[A-Za-z0-9._:-]`
/// (anything else could forge log lines or headers); else one is made.
fn request_id(req: &ServiceRequest) -> String {
    let sane = |s: &str| {
        (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    match req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if sane(id) => id.to_string(),
        _ => crate::auth::hex(&crate::auth::random_bytes()[..12]),
    }
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = %route,
        key_id = tracing::field::Empty,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    // Inner layers answer refusals as responses; an `Err` here comes from
    // actix itself (a CORS preflight it refuses) and carries no problem body.
    let res = match next.call(req).instrument(span.clone()).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(err) => {
            span.in_scope(|| tracing::info!(target: "fusion::http", error = %err, "refused"));
            return Err(err);
        }
    };
    let status = res.status();
    let elapsed = started.elapsed();
    metrics::histogram!(
        crate::telemetry::HTTP_SECONDS,
        "method" => method.to_string(),
        "route" => route,
        "status" => status.as_u16().to_string(),
    )
    .record(elapsed.as_secs_f64());
    if matches!(status.as_u16(), 401 | 403 | 421 | 429) {
        metrics::counter!(crate::telemetry::REFUSALS, "status" => status.as_u16().to_string())
            .increment(1);
    }
    span.in_scope(|| {
        tracing::info!(
            target: "fusion::http",
            status = status.as_u16(),
            ms = elapsed.as_secs_f64() * 1e3,
            "answered"
        );
    });
    let mut res = with_request_id(res, &id).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    Ok(res)
}

/// Adds `request_id` to a problem+json body.
async fn with_request_id(res: ServiceResponse<BoxBody>, id: &str) -> ServiceResponse<BoxBody> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/problem+json"));
    if !is_problem {
        return res;
    }
    let (req, res) = res.into_parts();
    let (res, body) = res.into_parts();
    let bytes = match actix_web::body::to_bytes_limited(body, MAX_PROBLEM).await {
        Ok(Ok(bytes)) => bytes,
        _ => {
            tracing::error!("cannot read a problem body to add the request id");
            let res = super::ApiError::Internal.error_response();
            return ServiceResponse::new(req, res);
        }
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut problem)) => {
            problem.insert("request_id".into(), id.into());
            serde_json::to_vec(&problem)
                .unwrap_or_else(|_| bytes.to_vec())
                .into()
        }
        _ => bytes,
    };
    let mut res = res.set_body(BoxBody::new(body));
    // The length changed; actix sets it again from the body.
    res.headers_mut().remove(header::CONTENT_LENGTH);
    ServiceResponse::new(req, res)
}
