//! The HTTP service (actix-web): routes, wire DTOs, API errors. The contract
//! is ../shared/API.md plus docs/api.md. Handlers read the clock (the default
//! `at` is now) and pass time down; nothing below this module does.
//!
//! Every error answer is `application/problem+json` (docs/problems.md): the
//! handlers answer `ApiError`s, and a net under the whole app turns the
//! framework's own error answers (unknown route, wrong method) into problems.
//! Answers that actix-http gives before the app runs (a malformed or
//! oversized request head, a slow head) are the documented exceptions.

mod body;
mod cache;
mod error;
mod impact;
mod params;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::middleware::ErrorHandlers;
use actix_web::{App, HttpServer, web};

pub use body::{BodyBudget, BodyShare, IngestBody};
pub use cache::ReadCache;
pub use error::{ApiError, ProblemItem, ProblemKind};
pub use params::Params;

use crate::engine::Engine;
use crate::ingest::BodyError;
use crate::store::EventStore;

/// Time a client has to send a request head (actix's `client_request_timeout`;
/// actix answers a late head with an empty 408 before the app runs).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a closing connection has to shut down (`client_disconnect_timeout`).
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest JSON body of a route that is not an ingest route (entities).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Limits of the service; `fusion serve` flags set them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted, in bytes, after decompression (413 past it).
    pub max_body: usize,
    /// Bytes of request bodies held at once by all requests together; at
    /// least `max_body`.
    pub max_bodies_in_flight: usize,
    /// Longest wait for the next chunk of a body (408 past it).
    pub body_idle_timeout: Duration,
    /// Longest time to receive a whole body (408 past it).
    pub body_deadline: Duration,
    /// Longest wait for a share of `max_bodies_in_flight` (503 past it).
    pub body_budget_wait: Duration,
    /// Connections served at once, across all workers; more wait in the
    /// listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024 * 1024,
            max_bodies_in_flight: 256 * 1024 * 1024,
            body_idle_timeout: Duration::from_secs(10),
            body_deadline: Duration::from_secs(60),
            body_budget_wait: Duration::from_secs(2),
            max_connections: 4096,
        }
    }
}

/// What every worker of one service shares: the read cache and the body budget.
#[derive(Clone)]
pub struct Shared {
    cache: web::Data<ReadCache>,
    budget: web::Data<BodyBudget>,
}

impl Shared {
    pub fn new(limits: &Limits) -> Self {
        Self {
            cache: web::Data::new(ReadCache::default()),
            budget: web::Data::new(BodyBudget::new(limits.max_bodies_in_flight)),
        }
    }
}

/// The whole app: every route, its shared state, and the net that makes
/// every error answer a problem. `serve` runs it; tests run it in-process.
pub fn app<S: EventStore>(
    engine: Arc<Engine<S>>,
    limits: Limits,
    shared: Shared,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(ErrorHandlers::new().default_handler(error::ensure_problem))
        .configure(configure(engine, limits, shared))
}

/// Registers every route on an actix app, with its state and the error
/// mapping of actix's own extractors.
fn configure<S: EventStore>(
    engine: Arc<Engine<S>>,
    limits: Limits,
    shared: Shared,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        // The model's rate table, for the body extractor's validation (it
        // knows no engine type).
        let currencies = web::Data::new(engine.model().currency.clone());
        cfg.app_data(web::Data::from(engine))
            .app_data(currencies)
            .app_data(shared.cache)
            .app_data(shared.budget)
            .app_data(web::Data::new(limits))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| ApiError::parameter("query", err.to_string()).into()),
            )
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_JSON_BODY)
                    .error_handler(|err, _| json_error(err).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| ApiError::parameter("path", err.to_string()).into()),
            );
        routes::register::<S>(cfg);
    }
}

/// The problem of a JSON body that actix's `Json` extractor refused.
fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("send the body as application/json (UTF-8)".to_string())
        }
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            BodyError::TooLarge {
                limit: MAX_JSON_BODY,
                decoded: false,
            }
            .into()
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::body_field("body", e.to_string())
        }
        other => BodyError::Malformed {
            line: None,
            message: other.to_string(),
        }
        .into(),
    }
}

/// Runs the service until it is stopped (Ctrl-C / SIGTERM).
pub async fn serve<S: EventStore>(
    engine: Arc<Engine<S>>,
    bind: &str,
    limits: Limits,
) -> std::io::Result<()> {
    let shared = Shared::new(&limits);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    HttpServer::new(move || {
        app(Arc::clone(&engine), limits, shared.clone())
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("fusion::http"))
    })
    .workers(workers)
    .max_connections(limits.max_connections.div_ceil(workers).max(1))
    .client_request_timeout(HEAD_TIMEOUT)
    .client_disconnect_timeout(DISCONNECT_TIMEOUT)
    .bind(bind)?
    .run()
    .await
}
