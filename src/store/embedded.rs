//! The embedded event log on redb (ACID, crash-safe, pure Rust).
//!
//! Every durable redb commit fsyncs, so commits are the scarce resource: one
//! writer thread owns all writes and folds every request waiting in its queue
//! into a single transaction (group commit). A caller's future resolves only
//! after the commit that holds its events has returned.
//!
//! Tables: `events` keyed by (event time in µs, id) so a scan is already in
//! canonical order; `event_ids` maps id -> time for the duplicate check and
//! erasure; `entities` holds registrations. Values are JSON of domain types.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use super::{Appended, EventStore, StoreError};
use crate::domain::{Entity, EntityId, Event};

const EVENTS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<&str, i64> = TableDefinition::new("event_ids");
const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");

/// Most events folded into one commit; bounds the size of a transaction.
const MAX_EVENTS_PER_COMMIT: usize = 200_000;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// An event as the writer stores it, encoded by the caller so the one
/// writer thread only inserts.
struct Encoded {
    id: String,
    time: i64,
    body: Vec<u8>,
}

enum Write {
    Append(Vec<Encoded>, Reply),
    PutEntity(Entity, oneshot::Sender<Result<(), StoreError>>),
    Erase(EntityId, oneshot::Sender<Result<u64, StoreError>>),
    /// Stop after what is queued; answered once the writer let go of the file.
    Close(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: mpsc::Sender<Write>,
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
        let db = Database::create(&path).map_err(|e| {
            StoreError::Internal(format!("cannot open the store at {}: {e}", path.display()))
        })?;
        {
            // Create the tables up front so readers never meet a missing table.
            let txn = db.begin_write().map_err(StoreError::internal)?;
            txn.open_table(EVENTS).map_err(StoreError::internal)?;
            txn.open_table(EVENT_IDS).map_err(StoreError::internal)?;
            txn.open_table(ENTITIES).map_err(StoreError::internal)?;
            txn.commit().map_err(StoreError::internal)?;
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        thread::Builder::new()
            .name("fusion-store-writer".into())
            .spawn(move || {
                let closed = writer_loop(&writer_db, rx);
                drop(writer_db);
                if let Some(reply) = closed {
                    let _ = reply.send(());
                }
            })
            .map_err(StoreError::internal)?;
        Ok(Self { db, writer: tx })
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
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        async move {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => h
                    .spawn_blocking(move || f(&db))
                    .await
                    .map_err(StoreError::internal)?,
                Err(_) => f(&db),
            }
        }
    }
}

async fn recv<T>(rx: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    rx.await
        .map_err(|_| StoreError::Internal("the store writer dropped a request".into()))?
}

impl EventStore for EmbeddedStore {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        let (tx, rx) = oneshot::channel();
        let encoded: Result<Vec<Encoded>, StoreError> = events
            .iter()
            .map(|e| {
                Ok(Encoded {
                    id: e.id.to_string(),
                    time: time_key(e),
                    body: serde_json::to_vec(e).map_err(StoreError::internal)?,
                })
            })
            .collect();
        let sent = encoded.and_then(|encoded| self.send(Write::Append(encoded, tx)));
        async move {
            sent?;
            recv(rx).await
        }
    }

    fn scan(&self) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        self.read_blocking(|db| {
            let txn = db.begin_read().map_err(StoreError::internal)?;
            let table = txn.open_table(EVENTS).map_err(StoreError::internal)?;
            let mut out = Vec::with_capacity(table.len().map_err(StoreError::internal)? as usize);
            for row in table.iter().map_err(StoreError::internal)? {
                let (_, v) = row.map_err(StoreError::internal)?;
                out.push(decode(v.value())?);
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
            let txn = db.begin_read().map_err(StoreError::internal)?;
            let table = txn.open_table(ENTITIES).map_err(StoreError::internal)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(StoreError::internal)? {
                let (_, v) = row.map_err(StoreError::internal)?;
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
            let txn = db.begin_read().map_err(StoreError::internal)?;
            let table = txn.open_table(EVENT_IDS).map_err(StoreError::internal)?;
            table.len().map_err(StoreError::internal)
        })
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.read_blocking(|db| {
            db.begin_read().map_err(StoreError::internal)?;
            Ok(())
        })
    }
}

fn decode(bytes: &[u8]) -> Result<Event, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable event in the store: {e}")))
}

fn time_key(event: &Event) -> i64 {
    event.time.timestamp_micros()
}

/// The writer thread: takes every waiting request, commits them together,
/// then answers each. Ends when every `EmbeddedStore` handle is dropped, or
/// at `Close` (answered by the caller once the database is dropped).
fn writer_loop(db: &Database, rx: mpsc::Receiver<Write>) -> Option<oneshot::Sender<()>> {
    while let Ok(first) = rx.recv() {
        let mut appends: Vec<(Vec<Encoded>, Reply)> = Vec::new();
        let mut pending = 0usize;
        let mut next = Some(first);
        while let Some(w) = next.take() {
            match w {
                Write::Append(events, reply) => {
                    pending += events.len();
                    appends.push((events, reply));
                }
                // Entity writes and erasures are rare: commit what is queued
                // first so their order relative to appends is kept.
                Write::PutEntity(entity, reply) => {
                    flush_appends(db, &mut appends);
                    let _ = reply.send(put_entity(db, &entity));
                }
                Write::Erase(id, reply) => {
                    flush_appends(db, &mut appends);
                    let _ = reply.send(erase(db, &id));
                }
                Write::Close(reply) => {
                    flush_appends(db, &mut appends);
                    return Some(reply);
                }
            }
            if pending < MAX_EVENTS_PER_COMMIT {
                next = rx.try_recv().ok();
            }
        }
        flush_appends(db, &mut appends);
    }
    None
}

fn flush_appends(db: &Database, appends: &mut Vec<(Vec<Encoded>, Reply)>) {
    if appends.is_empty() {
        return;
    }
    let batch = std::mem::take(appends);
    match commit_appends(db, &batch) {
        Ok(results) => {
            for ((_, reply), inserted) in batch.into_iter().zip(results) {
                let _ = reply.send(Ok(Appended { inserted }));
            }
        }
        Err(err) => {
            let msg = err.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(StoreError::Internal(msg.clone())));
            }
        }
    }
}

fn commit_appends(
    db: &Database,
    batch: &[(Vec<Encoded>, Reply)],
) -> Result<Vec<Vec<bool>>, StoreError> {
    let txn = db.begin_write().map_err(StoreError::internal)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut events = txn.open_table(EVENTS).map_err(StoreError::internal)?;
        let mut ids = txn.open_table(EVENT_IDS).map_err(StoreError::internal)?;
        for (batch_events, _) in batch {
            let mut inserted = Vec::with_capacity(batch_events.len());
            for event in batch_events {
                let id = event.id.as_str();
                if ids.get(id).map_err(StoreError::internal)?.is_some() {
                    inserted.push(false);
                    continue;
                }
                ids.insert(id, event.time).map_err(StoreError::internal)?;
                events
                    .insert((event.time, id), event.body.as_slice())
                    .map_err(StoreError::internal)?;
                inserted.push(true);
            }
            results.push(inserted);
        }
    }
    txn.commit().map_err(StoreError::internal)?;
    Ok(results)
}

fn put_entity(db: &Database, entity: &Entity) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(entity).map_err(StoreError::internal)?;
    let txn = db.begin_write().map_err(StoreError::internal)?;
    {
        let mut t = txn.open_table(ENTITIES).map_err(StoreError::internal)?;
        t.insert(entity.id.as_str(), bytes.as_slice())
            .map_err(StoreError::internal)?;
    }
    txn.commit().map_err(StoreError::internal)
}

fn erase(db: &Database, id: &EntityId) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(StoreError::internal)?;
    let mut removed = 0u64;
    {
        let mut events = txn.open_table(EVENTS).map_err(StoreError::internal)?;
        let mut ids = txn.open_table(EVENT_IDS).map_err(StoreError::internal)?;
        let mut doomed: Vec<(i64, String)> = Vec::new();
        for row in events.iter().map_err(StoreError::internal)? {
            let (k, v) = row.map_err(StoreError::internal)?;
            if decode(v.value())?.mentions(id) {
                let (t, eid) = k.value();
                doomed.push((t, eid.to_string()));
            }
        }
        for (t, eid) in &doomed {
            events
                .remove((*t, eid.as_str()))
                .map_err(StoreError::internal)?;
            ids.remove(eid.as_str()).map_err(StoreError::internal)?;
            removed += 1;
        }
        let mut entities = txn.open_table(ENTITIES).map_err(StoreError::internal)?;
        entities.remove(id.as_str()).map_err(StoreError::internal)?;
    }
    txn.commit().map_err(StoreError::internal)?;
    Ok(removed)
}
