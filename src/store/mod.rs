//! The event log: the source of truth. `EventStore` is the one interface the
//! engine writes to and replays from; `embedded` (redb) is the default backend,
//! `postgres` the production one (which also materialises scores for SQL readers).
//!
//! Contract every backend keeps (checked by one conformance suite):
//! - `append` answers only after the events are durable (committed);
//! - an event id seen before is a duplicate: it changes nothing and is reported
//!   as such, also within one batch (the first occurrence wins);
//! - `scan` returns every stored event in canonical order (event time, then id),
//!   so a replay does not depend on arrival order;
//! - `erase` removes every event that names the entity, and its registration.
//!
//! This module knows nothing of HTTP or scoring.

use std::future::Future;

use crate::domain::{Entity, EntityId, Event};

pub mod backend;
pub mod embedded;
pub mod keys;
pub mod postgres;

pub use backend::Backend;
pub use embedded::EmbeddedStore;
pub use keys::{KeyStore, Keys};
pub use postgres::PostgresStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now; the caller may retry.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a corrupt file, a failed disk.
    #[error("event store failure: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn internal(err: impl std::fmt::Display) -> Self {
        StoreError::Internal(err.to_string())
    }
}

/// One materialised relationship score, as written for SQL readers
/// (`PostgresStore::write_scores`). Named here so the engine can build rows
/// without knowing the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub person: String,
    pub brand: String,
    /// The Fusion Score, 0 to 100.
    pub score: f64,
    /// The raw sum before the tanh mapping.
    pub raw: f64,
    /// sentiment, sales, service, engagement, influence, values.
    pub components: [f64; 6],
    pub as_of: chrono::DateTime<chrono::Utc>,
}

/// What `append` did with each event of the batch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// `true` where the event was new and is now stored, `false` for a duplicate.
    pub inserted: Vec<bool>,
}

impl Appended {
    pub fn accepted(&self) -> usize {
        self.inserted.iter().filter(|&&b| b).count()
    }
    pub fn duplicates(&self) -> usize {
        self.inserted.len() - self.accepted()
    }
}

pub trait EventStore: Send + Sync + 'static {
    /// Stores the new events of `events` durably, all in one commit, and says
    /// which were new. Concurrent calls may share a commit (group commit).
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// Every stored event, in canonical order (time, then id).
    fn scan(&self) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Registers or replaces an entity.
    fn put_entity(&self, entity: Entity) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every registered entity, ordered by id.
    fn entities(&self) -> impl Future<Output = Result<Vec<Entity>, StoreError>> + Send;

    /// Removes the entity's registration and every event that names it;
    /// answers how many events were removed.
    fn erase(&self, id: &EntityId) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Number of stored events.
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Cheap reachability check for `/readyz`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
