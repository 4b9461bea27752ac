//! The stored body of an event: the bytes both stores keep for it. Today
//! the JSON of the domain `Event` (`serde`), which is what every store
//! written so far holds; the engine and the stores read and write bodies
//! only through here, so the format is said once.

use super::{Digest, StoreError};
use crate::domain::Event;

/// Appends the stored body of `event` to `out` and answers its digest (one
/// serialisation for both: `Digest::write_json`).
pub fn encode(event: &Event, out: &mut Vec<u8>) -> Digest {
    Digest::write_json(event, out)
}

/// The event of a stored body. Errors: a body that is not one (a corrupt
/// store), as `StoreError::Internal`.
pub fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable event in the store: {e}")))
}
