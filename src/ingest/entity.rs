//! The checks of an entity registration, said once: `PUT /v1/entities/{id}`
//! and the pipelines' identify (and group) messages both register through
//! them. The same rules as events' strings and numbers (`domain::bounds`):
//! both stores must hold what is accepted.
//!
//! Must not: know HTTP or the store.

use super::FieldError;
use crate::domain::bounds::{MAX_FOLLOWERS, NUL};
use crate::domain::{Entity, EntityId, EntityKind};

/// Most interests of one entity.
pub const MAX_INTERESTS: usize = 100;

/// The entity these fields register, or the first field at fault.
pub fn check_entity(
    id: EntityId,
    kind: EntityKind,
    name: Option<String>,
    followers: Option<u64>,
    interests: Vec<String>,
) -> Result<Entity, FieldError> {
    if name
        .as_ref()
        .is_some_and(|n| n.len() > 256 || n.contains(NUL))
    {
        return Err(FieldError::new(
            "name",
            "must be at most 256 bytes long, without the character U+0000",
        ));
    }
    if interests.len() > MAX_INTERESTS
        || interests
            .iter()
            .any(|i| i.trim().is_empty() || i.len() > 128 || i.contains(NUL))
    {
        return Err(FieldError::new(
            "interests",
            "must be at most 100 non-empty strings of at most 128 bytes, without U+0000",
        ));
    }
    if followers.is_some() && !kind.is_person() {
        return Err(FieldError::new("followers", "only people have followers"));
    }
    if followers.is_some_and(|n| n > MAX_FOLLOWERS) {
        return Err(FieldError::new(
            "followers",
            format!("must be at most {MAX_FOLLOWERS}"),
        ));
    }
    Ok(Entity {
        id,
        kind,
        name,
        followers,
        interests: interests.iter().map(|s| s.trim().to_string()).collect(),
    })
}
