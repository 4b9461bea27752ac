//! Identifier newtypes. Ids are opaque strings chosen by the sender: emails
//! (`ann+news@example.com`), UUIDs, names with accents and spaces are all
//! ordinary ids. The rules keep them safe in URLs, logs, keys and both stores,
//! and nothing more:
//!
//! - any UTF-8, normalised to Unicode NFC, so one name typed two ways
//!   (`é` precomposed or `e` + combining accent) is one id;
//! - at most [`MAX_ID_BYTES`] bytes after normalisation;
//! - not empty, not only whitespace, and not `.` or `..` (a URL path cannot
//!   carry those as a segment: clients remove them);
//! - no control characters (Unicode category Cc, which includes `\u0000`,
//!   which PostgreSQL cannot store), no line or paragraph separators
//!   (U+2028, U+2029) and no bidirectional-formatting controls (U+061C,
//!   U+200E, U+200F, U+202A..U+202E, U+2066..U+2069): they break log lines or
//!   make an id display as another. Other invisible characters (zero-width
//!   joiners, variation selectors, soft hyphens) are kept as sent: emoji and
//!   several scripts need them, and Fusion does not judge look-alikes.
//!
//! An id is shared (`Arc<str>`): the scoring state copies ids into impulses,
//! timelines and edge histories, and a copy must not cost an allocation.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Longest id accepted, in bytes of UTF-8 after NFC normalisation (an email
/// address is at most 254).
pub const MAX_ID_BYTES: usize = 256;

/// Why a string is not an id (module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty, or only whitespace.
    #[error("must not be empty or only whitespace")]
    Empty,
    /// Longer than [`MAX_ID_BYTES`] after normalisation.
    #[error("must be at most {MAX_ID_BYTES} bytes long (UTF-8, after NFC normalisation)")]
    TooLong,
    /// `.` or `..`.
    #[error("cannot be `.` or `..`, which a URL cannot carry as a path segment; choose another id")]
    DotSegment,
    #[error(
        "must not contain control characters, line separators or bidirectional-text controls \
         (found U+{:04X}); remove it",
        *.0 as u32
    )]
    /// A forbidden character (a control, a line separator, a
    /// bidirectional-text control).
    Forbidden(char),
}

/// Whether `c` may not appear in an id (see the module docs).
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// The id as Fusion keeps it (NFC), or why it is not one.
fn normalise(s: &str) -> Result<Cow<'_, str>, IdError> {
    if let Some(c) = s.chars().find(|&c| forbidden(c)) {
        return Err(IdError::Forbidden(c));
    }
    let s: Cow<'_, str> = match is_nfc_quick(s.chars()) {
        IsNormalized::Yes => Cow::Borrowed(s),
        _ => Cow::Owned(s.nfc().collect()),
    };
    if s.trim().is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    if s == "." || s == ".." {
        return Err(IdError::DotSegment);
    }
    Ok(s)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Deserialising (from a store) takes the id as stored: it was checked
        /// when it came in, and a rule tightened since must not make a store
        /// unreadable. Input from outside goes through [`Self::new`].
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks and normalises (NFC) an id from outside (the module docs
            /// give the rules).
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                normalise(s.as_ref()).map(|s| Self(Arc::from(s.as_ref())))
            }
            /// The id's text (NFC).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl From<String> for $name {
            fn from(stored: String) -> Self {
                Self(Arc::from(stored))
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
    fn ids_as_pipelines_have_them_are_accepted() {
        for id in [
            "ann+news@example.com",
            "3f2b8c1e-9d4a-4f6b-8e2a-1c5d7f9b0a3e",
            "José Álvarez",
            "a/b?c#d%e f",
            "...",
            "👩‍👩‍👧",
            "brand:acme-1_x@y.z",
        ] {
            assert_eq!(EntityId::new(id).map(|i| i.to_string()), Ok(id.to_string()));
        }
    }

    #[test]
    fn one_name_typed_two_ways_is_one_id() {
        let composed = EntityId::new("Jos\u{e9}").unwrap();
        let decomposed = EntityId::new("Jose\u{301}").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "Jos\u{e9}");
    }

    #[test]
    fn ids_reject_what_no_url_or_store_can_carry() {
        assert_eq!(EntityId::new(""), Err(IdError::Empty));
        assert_eq!(EntityId::new(" \t"), Err(IdError::Forbidden('\t')));
        assert_eq!(EntityId::new("   "), Err(IdError::Empty));
        assert_eq!(EntityId::new("\u{3000}"), Err(IdError::Empty));
        assert_eq!(EntityId::new("."), Err(IdError::DotSegment));
        assert_eq!(EntityId::new(".."), Err(IdError::DotSegment));
        assert_eq!(EntityId::new("a\0b"), Err(IdError::Forbidden('\0')));
        assert_eq!(EntityId::new("a\u{85}"), Err(IdError::Forbidden('\u{85}')));
        assert_eq!(
            EntityId::new("a\u{2028}"),
            Err(IdError::Forbidden('\u{2028}'))
        );
        assert_eq!(
            EntityId::new("\u{202E}evil"),
            Err(IdError::Forbidden('\u{202E}'))
        );
        assert_eq!(EntityId::new("x".repeat(257)), Err(IdError::TooLong));
        assert!(EntityId::new("x".repeat(256)).is_ok());
        // 128 two-byte letters are 256 bytes; one more is too long.
        assert!(EntityId::new("é".repeat(128)).is_ok());
        assert_eq!(EntityId::new("é".repeat(129)), Err(IdError::TooLong));
    }

    #[test]
    fn the_length_is_counted_after_normalisation() {
        // 86 decomposed é (3 bytes each, 258) compose to 172 bytes.
        assert!(EntityId::new("e\u{301}".repeat(86)).is_ok());
    }

    #[test]
    fn a_refused_character_is_named_by_its_code_point() {
        let message = EntityId::new("a\u{7}").unwrap_err().to_string();
        assert!(message.contains("U+0007"), "{message}");
    }

    /// Regression: `+` and `é` were refused with a message saying "only
    /// letters" while refusing a letter.
    #[test]
    fn plus_and_accented_letters_are_not_refused() {
        assert!(EntityId::new("ann+1@example.com").is_ok());
        assert!(EntityId::new("é").is_ok());
    }
}
