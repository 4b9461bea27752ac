//! The embedded event log on redb (ACID, crash-safe, pure Rust).
//!
//! Every durable redb commit fsyncs, so commits are the scarce resource: one
//! writer thread owns all writes and folds every request waiting in its queue
//! into a single transaction (group commit). A caller's future resolves only
//! after the commit that holds its events has returned.
//!
//! Tables: `events` keyed by (event time in µs, id) so a scan is already in
//! canonical order; `event_ids` maps id -> time for the duplicate check and
//! erasure; `entities` holds registrations; `health` one probe row. Values
//! are JSON of domain types. An event's value is a zero byte, its content
//! digest (`digest.rs`, 24 bytes) and the JSON body; a value written before
//! digests is the bare body (it starts with `{`), whose digest is computed
//! when its id comes again. (A table of digests beside `event_ids` cost a
//! third B-tree insert per event: ingest took 70 % longer.)
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
use super::{AppendMode, Appended, ContentKey, Digest, EventStore, Outcome, StoreError};
use crate::domain::{Entity, EntityId, Event, EventId};

const EVENTS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<&str, i64> = TableDefinition::new("event_ids");
const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
const HEALTH: TableDefinition<&str, u64> = TableDefinition::new("health");

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
    /// The stored value (`encode`), which begins with the digest.
    value: Vec<u8>,
}

impl Encoded {
    fn digest(&self) -> Digest {
        split(&self.value).0.expect("encode writes the digest")
    }
}

enum Write {
    Append(Vec<Encoded>, AppendMode, Reply),
    PutEntity(Entity, oneshot::Sender<Result<(), StoreError>>),
    Erase(EntityId, oneshot::Sender<Result<u64, StoreError>>),
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

/// Opens (or creates) the database and its tables, so readers never meet
/// a missing table.
fn open_database(path: &Path) -> Result<Database, Failure> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(EVENTS)?;
    txn.open_table(EVENT_IDS)?;
    txn.open_table(ENTITIES)?;
    txn.open_table(HEALTH)?;
    txn.commit()?;
    Ok(db)
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
        Ok(Self { shared, writer: tx })
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
            .map(|(i, e)| Encoded {
                id: e.id.to_string(),
                time: time_key(e),
                value: encode(e, keys.get(i).copied().flatten().as_ref()),
            })
            .collect();
        let sent = self.send(Write::Append(encoded, mode, tx));
        async move {
            sent?;
            recv(rx).await
        }
    }

    fn scan(&self) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        self.read_blocking(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(table.len()? as usize);
            for row in table.iter()? {
                let (_, v) = row?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
    }

    fn events_by_id(
        &self,
        ids: Vec<EventId>,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        self.read_blocking(move |db| {
            let txn = db.begin_read()?;
            let times = txn.open_table(EVENT_IDS)?;
            let events = txn.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(time) = times.get(id.as_str())? else {
                    continue;
                };
                if let Some(body) = events.get((time.value(), id.as_str()))? {
                    out.push(decode(body.value())?);
                }
            }
            Ok(out)
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
        async move {
            sent?;
            recv(rx).await
        }
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

/// First byte of a stored value that carries a digest (JSON never starts
/// with it).
const WITH_DIGEST: u8 = 0;

/// The stored value of an event: `WITH_DIGEST`, the digest (its content
/// part `key` when given), the body.
fn encode(event: &Event, key: Option<&ContentKey>) -> Vec<u8> {
    let mut value = Vec::with_capacity(256);
    value.push(WITH_DIGEST);
    value.extend_from_slice(&[0; DIGEST_LEN]);
    let digest = Digest::write_json_keyed(event, key, &mut value);
    value[1..1 + DIGEST_LEN].copy_from_slice(&digest.to_bytes());
    value
}

/// The digest and body of a stored value (no digest if written before).
fn split(value: &[u8]) -> (Option<Digest>, &[u8]) {
    match value.split_first() {
        Some((&WITH_DIGEST, rest)) if rest.len() >= DIGEST_LEN => {
            let (digest, body) = rest.split_at(DIGEST_LEN);
            (Digest::from_bytes(digest), body)
        }
        _ => (None, value),
    }
}

fn decode(value: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(split(value).1)
        .map_err(|e| StoreError::Internal(format!("undecodable event in the store: {e}")))
}

fn time_key(event: &Event) -> i64 {
    event.time.timestamp_micros()
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
        let batch = std::mem::take(appends);
        match self.write(|db| commit_appends(db, &batch)) {
            Ok(results) => {
                for ((_, _, reply), outcomes) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(Appended { outcomes }));
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

/// The digest of the stored event `id`, stored at `time`.
fn stored_digest(
    events: &Table<(i64, &str), &[u8]>,
    id: &str,
    time: i64,
) -> Result<Digest, Failure> {
    let value = events.get((time, id))?.ok_or_else(|| {
        StoreError::Internal(format!("event '{id}' is in event_ids but not in events"))
    })?;
    let value = value.value();
    match split(value) {
        (Some(digest), _) => Ok(digest),
        (None, _) => Ok(Digest::of(&decode(value)?)),
    }
}

fn commit_appends(
    db: &Database,
    batch: &[(Vec<Encoded>, AppendMode, Reply)],
) -> Result<Vec<Vec<Outcome>>, Failure> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        for (batch_events, mode, _) in batch {
            // Decide first, so an all-or-nothing request can store nothing;
            // `fresh` holds this request's own new ids (the first occurrence
            // wins; a later one compares with it).
            let mut fresh: FxHashMap<&str, Digest> = FxHashMap::default();
            let mut outcomes = Vec::with_capacity(batch_events.len());
            for event in batch_events {
                let id = event.id.as_str();
                let stored = match fresh.get(id) {
                    Some(d) => Some(*d),
                    None => match ids.get(id)?.map(|t| t.value()) {
                        Some(time) => Some(stored_digest(&events, id, time)?),
                        None => None,
                    },
                };
                outcomes.push(match stored {
                    None => {
                        fresh.insert(id, event.digest());
                        Outcome::Inserted
                    }
                    Some(d) => match event.digest().compare(&d) {
                        Sameness::Same => Outcome::Duplicate,
                        Sameness::OtherAttributes => Outcome::DuplicateOtherAttributes,
                        Sameness::Conflicting => Outcome::Conflict,
                    },
                });
            }
            if *mode == AppendMode::AllOrNothing && outcomes.contains(&Outcome::Conflict) {
                for o in &mut outcomes {
                    if *o == Outcome::Inserted {
                        *o = Outcome::NotStored;
                    }
                }
            }
            for (event, outcome) in batch_events.iter().zip(&outcomes) {
                if *outcome == Outcome::Inserted {
                    let id = event.id.as_str();
                    ids.insert(id, event.time)?;
                    events.insert((event.time, id), event.value.as_slice())?;
                }
            }
            results.push(outcomes);
        }
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
    txn.commit()?;
    Ok(())
}

fn erase(db: &Database, id: &EntityId) -> Result<u64, Failure> {
    let txn = db.begin_write()?;
    let mut removed = 0u64;
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut ids = txn.open_table(EVENT_IDS)?;
        let mut doomed: Vec<(i64, String)> = Vec::new();
        for row in events.iter()? {
            let (k, v) = row?;
            if decode(v.value())?.mentions(id) {
                let (t, eid) = k.value();
                doomed.push((t, eid.to_string()));
            }
        }
        for (t, eid) in &doomed {
            events.remove((*t, eid.as_str()))?;
            ids.remove(eid.as_str())?;
            removed += 1;
        }
        let mut entities = txn.open_table(ENTITIES)?;
        entities.remove(id.as_str())?;
    }
    txn.commit()?;
    Ok(removed)
}
