//! The embedded event log on redb (ACID, crash-safe, pure Rust).
//!
//! Every durable redb commit fsyncs, so commits are the scarce resource: one
//! writer thread owns all writes and folds every request waiting in its queue
//! into a single transaction (group commit). A caller's future resolves only
//! after the commit that holds its events has returned.
//!
//! Tables (layout 1, issue #10):
//! - `events`, keyed by (event time in µs, id), so a scan is already in
//!   canonical order; the value is the layout tag (1), the event's log
//!   position (u64, little-endian), its content digest (`digest.rs`, 24
//!   bytes) and the body (`body`: the stored format);
//! - `event_ids`: id -> time, for the duplicate check and reads by id;
//! - `positions`: log position -> (time, id), for reads by position and the
//!   tail of the log;
//! - `entity_events`: (entity, time, id), one row per entity an event
//!   names: an entity's events in canonical order, for timelines, the 360°
//!   view and erasure;
//! - `meta`: `layout`, `log_head` (the next position),
//!   `context_position` (the position the latest registration or erasure
//!   took: a change of the log's context has a position of its own, module
//!   docs of `store`) and, from an erasure's commit until every snapshot is
//!   deleted, `snapshots_unerased` ([`SNAPSHOTS_UNERASED`]);
//! - `entities` holds registrations (JSON); `health` one probe row.
//!
//! Positions are assigned by the one writer in commit order and persisted
//! with each commit. A store written before positions (layout 0: a value is
//! a zero byte, the digest and a JSON body, or before digests the bare
//! body) is migrated when it is opened, in one transaction: positions in
//! canonical order, digests where missing, the two new tables (a crash
//! midway leaves the old store, which the next open migrates again).
//!
//! **I/O errors** (a full disk above all). redb refuses everything after an
//! I/O error until the database is reopened. The writer thread owns that:
//! after an I/O error it reopens the file at once (so reads work again),
//! answers writes with the error (`StoreError::Full` for ENOSPC or EDQUOT)
//! without touching the file, and every so often (1 s, doubling to 5 s)
//! tries a probe write; when one commits, writes are taken again. Readers
//! take the current handle for each read, so they get the new one. A failed
//! commit stored nothing and acknowledged nothing.

use std::io::ErrorKind;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::digest::{DIGEST_LEN, Sameness};
use super::{
    AppendMode, Appended, ContentKey, Digest, EventStore, Outcome, SCAN_CHUNK, StoreError, body,
};
use crate::domain::{Entity, EntityId, Event, EventId, LogPosition, Logged};

const EVENTS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<&str, i64> = TableDefinition::new("event_ids");
const POSITIONS: TableDefinition<u64, (i64, &str)> = TableDefinition::new("positions");
const ENTITY_EVENTS: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("entity_events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The `meta` key an erasure sets in the transaction that erases the log,
/// and clears once every snapshot is deleted (the snapshots are files, out
/// of that transaction). Found set at open, a process died in between: the
/// log no longer holds the entity, but snapshots that hold it may still be
/// on disk (they would never be loaded: their event count or registrations
/// are not the store's), so the open deletes them before anything reads
/// one (red team h69: they stayed, and a retried erasure answered 404).
const SNAPSHOTS_UNERASED: &str = "snapshots_unerased";
const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
const HEALTH: TableDefinition<&str, u64> = TableDefinition::new("health");

/// The layout this code writes (module docs); `meta.layout`.
const LAYOUT: u64 = 1;

/// Most events folded into one commit; bounds the size of a transaction.
const MAX_EVENTS_PER_COMMIT: usize = 200_000;

/// First wait before a probe write after an I/O error; doubles up to
/// `PROBE_BACKOFF_MAX`.
const PROBE_BACKOFF: Duration = Duration::from_secs(1);
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Longest wait for readers to let go of a failed handle before reopening.
const READERS_GRACE: Duration = Duration::from_secs(30);

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// An event as the writer stores it, encoded by the caller so the one
/// writer thread only inserts.
struct Encoded {
    id: String,
    time: i64,
    /// The stored value (`encode`): its log position is filled in by the
    /// writer.
    value: Vec<u8>,
    /// The entities the event names, each once.
    refs: Vec<String>,
}

impl Encoded {
    /// `key`: the content duplicates are decided on, when not the event's
    /// own (`EventStore::append_keyed`).
    fn new(event: &Event, key: Option<&ContentKey>) -> Encoded {
        let mut refs: Vec<String> = event
            .references()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect();
        refs.sort_unstable();
        refs.dedup();
        Encoded {
            id: event.id.to_string(),
            time: time_key(event),
            value: encode(event, key),
            refs,
        }
    }

    fn digest(&self) -> Digest {
        Stored::parse(&self.value)
            .expect("encode writes the layout")
            .digest
    }
}

enum Write {
    Append(Vec<Encoded>, AppendMode, Reply),
    PutEntity(Entity, oneshot::Sender<Result<(), StoreError>>),
    Erase(EntityId, oneshot::Sender<Result<u64, StoreError>>),
    /// Every snapshot was deleted after an erasure: clear
    /// [`SNAPSHOTS_UNERASED`].
    SnapshotsErased(oneshot::Sender<Result<(), StoreError>>),
    /// Stop after what is queued; answered once the writer let go of the file.
    Close(oneshot::Sender<()>),
}

/// What the writer and the readers share.
struct Shared {
    path: PathBuf,
    /// The open database; `None` while the writer reopens it.
    db: RwLock<Option<Arc<Database>>>,
    /// Why writes are refused now (after an I/O error, until a probe
    /// write commits), for `ping`.
    fault: Mutex<Option<StoreError>>,
}

impl Shared {
    fn handle(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| {
            self.fault.lock().clone().unwrap_or_else(|| {
                StoreError::Unavailable("the embedded store is being reopened".into())
            })
        })
    }
}

#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Write>,
    /// Snapshots of the derived state, beside the log (`snapshots.rs`).
    snapshots: Arc<super::SnapshotDir>,
}

/// A redb error, and whether it was an I/O error (the database must then
/// be reopened).
struct Failure {
    error: StoreError,
    io: bool,
}

impl<E: Into<redb::Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        match err.into() {
            redb::Error::Io(e)
                if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
            {
                Failure {
                    error: StoreError::Full(format!("no space left for the embedded store: {e}")),
                    io: true,
                }
            }
            redb::Error::Io(e) => Failure {
                error: StoreError::Internal(format!("I/O error in the embedded store: {e}")),
                io: true,
            },
            // redb locks the file for one holder. The commands that open
            // the store (score, rescore, ingest without --server, ...) meet
            // this while `fusion serve` runs on it. "already open" stays in
            // the message: a reopen in one process polls on it.
            redb::Error::DatabaseAlreadyOpen => Failure {
                error: StoreError::Unavailable(
                    "its file is already open, most likely by a running `fusion serve`: stop \
                     that server first, or ask it over HTTP (docs/api.md; `fusion ingest \
                     --server` sends events to it)"
                        .into(),
                ),
                io: false,
            },
            redb::Error::PreviousIo => Failure {
                error: StoreError::Internal(
                    "the embedded store failed an I/O operation earlier".into(),
                ),
                io: true,
            },
            other => Failure {
                error: StoreError::Internal(other.to_string()),
                io: false,
            },
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure { error, io: false }
    }
}

/// Bytes of redb's page cache. redb's default (1 GiB) fills as the state
/// is built from a scan of the whole log, and then holds pages the engine
/// seldom reads again (it keeps its state, and reads the store only for
/// timelines, explanations and late events): issue #10 measured it as
/// half of `serve`'s resident memory on a 1,000,000-event store
/// (ARCHITECTURE.md, "Memory"). The operating system's page cache still
/// holds the file.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Opens (or creates) the database and its tables, so readers never meet
/// a missing table, and migrates a store of an older layout (module docs).
fn open_database(path: &Path) -> Result<Database, Failure> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(EVENTS)?;
    txn.open_table(EVENT_IDS)?;
    txn.open_table(POSITIONS)?;
    txn.open_table(ENTITY_EVENTS)?;
    txn.open_table(ENTITIES)?;
    txn.open_table(HEALTH)?;
    let layout = txn.open_table(META)?.get("layout")?.map(|v| v.value());
    match layout {
        Some(LAYOUT) => {}
        None => {
            let migrated = migrate_to_positions(&txn)?;
            if migrated > 0 {
                tracing::info!(
                    events = migrated,
                    "gave the stored events log positions (layout 1)"
                );
            }
        }
        Some(other) => {
            return Err(StoreError::Internal(format!(
                "the store has layout {other}, which this version of Fusion does not know \
                 (it writes layout {LAYOUT}); open it with the version that wrote it"
            ))
            .into());
        }
    }
    txn.commit()?;
    Ok(db)
}

/// Migrates a layout-0 store (module docs) in the caller's transaction:
/// every event gets a log position in canonical order, a digest where it
/// has none, its `positions` row and its `entity_events` rows. Answers how
/// many events it migrated.
fn migrate_to_positions(txn: &redb::WriteTransaction) -> Result<u64, Failure> {
    const CHUNK: usize = 10_000;
    let mut events = txn.open_table(EVENTS)?;
    let mut positions = txn.open_table(POSITIONS)?;
    let mut entity_events = txn.open_table(ENTITY_EVENTS)?;
    let mut head = 0u64;
    let mut after: Option<(i64, String)> = None;
    loop {
        // Read a chunk, then rewrite it: a table cannot be written while
        // it is iterated.
        let chunk: Vec<((i64, String), Vec<u8>)> = {
            let range = match &after {
                None => events.range::<(i64, &str)>(..)?,
                Some((t, id)) => events.range::<(i64, &str)>((
                    std::ops::Bound::Excluded((*t, id.as_str())),
                    std::ops::Bound::Unbounded,
                ))?,
            };
            let mut chunk = Vec::with_capacity(CHUNK);
            for row in range.take(CHUNK) {
                let (k, v) = row?;
                let (t, id) = k.value();
                chunk.push(((t, id.to_string()), v.value().to_vec()));
            }
            chunk
        };
        let Some(last) = chunk.last() else {
            break;
        };
        after = Some(last.0.clone());
        for ((t, id), value) in chunk {
            let old = decode_layout0(&value)?;
            let event = &old.event;
            let mut refs: Vec<&str> = event.references().iter().map(|(e, _)| e.as_str()).collect();
            refs.sort_unstable();
            refs.dedup();
            let rewritten = layout1(
                head,
                old.digest.unwrap_or_else(|| Digest::of(event)),
                old.body,
            );
            events.insert((t, id.as_str()), rewritten.as_slice())?;
            positions.insert(head, (t, id.as_str()))?;
            for r in refs {
                entity_events.insert((r, t, id.as_str()), ())?;
            }
            head += 1;
        }
    }
    let mut meta = txn.open_table(META)?;
    meta.insert("layout", LAYOUT)?;
    meta.insert("log_head", head)?;
    Ok(head)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, as the file `dir/events.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Internal(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("events.redb");
        let db = open_database(&path).map_err(|f| match f.error {
            StoreError::Internal(m) => {
                StoreError::Internal(format!("cannot open the store at {}: {m}", path.display()))
            }
            other => other,
        })?;
        let snapshots = Arc::new(super::SnapshotDir::in_dir(dir));
        finish_cut_off_erasure(&db, &snapshots);
        let shared = Arc::new(Shared {
            path,
            db: RwLock::new(Some(Arc::new(db))),
            fault: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let for_writer = Arc::clone(&shared);
        thread::Builder::new()
            .name("fusion-store-writer".into())
            .spawn(move || {
                let mut writer = Writer {
                    shared: for_writer,
                    reopen: false,
                    retry_at: Instant::now(),
                    backoff: PROBE_BACKOFF,
                };
                let closed = writer.run(rx);
                writer.shared.db.write().take();
                if let Some(reply) = closed {
                    let _ = reply.send(());
                }
            })
            .map_err(StoreError::internal)?;
        Ok(Self {
            shared,
            writer: tx,
            snapshots,
        })
    }

    /// Commits what is queued, stops the writer and lets go of the file,
    /// so the store can be opened again (by this process or another) as
    /// soon as this returns. Every other clone must be dropped first.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Write::Close(tx));
        drop(self);
        if sent.is_ok() {
            let _ = rx.await;
        }
    }

    fn send(&self, w: Write) -> Result<(), StoreError> {
        self.writer
            .send(w)
            .map_err(|_| StoreError::Internal("the store writer has stopped".into()))
    }

    fn read_blocking<T, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, Failure> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let run = move || {
            let db = shared.handle()?;
            f(&db).map_err(|failure| failure.error)
        };
        async move {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => h.spawn_blocking(run).await.map_err(StoreError::internal)?,
                Err(_) => run(),
            }
        }
    }
}

async fn recv<T>(rx: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    rx.await
        .map_err(|_| StoreError::Internal("the store writer dropped a request".into()))?
}

/// `(time, id)` of a scan's last event as the `events` key bounds it.
type ScanKey = Option<(i64, String)>;

impl EventStore for EmbeddedStore {
    fn append_keyed(
        &self,
        events: Vec<Event>,
        keys: Vec<Option<ContentKey>>,
        mode: AppendMode,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        let (tx, rx) = oneshot::channel();
        let encoded: Vec<Encoded> = events
            .iter()
            .enumerate()
            .map(|(i, e)| Encoded::new(e, keys.get(i).copied().flatten().as_ref()))
            .collect();
        let sent = self.send(Write::Append(encoded, mode, tx));
        async move {
            sent?;
            recv(rx).await
        }
    }

    fn scan_from(
        &self,
        after: Option<(chrono::DateTime<chrono::Utc>, EventId)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        let after: ScanKey = after.map(|(t, id)| (t.timestamp_micros(), id.to_string()));
        self.read_blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let range = match &after {
                None => table.range::<(i64, &str)>(..)?,
                Some((t, id)) => table
                    .range::<(i64, &str)>((Bound::Excluded((*t, id.as_str())), Bound::Unbounded))?,
            };
            let mut out = Vec::with_capacity(limit.min(SCAN_CHUNK));
            for row in range.take(limit) {
                let (_, v) = row?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
    }

    fn events_by_id(
        &self,
        ids: Vec<EventId>,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        self.read_blocking(move |db| {
            let txn = db.begin_read()?;
            let times = txn.open_table(EVENT_IDS)?;
            let events = txn.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(time) = times.get(id.as_str())? else {
                    continue;
                };
                if let Some(value) = events.get((time.value(), id.as_str()))? {
                    out.push(decode(value.value())?);
                }
            }
            Ok(out)
        })
    }

    fn events_at(
        &self,
        wanted: Vec<LogPosition>,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        self.read_blocking(move |db| {
            let txn = db.begin_read()?;
            let positions = txn.open_table(POSITIONS)?;
            let events = txn.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(wanted.len());
            for p in wanted {
                let Some(key) = positions.get(p)? else {
                    continue;
                };
                let (t, id) = key.value();
                if let Some(value) = events.get((t, id))? {
                    out.push(decode(value.value())?);
                }
            }
            Ok(out)
        })
    }

    fn tail(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        self.read_blocking(move |db| {
            let txn = db.begin_read()?;
            let positions = txn.open_table(POSITIONS)?;
            let events = txn.open_table(EVENTS)?;
            let range = match after {
                None => positions.range::<u64>(..)?,
                Some(p) => positions.range::<u64>((Bound::Excluded(p), Bound::Unbounded))?,
            };
            let mut out = Vec::with_capacity(limit.min(SCAN_CHUNK));
            for row in range.take(limit) {
                let (_, key) = row?;
                let (t, id) = key.value();
                if let Some(value) = events.get((t, id))? {
                    out.push(decode(value.value())?);
                }
            }
            Ok(out)
        })
    }

    fn entity_events(
        &self,
        entity: &EntityId,
        before: Option<EventId>,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Logged>>, StoreError>> + Send {
        let entity = entity.to_string();
        self.read_blocking(move |db| {
            let txn = db.begin_read()?;
            let index = txn.open_table(ENTITY_EVENTS)?;
            let events = txn.open_table(EVENTS)?;
            let end = after_every_id();
            let upper = match &before {
                None => Bound::Included((entity.as_str(), i64::MAX, end.as_str())),
                Some(id) => {
                    let times = txn.open_table(EVENT_IDS)?;
                    let Some(t) = times.get(id.as_str())?.map(|t| t.value()) else {
                        return Ok(None);
                    };
                    if index.get((entity.as_str(), t, id.as_str()))?.is_none() {
                        return Ok(None);
                    }
                    Bound::Excluded((entity.as_str(), t, id.as_str()))
                }
            };
            let lower = Bound::Included((entity.as_str(), i64::MIN, ""));
            let mut out = Vec::with_capacity(limit.min(1_000));
            for row in index
                .range::<(&str, i64, &str)>((lower, upper))?
                .rev()
                .take(limit)
            {
                let (k, _) = row?;
                let (_, t, id) = k.value();
                if let Some(value) = events.get((t, id))? {
                    out.push(decode(value.value())?);
                }
            }
            Ok(Some(out))
        })
    }

    fn put_entity(&self, entity: Entity) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Write::PutEntity(entity, tx));
        async move {
            sent?;
            recv(rx).await
        }
    }

    fn entities(&self) -> impl Future<Output = Result<Vec<Entity>, StoreError>> + Send {
        self.read_blocking(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTITIES)?;
            let mut out = Vec::new();
            for row in table.iter()? {
                let (_, v) = row?;
                out.push(serde_json::from_slice(v.value()).map_err(StoreError::internal)?);
            }
            Ok(out)
        })
    }

    fn erase(&self, id: &EntityId) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Write::Erase(id.clone(), tx));
        let snapshots = Arc::clone(&self.snapshots);
        let writer = self.writer.clone();
        async move {
            sent?;
            let removed = recv(rx).await?;
            // After the log's erasure: a state built before it is from an
            // older epoch, so its snapshot is refused (`snapshots.rs`).
            // The log's erasure is committed whatever happens here: an
            // error now would leave the engine's state unrebuilt (serving
            // the entity) and a retry would find no entity. Snapshots not
            // deleted are deleted by the next open (`SNAPSHOTS_UNERASED`).
            let deleted = tokio::task::spawn_blocking(move || snapshots.erase_all())
                .await
                .map_err(StoreError::internal)
                .and_then(|deleted| deleted);
            if let Err(e) = deleted {
                tracing::error!(
                    error = %e,
                    "erased an entity from the log but not every snapshot of the scoring state; \
                     the next open deletes them"
                );
                return Ok(removed);
            }
            let (tx, rx) = oneshot::channel();
            let cleared = match writer.send(Write::SnapshotsErased(tx)) {
                Ok(()) => recv(rx).await,
                Err(_) => Err(StoreError::Internal("the store writer has stopped".into())),
            };
            if let Err(e) = cleared {
                tracing::warn!(
                    error = %e,
                    "the snapshots were deleted after an erasure but the store could not record it; \
                     the next open deletes snapshots again"
                );
            }
            Ok(removed)
        }
    }

    fn snapshot_epoch(&self) -> u64 {
        self.snapshots.epoch()
    }

    fn save_snapshot_stream(
        &self,
        pieces: super::SnapshotPieces,
        meta: super::SnapshotMeta,
        epoch: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let snapshots = Arc::clone(&self.snapshots);
        async move {
            tokio::task::spawn_blocking(move || snapshots.save_pieces(pieces, meta, epoch))
                .await
                .map_err(StoreError::internal)?
        }
    }

    fn snapshots(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send {
        let snapshots = Arc::clone(&self.snapshots);
        async move {
            tokio::task::spawn_blocking(move || snapshots.latest())
                .await
                .map_err(StoreError::internal)?
        }
    }

    fn snapshot_stream(
        &self,
        rank: usize,
    ) -> impl Future<Output = Result<Option<super::SnapshotRead>, StoreError>> + Send {
        let snapshots = Arc::clone(&self.snapshots);
        async move {
            let file = tokio::task::spawn_blocking(move || snapshots.open_nth(rank))
                .await
                .map_err(StoreError::internal)??;
            let Some(file) = file else { return Ok(None) };
            let (tx, rx) = tokio::sync::mpsc::channel(super::snapshots::PIECES_IN_FLIGHT);
            tokio::task::spawn_blocking(move || super::snapshots::send_pieces(file, tx));
            Ok(Some(rx))
        }
    }

    fn context_position(
        &self,
    ) -> impl Future<Output = Result<Option<LogPosition>, StoreError>> + Send {
        self.read_blocking(|db| {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(meta.get("context_position")?.map(|v| v.value()))
        })
    }

    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.read_blocking(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENT_IDS)?;
            Ok(table.len()?)
        })
    }

    /// Not ready while writes are refused after an I/O error (a full disk),
    /// or when the file cannot be read.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let fault = self.shared.fault.lock().clone();
        let read = self.read_blocking(|db| {
            db.begin_read()?;
            Ok(())
        });
        async move {
            if let Some(fault) = fault {
                return Err(fault);
            }
            read.await
        }
    }
}

/// First byte of a value of layout 1.
const TAG_LAYOUT1: u8 = 1;
/// First byte of a layout-0 value that carries a digest (JSON never starts
/// with it); a layout-0 value without it is the bare JSON body.
const TAG_LAYOUT0_DIGEST: u8 = 0;
/// Bytes before the body in a value of layout 1: tag, position, digest.
const HEADER: usize = 1 + 8 + DIGEST_LEN;

/// A stored value of layout 1, parsed.
struct Stored<'a> {
    position: u64,
    digest: Digest,
    body: &'a [u8],
}

impl<'a> Stored<'a> {
    fn parse(value: &'a [u8]) -> Result<Stored<'a>, StoreError> {
        let bad =
            || StoreError::Internal("an event value of an unknown layout in the store".into());
        if value.len() < HEADER || value[0] != TAG_LAYOUT1 {
            return Err(bad());
        }
        let position = u64::from_le_bytes(value[1..9].try_into().expect("8 bytes"));
        let digest = Digest::from_bytes(&value[9..HEADER]).ok_or_else(bad)?;
        Ok(Stored {
            position,
            digest,
            body: &value[HEADER..],
        })
    }

    fn decode(&self) -> Result<Logged, StoreError> {
        Ok(Logged {
            position: self.position,
            event: body::decode(self.body)?,
        })
    }
}

/// A value of layout 1.
fn layout1(position: u64, digest: Digest, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + body.len());
    value.push(TAG_LAYOUT1);
    value.extend_from_slice(&position.to_le_bytes());
    value.extend_from_slice(&digest.to_bytes());
    value.extend_from_slice(body);
    value
}

/// The stored value of a new event, its position left for the writer
/// (`set_position`).
fn encode(event: &Event, key: Option<&ContentKey>) -> Vec<u8> {
    let mut value = Vec::with_capacity(256);
    value.push(TAG_LAYOUT1);
    value.extend_from_slice(&[0; 8 + DIGEST_LEN]);
    let digest = body::encode(event, key, &mut value);
    value[9..HEADER].copy_from_slice(&digest.to_bytes());
    value
}

fn set_position(value: &mut [u8], position: u64) {
    value[1..9].copy_from_slice(&position.to_le_bytes());
}

fn decode(value: &[u8]) -> Result<Logged, StoreError> {
    Stored::parse(value)?.decode()
}

/// A layout-0 value (module docs), read by the migration.
struct Layout0<'a> {
    digest: Option<Digest>,
    body: &'a [u8],
    event: Event,
}

fn decode_layout0(value: &[u8]) -> Result<Layout0<'_>, StoreError> {
    let (digest, body) = match value.split_first() {
        Some((&TAG_LAYOUT0_DIGEST, rest)) if rest.len() >= DIGEST_LEN => {
            let (digest, body) = rest.split_at(DIGEST_LEN);
            (Digest::from_bytes(digest), body)
        }
        _ => (None, value),
    };
    Ok(Layout0 {
        digest,
        body,
        event: body::decode(body)?,
    })
}

fn time_key(event: &Event) -> i64 {
    event.time.timestamp_micros()
}

/// A string greater, byte-wise, than any id (ids are at most 256 bytes):
/// the end of an entity's rows in `entity_events`.
fn after_every_id() -> String {
    "\u{10FFFF}".repeat(crate::domain::MAX_ID_BYTES / 4 + 1)
}

/// The writer thread's state: the fault mode after an I/O error.
struct Writer {
    shared: Arc<Shared>,
    /// The database must be reopened before it can be used again.
    reopen: bool,
    /// When to try the next probe write (while faulted).
    retry_at: Instant,
    backoff: Duration,
}

impl Writer {
    fn faulted(&self) -> Option<StoreError> {
        self.shared.fault.lock().clone()
    }

    /// The writer loop: takes every waiting request, commits them together,
    /// then answers each. Ends when every `EmbeddedStore` handle is
    /// dropped, or at `Close` (answered by the caller once the database is
    /// dropped).
    fn run(&mut self, rx: mpsc::Receiver<Write>) -> Option<oneshot::Sender<()>> {
        loop {
            let first = if self.faulted().is_some() {
                let wait = self.retry_at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(w) => w,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.recover();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                }
            } else {
                match rx.recv() {
                    Ok(w) => w,
                    Err(_) => return None,
                }
            };
            if self.faulted().is_some() && Instant::now() >= self.retry_at {
                self.recover();
            }
            let mut appends: Vec<(Vec<Encoded>, AppendMode, Reply)> = Vec::new();
            let mut pending = 0usize;
            let mut next = Some(first);
            while let Some(w) = next.take() {
                match w {
                    Write::Append(events, mode, reply) => {
                        pending += events.len();
                        appends.push((events, mode, reply));
                    }
                    // Entity writes and erasures are rare: commit what is
                    // queued first so their order relative to appends is kept.
                    Write::PutEntity(entity, reply) => {
                        self.flush(&mut appends);
                        let _ = reply.send(self.write(|db| put_entity(db, &entity)));
                    }
                    Write::Erase(id, reply) => {
                        self.flush(&mut appends);
                        let _ = reply.send(self.write(|db| erase(db, &id)));
                    }
                    Write::SnapshotsErased(reply) => {
                        self.flush(&mut appends);
                        let _ = reply.send(self.write(clear_snapshots_unerased));
                    }
                    Write::Close(reply) => {
                        self.flush(&mut appends);
                        return Some(reply);
                    }
                }
                if pending < MAX_EVENTS_PER_COMMIT {
                    next = rx.try_recv().ok();
                }
            }
            self.flush(&mut appends);
        }
    }

    /// Runs one write transaction, unless writes are refused; an I/O error
    /// starts the fault mode.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Database) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        if let Some(fault) = self.faulted() {
            return Err(fault);
        }
        let db = self.shared.handle()?;
        match f(&db) {
            Ok(v) => Ok(v),
            Err(failure) => {
                drop(db);
                if failure.io {
                    self.fail(failure.error.clone());
                }
                Err(failure.error)
            }
        }
    }

    fn flush(&mut self, appends: &mut Vec<(Vec<Encoded>, AppendMode, Reply)>) {
        if appends.is_empty() {
            return;
        }
        let mut batch = std::mem::take(appends);
        crate::telemetry::record_commit_group(batch.len());
        match self.write(|db| commit_appends(db, &mut batch)) {
            Ok(results) => {
                for ((_, _, reply), (outcomes, positions)) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(Appended {
                        outcomes,
                        positions,
                    }));
                }
            }
            Err(err) => {
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Enters (or stays in) the fault mode after an I/O error: writes are
    /// refused with `error`, the database is reopened now so reads work,
    /// and a probe write is tried later.
    fn fail(&mut self, error: StoreError) {
        tracing::error!(%error, "the embedded store failed a write; refusing writes until a probe write succeeds");
        *self.shared.fault.lock() = Some(error);
        self.reopen = true;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
        self.reopen_database();
    }

    /// Drops the failed handle (once readers let go of it) and opens the
    /// file again; on failure, stays faulted and tries again later.
    fn reopen_database(&mut self) {
        if !self.reopen {
            return;
        }
        if let Some(old) = self.shared.db.write().take() {
            let deadline = Instant::now() + READERS_GRACE;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&old) > 1 {
                // A reader still holds it: keep serving reads with it.
                *self.shared.db.write() = Some(old);
                return;
            }
        }
        match open_database(&self.shared.path) {
            Ok(db) => {
                *self.shared.db.write() = Some(Arc::new(db));
                self.reopen = false;
                tracing::info!("reopened the embedded store after an I/O error");
            }
            Err(failure) => {
                tracing::warn!(error = %failure.error, "cannot reopen the embedded store yet");
                if failure.io {
                    *self.shared.fault.lock() = Some(failure.error);
                }
            }
        }
    }

    /// A probe write: when it commits, writes are taken again.
    fn recover(&mut self) {
        self.reopen_database();
        if self.reopen {
            self.retry_at = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(PROBE_BACKOFF_MAX);
            return;
        }
        let probe = self.shared.handle().map_err(Failure::from).and_then(|db| {
            let txn = db.begin_write()?;
            {
                let mut health = txn.open_table(HEALTH)?;
                let n = health.get("probe")?.map_or(0, |v| v.value());
                health.insert("probe", n.wrapping_add(1))?;
            }
            txn.commit()?;
            Ok(())
        });
        match probe {
            Ok(()) => {
                *self.shared.fault.lock() = None;
                self.backoff = PROBE_BACKOFF;
                tracing::info!("the embedded store takes writes again");
            }
            Err(failure) if failure.io => self.fail(failure.error),
            Err(failure) => {
                tracing::warn!(error = %failure.error, "the probe write failed");
                self.retry_at = Instant::now() + self.backoff;
            }
        }
    }
}

/// The digest and position of the stored event `id`, stored at `time`.
fn stored_digest(
    events: &Table<(i64, &str), &[u8]>,
    id: &str,
    time: i64,
) -> Result<(Digest, u64), Failure> {
    let value = events.get((time, id))?.ok_or_else(|| {
        StoreError::Internal(format!("event '{id}' is in event_ids but not in events"))
    })?;
    let stored = Stored::parse(value.value())?;
    Ok((stored.digest, stored.position))
}

/// What one commit answers each request: outcomes and positions.
type Committed = Vec<(Vec<Outcome>, Vec<Option<u64>>)>;

/// Commits a group of appends, giving the new events the next positions
/// (`meta.log_head`, read and written in the same transaction: the one
/// writer assigns them in commit order). Answers each request's outcomes
/// and positions.
fn commit_appends(
    db: &Database,
    batch: &mut [(Vec<Encoded>, AppendMode, Reply)],
) -> Result<Committed, Failure> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut head = txn
            .open_table(META)?
            .get("log_head")?
            .map_or(0, |v| v.value());
        let mut events = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        let mut positions = txn.open_table(POSITIONS)?;
        let mut entity_events = txn.open_table(ENTITY_EVENTS)?;
        for (batch_events, mode, _) in batch.iter_mut() {
            // Decide first, so an all-or-nothing request can store nothing;
            // `fresh` holds this request's own new ids (the first occurrence
            // wins; a later one compares with it) and where they go.
            let mut fresh: FxHashMap<&str, (Digest, u64)> = FxHashMap::default();
            let mut outcomes = Vec::with_capacity(batch_events.len());
            let mut at = Vec::with_capacity(batch_events.len());
            let mut next = head;
            for event in batch_events.iter() {
                let id = event.id.as_str();
                let stored = match fresh.get(id) {
                    Some(d) => Some(*d),
                    None => match ids.get(id)?.map(|t| t.value()) {
                        Some(time) => Some(stored_digest(&events, id, time)?),
                        None => None,
                    },
                };
                let (outcome, position) = match stored {
                    None => {
                        fresh.insert(id, (event.digest(), next));
                        next += 1;
                        (Outcome::Inserted, next - 1)
                    }
                    Some((d, p)) => (
                        match event.digest().compare(&d) {
                            Sameness::Same => Outcome::Duplicate,
                            Sameness::OtherAttributes => Outcome::DuplicateOtherAttributes,
                            Sameness::Conflicting => Outcome::Conflict,
                        },
                        p,
                    ),
                };
                outcomes.push(outcome);
                at.push(Some(position));
            }
            if *mode == AppendMode::AllOrNothing && outcomes.contains(&Outcome::Conflict) {
                for (o, p) in outcomes.iter_mut().zip(&mut at) {
                    if *o == Outcome::Inserted {
                        *o = Outcome::NotStored;
                    }
                    // Positions of events of this request not stored were
                    // never given out.
                    if p.is_some_and(|p| p >= head) {
                        *p = None;
                    }
                }
                results.push((outcomes, at));
                continue;
            }
            for ((event, outcome), position) in batch_events.iter_mut().zip(&outcomes).zip(&at) {
                if *outcome == Outcome::Inserted {
                    let position = position.expect("an inserted event has a position");
                    set_position(&mut event.value, position);
                    let id = event.id.as_str();
                    ids.insert(id, event.time)?;
                    events.insert((event.time, id), event.value.as_slice())?;
                    positions.insert(position, (event.time, id))?;
                    for r in &event.refs {
                        entity_events.insert((r.as_str(), event.time, id), ())?;
                    }
                }
            }
            head = next;
            results.push((outcomes, at));
        }
        txn.open_table(META)?.insert("log_head", head)?;
    }
    txn.commit()?;
    Ok(results)
}

fn put_entity(db: &Database, entity: &Entity) -> Result<(), Failure> {
    let bytes = serde_json::to_vec(entity).map_err(StoreError::internal)?;
    let txn = db.begin_write()?;
    {
        let mut t = txn.open_table(ENTITIES)?;
        t.insert(entity.id.as_str(), bytes.as_slice())?;
    }
    take_context_position(&txn)?;
    txn.commit()?;
    Ok(())
}

/// Gives the change of the log's context this transaction makes (a
/// registration, an erasure) the next log position, held by no event, and
/// records it as the latest (`EventStore::context_position`).
fn take_context_position(txn: &redb::WriteTransaction) -> Result<(), Failure> {
    let mut meta = txn.open_table(META)?;
    let head = meta.get("log_head")?.map_or(0, |v| v.value());
    meta.insert("log_head", head + 1)?;
    meta.insert("context_position", head)?;
    Ok(())
}

/// Removes every event naming `id` (found through `entity_events`) from
/// every table, and its registration.
fn erase(db: &Database, id: &EntityId) -> Result<u64, Failure> {
    let txn = db.begin_write()?;
    let mut removed = 0u64;
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        let mut positions = txn.open_table(POSITIONS)?;
        let mut index = txn.open_table(ENTITY_EVENTS)?;
        let end = after_every_id();
        let doomed: Vec<(i64, String)> = index
            .range::<(&str, i64, &str)>((
                Bound::Included((id.as_str(), i64::MIN, "")),
                Bound::Included((id.as_str(), i64::MAX, end.as_str())),
            ))?
            .map(|row| row.map(|(k, _)| (k.value().1, k.value().2.to_string())))
            .collect::<Result<_, _>>()?;
        for (t, eid) in &doomed {
            let Some(value) = events.remove((*t, eid.as_str()))? else {
                continue;
            };
            let logged = decode(value.value())?;
            drop(value);
            for (entity, _) in logged.event.references() {
                index.remove((entity.as_str(), *t, eid.as_str()))?;
            }
            positions.remove(logged.position)?;
            ids.remove(eid.as_str())?;
            removed += 1;
        }
        let mut entities = txn.open_table(ENTITIES)?;
        entities.remove(id.as_str())?;
        // The snapshots, which may hold the entity, are deleted after this
        // commits; until they are, an open deletes them.
        txn.open_table(META)?.insert(SNAPSHOTS_UNERASED, 1)?;
    }
    take_context_position(&txn)?;
    txn.commit()?;
    Ok(removed)
}

/// Clears [`SNAPSHOTS_UNERASED`]: every snapshot was deleted.
fn clear_snapshots_unerased(db: &Database) -> Result<(), Failure> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.remove(SNAPSHOTS_UNERASED)?;
    txn.commit()?;
    Ok(())
}

/// At open: an erasure cut off between the log's commit and the deletion
/// of the snapshots ([`SNAPSHOTS_UNERASED`] set) is finished, every
/// snapshot deleted, before any is read. A failure is logged and the store
/// opens anyway (the flag stays, so the next open tries again; such a
/// snapshot is never loaded: its event count or registrations are not the
/// store's).
fn finish_cut_off_erasure(db: &Database, snapshots: &super::SnapshotDir) {
    let finish = || -> Result<bool, Failure> {
        let set = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            meta.get(SNAPSHOTS_UNERASED)?.is_some()
        };
        if set {
            snapshots.erase_all()?;
            clear_snapshots_unerased(db)?;
        }
        Ok(set)
    };
    match finish() {
        Ok(false) => {}
        Ok(true) => tracing::warn!(
            "an erasure was cut off before it deleted the snapshots of the scoring state; \
             deleted them now (this start folds the whole log)"
        ),
        Err(f) => tracing::error!(
            error = %f.error,
            "an erasure was cut off before it deleted the snapshots of the scoring state, \
             and they cannot be deleted now; the next open tries again"
        ),
    }
}
