//! `Keyring`: the service's in-memory copy of the stored keys, and the one
//! place a presented key or session is checked. The copy is replaced
//! wholesale by the refresh task (`http::auth::keep_keyring`) every couple of
//! seconds, so a key created or revoked by `fusion keys` on any machine
//! reaches every server within seconds; a request never waits on the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Duration, Utc};

use super::{ApiKey, KeyId, KeyRecord, Role, SecretHash, Session};

/// How often at most a key's `last_used` is written back.
const LAST_USED_EVERY: Duration = Duration::seconds(60);

/// Id under which the bootstrap key (`FUSION_ADMIN_KEY`) appears in logs and audits.
pub const BOOTSTRAP_ID: &str = "bootstrap";

/// Shortest bootstrap key accepted (it is chosen by an operator, not generated).
pub const BOOTSTRAP_MIN_LEN: usize = 32;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: KeyId,
    pub role: Role,
    /// Authenticated by a session cookie (so state changes need a CSRF token).
    pub by_session: bool,
}

/// Why a credential was refused. Expired and revoked are told apart only
/// to a caller whose secret matched, so they reveal nothing to a guesser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route needs an API key: send `Authorization: Bearer <key>`")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("the API key has expired; ask an administrator for a new one")]
    Expired,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the session has expired or is not valid; sign in again")]
    Session,
}

#[derive(Default)]
struct Usage {
    /// Last use not yet written back.
    pending: Option<DateTime<Utc>>,
    /// When a use was last handed out for writing.
    written: Option<DateTime<Utc>>,
}

pub struct Keyring {
    keys: RwLock<Arc<HashMap<KeyId, KeyRecord>>>,
    bootstrap: Option<SecretHash>,
    /// Set once the store has held any key (revoked ones count): revoking
    /// the last key must not open the service.
    keys_exist: AtomicBool,
    usage: Mutex<HashMap<KeyId, Usage>>,
}

impl Keyring {
    /// An empty keyring, with the bootstrap admin key if one is configured.
    pub fn new(bootstrap: Option<&str>) -> Self {
        Keyring {
            keys: RwLock::new(Arc::new(HashMap::new())),
            bootstrap: bootstrap.map(|k| SecretHash::of(k.as_bytes())),
            keys_exist: AtomicBool::new(false),
            usage: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the copy with the store's records.
    pub fn replace(&self, records: Vec<KeyRecord>) {
        if !records.is_empty() {
            self.keys_exist.store(true, Ordering::SeqCst);
        }
        let map = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        *self.keys.write().expect("keyring lock") = Arc::new(map);
    }

    /// Whether any key is configured: then every data route needs one.
    /// Without any, the service accepts everything and binds loopback only.
    pub fn has_keys(&self) -> bool {
        self.bootstrap.is_some() || self.keys_exist.load(Ordering::SeqCst)
    }

    /// Checks a bearer token at `now`.
    pub fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        if let Ok(key) = ApiKey::parse(token) {
            let keys = Arc::clone(&self.keys.read().expect("keyring lock"));
            if let Some(record) = keys.get(&key.id) {
                if !record.hash.matches(key.secret()) {
                    return Err(AuthError::Invalid);
                }
                let role = usable(record, now)?;
                self.note_use(&record.id, now);
                return Ok(Principal {
                    key_id: record.id.clone(),
                    role,
                    by_session: false,
                });
            }
        }
        match &self.bootstrap {
            Some(hash) if hash.matches(token.as_bytes()) => Ok(Principal {
                key_id: KeyId::new(BOOTSTRAP_ID).expect("a valid key id"),
                role: Role::Admin,
                by_session: false,
            }),
            _ => Err(AuthError::Invalid),
        }
    }

    /// Checks a verified session against its key as it stands now: a
    /// revoked or expired key ends its sessions.
    pub fn admit_session(
        &self,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        let role = if session.key_id.as_str() == BOOTSTRAP_ID && self.bootstrap.is_some() {
            Role::Admin
        } else {
            let keys = Arc::clone(&self.keys.read().expect("keyring lock"));
            let record = keys.get(&session.key_id).ok_or(AuthError::Session)?;
            usable(record, now)?
        };
        // The session may not carry more than its key (roles never change,
        // but a forged-looking mismatch is refused rather than trusted).
        if role != session.role {
            return Err(AuthError::Session);
        }
        self.note_use(&session.key_id, now);
        Ok(Principal {
            key_id: session.key_id.clone(),
            role,
            by_session: true,
        })
    }

    /// Uses to write back as `last_used`: at most one per key per minute.
    pub fn take_usage(&self, now: DateTime<Utc>) -> Vec<(KeyId, DateTime<Utc>)> {
        let mut usage = self.usage.lock().expect("usage lock");
        let mut out = Vec::new();
        for (id, u) in usage.iter_mut() {
            if let Some(at) = u.pending
                && u.written.is_none_or(|w| now - w >= LAST_USED_EVERY)
            {
                out.push((id.clone(), at));
                u.pending = None;
                u.written = Some(now);
            }
        }
        out
    }

    fn note_use(&self, id: &KeyId, now: DateTime<Utc>) {
        if id.as_str() == BOOTSTRAP_ID {
            return;
        }
        let mut usage = self.usage.lock().expect("usage lock");
        match usage.get_mut(id) {
            Some(u) => u.pending = Some(now),
            None => {
                usage.insert(
                    id.clone(),
                    Usage {
                        pending: Some(now),
                        written: None,
                    },
                );
            }
        }
    }
}

/// The role of a record if it may be used at `now`.
fn usable(record: &KeyRecord, now: DateTime<Utc>) -> Result<Role, AuthError> {
    if record.revoked.is_some_and(|t| t <= now) {
        return Err(AuthError::Revoked);
    }
    if record.expires.is_some_and(|t| t <= now) {
        return Err(AuthError::Expired);
    }
    Ok(record.role)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn keys_are_checked_for_secret_expiry_and_revocation() {
        let ring = Keyring::new(None);
        assert!(!ring.has_keys());
        let good = ApiKey::generate();
        let expiring = ApiKey::generate();
        let revoked = ApiKey::generate();
        let mut r = KeyRecord::new(&revoked, Role::Admin, t(0), None);
        r.revoked = Some(t(5));
        ring.replace(vec![
            KeyRecord::new(&good, Role::Read, t(0), None),
            KeyRecord::new(&expiring, Role::Ingest, t(0), Some(t(10))),
            r,
        ]);
        assert!(ring.has_keys());
        let p = ring.authenticate(&good.reveal(), t(1)).unwrap();
        assert_eq!((p.key_id, p.role), (good.id.clone(), Role::Read));
        assert_eq!(
            ring.authenticate(&expiring.reveal(), t(9)).unwrap().role,
            Role::Ingest
        );
        assert_eq!(
            ring.authenticate(&expiring.reveal(), t(10)),
            Err(AuthError::Expired)
        );
        assert_eq!(
            ring.authenticate(&revoked.reveal(), t(4)).unwrap().role,
            Role::Admin
        );
        assert_eq!(
            ring.authenticate(&revoked.reveal(), t(5)),
            Err(AuthError::Revoked)
        );
        // The right id with a wrong secret says nothing about the key's state.
        let forged = format!("fsk_{}_{}", revoked.id, "A".repeat(43));
        assert_eq!(ring.authenticate(&forged, t(6)), Err(AuthError::Invalid));
        assert_eq!(ring.authenticate("nonsense", t(1)), Err(AuthError::Invalid));
        // Revoking every key does not reopen the service.
        ring.replace(vec![]);
        assert!(ring.has_keys());
    }

    #[test]
    fn the_bootstrap_key_is_an_admin() {
        let secret = "x".repeat(BOOTSTRAP_MIN_LEN);
        let ring = Keyring::new(Some(&secret));
        assert!(ring.has_keys());
        let p = ring.authenticate(&secret, t(0)).unwrap();
        assert_eq!((p.key_id.as_str(), p.role), (BOOTSTRAP_ID, Role::Admin));
        assert_eq!(
            ring.authenticate(&"y".repeat(32), t(0)),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn last_use_is_handed_out_at_most_once_a_minute() {
        let ring = Keyring::new(None);
        let key = ApiKey::generate();
        ring.replace(vec![KeyRecord::new(&key, Role::Read, t(0), None)]);
        ring.authenticate(&key.reveal(), t(1)).unwrap();
        ring.authenticate(&key.reveal(), t(2)).unwrap();
        assert_eq!(ring.take_usage(t(3)), vec![(key.id.clone(), t(2))]);
        ring.authenticate(&key.reveal(), t(30)).unwrap();
        assert_eq!(ring.take_usage(t(31)), vec![]);
        assert_eq!(ring.take_usage(t(63)), vec![(key.id.clone(), t(30))]);
        assert_eq!(ring.take_usage(t(200)), vec![]);
    }
}
