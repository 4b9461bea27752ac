//! Dashboard sessions: a browser's `EventSource` cannot send an
//! `Authorization` header, so a `read` key is exchanged for a signed,
//! expiring session token kept in an HttpOnly cookie, plus a CSRF token the
//! page must echo in `X-CSRF-Token` on every request that changes state.
//!
//! A token is `<key id>.<role>.<session id>.<expiry, unix s>.<signature>`,
//! the signature HMAC-SHA256 under a secret kept in the store, so every
//! server accepts every server's sessions. The CSRF token is derived from the
//! session id under the same secret (a signed double submit): a page on
//! another site can neither read it nor forge it. Nothing here is stored per
//! session; revoking the key ends its sessions at the next request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use subtle::ConstantTimeEq as _;

use super::{KeyId, Role, hmac_sha256};

/// The signing secret of sessions (32 bytes from the store).
#[derive(Clone)]
pub struct SessionKeys {
    secret: [u8; 32],
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub key_id: KeyId,
    pub role: Role,
    /// Random per session; the CSRF token is derived from it.
    pub id: String,
    pub expires: DateTime<Utc>,
}

impl SessionKeys {
    pub fn new(secret: [u8; 32]) -> Self {
        SessionKeys { secret }
    }

    /// A new session for `key_id` with `role`, valid for `ttl` from `now`:
    /// the cookie's token and the session.
    pub fn issue(
        &self,
        key_id: &KeyId,
        role: Role,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> (String, Session) {
        let session = Session {
            key_id: key_id.clone(),
            role,
            id: super::hex(&super::random_bytes()[..16]),
            expires: now + ttl,
        };
        let payload = format!(
            "{}.{}.{}.{}",
            session.key_id,
            session.role,
            session.id,
            session.expires.timestamp()
        );
        let sig = URL_SAFE_NO_PAD.encode(self.sign(&payload));
        (format!("{payload}.{sig}"), session)
    }

    /// The session a token carries, if its signature holds and it has not
    /// expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Session> {
        let (payload, sig) = token.rsplit_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if !bool::from(self.sign(payload).as_slice().ct_eq(&sig)) {
            return None;
        }
        let mut parts = payload.split('.');
        let (key_id, role, id, expires) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expires = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        (now < expires).then_some(())?;
        Some(Session {
            key_id: KeyId::new(key_id).ok()?,
            role: role.parse().ok()?,
            id: id.to_string(),
            expires,
        })
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, session: &Session) -> String {
        URL_SAFE_NO_PAD.encode(hmac_sha256(
            &self.secret,
            &[b"csrf\0", session.id.as_bytes()],
        ))
    }

    /// Whether `presented` is the session's CSRF token (constant time).
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        self.csrf_token(session)
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    }

    fn sign(&self, payload: &str) -> [u8; 32] {
        hmac_sha256(&self.secret, &[b"session\0", payload.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_session_verifies_until_it_expires_and_not_under_another_secret() {
        let keys = SessionKeys::new([7; 32]);
        let id = KeyId::new("abc123").unwrap();
        let (token, session) = keys.issue(&id, Role::Read, t(0), Duration::hours(1));
        assert_eq!(keys.verify(&token, t(10)), Some(session.clone()));
        assert_eq!(keys.verify(&token, t(3600)), None, "expired");
        assert_eq!(SessionKeys::new([8; 32]).verify(&token, t(10)), None);
        assert!(keys.csrf_matches(&session, &keys.csrf_token(&session)));
        assert!(!keys.csrf_matches(&session, "x"));
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let keys = SessionKeys::new([7; 32]);
        let id = KeyId::new("abc123").unwrap();
        let (token, _) = keys.issue(&id, Role::Read, t(0), Duration::hours(1));
        let promoted = token.replacen(".read.", ".admin.", 1);
        assert_eq!(keys.verify(&promoted, t(1)), None);
        let extended = {
            let mut parts: Vec<&str> = token.split('.').collect();
            let later = (t(0) + Duration::days(365)).timestamp().to_string();
            parts[3] = &later;
            parts.join(".")
        };
        assert_eq!(keys.verify(&extended, t(1)), None);
        for junk in ["", ".", "a.b.c.d.e", "a.read.x.1.!!"] {
            assert_eq!(keys.verify(junk, t(1)), None, "{junk:?}");
        }
    }
}
