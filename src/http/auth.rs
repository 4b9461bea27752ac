//! Who may call which route. `ROUTES` is the one table (method + route
//! pattern → what it needs); the middleware `authorize` and the OpenAPI
//! security declarations both read it, so no handler checks a key itself.
//!
//! Credentials: `Authorization: Bearer <key>`, or the dashboard's session
//! cookie (`POST /v1/session` exchanges a `read` key for one); with the
//! cookie, a request that changes state must carry the session's CSRF token
//! in `X-CSRF-Token`. A missing or refused credential is 401, the wrong
//! role 403, both problem+json. Without any key configured the service runs
//! open (loopback only, said at start), as it did before keys existed.
//!
//! Rate limits (`limits.rs`) are applied here too, because the per-key
//! budget needs the key. Owns no key logic (`auth`) and no storage (`store`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::json;

use super::ApiError;
use super::limits::{Edge, RateLimits};
use crate::auth::{AuthError, Keyring, Principal, Role, Session, SessionKeys};
use crate::store::{KeyStore, Keys, StoreError};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: probes, metrics, the API description, signing out.
    Public,
    /// A key (or session) whose role grants this one.
    Key(Role),
}

/// One row of the access table.
#[derive(Debug, Clone, Copy)]
pub struct RouteAccess {
    pub method: &'static str,
    /// The actix route pattern, as registered.
    pub path: &'static str,
    pub need: Need,
}

const fn route(method: &'static str, path: &'static str, need: Need) -> RouteAccess {
    RouteAccess { method, path, need }
}

use Need::{Key, Public};

/// Every route the service registers, and what it needs. A route
/// registered but missing here needs `admin` (fail closed), and the test
/// that walks this table against the served OpenAPI finds it.
pub const ROUTES: &[RouteAccess] = &[
    route("GET", "/healthz", Public),
    route("GET", "/readyz", Public),
    route("GET", "/metrics", Public),
    route("GET", "/openapi.json", Public),
    route("POST", "/v1/session", Key(Role::Read)),
    route("DELETE", "/v1/session", Public),
    route("POST", "/v1/events", Key(Role::Ingest)),
    route("GET", "/v1/events/{id}", Key(Role::Read)),
    route("PUT", "/v1/entities/{id}", Key(Role::Ingest)),
    route("GET", "/v1/entities/{id}", Key(Role::Read)),
    route("DELETE", "/v1/entities/{id}", Key(Role::Admin)),
    route("GET", "/v1/entities/{id}/events", Key(Role::Read)),
    route("GET", "/v1/entities/{id}/followers", Key(Role::Read)),
    route("GET", "/v1/entities/{id}/export", Key(Role::Admin)),
    route("GET", "/v1/relationships/{person}/{brand}", Key(Role::Read)),
    route(
        "GET",
        "/v1/relationships/{person}/{brand}/history",
        Key(Role::Read),
    ),
    route(
        "GET",
        "/v1/relationships/{person}/{brand}/history/events",
        Key(Role::Read),
    ),
    route("GET", "/v1/brands", Key(Role::Read)),
    route("GET", "/v1/stream", Key(Role::Read)),
    route("GET", "/v1/brands/{brand}/relationships", Key(Role::Read)),
    route("GET", "/v1/brands/{brand}", Key(Role::Read)),
    route("GET", "/v1/brands/{brand}/impact", Key(Role::Read)),
    route("POST", "/v1/admin/rescore", Key(Role::Admin)),
    route("POST", "/v1/batch", Key(Role::Ingest)),
    route("POST", "/v1/track", Key(Role::Ingest)),
    route("POST", "/v1/identify", Key(Role::Ingest)),
    route("POST", "/v1/group", Key(Role::Ingest)),
    route("POST", "/v1/cloudevents", Key(Role::Ingest)),
    route("GET", "/v1/rejected", Key(Role::Admin)),
    route("DELETE", "/v1/rejected", Key(Role::Admin)),
    route("POST", "/v1/rejected/replay", Key(Role::Admin)),
    // Alerts (issue 13, item 2).
    route("GET", "/v1/alerts", Key(Role::Admin)),
    route("POST", "/v1/alerts", Key(Role::Admin)),
    route("GET", "/v1/alerts/{id}", Key(Role::Admin)),
    route("DELETE", "/v1/alerts/{id}", Key(Role::Admin)),
    route("GET", "/v1/alerts/{id}/events", Key(Role::Admin)),
    route("GET", "/v1/alerts/{id}/deliveries", Key(Role::Admin)),
    // Model overrides in the body need admin (`require`, in the handler).
    route("POST", "/v1/simulate", Key(Role::Read)),
];

/// The routes of Segment's Tracking API, whose clients send their write
/// key as HTTP Basic auth (`Authorization: Basic base64(key:)`): there a
/// Basic credential's user name is read as the API key. Everywhere else
/// only `Bearer` is.
pub const WRITE_KEY_ROUTES: [&str; 4] = ["/v1/batch", "/v1/track", "/v1/identify", "/v1/group"];

/// Paths served under a prefix without a table row each (the API reference
/// page and its vendored assets; the dashboard's compiled-in assets, which
/// hold no data): public, the prefix itself and everything below it.
const PUBLIC_PREFIXES: [&str; 2] = ["/docs", "/assets"];

/// The dashboard's page: public as this exact path only. Kept apart from the
/// prefixes because "everything below `/`" is every route.
const PUBLIC_PAGE: &str = "/";

/// What a request needs, from its method and the pattern of the route it
/// matched (`None`: no route matched, so it will be a 404 or 405).
pub fn need_of(method: &Method, pattern: Option<&str>, path: &str) -> Option<Need> {
    if path == PUBLIC_PAGE
        || PUBLIC_PREFIXES
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Some(Public);
    }
    let pattern = pattern?;
    let mut known = false;
    for r in ROUTES {
        if r.path == pattern {
            if r.method == method.as_str() {
                return Some(r.need);
            }
            known = true;
        }
    }
    if known {
        // The pattern is routed, not for this method: actix answers 405/404.
        None
    } else {
        tracing::error!(%pattern, "a route is missing from the access table; it needs admin until added");
        Some(Key(Role::Admin))
    }
}

/// Session cookie: the signed token (HttpOnly).
pub const SESSION_COOKIE: &str = "fusion_session";
/// CSRF cookie: the token the page echoes in `X-CSRF-Token` (readable by
/// the page's script, so not HttpOnly).
pub const CSRF_COOKIE: &str = "fusion_csrf";
pub const CSRF_HEADER: &str = "X-CSRF-Token";
/// How long a dashboard session lasts.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(12);
/// How often the keyring is re-read from the store.
pub const KEYRING_REFRESH: Duration = Duration::from_secs(2);

/// Everything the access checks need, shared by every worker.
pub struct Security {
    pub keyring: Arc<Keyring>,
    pub sessions: SessionKeys,
    pub keys: Keys,
    pub rates: RateLimits,
    pub edge: Edge,
    /// Cookies get `Secure` when the service speaks HTTPS.
    pub tls: bool,
    /// Salt of the erased ids' hashes in the audit.
    pub erasure_salt: [u8; 32],
}

impl Security {
    /// Loads the keys and secrets from the store.
    pub async fn load(
        keys: Keys,
        bootstrap: Option<&str>,
        rates: RateLimits,
        edge: Edge,
        tls: bool,
    ) -> Result<Self, StoreError> {
        let keyring = Arc::new(Keyring::new(bootstrap));
        keyring.replace(keys.keys().await?);
        let sessions = SessionKeys::new(keys.secret(crate::store::keys::secret::SESSIONS).await?);
        let erasure_salt = keys
            .secret(crate::store::keys::secret::ERASURE_SALT)
            .await?;
        Ok(Security {
            keyring,
            sessions,
            keys,
            rates,
            edge,
            tls,
            erasure_salt,
        })
    }
}

impl Security {
    /// A service without keys that answers any Host, its key store and
    /// audit in memory: the service run in-process by tests.
    pub fn in_memory() -> Self {
        let keys = Keys::Memory(Default::default());
        Security {
            keyring: Arc::new(Keyring::new(None)),
            sessions: SessionKeys::new(crate::auth::random_bytes()),
            keys,
            rates: RateLimits::new(super::limits::RateConfig::default()),
            edge: Edge::new(
                std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                &["*".to_string()],
                &[],
                false,
            ),
            tls: false,
            erasure_salt: crate::auth::random_bytes(),
        }
    }
}

/// Keeps the keyring current: re-reads the keys every `KEYRING_REFRESH`
/// (a revocation reaches every server within seconds), writes back when
/// keys were last used, and forgets idle rate-limit entries. A store
/// outage keeps the last copy.
pub async fn keep_keyring(security: Arc<Security>) {
    let mut tick = tokio::time::interval(KEYRING_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match security.keys.keys().await {
            Ok(records) => security.keyring.replace(records),
            Err(e) => {
                tracing::warn!(cause = %e, "cannot re-read the API keys; keeping the last copy")
            }
        }
        let used = security.keyring.take_usage(Utc::now());
        if !used.is_empty()
            && let Err(e) = security.keys.note_key_use(used).await
        {
            tracing::warn!(cause = %e, "cannot record when keys were last used");
        }
        security.rates.tidy();
    }
}

/// The middleware: credentials, role, CSRF, rate limits.
/// On success the request carries its `Principal` (absent when open or
/// public). A refusal is answered here as a response (not an `Err`), so
/// the outer middleware still sees it and gives it the request id.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    match admit(&req) {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(refusal) => Ok(req.error_response(refusal).map_into_right_body()),
    }
}

fn admit(req: &ServiceRequest) -> Result<(), ApiError> {
    let security = req
        .app_data::<web::Data<Security>>()
        .cloned()
        .expect("Security is registered with the app");
    let pattern = req.match_pattern();
    let need = need_of(req.method(), pattern.as_deref(), req.path());
    let address = req.peer_addr().map(|a| a.ip());
    let principal = match need {
        Some(Key(role)) if security.keyring.has_keys() => match credentials(
            req,
            &security,
            pattern
                .as_deref()
                .is_some_and(|p| WRITE_KEY_ROUTES.contains(&p)),
        ) {
            Ok(p) => {
                security.rates.check_key(&p.key_id)?;
                if !p.role.grants(role) {
                    return Err(ApiError::Forbidden(format!(
                        "key {} has the role {}; this route needs {role}",
                        p.key_id, p.role
                    )));
                }
                if p.by_session && changes_state(req.method()) {
                    check_csrf(req, &security)?;
                }
                p
            }
            Err(e) => {
                // Refused credentials count against the address, so
                // guessing is throttled before it is answered.
                security.rates.check_address(address)?;
                return Err(ApiError::Unauthorized(e.to_string()));
            }
        },
        _ => return security.rates.check_address(address),
    };
    tracing::Span::current().record("key_id", principal.key_id.as_str());
    req.extensions_mut().insert(principal);
    Ok(())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's credential: the bearer key if there is an Authorization
/// header (a wrong one is not rescued by a cookie), else the session cookie.
/// With `write_key` (Segment's routes), a Basic credential's user name is
/// the key (Segment's writeKey).
fn credentials(
    req: &ServiceRequest,
    security: &Security,
    write_key: bool,
) -> Result<Principal, AuthError> {
    let now = Utc::now();
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Invalid)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Invalid)?;
        if write_key && scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .map_err(|_| AuthError::Invalid)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::Invalid)?;
            let user = text.split(':').next().unwrap_or("");
            return security.keyring.authenticate(user, now);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Invalid);
        }
        return security.keyring.authenticate(token.trim(), now);
    }
    match req.cookie(SESSION_COOKIE) {
        Some(c) => {
            let session = security
                .sessions
                .verify(c.value(), now)
                .ok_or(AuthError::Session)?;
            let principal = security.keyring.admit_session(&session, now)?;
            req.extensions_mut().insert(session);
            Ok(principal)
        }
        None => Err(AuthError::Missing),
    }
}

fn check_csrf(req: &ServiceRequest, security: &Security) -> Result<(), ApiError> {
    let ok = {
        let ext = req.extensions();
        let session = ext.get::<Session>();
        let presented = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        matches!((session, presented), (Some(s), Some(p)) if security.sessions.csrf_matches(s, p))
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a request authenticated by the session cookie that changes state needs the session's \
             CSRF token in {CSRF_HEADER}"
        )))
    }
}

/// A need stricter than the route's row, for what a request asks within
/// its route (`POST /v1/simulate` with model overrides needs `admin`):
/// 403 when the admitted key's role does not grant `role`; allowed when the
/// service runs without keys, as every route is.
pub fn require(req: &HttpRequest, role: Role, what: &str) -> Result<(), ApiError> {
    match principal(req) {
        Some(p) if !p.role.grants(role) => Err(ApiError::Forbidden(format!(
            "key {} has the role {}; {what} need {role}",
            p.key_id, p.role
        ))),
        _ => Ok(()),
    }
}

/// The principal the middleware admitted, if any (none when the service
/// runs without keys).
pub fn principal(req: &HttpRequest) -> Option<Principal> {
    req.extensions().get::<Principal>().cloned()
}

/// `POST /v1/session`: exchanges the bearer key for a session cookie and
/// answers the CSRF token.
#[utoipa::path(post, path = "/v1/session", tag = "session",
    responses(
        (status = 200, description = "The session cookies are set (fusion_session, HttpOnly; fusion_csrf); here is the CSRF token", body = super::schema::Session),
        (status = 400, description = "No API keys are configured", body = super::schema::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_session(
    req: HttpRequest,
    security: web::Data<Security>,
) -> Result<HttpResponse, ApiError> {
    let Some(p) = principal(&req) else {
        return Err(ApiError::parameter(
            "authorization",
            "no API keys are configured, so there is nothing to exchange for a session",
        ));
    };
    if p.by_session {
        return Err(ApiError::Forbidden(
            "a session is made from an API key (Authorization: Bearer), not from another session"
                .into(),
        ));
    }
    let (token, session) = security
        .sessions
        .issue(&p.key_id, p.role, Utc::now(), SESSION_TTL);
    let csrf = security.sessions.csrf_token(&session);
    let max_age = actix_web::cookie::time::Duration::seconds(SESSION_TTL.num_seconds());
    let cookie = |name: &'static str, value: String, http_only: bool| {
        Cookie::build(name, value)
            .path("/")
            .http_only(http_only)
            .secure(security.tls)
            .same_site(SameSite::Strict)
            .max_age(max_age)
            .finish()
    };
    Ok(HttpResponse::Ok()
        .cookie(cookie(SESSION_COOKIE, token, true))
        .cookie(cookie(CSRF_COOKIE, csrf.clone(), false))
        .json(json!({
            "key_id": p.key_id,
            "role": p.role,
            "expires": session.expires,
            "csrf_token": csrf,
        })))
}

/// `DELETE /v1/session`: signs out (removes both cookies).
#[utoipa::path(delete, path = "/v1/session", tag = "session",
    responses((status = 204, description = "Signed out: both cookies removed")))]
pub async fn delete_session(security: web::Data<Security>) -> HttpResponse {
    let gone = |name: &'static str| {
        let mut c = Cookie::build(name, "")
            .path("/")
            .secure(security.tls)
            .same_site(SameSite::Strict)
            .finish();
        c.make_removal();
        c
    };
    HttpResponse::NoContent()
        .cookie(gone(SESSION_COOKIE))
        .cookie(gone(CSRF_COOKIE))
        .finish()
}

/// The routes of this file in the OpenAPI document (openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_session, delete_session))]
pub(super) struct SessionApi;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_row_per_method_and_pattern() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn unknown_patterns_fail_closed_and_unrouted_methods_pass_to_405() {
        assert_eq!(
            need_of(&Method::GET, Some("/v1/new/{x}"), "/v1/new/1"),
            Some(Key(Role::Admin))
        );
        assert_eq!(
            need_of(&Method::PATCH, Some("/v1/events"), "/v1/events"),
            None
        );
        assert_eq!(need_of(&Method::GET, None, "/nothing"), None);
        assert_eq!(need_of(&Method::GET, None, "/docs/index.css"), Some(Public));
        assert_eq!(need_of(&Method::GET, None, "/docsx"), None);
        assert_eq!(need_of(&Method::GET, None, "/"), Some(Public));
        // A doubled slash made every path public when `/` was a prefix
        // (`//` starts every path below it): only the page itself is.
        assert_eq!(
            need_of(&Method::GET, Some("/v1/entities/{id}"), "//v1/entities/x"),
            Some(Key(Role::Read))
        );
        assert_eq!(
            need_of(&Method::POST, Some("/v1/events"), "/v1/events"),
            Some(Key(Role::Ingest))
        );
    }
}
