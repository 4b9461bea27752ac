//! Who may do what: API keys and their roles, the in-memory keyring the
//! service authenticates against, and the dashboard's signed session
//! cookies with their CSRF tokens.
//!
//! Owns the key format (`fsk_<key id>_<secret>`), key generation (OS RNG),
//! hashing and constant-time comparison, the role lattice, session and CSRF
//! tokens, and the salted hash that erasure audits record instead of an id.
//! Must not speak HTTP (`http::auth` maps this to requests and answers) nor
//! know storage rows (`store::keys` keeps the records).

pub mod key;
pub mod keyring;
pub mod session;

pub use key::{ApiKey, KeyError, KeyId, KeyRecord, Role, SecretHash};
pub use keyring::{AuthError, Keyring, Principal};
pub use session::{Session, SessionKeys};

use hmac::{KeyInit, Mac};

/// HMAC-SHA256 of `message` under `key`: session signatures, CSRF tokens and
/// the salted hash of erased ids (RFC 2104).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// 32 bytes from the operating system's RNG.
pub(crate) fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    bytes
}

/// The salted hash an erasure audit records instead of the erased id: hex
/// HMAC-SHA256 under the store's audit salt. Whoever holds the salt (the
/// store's administrator) can check whether a given id was erased; nobody
/// can list the ids, and a guess cannot be tested without the salt.
pub fn subject_hash(salt: &[u8], id: &str) -> String {
    hex(&hmac_sha256(salt, &[b"erasure\0", id.as_bytes()]))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
