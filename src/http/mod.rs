//! The HTTP service (actix-web): routes, wire DTOs, API errors. The contract
//! is ../shared/API.md plus docs/api.md. Handlers read the clock (the default
//! `at` is now) and pass time down; nothing below this module does.
//!
//! Every error answer is `application/problem+json` (docs/problems.md): the
//! handlers answer `ApiError`s, and a net under the whole app turns the
//! framework's own error answers (unknown route, wrong method) into problems.
//! Answers that actix-http gives before the app runs (a malformed or
//! oversized request head, a slow head) are the documented exceptions.
//!
//! The edge around the routes (issue 12), outermost first: `observe`
//! (request id, span, access log, latency, `request_id` in every problem
//! body), the problem net, `head_as_get` (HEAD on every GET route),
//! `limits::check_edge` (Host and Origin), CORS
//! (only with allowed origins configured), `auth::authorize` (credentials,
//! role, CSRF, rate limits), `etag::conditional` (ETags and 304 on the
//! polled read routes). The dashboard's page and assets are `dashboard`'s.
//! TLS, the metrics address and graceful shutdown are `serve`'s.

mod alerts;
pub mod auth;
mod body;
mod cache;
mod dashboard;
mod error;
pub mod etag;
mod impact;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod openapi;
mod params;
mod path;
mod pipelines;
mod position;
mod privacy;
pub mod rejected;
mod routes;
mod schema;
mod simulate;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::http::{Method, header};
use actix_web::middleware::{Condition, ErrorHandlers, Next, from_fn};
use actix_web::{App, HttpServer, web};

pub use auth::Security;
pub use body::{BodyBudget, BodyKind, BodyShare, Events, IngestBody};
pub use cache::ReadCache;
pub use error::{ApiError, ProblemItem, ProblemKind};
pub use params::Params;
pub use rejected::Intake;

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
    /// The change feed's window, buffer and heartbeat (`GET /v1/stream`).
    pub feed: stream::FeedOptions,
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
            feed: stream::FeedOptions::default(),
        }
    }
}

/// What every worker of one service shares: the read cache, the body
/// budget, and who may call (keys, sessions, limits).
#[derive(Clone)]
pub struct Shared {
    cache: web::Data<ReadCache>,
    budget: web::Data<BodyBudget>,
    security: web::Data<Security>,
    /// The dead-letter store and the mapping of every ingest route.
    intake: web::Data<Intake>,
    /// Serve `/metrics` on the service's address (not on one of its own).
    metrics_here: bool,
    /// The change feed's hub (`GET /v1/stream`).
    feed: web::Data<stream::Hub>,
    /// Alert rules and their outbox; none in-process (the routes answer 503).
    alerts: Option<web::Data<crate::alerts::Alerts>>,
}

impl Shared {
    /// For a service run in-process (tests): no keys, any Host, keys and
    /// audit in memory.
    pub fn new(limits: &Limits) -> Self {
        Self::with_security(
            limits,
            Arc::new(Security::in_memory()),
            Arc::new(Intake::in_memory()),
            true,
        )
    }

    /// For `fusion serve`.
    pub fn with_security(
        limits: &Limits,
        security: Arc<Security>,
        intake: Arc<Intake>,
        metrics_here: bool,
    ) -> Self {
        Self {
            cache: web::Data::new(ReadCache::default()),
            budget: web::Data::new(BodyBudget::new(limits.max_bodies_in_flight)),
            security: web::Data::from(security),
            intake: web::Data::from(intake),
            metrics_here,
            // Not attached to an engine until `with_feed`: no changes.
            feed: web::Data::new(stream::Hub::new(limits.feed, None)),
            alerts: None,
        }
    }

    /// With the change feed of an engine (`stream::Hub::attach`).
    pub fn with_feed(mut self, hub: Arc<stream::Hub>) -> Self {
        self.feed = web::Data::from(hub);
        self
    }

    /// With the alert service (`fusion serve`).
    pub fn with_alerts(mut self, alerts: Option<Arc<crate::alerts::Alerts>>) -> Self {
        self.alerts = alerts.map(web::Data::from);
        self
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
    let edge = &shared.security.edge;
    let with_cors = !edge.cors_origins.is_empty();
    let cors = cors(edge);
    App::new()
        .wrap(from_fn(position::reflect::<S>))
        .wrap(from_fn(etag::conditional::<S>))
        .wrap(from_fn(auth::authorize))
        .wrap(Condition::new(with_cors, cors))
        .wrap(from_fn(limits::check_edge))
        .wrap(from_fn(head_as_get))
        .wrap(ErrorHandlers::new().default_handler(error::ensure_problem))
        .wrap(from_fn(observe::observe))
        .configure(configure(engine, limits, shared))
}

/// HEAD on every GET route (RFC 9110 §9.3.2: GET's answer without its
/// body): the request is routed, authorised and answered as a GET. The body
/// is not sent because actix-http's HTTP/1 codec and HTTP/2 dispatcher note
/// the method as the head is read, before any of this runs, and send no
/// body to a HEAD; `Content-Length` stays GET's. A 405's `Allow` lists
/// HEAD wherever it lists GET. Outside the Host check and `auth`, which then
/// treat HEAD exactly as GET.
async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    let mut res = next.call(req).await?;
    let allow = res
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok());
    if let Some(allow) = allow
        && allow.split(',').any(|m| m.trim() == "GET")
        && !allow.split(',').any(|m| m.trim() == "HEAD")
        && let Ok(value) = header::HeaderValue::from_str(&format!("{allow}, HEAD"))
    {
        res.headers_mut().insert(header::ALLOW, value);
    }
    Ok(res)
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
            actix_web::http::header::CONTENT_ENCODING,
            actix_web::http::header::IF_NONE_MATCH,
        ])
        .allowed_header(auth::CSRF_HEADER)
        .allowed_header(observe::REQUEST_ID_HEADER)
        .expose_headers([
            actix_web::http::header::ETAG,
            actix_web::http::header::RETRY_AFTER,
        ])
        .expose_headers([observe::REQUEST_ID_HEADER])
        .expose_headers([position::POSITION_HEADER])
        .supports_credentials()
        .max_age(600)
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
        let metrics_here = shared.metrics_here;
        cfg.app_data(web::Data::from(engine))
            .app_data(currencies)
            .app_data(shared.cache)
            .app_data(shared.budget)
            .app_data(shared.security)
            .app_data(shared.intake)
            .app_data(shared.feed)
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
        if let Some(alerts) = shared.alerts {
            cfg.app_data(alerts);
        }
        if metrics_here {
            cfg.route("/metrics", web::get().to(metrics::metrics::<S>));
        }
        routes::register::<S>(cfg);
        dashboard::register::<S>(cfg);
        pipelines::register::<S>(cfg);
        stream::register(cfg);
        simulate::register::<S>(cfg);
        openapi::register(cfg);
        alerts::register(cfg);
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

/// How the service listens.
pub struct Options {
    pub bind: std::net::SocketAddr,
    pub limits: Limits,
    /// HTTPS with this configuration; plain HTTP without.
    pub tls: Option<rustls::ServerConfig>,
    /// Serve `/metrics` here instead of on `bind`.
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Seconds requests in flight get to finish after SIGTERM.
    pub shutdown_timeout: u64,
    /// The alert service behind `/v1/alerts` (started by the caller).
    pub alerts: Option<Arc<crate::alerts::Alerts>>,
}

/// Runs the service until it is stopped. On SIGTERM (or Ctrl-C) it stops
/// accepting, lets the requests in flight finish (up to
/// `shutdown_timeout`), and returns; every acknowledged event is committed
/// by then, since a request is answered only after its commit.
pub async fn serve<S: EventStore>(
    engine: Arc<Engine<S>>,
    security: Arc<Security>,
    intake: Arc<Intake>,
    options: Options,
) -> std::io::Result<()> {
    metrics::recorder();
    let limits = options.limits;
    let hub = stream::Hub::attach(&engine, limits.feed);
    if let Some(alerts) = &options.alerts {
        alerts.announce_to(Arc::clone(&hub) as Arc<dyn crate::alerts::AlertSink>);
    }
    let shared = Shared::with_security(
        &limits,
        security,
        Arc::clone(&intake),
        options.metrics_bind.is_none(),
    )
    .with_feed(hub)
    .with_alerts(options.alerts);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let app_engine = Arc::clone(&engine);
    let server = HttpServer::new(move || app(Arc::clone(&app_engine), limits, shared.clone()))
        .on_connect(|_, ext| {
            ext.insert(crate::telemetry::ConnectionGauge::open());
        })
        .workers(workers)
        .max_connections(limits.max_connections.div_ceil(workers).max(1))
        .client_request_timeout(HEAD_TIMEOUT)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
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
                    .wrap(from_fn(head_as_get))
                    .app_data(web::Data::from(Arc::clone(&metrics_engine)))
                    .app_data(web::Data::from(Arc::clone(&intake)))
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
