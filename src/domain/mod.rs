//! Plain domain types: ids, entities, events, money, and the bounds of a
//! valid event. No IO, no clock, no wire format: `ingest` turns wire JSON
//! into these, `store` persists them, `score` reads them.

pub mod bounds;
mod entity;
mod event;
mod id;
mod money;

pub use bounds::{MAX_TIME, MIN_TIME, TimeOutOfRange, check_time};
pub use entity::{Entity, EntityKind};
pub use event::{
    Event, EventKind, EventType, FreeObject, LogPosition, Logged, Role, Sentiment, SentimentSource,
};
pub use id::{EntityId, EventId, IdError, MAX_ID_BYTES};
pub use money::{Currency, CurrencyError, CurrencyTable, DEFAULT_CURRENCY, RATE_RANGE};
