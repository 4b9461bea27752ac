//! Plain domain types: ids, entities, events. No IO, no clock, no wire format:
//! `ingest` turns wire JSON into these, `store` persists them, `score` reads them.

mod entity;
mod event;
mod id;

pub use entity::{Entity, EntityKind};
pub use event::{Event, EventKind, EventType, Role, Sentiment, SentimentSource};
pub use id::{EntityId, EventId, IdError, MAX_ID_BYTES};
