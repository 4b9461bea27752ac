//! Content digests: what lets a store tell a re-sent event (a duplicate)
//! from a different event sent under a used id (a conflict; issue #9,
//! item 4). Both backends keep one per stored event and compute it from the
//! stored body where an older store has none.
//!
//! An event's **content** is what it says happened: its type, its time and
//! its fields, everything of [`Event`] but the id (equal by definition) and
//! `attributes`, the sender's free metadata, which is transport rather than
//! content: a pipeline that re-sends with a new send time in `attributes`
//! still sends the same event. So the digest has two parts: SHA-256 of the
//! content (16 bytes: a collision is a 2^-64 event), and a short one of the
//! attributes, only to say that a duplicate's attributes differed from the
//! stored ones (which are kept).
//!
//! The content is hashed as the JSON of its fields in the stored format
//! (`body.rs`, v1: serde, in declaration order; numbers as serde_json
//! writes them, which round-trips f64), so the digest is a function of the
//! event alone and does not move when a domain type is renamed. This module knows
//! nothing of HTTP, scoring or storage rows.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::body::KindV1;
use crate::domain::{Event, FreeObject};

/// Bytes of a stored digest: 16 of content, 8 of attributes.
pub const DIGEST_LEN: usize = 24;

/// The digest of one event (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    content: [u8; 16],
    attributes: [u8; 8],
}

/// The content of an event as its sender's source message says it, when
/// that is not the derived event: a Segment message or a CloudEvent minus
/// its transport fields (`ingest::segment`, `ingest::cloudevents`). A retry
/// of such a message can map to another event (its time is corrected for
/// the sender's clock skew at each delivery), yet it is the same message:
/// the store compares this key instead of the derived event's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentKey([u8; 16]);

impl ContentKey {
    /// The key of these bytes (SHA-256, first 16 bytes): the caller passes
    /// a canonical form of the content (JSON with sorted keys).
    pub fn of(bytes: &[u8]) -> ContentKey {
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        ContentKey(hash[..16].try_into().expect("16 of 32 bytes"))
    }
}

/// How an event compares with the stored event of the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sameness {
    /// Same content, same attributes: a duplicate.
    Same,
    /// Same content, other attributes: a duplicate; the stored attributes stay.
    OtherAttributes,
    /// Other content: a conflict.
    Conflicting,
}

/// The content of an event, as hashed. Built by destructuring [`Event`]
/// without `..`, so a field added to `Event` does not compile here until it
/// is sorted into content or transport.
#[derive(Serialize)]
struct Content<'a> {
    time: &'a chrono::DateTime<chrono::Utc>,
    kind: KindV1,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: &'a Option<FreeObject>,
}

/// Feeds what serde_json writes straight into the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sha256_of(value: &impl Serialize) -> [u8; 32] {
    let mut w = HashWriter(Sha256::new());
    // Serialising domain types into a writer that cannot fail cannot fail.
    serde_json::to_writer(&mut w, value).expect("domain types serialise to JSON");
    w.0.finalize().into()
}

impl Digest {
    /// The digest of `event`.
    pub fn of(event: &Event) -> Digest {
        let Event {
            id: _,
            time,
            kind,
            extra,
            attributes,
        } = event;
        Digest::from_hashes(
            sha256_of(&Content {
                time,
                kind: kind.into(),
                extra,
            }),
            sha256_of(attributes),
        )
    }

    fn from_hashes(content: [u8; 32], attributes: [u8; 32]) -> Digest {
        Digest {
            content: content[..16].try_into().expect("16 of 32 bytes"),
            attributes: attributes[..8].try_into().expect("8 of 32 bytes"),
        }
    }

    /// Appends the stored body of `event` to `out` (`body.rs`, v1:
    /// `{"v":1,"id":..,"time":..,"kind":..[,"extra":..][,"attributes":..]}`),
    /// and answers its digest:
    /// the content is serialised once for both (the stores encode every
    /// event they append, so hashing a second serialisation cost ingest a
    /// quarter of its speed).
    pub fn write_json(event: &Event, out: &mut Vec<u8>) -> Digest {
        let Event {
            id,
            time,
            kind,
            extra,
            attributes,
        } = event;
        let ser = "domain types serialise to JSON";
        out.extend_from_slice(b"{\"v\":1,\"id\":");
        serde_json::to_writer(&mut *out, id).expect(ser);
        out.push(b',');
        let start = out.len();
        let content = Content {
            time,
            kind: kind.into(),
            extra,
        };
        serde_json::to_writer(&mut *out, &content).expect(ser);
        let content: [u8; 32] = Sha256::digest(&out[start..]).into();
        // `{"time":..,"kind":..[,"extra":..]}` becomes the middle of the
        // body's object (`body::EventV1` declares its fields in this order).
        out.remove(start);
        out.pop();
        let attributes: [u8; 32] = match attributes {
            None => Sha256::digest(b"null").into(),
            Some(a) => {
                out.extend_from_slice(b",\"attributes\":");
                let start = out.len();
                serde_json::to_writer(&mut *out, a).expect(ser);
                Sha256::digest(&out[start..]).into()
            }
        };
        out.push(b'}');
        Digest::from_hashes(content, attributes)
    }

    /// `write_json`, with the content part given by the caller when `key`
    /// is (the attributes part is always the event's).
    pub fn write_json_keyed(event: &Event, key: Option<&ContentKey>, out: &mut Vec<u8>) -> Digest {
        let digest = Digest::write_json(event, out);
        match key {
            Some(k) => Digest {
                content: k.0,
                ..digest
            },
            None => digest,
        }
    }

    /// How `self` (a sent event) compares with `stored`.
    pub fn compare(&self, stored: &Digest) -> Sameness {
        if self.content != stored.content {
            Sameness::Conflicting
        } else if self.attributes != stored.attributes {
            Sameness::OtherAttributes
        } else {
            Sameness::Same
        }
    }

    /// The stored form.
    pub fn to_bytes(&self) -> [u8; DIGEST_LEN] {
        let mut out = [0u8; DIGEST_LEN];
        out[..16].copy_from_slice(&self.content);
        out[16..].copy_from_slice(&self.attributes);
        out
    }

    /// From the stored form; `None` if it is not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Digest> {
        if bytes.len() != DIGEST_LEN {
            return None;
        }
        Some(Digest {
            content: bytes[..16].try_into().ok()?,
            attributes: bytes[16..].try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EntityId, EventId, EventKind};

    fn purchase(id: &str, amount: f64) -> Event {
        Event {
            id: EventId::new(id).unwrap(),
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            kind: EventKind::Purchase {
                person: EntityId::new("ann").unwrap(),
                brand: EntityId::new("knit").unwrap(),
                amount,
                currency: crate::domain::Currency::new("EUR").unwrap(),
                channel: None,
            },
            extra: None,
            attributes: None,
        }
    }

    #[test]
    fn content_decides_and_attributes_only_qualify() {
        let a = purchase("e1", 10.0);
        // The id is not content: the same event under another id digests alike.
        assert_eq!(Digest::of(&a), Digest::of(&purchase("e2", 10.0)));
        assert_eq!(
            Digest::of(&purchase("e1", 10.5)).compare(&Digest::of(&a)),
            Sameness::Conflicting
        );
        let later = Event {
            time: a.time + chrono::Duration::seconds(1),
            ..a.clone()
        };
        assert_eq!(
            Digest::of(&later).compare(&Digest::of(&a)),
            Sameness::Conflicting
        );
        let mut sent_at = serde_json::Map::new();
        sent_at.insert("sent_at".into(), "2026-11-02T00:00:00Z".into());
        let resent = Event {
            attributes: Some(sent_at),
            ..a.clone()
        };
        assert_eq!(
            Digest::of(&resent).compare(&Digest::of(&a)),
            Sameness::OtherAttributes
        );
        let d = Digest::of(&resent);
        assert_eq!(Digest::from_bytes(&d.to_bytes()), Some(d));
        assert_eq!(Digest::from_bytes(&[0; 3]), None);
    }

    #[test]
    fn write_json_writes_what_serde_writes_and_the_same_digest() {
        let mut attributes = serde_json::Map::new();
        attributes.insert("a\"b".into(), serde_json::json!({"x": [1.5, null, "é"]}));
        let events = [
            purchase("e1", 10.0),
            purchase("q.u-o_t:e@s", 0.18696658741595118),
            Event {
                attributes: Some(attributes),
                ..purchase("e3", 1e-9)
            },
            Event {
                attributes: Some(serde_json::Map::new()),
                ..purchase("e4", 1e12)
            },
        ];
        for e in &events {
            let mut out = vec![7u8];
            let d = Digest::write_json(e, &mut out);
            assert_eq!(&super::super::body::decode(&out[1..]).unwrap(), e);
            // v1 froze v0's shape: the digests of events stored as v0 are
            // those of the same events sent again (a change of the domain
            // types that breaks this needs a format version of its own).
            let v0 = serde_json::to_vec(e).unwrap();
            assert_eq!(&out[1..8], b"{\"v\":1,", "{e:?}");
            assert_eq!(&out[8..], &v0[1..], "v1 is v0 with a version: {e:?}");
            assert_eq!(d, Digest::of(e), "{e:?}");
        }
    }
}
