//! The HTTP service (actix-web): routes, wire DTOs, API errors, and the edge
//! around them (who may call, how fast, from where; request ids, logs and
//! metrics; TLS). The contract is ../shared/API.md. Handlers read the clock
//! (the default `at` is now) and pass time down; nothing below this module
//! does.
//!
//! Middleware, outermost first: `observe` (request id, span, access log,
//! latency, `request_id` in problem bodies), `limits::check_edge` (Host and
//! Origin), CORS (only with allowed origins configured), `auth::authorize`
//! (credentials, role, CSRF, rate limits).

pub mod auth;
mod cache;
mod error;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod openapi;
mod privacy;
mod routes;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};

pub use auth::Security;
pub use cache::ReadCache;
pub use error::{ApiError, ProblemItem};

use crate::engine::Engine;
use crate::store::EventStore;

/// Limits of the service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted, in bytes (413 past it).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 * 1024 * 1024,
        }
    }
}

/// How the service listens.
pub struct Options {
    pub bind: SocketAddr,
    pub limits: Limits,
    /// HTTPS with this configuration; plain HTTP without.
    pub tls: Option<rustls::ServerConfig>,
    /// Serve `/metrics` here instead of on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    /// Open connections per worker thread before new ones wait (actix).
    pub max_connections: usize,
    /// Seconds requests in flight get to finish after SIGTERM.
    pub shutdown_timeout: u64,
}

/// Registers every route on an actix app. `cache` is shared by every worker.
/// `/metrics` is registered when `metrics_here`.
pub fn configure<S: EventStore>(
    engine: Arc<Engine<S>>,
    limits: Limits,
    cache: web::Data<ReadCache>,
    security: web::Data<Security>,
    metrics_here: bool,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(engine))
            .app_data(cache)
            .app_data(security)
            .app_data(web::Data::new(limits))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| ApiError::field("query", err.to_string()).into()),
            )
            .app_data(
                web::JsonConfig::default()
                    .limit(1024 * 1024)
                    .error_handler(|err, _| ApiError::field("body", err.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| ApiError::field("path", err.to_string()).into()),
            );
        if metrics_here {
            cfg.route("/metrics", web::get().to(metrics::metrics::<S>));
        }
        routes::register::<S>(cfg);
        openapi::register(cfg);
    }
}

/// CORS for the configured origins (and the service's own, whose pages
/// send `Origin` on their own requests).
fn cors(edge: &limits::Edge) -> actix_cors::Cors {
    let edge = edge.clone();
    actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, _| origin.to_str().is_ok_and(|o| edge.allows_origin(o)))
        .allowed_methods(["GET", "POST", "PUT", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::IF_NONE_MATCH,
        ])
        .allowed_header(auth::CSRF_HEADER)
        .allowed_header(observe::REQUEST_ID_HEADER)
        .expose_headers([
            actix_web::http::header::ETAG,
            actix_web::http::header::RETRY_AFTER,
        ])
        .expose_headers([observe::REQUEST_ID_HEADER])
        .supports_credentials()
        .max_age(600)
}

/// Runs the service until it is stopped. On SIGTERM (or Ctrl-C) it stops
/// accepting, lets the requests in flight finish (up to
/// `shutdown_timeout`), and returns; every acknowledged event is committed
/// by then, since a request is answered only after its commit.
pub async fn serve<S: EventStore>(
    engine: Arc<Engine<S>>,
    security: Arc<Security>,
    options: Options,
) -> std::io::Result<()> {
    metrics::recorder();
    let cache = web::Data::new(ReadCache::default());
    let security = web::Data::from(security);
    let limits = options.limits;
    let metrics_here = options.metrics_bind.is_none();
    let app_engine = Arc::clone(&engine);
    let server = HttpServer::new(move || {
        let with_cors = !security.edge.cors_origins.is_empty();
        App::new()
            .wrap(from_fn(auth::authorize))
            .wrap(Condition::new(with_cors, cors(&security.edge)))
            .wrap(from_fn(limits::check_edge))
            .wrap(from_fn(observe::observe))
            .configure(configure(
                Arc::clone(&app_engine),
                limits,
                cache.clone(),
                security.clone(),
                metrics_here,
            ))
    })
    .on_connect(|_, ext| {
        ext.insert(crate::telemetry::ConnectionGauge::open());
    })
    .max_connections(options.max_connections)
    .shutdown_timeout(options.shutdown_timeout);
    let server = match options.tls {
        Some(tls) => server.bind_rustls_0_23(options.bind, tls)?,
        None => server.bind(options.bind)?,
    }
    .run();
    let upkeep = actix_web::rt::spawn(metrics::upkeep());
    let result = match options.metrics_bind {
        None => server.await,
        Some(addr) => {
            let metrics_engine = Arc::clone(&engine);
            let scraper = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::from(Arc::clone(&metrics_engine)))
                    .route("/metrics", web::get().to(metrics::metrics::<S>))
            })
            .workers(1)
            .bind(addr)?
            .run();
            futures_util::future::try_join(server, scraper)
                .await
                .map(|_| ())
        }
    };
    upkeep.abort();
    result
}
