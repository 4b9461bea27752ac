//! Conditional GET for the read routes the dashboard polls: an `ETag` from
//! the engine's state version and the request (path and query), and `304
//! Not Modified` for an `If-None-Match` that still holds. Owns no answer:
//! it wraps the handlers and never looks into their bodies.
//!
//! An answer of these routes is a function of the state (which changes only
//! when its version does), the request, and, for a request without `at`,
//! the clock (scores decay towards 50 as time passes). So a request without
//! `at` carries the current minute in its tag: a poll gets `304` while no
//! event has been folded and the minute has not turned, and between minutes
//! only decay moves, which no dashboard shows below a tenth of a point.
//! `/v1/relationships/{person}/{brand}` keeps its own cached ETag (cache.rs).
//! A provisional answer (`position::provisional`) gets no tag.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::engine::Engine;
use crate::store::EventStore;

/// The route patterns (as registered) whose GET answers carry an ETag here.
pub const POLLED: [&str; 8] = [
    "/v1/brands",
    "/v1/brands/{brand}",
    "/v1/brands/{brand}/relationships",
    "/v1/entities/{id}",
    "/v1/entities/{id}/events",
    "/v1/entities/{id}/followers",
    "/v1/relationships/{person}/{brand}/history",
    "/v1/relationships/{person}/{brand}/history/events",
];

/// Versions restart at zero with every process, so a tag carries a
/// per-process nonce: a tag from a former process never matches.
fn nonce() -> u64 {
    static NONCE: OnceLock<u64> = OnceLock::new();
    *NONCE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    })
}

/// The tag of an answer to `path_and_query` at state `version`; `minute`
/// is the current minute for a request without `at`, else `None`.
pub fn tag(version: u64, path_and_query: &str, minute: Option<i64>) -> String {
    let mut h = DefaultHasher::new();
    path_and_query.hash(&mut h);
    minute.hash(&mut h);
    format!("\"{:x}-{:x}-{:x}\"", nonce(), version, h.finish())
}

/// Whether an `If-None-Match` value names `tag` (a list, or `*`).
fn matches(if_none_match: &str, tag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == tag)
}

/// Whether an answer gets a tag: a 200 that is not provisional
/// (`position::provisional` sets `Cache-Control: no-store`: its bits change
/// while the version stays, so a 304 would keep them past the change).
fn taggable(status: StatusCode, headers: &header::HeaderMap) -> bool {
    status == StatusCode::OK
        && headers
            .get(header::CACHE_CONTROL)
            .is_none_or(|v| v.as_bytes() != super::position::NO_STORE.as_bytes())
}

/// The middleware (inside `authorize`: a caller gets a 304 only where it
/// would get the answer).
pub async fn conditional<S: EventStore>(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let polled = req.method() == Method::GET
        && req
            .match_pattern()
            .is_some_and(|p| POLLED.contains(&p.as_str()));
    let engine = req.app_data::<web::Data<Engine<S>>>();
    let (true, Some(engine)) = (polled, engine) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // The version is read before the handler runs: an answer is never
    // tagged newer than the state it was computed from.
    let version = engine.version();
    let query = req.query_string();
    let has_at = query.split('&').any(|p| p == "at" || p.starts_with("at="));
    let minute = (!has_at).then(|| chrono::Utc::now().timestamp().div_euclid(60));
    let path_and_query = format!("{}?{query}", req.path());
    let tag = tag(version, &path_and_query, minute);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches(v, &tag));
    if fresh {
        let answer = HttpResponse::NotModified()
            .insert_header((header::ETAG, tag))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .finish();
        return Ok(req.into_response(answer).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    if taggable(res.status(), res.headers())
        && let Ok(value) = header::HeaderValue::from_str(&tag)
    {
        res.headers_mut().insert(header::ETAG, value);
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_changes_with_the_version_the_query_and_the_minute() {
        let t = tag(1, "/v1/brands?q=a", None);
        assert_eq!(t, tag(1, "/v1/brands?q=a", None));
        assert_ne!(t, tag(2, "/v1/brands?q=a", None));
        assert_ne!(t, tag(1, "/v1/brands?q=b", None));
        assert_ne!(t, tag(1, "/v1/brands?q=a", Some(7)));
    }

    /// Red team h33, finding 2: a listing evaluated in batch while the live
    /// series caught up was tagged with the state version, which does not
    /// move at the catch-up, so a poll got 304 and kept the stand-in's bits.
    #[test]
    fn a_provisional_answer_gets_no_tag() {
        let mut headers = header::HeaderMap::new();
        assert!(taggable(StatusCode::OK, &headers));
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static(super::super::position::NO_STORE),
        );
        assert!(!taggable(StatusCode::OK, &headers));
        assert!(!taggable(StatusCode::NOT_FOUND, &header::HeaderMap::new()));
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_the_star() {
        assert!(matches("\"a\"", "\"a\""));
        assert!(matches("\"x\", W/\"a\"", "\"a\""));
        assert!(matches("*", "\"a\""));
        assert!(!matches("\"b\"", "\"a\""));
    }
}
