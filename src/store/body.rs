//! The stored body of an event: the bytes both stores keep for it, in a
//! format of its own, versioned, so that renaming or reshaping a domain
//! type (`Event`, `EventKind`) cannot make an existing store unreadable.
//! The engine and the stores read and write bodies only through here, and
//! content digests (`digest.rs`) hash the same mirror, so the format is
//! said once.
//!
//! Versions (the `v` field of the JSON object):
//! - **v0**, written up to issue #10: the JSON of the domain `Event`'s serde
//!   derive as it stood then (`{"id","time","kind":{"Purchase":{..}},
//!   "extra"?,"attributes"?}`), no `v` field;
//! - **v1**, written since: the same object with `"v":1` first, its types
//!   spelled out below ([`EventV1`], [`KindV1`]) and never derived from the
//!   domain. v0 decodes with the v1 types (v1 froze v0's shape), so old
//!   stores open (`tests/it/old_stores.rs` opens stores written by v0).
//!
//! A later version adds its own types here and converts; the v1 types stay
//! as they are for as long as stores written with them must open.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ContentKey, Digest, StoreError};
use crate::domain::{
    Currency, EntityId, Event, EventId, EventKind, FreeObject, Sentiment, SentimentSource,
};

/// The version written (module docs).
pub const VERSION: u32 = 1;

/// Appends the stored body of `event` (the current version) to `out` and
/// answers its digest (one serialisation for both: `Digest::write_json`);
/// `key`, when given, is the content duplicates are decided on instead of
/// the event's own (a pipeline message's, `ContentKey`).
pub fn encode(event: &Event, key: Option<&ContentKey>, out: &mut Vec<u8>) -> Digest {
    Digest::write_json_keyed(event, key, out)
}

/// The event of a stored body, of any version this build reads. Errors: a
/// body that is not one (a corrupt store), or one of a later version (a
/// store written by a newer Fusion: run that version), as
/// `StoreError::Internal`.
pub fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
    let stored: EventV1 = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable event in the store: {e}")))?;
    if stored.v > VERSION {
        return Err(StoreError::Internal(format!(
            "event '{}' was stored in format v{}, which this version of fusion cannot read; \
             run the version that wrote it, or a later one",
            stored.id, stored.v
        )));
    }
    Ok(stored.into_event())
}

/// A stored event, v0 and v1 (module docs). Field order is the order
/// written: `Digest::write_json` writes the same object by hand.
#[derive(Debug, Deserialize)]
pub(super) struct EventV1 {
    /// Absent in v0.
    #[serde(default)]
    v: u32,
    id: EventId,
    time: DateTime<Utc>,
    kind: KindV1,
    #[serde(default)]
    extra: Option<FreeObject>,
    #[serde(default)]
    attributes: Option<FreeObject>,
}

impl EventV1 {
    fn into_event(self) -> Event {
        Event {
            id: self.id,
            time: self.time,
            kind: self.kind.into_kind(),
            extra: self.extra,
            attributes: self.attributes,
        }
    }
}

/// Where a sentiment came from, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SourceV1 {
    Given,
    Text,
}

/// A sentiment, as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct SentimentV1 {
    value: f64,
    source: SourceV1,
}

impl From<Sentiment> for SentimentV1 {
    fn from(s: Sentiment) -> Self {
        SentimentV1 {
            value: s.value,
            source: match s.source {
                SentimentSource::Given => SourceV1::Given,
                SentimentSource::Text => SourceV1::Text,
            },
        }
    }
}

impl From<SentimentV1> for Sentiment {
    fn from(s: SentimentV1) -> Self {
        Sentiment {
            value: s.value,
            source: match s.source {
                SourceV1::Given => SentimentSource::Given,
                SourceV1::Text => SentimentSource::Text,
            },
        }
    }
}

/// What happened, as stored: serde's external tagging, the variant names
/// and fields of v0 (module docs). Money amounts are in `currency`'s units.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)] // the fields are `EventKind`'s, documented there
pub(super) enum KindV1 {
    Purchase {
        person: EntityId,
        brand: EntityId,
        amount: f64,
        currency: Currency,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    BrandSales {
        brand: EntityId,
        amount: f64,
        #[serde(default = "Currency::default_currency")]
        currency: Currency,
    },
    Post {
        person: EntityId,
        brand: EntityId,
        sentiment: SentimentV1,
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Mention {
        person: EntityId,
        brand: EntityId,
        sentiment: SentimentV1,
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Review {
        person: EntityId,
        brand: EntityId,
        rating: u8,
        sentiment: Option<SentimentV1>,
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    Service {
        person: EntityId,
        brand: EntityId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        csat: Option<u8>,
        effort: Option<u8>,
        resolved: Option<bool>,
        wait_seconds: Option<f64>,
        transfers: Option<u32>,
    },
    Endorsement {
        person: EntityId,
        brand: EntityId,
        strength: f64,
    },
    Audience {
        person: EntityId,
        followers: u64,
    },
    Follow {
        person: EntityId,
        target: EntityId,
        strength: f64,
    },
    Unfollow {
        person: EntityId,
        target: EntityId,
    },
    Occasion {
        occasion: EntityId,
        brand: EntityId,
        performers: Vec<EntityId>,
        tags: Vec<String>,
    },
    Attendance {
        person: EntityId,
        occasion: EntityId,
    },
    Cause {
        brand: EntityId,
        tags: Vec<String>,
        amount: f64,
        #[serde(default = "Currency::default_currency")]
        currency: Currency,
    },
    Consent {
        person: EntityId,
        granted: bool,
    },
}

impl From<&EventKind> for KindV1 {
    fn from(kind: &EventKind) -> Self {
        use EventKind as K;
        match kind.clone() {
            K::Purchase {
                person,
                brand,
                amount,
                currency,
                channel,
            } => KindV1::Purchase {
                person,
                brand,
                amount,
                currency,
                channel,
            },
            K::BrandSales {
                brand,
                amount,
                currency,
            } => KindV1::BrandSales {
                brand,
                amount,
                currency,
            },
            K::Post {
                person,
                brand,
                sentiment,
                text,
                channel,
            } => KindV1::Post {
                person,
                brand,
                sentiment: sentiment.into(),
                text,
                channel,
            },
            K::Mention {
                person,
                brand,
                sentiment,
                text,
                channel,
            } => KindV1::Mention {
                person,
                brand,
                sentiment: sentiment.into(),
                text,
                channel,
            },
            K::Review {
                person,
                brand,
                rating,
                sentiment,
                text,
                channel,
            } => KindV1::Review {
                person,
                brand,
                rating,
                sentiment: sentiment.map(Into::into),
                text,
                channel,
            },
            K::Service {
                person,
                brand,
                channel,
                csat,
                effort,
                resolved,
                wait_seconds,
                transfers,
            } => KindV1::Service {
                person,
                brand,
                channel,
                csat,
                effort,
                resolved,
                wait_seconds,
                transfers,
            },
            K::Endorsement {
                person,
                brand,
                strength,
            } => KindV1::Endorsement {
                person,
                brand,
                strength,
            },
            K::Audience { person, followers } => KindV1::Audience { person, followers },
            K::Follow {
                person,
                target,
                strength,
            } => KindV1::Follow {
                person,
                target,
                strength,
            },
            K::Unfollow { person, target } => KindV1::Unfollow { person, target },
            K::Occasion {
                occasion,
                brand,
                performers,
                tags,
            } => KindV1::Occasion {
                occasion,
                brand,
                performers,
                tags,
            },
            K::Attendance { person, occasion } => KindV1::Attendance { person, occasion },
            K::Cause {
                brand,
                tags,
                amount,
                currency,
            } => KindV1::Cause {
                brand,
                tags,
                amount,
                currency,
            },
            K::Consent { person, granted } => KindV1::Consent { person, granted },
        }
    }
}

impl KindV1 {
    fn into_kind(self) -> EventKind {
        use EventKind as K;
        match self {
            KindV1::Purchase {
                person,
                brand,
                amount,
                currency,
                channel,
            } => K::Purchase {
                person,
                brand,
                amount,
                currency,
                channel,
            },
            KindV1::BrandSales {
                brand,
                amount,
                currency,
            } => K::BrandSales {
                brand,
                amount,
                currency,
            },
            KindV1::Post {
                person,
                brand,
                sentiment,
                text,
                channel,
            } => K::Post {
                person,
                brand,
                sentiment: sentiment.into(),
                text,
                channel,
            },
            KindV1::Mention {
                person,
                brand,
                sentiment,
                text,
                channel,
            } => K::Mention {
                person,
                brand,
                sentiment: sentiment.into(),
                text,
                channel,
            },
            KindV1::Review {
                person,
                brand,
                rating,
                sentiment,
                text,
                channel,
            } => K::Review {
                person,
                brand,
                rating,
                sentiment: sentiment.map(Into::into),
                text,
                channel,
            },
            KindV1::Service {
                person,
                brand,
                channel,
                csat,
                effort,
                resolved,
                wait_seconds,
                transfers,
            } => K::Service {
                person,
                brand,
                channel,
                csat,
                effort,
                resolved,
                wait_seconds,
                transfers,
            },
            KindV1::Endorsement {
                person,
                brand,
                strength,
            } => K::Endorsement {
                person,
                brand,
                strength,
            },
            KindV1::Audience { person, followers } => K::Audience { person, followers },
            KindV1::Follow {
                person,
                target,
                strength,
            } => K::Follow {
                person,
                target,
                strength,
            },
            KindV1::Unfollow { person, target } => K::Unfollow { person, target },
            KindV1::Occasion {
                occasion,
                brand,
                performers,
                tags,
            } => K::Occasion {
                occasion,
                brand,
                performers,
                tags,
            },
            KindV1::Attendance { person, occasion } => K::Attendance { person, occasion },
            KindV1::Cause {
                brand,
                tags,
                amount,
                currency,
            } => K::Cause {
                brand,
                tags,
                amount,
                currency,
            },
            KindV1::Consent { person, granted } => K::Consent { person, granted },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v0 body as the store wrote it before issue #10 (byte for byte what
    /// main at 28437ce wrote for this event).
    const V0: &str = r#"{"id":"e1","time":"2026-01-02T03:04:05.000006Z","kind":{"Post":{"person":"ann","brand":"shop","sentiment":{"value":0.5,"source":"text"},"text":"nice","channel":"web"}},"attributes":{"k":1}}"#;

    #[test]
    fn a_v0_body_decodes_and_encodes_as_v1_with_the_same_digest() {
        let event = decode(V0.as_bytes()).unwrap();
        assert_eq!(event.id.as_str(), "e1");
        assert!(matches!(
            event.kind,
            EventKind::Post {
                sentiment: Sentiment {
                    value: 0.5,
                    source: SentimentSource::Text
                },
                ..
            }
        ));
        let mut out = Vec::new();
        let digest = encode(&event, None, &mut out);
        assert_eq!(out, format!("{{\"v\":1,{}", &V0[1..]).into_bytes());
        assert_eq!(decode(&out).unwrap(), event);
        assert_eq!(digest, Digest::of(&event));
    }

    #[test]
    fn a_body_of_a_later_version_is_refused_saying_so() {
        let later = format!("{{\"v\":2,{}", &V0[1..]);
        let err = decode(later.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("format v2") && err.contains("'e1'"), "{err}");
    }
}
