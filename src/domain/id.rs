//! Identifier newtypes. Ids are opaque strings chosen by the sender; the only
//! rules are the ones that keep them safe in URLs, logs and keys. An id is
//! shared (`Arc<str>`): the scoring state copies ids into impulses, timelines
//! and edge histories, and a copy must not cost an allocation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} bytes long")]
    TooLong,
    #[error("may contain only letters, digits and . _ - : @ (found {0:?})")]
    BadChar(char),
}

fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s)?;
                Ok(Self(Arc::from(s)))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An event's idempotency key: the same id twice is one event.
    EventId
);
id_type!(
    /// A person, brand or occasion. One namespace for all kinds.
    EntityId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_what_would_break_urls() {
        assert_eq!(EntityId::new(""), Err(IdError::Empty));
        assert_eq!(EntityId::new("a/b"), Err(IdError::BadChar('/')));
        assert_eq!(EntityId::new("x".repeat(129)), Err(IdError::TooLong));
        assert!(EntityId::new("brand:acme-1_x@y.z").is_ok());
    }
}
