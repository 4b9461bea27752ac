//! Log positions on answers (issue #11): every answer carries the log
//! position it reflects in `Fusion-Position`, and a request may pass
//! `min_position` (with `wait`, seconds, default 5) to be answered only
//! from a state that has folded the log that far: read-your-writes across
//! servers of one log. Owns the header, the two parameters and the wait;
//! decides nothing about what a handler answers.
//!
//! The position is that of the state when the request came in (read before
//! the handler runs, so an answer never claims more than it saw), unless
//! the handler says it reflects another (`reflects`): an ingest answer its
//! events' position, a ranking the state it was built from. Handlers read
//! the wanted position with `min_position` (rankings wait for it too).
//!
//! A handler also says when its answer is provisional (`provisional`): a
//! stand-in whose bits will change while the state's version does not (a
//! ranking evaluated in batch while the live series catches up,
//! `Ranking::settled`). Such an answer carries `Cache-Control: no-store`,
//! and the conditional-GET layer (`etag.rs`) gives it no tag, so no client
//! or cache keeps it past the catch-up (red team h33, finding 2).

use std::cell::Cell;

use actix_web::ResponseError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;

use super::error::ApiError;
use super::params::Params;
use crate::engine::Engine;
use crate::store::EventStore;

/// `Cache-Control` of a provisional answer (`provisional`).
pub const NO_STORE: &str = "no-store";

/// The response header.
pub const POSITION_HEADER: &str = "fusion-position";

/// How long `min_position` waits without `wait`, seconds.
pub const DEFAULT_WAIT_SECONDS: f64 = 5.0;

/// Longest `wait` accepted, seconds.
pub const MAX_WAIT_SECONDS: f64 = 60.0;

/// What the request asked for and what its handler said it reflects.
struct Read {
    min: u64,
    reflects: Cell<Option<u64>>,
    provisional: Cell<bool>,
}

tokio::task_local! {
    static READ: Read;
}

/// The `min_position` of the request being handled (0 without one).
pub fn min_position() -> u64 {
    READ.try_with(|r| r.min).unwrap_or(0)
}

/// Says that the answer being made reflects `position` (not the state's
/// position when the request came in).
pub fn reflects(position: u64) {
    let _ = READ.try_with(|r| r.reflects.set(Some(position)));
}

/// Says that the answer being made is provisional (module docs): it is
/// sent with `Cache-Control: no-store` and no `ETag`.
pub fn provisional() {
    let _ = READ.try_with(|r| r.provisional.set(true));
}

/// `min_position` and `wait` of a query.
fn wanted(query: &str) -> Result<Option<(u64, std::time::Duration)>, ApiError> {
    let params = Params::parse(query);
    let Some(min) = params.get("min_position")? else {
        return Ok(None);
    };
    let min = min.parse::<u64>().map_err(|_| {
        ApiError::parameter(
            "min_position",
            "must be a log position: a whole number from a `Fusion-Position` header",
        )
    })?;
    let wait = params
        .number("wait", 0.0, MAX_WAIT_SECONDS)?
        .unwrap_or(DEFAULT_WAIT_SECONDS);
    Ok(Some((min, std::time::Duration::from_secs_f64(wait))))
}

/// The middleware (module docs); inside `authorize`, so only a caller who
/// may read waits.
pub async fn reflect<S: EventStore>(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let Some(engine) = req.app_data::<web::Data<Engine<S>>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let waited = match wanted(req.query_string()) {
        Ok(None) => Ok(0),
        Ok(Some((min, wait))) => engine
            .wait_for_position(min, wait)
            .await
            .map(|_| min)
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let min = match waited {
        Ok(min) => min,
        Err(e) => {
            let mut answer = e.error_response();
            answer.headers_mut().insert(
                HeaderName::from_static(POSITION_HEADER),
                HeaderValue::from(engine.position()),
            );
            return Ok(req.into_response(answer).map_into_right_body());
        }
    };
    let seen = engine.position();
    let read = Read {
        min,
        reflects: Cell::new(None),
        provisional: Cell::new(false),
    };
    let (mut res, reflected, provisional) = READ
        .scope(read, async {
            let res = next.call(req).await;
            let (reflected, provisional) = READ.with(|r| (r.reflects.get(), r.provisional.get()));
            (res, reflected, provisional)
        })
        .await;
    if let Ok(res) = res.as_mut() {
        let position = reflected.unwrap_or(seen);
        res.headers_mut().insert(
            HeaderName::from_static(POSITION_HEADER),
            HeaderValue::from(position),
        );
        if provisional {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
        }
    }
    Ok(res?.map_into_left_body())
}
