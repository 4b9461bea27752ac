//! The HTTP service (actix-web): routes, wire DTOs, API errors. The contract
//! is ../shared/API.md. Handlers read the clock (the default `at` is now) and
//! pass time down; nothing below this module does.

mod cache;
mod error;
mod impact;
mod routes;

use std::sync::Arc;

use actix_web::{App, HttpServer, web};

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

/// Registers every route on an actix app. `cache` is shared by every worker.
pub fn configure<S: EventStore>(
    engine: Arc<Engine<S>>,
    limits: Limits,
    cache: web::Data<ReadCache>,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(engine))
            .app_data(cache)
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
        routes::register::<S>(cfg);
    }
}

/// Runs the service until it is stopped (Ctrl-C / SIGTERM).
pub async fn serve<S: EventStore>(
    engine: Arc<Engine<S>>,
    bind: &str,
    limits: Limits,
) -> std::io::Result<()> {
    let cache = web::Data::new(ReadCache::default());
    HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("fusion::http"))
            .configure(configure(Arc::clone(&engine), limits, cache.clone()))
    })
    .bind(bind)?
    .run()
    .await
}
