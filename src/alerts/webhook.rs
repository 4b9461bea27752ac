//! Webhook deliveries: which URLs may be called (server-side request
//! forgery), the signature, one HTTP try, and when to try again.
//!
//! - A URL must be http(s) without user info; its host, or every address
//!   it resolves to, must be public: loopback, private, link-local,
//!   shared (CGNAT), unspecified, broadcast, multicast and documentation
//!   addresses are refused unless private webhooks are allowed. The check
//!   is made when a rule is created and again when a delivery connects
//!   (`PublicOnly`, the HTTP client's resolver), so a name that resolves
//!   elsewhere later (DNS rebinding) is refused at connect time too.
//! - Redirects are not followed (a redirect is a way around the check),
//!   and no proxy from the environment is used.
//! - `Fusion-Signature: t=UNIX,v1=HEX`: hex HMAC-SHA256 of `t.body` under
//!   the rule's secret, in the manner of Stripe's webhook signatures
//!   (the timestamp inside the MAC lets a receiver refuse replays).
//!
//! Blocking (ureq): tries run on the blocking pool. Knows no store.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlError {
    #[error("the webhook URL is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("the webhook URL must use http or https, not `{0}`")]
    Scheme(String),
    #[error("the webhook URL must not hold a user name or password")]
    UserInfo,
    #[error(
        "the webhook URL's host `{host}` is (or resolves to) {address}, a {class} address; \
         use a public address, or start the server with --allow-private-webhooks"
    )]
    NotPublic {
        host: String,
        address: IpAddr,
        class: &'static str,
    },
    #[error("the webhook URL's host `{0}` does not resolve; use a host name that does")]
    Unresolved(String),
}

/// The class of a non-public address (`None`: public).
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address carried inside IPv6 is judged as that IPv4
            // address: mapped, and the translation and tunnelling forms a
            // network may route to it (red team 2026-11-30).
            if let Some(v4) = v6.to_ipv4_mapped().or_else(|| embedded_v4(v6)) {
                return non_public_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address an IPv6 address embeds in the forms that translate or
/// tunnel to it: NAT64 `64:ff9b::/96` (RFC 6052) and `64:ff9b:1::/48`
/// (RFC 8215, last 32 bits), SIIT `::ffff:0:a.b.c.d` (RFC 2765), 6to4
/// `2002:a.b.c.d::/16` (RFC 3056), and IPv4-compatible `::a.b.c.d`
/// (deprecated by RFC 4291, still parsed).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let last = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
        || s[..6] == [0, 0, 0, 0, 0xffff, 0]
        || (s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified())
    {
        Some(last)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

/// The URL's scheme and host checks, without resolving names; answers the
/// host and port to resolve.
fn parse(url: &str) -> Result<(String, u16), UrlError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| UrlError::Invalid(e.to_string()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| UrlError::Invalid("it has no scheme".into()))?
        .to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        other => return Err(UrlError::Scheme(other.to_string())),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| UrlError::Invalid("it has no host".into()))?;
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo);
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(UrlError::Invalid("it has no host".into()));
    }
    Ok((
        host.to_string(),
        authority.port_u16().unwrap_or(default_port),
    ))
}

fn check_addresses(host: &str, addrs: &[SocketAddr]) -> Result<(), UrlError> {
    for a in addrs {
        if let Some(class) = non_public(a.ip()) {
            return Err(UrlError::NotPublic {
                host: host.to_string(),
                address: a.ip(),
                class,
            });
        }
    }
    Ok(())
}

/// Whether a rule may name this URL (module docs). Resolves host names
/// (blocking) unless private addresses are allowed.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), UrlError> {
    let (host, port) = parse(url)?;
    if allow_private {
        return Ok(());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check_addresses(&host, &[SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|_| UrlError::Unresolved(host.clone()))?
        .collect();
    if addrs.is_empty() {
        return Err(UrlError::Unresolved(host));
    }
    check_addresses(&host, &addrs)
}

/// `Fusion-Signature` for `body` sent at `unix` seconds.
pub fn signature(secret: &str, unix: i64, body: &str) -> String {
    let mac = crate::auth::hmac_sha256(
        secret.as_bytes(),
        &[unix.to_string().as_bytes(), b".", body.as_bytes()],
    );
    format!("t={unix},v1={}", crate::auth::hex(&mac))
}

/// The resolver of deliveries: the system's, refusing non-public
/// addresses, so the connection goes only to an address that was checked.
#[derive(Debug)]
struct PublicOnly;

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        check_addresses(host, &addrs).map_err(|e| ureq::Error::Other(Box::new(e)))?;
        Ok(addrs)
    }
}

/// The HTTP client of deliveries.
#[derive(Clone)]
pub struct Sender {
    agent: ureq::Agent,
}

impl Sender {
    /// A client with this timeout per try; `allow_private` lifts the
    /// address check.
    pub fn new(timeout: Duration, allow_private: bool) -> Sender {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(timeout))
            .user_agent("fusion-webhooks")
            .build();
        let agent = if allow_private {
            ureq::Agent::new_with_config(config)
        } else {
            ureq::Agent::with_parts(config, DefaultConnector::new(), PublicOnly)
        };
        Sender { agent }
    }

    /// One try: POSTs `body` signed at `unix`; `Ok` on a 2xx answer, else
    /// why not (the status, or the transport's error).
    pub fn send(
        &self,
        url: &str,
        body: &str,
        idempotency_key: &str,
        secret: &str,
        unix: i64,
    ) -> Result<(), String> {
        let sent = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Fusion-Idempotency-Key", idempotency_key)
            .header("Fusion-Signature", signature(secret, unix, body))
            .send(body.as_bytes());
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the receiver answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How long to wait after the `tries`-th failed try: `base · 2^(tries-1)`,
/// at most `cap`, scaled by `jitter` in [0.5, 1] ("equal jitter", AWS
/// Architecture Blog, "Exponential Backoff And Jitter", 2015), so
/// receivers that come back are not met by every sender at once.
pub fn backoff(base: Duration, cap: Duration, tries: u32, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << tries.saturating_sub(1).min(30));
    exp.min(cap).mul_f64(jitter.clamp(0.5, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            // IPv4 inside IPv6: NAT64, its local-use prefix, 6to4,
            // IPv4-compatible, SIIT (red team 2026-11-30).
            "http://[64:ff9b::a01:203]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[::127.0.0.1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://localhost:9/",
        ] {
            assert!(
                matches!(check_url(url, false), Err(UrlError::NotPublic { .. })),
                "{url}: {:?}",
                check_url(url, false)
            );
            assert_eq!(check_url(url, true), Ok(()), "{url}");
        }
        assert_eq!(check_url("https://93.184.216.34/hook", false), Ok(()));
        assert_eq!(
            check_url("https://[64:ff9b::5db8:d822]/hook", false),
            Ok(())
        );
        assert_eq!(check_url("https://[2002:5db8:d822::1]/hook", false), Ok(()));
    }

    #[test]
    fn only_http_and_https_without_user_info() {
        assert!(matches!(
            check_url("ftp://93.184.216.34/", true),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            check_url("file:///etc/passwd", true),
            Err(UrlError::Scheme(_) | UrlError::Invalid(_))
        ));
        assert!(matches!(
            check_url("http://u:p@93.184.216.34/", true),
            Err(UrlError::UserInfo)
        ));
        assert!(matches!(
            check_url("not a url", true),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn signature_is_hmac_of_time_dot_body() {
        // RFC 4231-style check against an independent computation.
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            signature("s3cret", 1_700_000_000, "{\"a\":1}"),
            format!("t=1700000000,v1={hex}")
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(10), s(3600), 1, 1.0), s(10));
        assert_eq!(backoff(s(10), s(3600), 4, 1.0), s(80));
        assert_eq!(backoff(s(10), s(3600), 20, 1.0), s(3600));
        assert_eq!(backoff(s(10), s(3600), 2, 0.5), s(10));
    }
}
