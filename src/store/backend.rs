//! `Backend`: the store a running Fusion uses, chosen at start (embedded redb
//! by default, PostgreSQL with `--database-url`). It only delegates, so the
//! engine and the HTTP layer have one concrete type.

use super::{
    AppendMode, Appended, ContentKey, EmbeddedStore, EventStore, PostgresStore, ScoreRow,
    StoreError,
};
use chrono::{DateTime, Utc};

use crate::domain::{Entity, EntityId, Event, EventId, LogPosition, Logged};

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

    /// Lets go of the embedded store's file at the end of a command, so
    /// that the next open finds it closed cleanly: a command that ended
    /// with the engine's threads still holding it left the file to be
    /// repaired (every page read and checked) at every start, as long as
    /// decoding the snapshot itself (task h37, ARCHITECTURE.md, "Where a
    /// start's seconds go"). Reads after it fail. PostgreSQL: nothing.
    pub async fn close(&self) {
        if let Backend::Embedded(s) = self {
            s.clone().close().await;
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
        match $self {
            Backend::Embedded($s) => $call.await,
            Backend::Postgres($s) => $call.await,
        }
    };
}

impl EventStore for Backend {
    async fn append_keyed(
        &self,
        events: Vec<Event>,
        keys: Vec<Option<ContentKey>>,
        mode: AppendMode,
    ) -> Result<Appended, StoreError> {
        delegate!(self, s => s.append_keyed(events, keys, mode))
    }
    async fn scan_from(
        &self,
        after: Option<(DateTime<Utc>, EventId)>,
        limit: usize,
    ) -> Result<Vec<Logged>, StoreError> {
        delegate!(self, s => s.scan_from(after, limit))
    }
    async fn events_by_id(&self, ids: Vec<EventId>) -> Result<Vec<Logged>, StoreError> {
        delegate!(self, s => s.events_by_id(ids))
    }
    async fn events_at(&self, positions: Vec<LogPosition>) -> Result<Vec<Logged>, StoreError> {
        delegate!(self, s => s.events_at(positions))
    }
    async fn tail(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> Result<Vec<Logged>, StoreError> {
        delegate!(self, s => s.tail(after, limit))
    }
    async fn entity_events(
        &self,
        entity: &EntityId,
        before: Option<EventId>,
        limit: usize,
    ) -> Result<Option<Vec<Logged>>, StoreError> {
        delegate!(self, s => s.entity_events(entity, before, limit))
    }
    async fn put_entity(&self, entity: Entity) -> Result<(), StoreError> {
        delegate!(self, s => s.put_entity(entity))
    }
    async fn entities(&self) -> Result<Vec<Entity>, StoreError> {
        delegate!(self, s => s.entities())
    }
    async fn erase(&self, id: &EntityId) -> Result<u64, StoreError> {
        delegate!(self, s => s.erase(id))
    }
    async fn context_position(&self) -> Result<Option<LogPosition>, StoreError> {
        delegate!(self, s => s.context_position())
    }
    async fn count(&self) -> Result<u64, StoreError> {
        delegate!(self, s => s.count())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping())
    }
    fn snapshot_epoch(&self) -> u64 {
        match self {
            Backend::Embedded(s) => s.snapshot_epoch(),
            Backend::Postgres(s) => s.snapshot_epoch(),
        }
    }
    async fn save_snapshot_stream(
        &self,
        pieces: super::SnapshotPieces,
        meta: super::SnapshotMeta,
        epoch: u64,
    ) -> Result<bool, StoreError> {
        delegate!(self, s => s.save_snapshot_stream(pieces, meta, epoch))
    }
    async fn snapshots(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        delegate!(self, s => s.snapshots())
    }
    async fn snapshot_stream(
        &self,
        rank: usize,
    ) -> Result<Option<super::SnapshotRead>, StoreError> {
        delegate!(self, s => s.snapshot_stream(rank))
    }
}
