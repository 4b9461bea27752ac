//! Limits at the edge, before any route runs: which `Host` names the
//! service answers for (DNS rebinding), which `Origin`s may call it from a
//! browser, and how fast a key or a client address may call (governor's
//! GCRA). Owns the configuration and the checks; the answers are
//! `ApiError`s (421, 403, 429 with `Retry-After`).
//!
//! Host mismatch is 421 Misdirected Request: the request reached a server
//! that does not serve that authority, and a client may retry elsewhere;
//! 400 would say the request itself was malformed.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiError;
use crate::auth::KeyId;

/// Paths probes and scrapers reach by address: exempt from the Host and
/// Origin checks (they carry no personal data).
const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Requests per second (also the burst) per key and per client address;
/// 0 turns a limit off.
#[derive(Debug, Clone, Copy)]
pub struct RateConfig {
    pub per_key: u32,
    pub per_address: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            per_key: 1000,
            per_address: 500,
        }
    }
}

/// The rate limiters. Authenticated requests count against their key;
/// the others (no key, a refused key, public routes, a service without
/// keys) against the client address, so guessing keys is throttled too.
/// Behind a proxy every client has the proxy's address: raise or turn off
/// the address limit there and let the proxy limit clients.
pub struct RateLimits {
    per_key: Option<DefaultKeyedRateLimiter<KeyId>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl RateLimits {
    pub fn new(config: RateConfig) -> Self {
        RateLimits {
            per_key: limiter(config.per_key),
            per_address: limiter(config.per_address),
            clock: DefaultClock::default(),
        }
    }

    pub fn check_key(&self, key: &KeyId) -> Result<(), ApiError> {
        match &self.per_key {
            Some(l) => l.check_key(key).map_err(|nu| self.refusal(nu)),
            None => Ok(()),
        }
    }

    pub fn check_address(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        match (&self.per_address, address) {
            (Some(l), Some(a)) => l.check_key(&a).map_err(|nu| self.refusal(nu)),
            _ => Ok(()),
        }
    }

    fn refusal(&self, not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> ApiError {
        let wait = not_until.wait_time_from(self.clock.now());
        // Whole seconds, rounded up: a client that waits that long succeeds.
        ApiError::TooManyRequests(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    /// Forgets keys and addresses whose budget is full again, so the maps
    /// do not grow with every address ever seen.
    pub fn tidy(&self) {
        if let Some(l) = &self.per_key {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_address {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Which authorities and origins the service answers.
#[derive(Debug, Clone)]
pub struct Edge {
    /// `host:port` (exact) or `host` (any port), lowercase; `*` allows any.
    hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`) allowed to call from a browser,
    /// besides the service's own; also the CORS allow-list.
    pub cors_origins: Vec<String>,
    default_port: u16,
}

impl Edge {
    /// `hosts` empty means the default: the bind address and `localhost`
    /// with the bind port (plus the loopback addresses when bound to all
    /// interfaces).
    pub fn new(bind: SocketAddr, hosts: &[String], cors_origins: &[String], tls: bool) -> Self {
        let port = bind.port();
        let hosts = if hosts.is_empty() {
            let mut h = vec![authority(bind.ip(), port), format!("localhost:{port}")];
            if bind.ip().is_unspecified() {
                h.push(format!("127.0.0.1:{port}"));
                h.push(format!("[::1]:{port}"));
            }
            h
        } else {
            hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect()
        };
        Edge {
            hosts,
            cors_origins: cors_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .collect(),
            default_port: if tls { 443 } else { 80 },
        }
    }

    /// The names accepted, for the start-up log.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let with_port = if has_port(&host) {
            host.clone()
        } else {
            format!("{host}:{}", self.default_port)
        };
        let bare = strip_port(&with_port);
        self.hosts
            .iter()
            .any(|h| h == "*" || (has_port(h) && *h == with_port) || (!has_port(h) && h == bare))
    }

    /// The Host and Origin checks of one request.
    pub fn check(&self, req: &ServiceRequest) -> Result<(), ApiError> {
        if PROBE_PATHS.contains(&req.path()) {
            return Ok(());
        }
        // The Host header itself (HTTP/2: the URI's authority), never the
        // Forwarded headers, which any client can set.
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        if let Some(host) = &host
            && !self.allows_host(host)
        {
            return Err(ApiError::Misdirected(format!(
                "this service does not answer for host {host:?}; configure it with --allowed-host"
            )));
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.allows_origin(origin) {
                return Err(ApiError::Forbidden(format!(
                    "requests from origin {origin:?} are not allowed; add it to cors_origins"
                )));
            }
        }
        Ok(())
    }

    /// Whether pages of `origin` may call: the service's own (an allowed
    /// host), or a configured CORS origin.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        let same_site = origin
            .split_once("://")
            .is_some_and(|(_, authority)| self.allows_host(authority));
        same_site || self.cors_origins.iter().any(|o| o == origin)
    }
}

/// The middleware of the Host and Origin checks; outside CORS, so a
/// foreign origin gets the same 403 whether CORS is configured or not.
pub async fn check_edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, actix_web::Error> {
    let edge = req
        .app_data::<web::Data<super::Security>>()
        .map(|s| s.edge.check(&req))
        .unwrap_or(Ok(()));
    match edge {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(refusal) => Ok(req.error_response(refusal).map_into_right_body()),
    }
}

fn authority(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// `host[:port]` split at the port; an IPv6 literal is bracketed.
fn split_port(host: &str) -> (&str, Option<&str>) {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => match host[i + 1..].strip_prefix(':') {
                Some(p) if digits(p) => (&host[..=i], Some(p)),
                _ => (host, None),
            },
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if digits(p) && !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

fn has_port(host: &str) -> bool {
    split_port(host).1.is_some()
}

fn strip_port(host: &str) -> &str {
    split_port(host).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_default_to_the_bind_address_and_localhost() {
        let edge = Edge::new("127.0.0.1:8080".parse().unwrap(), &[], &[], false);
        assert!(edge.allows_host("127.0.0.1:8080"));
        assert!(edge.allows_host("LOCALHOST:8080"));
        assert!(!edge.allows_host("localhost:8081"));
        assert!(!edge.allows_host("evil.example:8080"));
        assert!(
            !edge.allows_host("localhost"),
            "port 80 is another authority"
        );
        let edge = Edge::new("[::1]:9000".parse().unwrap(), &[], &[], false);
        assert!(edge.allows_host("[::1]:9000"));
        assert!(!edge.allows_host("[::1]:9001"));
    }

    #[test]
    fn a_configured_name_without_port_matches_any_port() {
        let hosts = vec![
            "fusion.example.com".to_string(),
            "10.0.0.5:8080".to_string(),
        ];
        let edge = Edge::new("0.0.0.0:8080".parse().unwrap(), &hosts, &[], true);
        assert!(edge.allows_host("fusion.example.com"));
        assert!(edge.allows_host("fusion.example.com:8443"));
        assert!(edge.allows_host("10.0.0.5:8080"));
        assert!(!edge.allows_host("10.0.0.5:9090"));
        assert!(!edge.allows_host("10.0.0.5"), "no port means 443 here");
        assert!(
            !edge.allows_host("localhost:8080"),
            "configured names replace the default"
        );
        let any = Edge::new(
            "0.0.0.0:8080".parse().unwrap(),
            &["*".to_string()],
            &[],
            false,
        );
        assert!(any.allows_host("whatever:1"));
    }
}
