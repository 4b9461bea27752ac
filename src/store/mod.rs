//! The event log: the source of truth. `EventStore` is the one interface the
//! engine writes to and replays from; `embedded` (redb) is the default backend,
//! `postgres` the production one (which also materialises scores for SQL readers).
//!
//! Contract every backend keeps (checked by one conformance suite):
//! - `append` answers only after the events are durable (committed);
//! - an id names one event: an event whose id is stored already (or came
//!   earlier in the batch: the first occurrence wins) changes nothing. It is
//!   a duplicate when its content (`digest.rs`: type, time, fields) is the
//!   stored event's, a conflict when it differs; a duplicate whose
//!   attributes (sender metadata, not content) differ says so, and the
//!   stored attributes stay;
//! - an all-or-nothing append stores nothing if any of its events is a
//!   conflict or refused;
//! - an event the store cannot hold (a data error the validator missed) is
//!   refused on its own: it never fails the other events or requests it was
//!   group-committed with;
//! - every stored event has a **log position** (`LogPosition`), assigned
//!   when it is committed, in commit order, the same on every server;
//!   `append` answers each event's position, new or stored (a duplicate's
//!   and a conflict's are the stored event's);
//! - `scan_from` returns stored events in canonical order (event time in
//!   whole microseconds, then id), a chunk at a time, so a replay does not
//!   depend on arrival order and never holds the log in memory (`scan`
//!   gathers every chunk, for tools and tests); events with the same
//!   microsecond come in id order, which a reader that needs the exact time
//!   sorts again;
//! - reads by what the engine needs: `events_by_id` (stored copies),
//!   `events_at` (by positions: an explanation's events), `tail` (by
//!   position, the log after a point), `entity_events` (an entity's events,
//!   newest first, with a cursor: timelines, the 360° view);
//! - `erase` removes every event that names the entity, and its
//!   registration, from every table and index, and every snapshot of the
//!   derived state (`snapshots.rs`);
//! - a change of the log's context (`put_entity`, `erase`) takes a log
//!   position of its own, held by no event, in its transaction: after every
//!   position stored before it, before every one stored after, and never
//!   given again (`context_position` answers the latest). What such a change
//!   moves is then published after everything published before it (the
//!   change feed's ids are log positions: red team h33, finding 3, an
//!   erasure of the latest events sent them back).
//!
//! A log that several servers append to (PostgreSQL) is also a
//! `SharedLog`: what a server reads to follow the others' appends and
//! context changes (`engine::follow`). The embedded store is locked by one
//! process, so it has none.
//!
//! This module knows nothing of HTTP or scoring.

use std::future::Future;

use crate::domain::{Entity, EntityId, Event, EventId, LogPosition, Logged};

pub mod alerts;
pub mod backend;
pub mod body;
pub mod bounds;
pub mod dead_letters;
pub mod digest;
pub mod embedded;
pub mod keys;
pub mod postgres;
pub mod scan;
pub mod snapshots;

pub use alerts::{AlertBook, AlertStore};
pub use backend::Backend;
pub use dead_letters::{DeadLetterStore, DeadLetters};
pub use digest::{ContentKey, Digest};
pub use embedded::EmbeddedStore;
pub use keys::{KeyStore, Keys};
pub use postgres::{LogWatch, PostgresStore};
pub use snapshots::{SnapshotDir, SnapshotMeta, SnapshotPiece, SnapshotPieces, SnapshotRead};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now; the caller may retry.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    /// No space left on the store's disk (or quota): nothing was stored;
    /// the caller may retry once space is freed.
    #[error("the event store is full: {0}")]
    Full(String),
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

/// Events a replay reads per chunk (`EventStore::scan_from`): large enough
/// that a round trip is a small part of a chunk, small enough that a chunk
/// is a few megabytes.
pub const SCAN_CHUNK: usize = 20_000;

/// Whether an append may store part of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendMode {
    /// Every event on its own: the new ones are stored whatever the others are.
    EachEvent,
    /// Nothing is stored if any event is a conflict or refused (`?atomic=true`).
    AllOrNothing,
}

/// What `append` did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// New: now stored.
    Inserted,
    /// The stored event with this id has the same content: nothing changed.
    Duplicate,
    /// A duplicate whose attributes differ from the stored event's: nothing
    /// changed, the stored attributes stay.
    DuplicateOtherAttributes,
    /// The stored event with this id has other content: nothing changed.
    Conflict,
    /// The store cannot hold this event (why): nothing of it was stored.
    Refused(String),
    /// Not stored because another event of an all-or-nothing append was a
    /// conflict or refused.
    NotStored,
}

impl Outcome {
    /// A duplicate of either kind.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Outcome::Duplicate | Outcome::DuplicateOtherAttributes)
    }
}

/// What `append` did with each event of the batch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// What happened to each event.
    pub outcomes: Vec<Outcome>,
    /// Each event's log position: the new one for an inserted event, the
    /// stored event's for a duplicate or a conflict, none when nothing of
    /// it is stored (refused, not stored).
    pub positions: Vec<Option<LogPosition>>,
}

impl Appended {
    pub fn accepted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| **o == Outcome::Inserted)
            .count()
    }
    pub fn duplicates(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_duplicate()).count()
    }
    /// `true` where the event was inserted (the shape older callers know).
    pub fn inserted(&self) -> Vec<bool> {
        self.outcomes
            .iter()
            .map(|o| *o == Outcome::Inserted)
            .collect()
    }
}

pub trait EventStore: Send + Sync + 'static {
    /// Stores the new events of `events` durably and says what happened to
    /// each (module docs). Concurrent calls may share a commit (group
    /// commit); an error (unavailable, full, a fault) means nothing of this
    /// call was stored.
    fn append(
        &self,
        events: Vec<Event>,
        mode: AppendMode,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        self.append_keyed(events, Vec::new(), mode)
    }

    /// `append`, where `keys[i]`, when present, is the content of
    /// `events[i]` that duplicates are decided on (`ContentKey`: a pipeline
    /// message's content, not the derived event's); a missing or `None`
    /// key means the event's own content.
    fn append_keyed(
        &self,
        events: Vec<Event>,
        keys: Vec<Option<ContentKey>>,
        mode: AppendMode,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send;

    /// At most `limit` stored events after `after` (the (time, id) of the
    /// last event of the previous chunk; `None`: from the start), in
    /// canonical order (module docs).
    fn scan_from(
        &self,
        after: Option<(chrono::DateTime<chrono::Utc>, EventId)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send;

    /// Every stored event, in canonical order (module docs), in memory:
    /// for tools and tests; a replay reads chunks (`scan_from`).
    fn scan(&self) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        async move {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let chunk = self.scan_from(after, SCAN_CHUNK).await?;
                let Some(last) = chunk.last() else {
                    return Ok(out);
                };
                after = Some((last.event.time, last.event.id.clone()));
                out.extend(chunk.into_iter().map(|l| l.event));
            }
        }
    }

    /// The stored events with these ids, in the order asked; ids not stored
    /// are left out.
    fn events_by_id(
        &self,
        ids: Vec<EventId>,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send;

    /// The stored events at these positions, in the order asked; positions
    /// that hold no event (erased, or not assigned yet) are left out.
    fn events_at(
        &self,
        positions: Vec<LogPosition>,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send;

    /// At most `limit` stored events after position `after` (`None`: from
    /// the first), by position.
    fn tail(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send;

    /// At most `limit` of the events naming `entity`, newest first
    /// (canonical order, reversed), before the event `before` (an id of one
    /// of them; `None`: from the newest). `None` when `before` is not an
    /// event naming the entity.
    fn entity_events(
        &self,
        entity: &EntityId,
        before: Option<EventId>,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Logged>>, StoreError>> + Send;

    /// Registers or replaces an entity.
    fn put_entity(&self, entity: Entity) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every registered entity, ordered by id.
    fn entities(&self) -> impl Future<Output = Result<Vec<Entity>, StoreError>> + Send;

    /// Removes the entity's registration and every event that names it;
    /// answers how many events were removed.
    fn erase(&self, id: &EntityId) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The log position the latest registration or erasure took (module
    /// docs; `None`: none has taken one). A state built from the store
    /// reads it before its reads of the log: it then reflects every change
    /// of the context up to it, and every event below it.
    fn context_position(
        &self,
    ) -> impl Future<Output = Result<Option<LogPosition>, StoreError>> + Send;

    /// Number of stored events.
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Cheap reachability check for `/readyz`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Erasures this store has done so far in this process: what a
    /// snapshot save names (`snapshots.rs`). A store without snapshots
    /// answers 0.
    fn snapshot_epoch(&self) -> u64 {
        0
    }

    /// Keeps a snapshot of the derived state (opaque bytes, `snapshots.rs`)
    /// made from a state built after `epoch`, its bytes as `pieces` bring
    /// them (`snapshots.rs`, "Streamed"); `false`, keeping nothing, when an
    /// erasure came since, or when the store keeps no snapshots. Errors
    /// when the pieces stop before their end (nothing is kept).
    fn save_snapshot_stream(
        &self,
        pieces: SnapshotPieces,
        meta: SnapshotMeta,
        epoch: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = (pieces, meta, epoch);
        async { Ok(false) }
    }

    /// [`Self::save_snapshot_stream`] of bytes held whole (tests, small
    /// snapshots).
    fn save_snapshot(
        &self,
        bytes: Vec<u8>,
        meta: SnapshotMeta,
        epoch: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.save_snapshot_stream(snapshots::pieces_of(bytes), meta, epoch)
    }

    /// The kept snapshots, newest first (`snapshots::SNAPSHOTS_KEPT` per model
    /// and format).
    fn snapshots(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The kept snapshot `rank` places from the newest (0: the newest, as
    /// [`Self::snapshots`] orders them), its bytes streamed
    /// (`snapshots.rs`, "Streamed"); `None` past the oldest: a start reads
    /// the newest only, unless it is refused (reading every kept one took 5
    /// of a 1M-event restart's 8 s on PostgreSQL).
    fn snapshot_stream(
        &self,
        rank: usize,
    ) -> impl Future<Output = Result<Option<SnapshotRead>, StoreError>> + Send {
        let _ = rank;
        async { Ok(None) }
    }

    /// [`Self::snapshot_stream`]'s bytes put together (tests).
    fn snapshot(
        &self,
        rank: usize,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        let read = self.snapshot_stream(rank);
        async move {
            match read.await? {
                Some(read) => snapshots::read_whole(read).await.map(Some),
                None => Ok(None),
            }
        }
    }
}

/// A log other servers append to as well (PostgreSQL, `LogWatch`): what a
/// server reads to follow it (`engine::follow`).
pub trait SharedLog: Send + Sync + 'static {
    /// At most `limit` positions stored after `after` (`None`: from the
    /// first), ascending. Positions are commit-ordered (module docs of
    /// `postgres::follow`), so a reader that has seen every position up to
    /// p and asks after p misses none.
    fn positions_after(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LogPosition>, StoreError>> + Send;

    /// The log's context epoch: how many registrations and erasures every
    /// server has made (read it before a build to know what it covers).
    fn context_epoch(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The context epoch now, and whether another process moved it since
    /// `seen` (this process's own registrations and erasures rebuilt its
    /// state already).
    fn context_since(
        &self,
        seen: u64,
    ) -> impl Future<Output = Result<(u64, bool), StoreError>> + Send;

    /// Resolves when the log may have changed (a wake-up kept while nobody
    /// waits); may never resolve, so a follower also polls.
    fn changed(&self) -> impl Future<Output = ()> + Send;
}
