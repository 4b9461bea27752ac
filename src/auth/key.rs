//! API keys: `fsk_<key id>_<secret>`. The key id is public (listed by
//! `fusion keys list`, written to logs and audits); the secret is 32 bytes
//! from the OS RNG, base64url without padding. Only SHA-256 of the secret is
//! stored: a key carries 256 bits of entropy, so a password KDF (bcrypt,
//! argon2) would add cost without adding safety; it protects guessable
//! secrets, and these are not guessable.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

const PREFIX: &str = "fsk_";

/// What a key may do. `admin` includes `read` and `ingest`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Post events and register entities.
    Ingest,
    /// Read scores, listings, entities.
    Read,
    /// Everything, including erasure, export and rescore.
    Admin,
}

impl Role {
    /// Whether a key of this role may use a route that needs `needed`.
    pub fn grants(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    pub const ALL: [Role; 3] = [Role::Ingest, Role::Read, Role::Admin];
}

impl FromStr for Role {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| KeyError::Role(s.to_string()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an API key: expected fsk_<key id>_<secret>")]
    Malformed,
    #[error("unknown role {0:?}; use ingest, read or admin")]
    Role(String),
    #[error("a key id is 1 to 32 lowercase letters and digits, not {0:?}")]
    Id(String),
}

/// The public half of a key: 1 to 32 lowercase ASCII letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    pub fn new(s: impl Into<String>) -> Result<Self, KeyError> {
        let s = s.into();
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(KeyId(s))
        } else {
            Err(KeyError::Id(s))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh random id: 16 hex digits (64 bits; ids need to be unique, not secret).
    pub fn generate() -> Self {
        KeyId(super::hex(&super::random_bytes()[..8]))
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        KeyId::new(s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// SHA-256 of a key's secret: what the store keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(secret: &[u8]) -> Self {
        SecretHash(sha2::Sha256::digest(secret).into())
    }

    /// Constant-time comparison (`subtle`): the time taken does not say how
    /// many leading bytes matched.
    pub fn matches(&self, secret: &[u8]) -> bool {
        SecretHash::of(secret).0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A whole key as a client presents it. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    secret: String,
}

impl ApiKey {
    /// A new key with a fresh id and 32 random bytes of secret.
    pub fn generate() -> Self {
        ApiKey {
            id: KeyId::generate(),
            secret: URL_SAFE_NO_PAD.encode(super::random_bytes()),
        }
    }

    /// Parses `fsk_<key id>_<secret>`. The id has no `_`, so the first `_`
    /// after the prefix ends it (the base64url secret may contain `_`).
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let rest = s.strip_prefix(PREFIX).ok_or(KeyError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(KeyError::Malformed)?;
        if secret.is_empty() || secret.len() > 256 {
            return Err(KeyError::Malformed);
        }
        Ok(ApiKey {
            id: KeyId::new(id).map_err(|_| KeyError::Malformed)?,
            secret: secret.to_string(),
        })
    }

    pub fn secret_hash(&self) -> SecretHash {
        SecretHash::of(self.secret.as_bytes())
    }

    pub fn secret(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// The whole key, as the client sends it. Printed once, at creation.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({PREFIX}{}_…)", self.id)
    }
}

/// A stored key: everything but the secret, which only its holder has.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub role: Role,
    pub hash: SecretHash,
    pub created: chrono::DateTime<chrono::Utc>,
    /// After this the key is refused.
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was revoked; refused from then on.
    pub revoked: Option<chrono::DateTime<chrono::Utc>>,
    /// Updated lazily: at most once a minute per key, off the request path.
    pub last_used: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyRecord {
    /// The record of a freshly generated key.
    pub fn new(
        key: &ApiKey,
        role: Role,
        created: chrono::DateTime<chrono::Utc>,
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        KeyRecord {
            id: key.id.clone(),
            role,
            hash: key.secret_hash(),
            created,
            expires,
            revoked: None,
            last_used: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_and_matches_its_hash() {
        for _ in 0..100 {
            let key = ApiKey::generate();
            let text = key.reveal();
            let back = ApiKey::parse(&text).unwrap();
            assert_eq!(back, key);
            assert!(key.secret_hash().matches(back.secret()));
            assert!(!key.secret_hash().matches(b"something else"));
            assert_eq!(key.secret().len(), 43, "32 bytes in base64url");
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "fsk_",
            "fsk_abc",
            "fsk_abc_",
            "fsk__secret",
            "fsk_ABC_secret",
            "Bearer fsk_abc_x",
            "xyz_abc_secret",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(KeyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn admin_includes_the_other_roles_and_no_other_role_does() {
        for needed in Role::ALL {
            assert!(Role::Admin.grants(needed));
        }
        assert!(Role::Read.grants(Role::Read));
        assert!(!Role::Read.grants(Role::Ingest));
        assert!(!Role::Read.grants(Role::Admin));
        assert!(Role::Ingest.grants(Role::Ingest));
        assert!(!Role::Ingest.grants(Role::Read));
        assert!(!Role::Ingest.grants(Role::Admin));
    }
}
