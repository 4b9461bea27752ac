//! `Backend`: the store a running Fusion uses, chosen at start (embedded redb
//! by default, PostgreSQL with `--database-url`). It only delegates, so the
//! engine and the HTTP layer have one concrete type.

use std::future::Future;

use super::{Appended, EmbeddedStore, EventStore, PostgresStore, ScoreRow, StoreError};
use crate::domain::{Entity, EntityId, Event};

#[derive(Clone)]
pub enum Backend {
    Embedded(EmbeddedStore),
    Postgres(PostgresStore),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "embedded",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Materialises current scores where SQL readers can see them; the
    /// embedded store has no such readers, so it keeps none.
    pub async fn write_scores(&self, rows: &[ScoreRow]) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(_) => Ok(()),
            Backend::Postgres(s) => s.write_scores(rows).await,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        async move {
            match $self {
                Backend::Embedded($s) => $call.await,
                Backend::Postgres($s) => $call.await,
            }
        }
    };
}

impl EventStore for Backend {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        delegate!(self, s => s.append(events))
    }
    fn scan(&self) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        delegate!(self, s => s.scan())
    }
    fn put_entity(&self, entity: Entity) -> impl Future<Output = Result<(), StoreError>> + Send {
        delegate!(self, s => s.put_entity(entity))
    }
    fn entities(&self) -> impl Future<Output = Result<Vec<Entity>, StoreError>> + Send {
        delegate!(self, s => s.entities())
    }
    fn erase(&self, id: &EntityId) -> impl Future<Output = Result<u64, StoreError>> + Send {
        delegate!(self, s => s.erase(id))
    }
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        delegate!(self, s => s.count())
    }
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        delegate!(self, s => s.ping())
    }
}
