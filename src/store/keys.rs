//! Where API keys, the service's own secrets (the session signing key, the
//! erasure-audit salt) and the erasure audit live: `KeyStore`, with two
//! backends. On PostgreSQL, tables beside the event log
//! (`postgres/keys.rs`), so every server sees the same keys. On the embedded
//! store, a small file of its own, `keys.redb` in the data directory
//! (`KeyFile`): the event log's file is locked by the running server, so
//! `fusion keys create/list/revoke` could not open it while `serve` runs.
//! Each party opens `keys.redb` only for one transaction, retrying while
//! another holds it, and the server re-reads it every couple of seconds.
//! (redb 4.5 added multi-process opens, but they are new and still getting
//! fixes; a file held for milliseconds needs none of it.)
//!
//! Knows storage rows only; what a key means is `auth`'s business.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{PostgresStore, StoreError};
use crate::auth::{KeyId, KeyRecord, Role, SecretHash};

/// One erasure, as audited: who, when, how many events, and a salted hash
/// of the erased id (`auth::subject_hash`), never the id itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureRecord {
    pub id: u64,
    pub at: DateTime<Utc>,
    /// The key that asked; `None` when the service ran without keys.
    pub key_id: Option<KeyId>,
    pub subject_hash: String,
    /// Events removed; `None` while the erasure has not completed (it was
    /// interrupted, or failed: the audit is written before the erasure).
    pub events: Option<u64>,
}

/// Names of the service's secrets in the store.
pub mod secret {
    /// Signs dashboard session tokens (`auth::session`).
    pub const SESSIONS: &str = "sessions";
    /// Salts the hash of erased ids in the audit.
    pub const ERASURE_SALT: &str = "erasure-salt";
}

pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key. Ids are random; a clash is an error.
    fn create_key(&self, record: KeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every key, revoked and expired ones too, oldest first.
    fn keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;

    /// Revokes a key as of `at`; answers `false` when there is no such key.
    /// Revoking twice keeps the first time.
    fn revoke_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records when keys were last used (never moves a time backwards).
    fn note_key_use(
        &self,
        uses: Vec<(KeyId, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A 32-byte secret by name, created at random on first use; every
    /// server on the store gets the same one.
    fn secret(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Result<[u8; 32], StoreError>> + Send;

    /// Writes the audit record of an erasure about to run; answers its id.
    fn begin_erasure(
        &self,
        at: DateTime<Utc>,
        key_id: Option<KeyId>,
        subject_hash: String,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Completes an audit record with the number of events removed.
    fn finish_erasure(
        &self,
        audit: u64,
        events: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The audit, oldest first.
    fn erasures(&self) -> impl Future<Output = Result<Vec<ErasureRecord>, StoreError>> + Send;
}

/// The key store of a running Fusion, beside its event store.
#[derive(Clone)]
pub enum Keys {
    File(KeyFile),
    Postgres(PostgresStore),
    /// In this process only: the service run in-process by tests.
    Memory(MemoryKeys),
}

impl Keys {
    /// The key store that goes with an event store: PostgreSQL's own
    /// tables, or `keys.redb` in the embedded store's directory.
    pub fn beside(store: &super::Backend, data_dir: &Path) -> Keys {
        match store {
            super::Backend::Postgres(pg) => Keys::Postgres(pg.clone()),
            super::Backend::Embedded(_) => Keys::File(KeyFile::in_dir(data_dir)),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Keys::File($s) => $call.await,
            Keys::Postgres($s) => $call.await,
            Keys::Memory($s) => $call.await,
        }
    };
}

impl KeyStore for Keys {
    async fn create_key(&self, record: KeyRecord) -> Result<(), StoreError> {
        delegate!(self, s => s.create_key(record))
    }
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        delegate!(self, s => s.keys())
    }
    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        delegate!(self, s => s.revoke_key(id, at))
    }
    async fn note_key_use(&self, uses: Vec<(KeyId, DateTime<Utc>)>) -> Result<(), StoreError> {
        delegate!(self, s => s.note_key_use(uses))
    }
    async fn secret(&self, name: &'static str) -> Result<[u8; 32], StoreError> {
        delegate!(self, s => s.secret(name))
    }
    async fn begin_erasure(
        &self,
        at: DateTime<Utc>,
        key_id: Option<KeyId>,
        subject_hash: String,
    ) -> Result<u64, StoreError> {
        delegate!(self, s => s.begin_erasure(at, key_id, subject_hash))
    }
    async fn finish_erasure(&self, audit: u64, events: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.finish_erasure(audit, events))
    }
    async fn erasures(&self) -> Result<Vec<ErasureRecord>, StoreError> {
        delegate!(self, s => s.erasures())
    }
}

// ---------------------------------------------------------------------------
// In memory.

/// A key store in this process's memory, for the service run in-process
/// (tests); the same contract as the others.
#[derive(Clone, Default)]
pub struct MemoryKeys(Arc<Mutex<MemoryInner>>);

#[derive(Default)]
struct MemoryInner {
    keys: Vec<KeyRecord>,
    secrets: std::collections::HashMap<&'static str, [u8; 32]>,
    erasures: Vec<ErasureRecord>,
}

impl MemoryKeys {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut MemoryInner) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&mut self.0.lock().expect("memory keys lock"))
    }
}

impl KeyStore for MemoryKeys {
    async fn create_key(&self, record: KeyRecord) -> Result<(), StoreError> {
        self.with(|m| {
            if m.keys.iter().any(|k| k.id == record.id) {
                return Err(StoreError::Internal(format!(
                    "key id {} exists already",
                    record.id
                )));
            }
            m.keys.push(record);
            Ok(())
        })
    }
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.with(|m| Ok(m.keys.clone()))
    }
    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.with(|m| {
            Ok(m.keys
                .iter_mut()
                .find(|k| &k.id == id)
                .map(|k| {
                    k.revoked.get_or_insert(at);
                })
                .is_some())
        })
    }
    async fn note_key_use(&self, uses: Vec<(KeyId, DateTime<Utc>)>) -> Result<(), StoreError> {
        self.with(|m| {
            for (id, at) in uses {
                if let Some(k) = m.keys.iter_mut().find(|k| k.id == id)
                    && k.last_used.is_none_or(|t| t < at)
                {
                    k.last_used = Some(at);
                }
            }
            Ok(())
        })
    }
    async fn secret(&self, name: &'static str) -> Result<[u8; 32], StoreError> {
        self.with(|m| {
            Ok(*m
                .secrets
                .entry(name)
                .or_insert_with(crate::auth::random_bytes))
        })
    }
    async fn begin_erasure(
        &self,
        at: DateTime<Utc>,
        key_id: Option<KeyId>,
        subject_hash: String,
    ) -> Result<u64, StoreError> {
        self.with(|m| {
            let id = m.erasures.len() as u64 + 1;
            m.erasures.push(ErasureRecord {
                id,
                at,
                key_id,
                subject_hash,
                events: None,
            });
            Ok(id)
        })
    }
    async fn finish_erasure(&self, audit: u64, events: u64) -> Result<(), StoreError> {
        self.with(|m| match m.erasures.iter_mut().find(|e| e.id == audit) {
            Some(e) => {
                e.events = Some(events);
                Ok(())
            }
            None => Err(StoreError::Internal(format!(
                "no erasure audit record {audit}"
            ))),
        })
    }
    async fn erasures(&self) -> Result<Vec<ErasureRecord>, StoreError> {
        self.with(|m| Ok(m.erasures.clone()))
    }
}

// ---------------------------------------------------------------------------
// The embedded key file.

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const ERASURES: TableDefinition<u64, &[u8]> = TableDefinition::new("erasures");

/// How long an operation waits for another process to let go of the file.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// The file name of the key store in the data directory.
pub const KEY_FILE: &str = "keys.redb";

/// A stored key, as JSON in `keys.redb`.
#[derive(Serialize, Deserialize)]
struct KeyRow {
    role: Role,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
    created: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
    revoked: Option<DateTime<Utc>>,
    last_used: Option<DateTime<Utc>>,
}

impl KeyRow {
    fn of(r: &KeyRecord) -> Self {
        KeyRow {
            role: r.role,
            secret_sha256: crate::auth::hex(&r.hash.0),
            created: r.created,
            expires: r.expires,
            revoked: r.revoked,
            last_used: r.last_used,
        }
    }

    fn record(self, id: &str) -> Result<KeyRecord, StoreError> {
        let bad = || StoreError::Internal(format!("undecodable key {id:?} in the key file"));
        let hash = parse_hex32(&self.secret_sha256).ok_or_else(bad)?;
        Ok(KeyRecord {
            id: KeyId::new(id).map_err(|_| bad())?,
            role: self.role,
            hash: SecretHash(hash),
            created: self.created,
            expires: self.expires,
            revoked: self.revoked,
            last_used: self.last_used,
        })
    }
}

pub(crate) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `keys.redb` in the data directory, opened for one transaction at a time.
#[derive(Clone)]
pub struct KeyFile {
    path: PathBuf,
    /// One open at a time within this process (redb refuses a second open
    /// of the file by the same process too).
    open: Arc<Mutex<()>>,
}

impl KeyFile {
    /// The key file of the embedded store in `dir` (created on first write).
    pub fn in_dir(dir: &Path) -> Self {
        KeyFile {
            path: dir.join(KEY_FILE),
            open: Arc::new(Mutex::new(())),
        }
    }

    /// Runs `f` on the opened file, on a blocking thread when there is a
    /// runtime. Waits up to `LOCK_WAIT` for other processes to let go.
    fn with_db<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let (path, open) = (self.path.clone(), Arc::clone(&self.open));
        let run = move || {
            let _one = open.lock().expect("key file lock");
            let db = open_waiting(&path)?;
            let out = f(&db);
            // Dropping closes the file and releases its lock for others.
            drop(db);
            out
        };
        async move {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => h.spawn_blocking(run).await.map_err(StoreError::internal)?,
                Err(_) => run(),
            }
        }
    }
}

fn open_waiting(path: &Path) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Internal(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        match Database::builder().set_cache_size(1024 * 1024).create(path) {
            Ok(db) => return Ok(db),
            Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                // Another process holds the file for one transaction.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Unavailable(format!(
                    "{} stayed locked by another process for {}s",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
            Err(e) => {
                return Err(StoreError::Internal(format!(
                    "cannot open the key file {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(StoreError::internal)
}

fn unjson<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable row in the key file: {e}")))
}

impl KeyStore for KeyFile {
    fn create_key(&self, record: KeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_db(move |db| {
            let txn = db.begin_write().map_err(StoreError::internal)?;
            {
                let mut t = txn.open_table(KEYS).map_err(StoreError::internal)?;
                if t.get(record.id.as_str())
                    .map_err(StoreError::internal)?
                    .is_some()
                {
                    return Err(StoreError::Internal(format!(
                        "key id {} exists already",
                        record.id
                    )));
                }
                t.insert(record.id.as_str(), json(&KeyRow::of(&record))?.as_slice())
                    .map_err(StoreError::internal)?;
            }
            txn.commit().map_err(StoreError::internal)
        })
    }

    fn keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(StoreError::internal)?;
            let t = match txn.open_table(KEYS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::internal(e)),
            };
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::internal)? {
                let (k, v) = row.map_err(StoreError::internal)?;
                out.push(unjson::<KeyRow>(v.value())?.record(k.value())?);
            }
            out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
            Ok(out)
        })
    }

    fn revoke_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let id = id.clone();
        self.with_db(move |db| {
            let txn = db.begin_write().map_err(StoreError::internal)?;
            let found = {
                let mut t = txn.open_table(KEYS).map_err(StoreError::internal)?;
                let row = t
                    .get(id.as_str())
                    .map_err(StoreError::internal)?
                    .map(|v| unjson::<KeyRow>(v.value()))
                    .transpose()?;
                match row {
                    None => false,
                    Some(mut row) => {
                        row.revoked.get_or_insert(at);
                        t.insert(id.as_str(), json(&row)?.as_slice())
                            .map_err(StoreError::internal)?;
                        true
                    }
                }
            };
            txn.commit().map_err(StoreError::internal)?;
            Ok(found)
        })
    }

    fn note_key_use(
        &self,
        uses: Vec<(KeyId, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_db(move |db| {
            if uses.is_empty() {
                return Ok(());
            }
            let txn = db.begin_write().map_err(StoreError::internal)?;
            {
                let mut t = txn.open_table(KEYS).map_err(StoreError::internal)?;
                for (id, at) in uses {
                    let row = t
                        .get(id.as_str())
                        .map_err(StoreError::internal)?
                        .map(|v| unjson::<KeyRow>(v.value()))
                        .transpose()?;
                    if let Some(mut row) = row
                        && row.last_used.is_none_or(|t| t < at)
                    {
                        row.last_used = Some(at);
                        t.insert(id.as_str(), json(&row)?.as_slice())
                            .map_err(StoreError::internal)?;
                    }
                }
            }
            txn.commit().map_err(StoreError::internal)
        })
    }

    fn secret(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Result<[u8; 32], StoreError>> + Send {
        self.with_db(move |db| {
            let txn = db.begin_write().map_err(StoreError::internal)?;
            let value = {
                let mut t = txn.open_table(SECRETS).map_err(StoreError::internal)?;
                let existing: Option<Vec<u8>> = t
                    .get(name)
                    .map_err(StoreError::internal)?
                    .map(|v| v.value().to_vec());
                match existing {
                    Some(v) => v.try_into().map_err(|_| {
                        StoreError::Internal(format!(
                            "the secret {name:?} in the key file is not 32 bytes"
                        ))
                    })?,
                    None => {
                        let fresh = crate::auth::random_bytes();
                        t.insert(name, fresh.as_slice())
                            .map_err(StoreError::internal)?;
                        fresh
                    }
                }
            };
            txn.commit().map_err(StoreError::internal)?;
            Ok(value)
        })
    }

    fn begin_erasure(
        &self,
        at: DateTime<Utc>,
        key_id: Option<KeyId>,
        subject_hash: String,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.with_db(move |db| {
            let txn = db.begin_write().map_err(StoreError::internal)?;
            let id = {
                let mut t = txn.open_table(ERASURES).map_err(StoreError::internal)?;
                let id = t
                    .last()
                    .map_err(StoreError::internal)?
                    .map_or(1, |(k, _)| k.value() + 1);
                let record = ErasureRecord {
                    id,
                    at,
                    key_id,
                    subject_hash,
                    events: None,
                };
                t.insert(id, json(&record)?.as_slice())
                    .map_err(StoreError::internal)?;
                id
            };
            txn.commit().map_err(StoreError::internal)?;
            Ok(id)
        })
    }

    fn finish_erasure(
        &self,
        audit: u64,
        events: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.with_db(move |db| {
            let txn = db.begin_write().map_err(StoreError::internal)?;
            {
                let mut t = txn.open_table(ERASURES).map_err(StoreError::internal)?;
                let record = t
                    .get(audit)
                    .map_err(StoreError::internal)?
                    .map(|v| unjson::<ErasureRecord>(v.value()))
                    .transpose()?;
                let Some(mut record) = record else {
                    return Err(StoreError::Internal(format!(
                        "no erasure audit record {audit}"
                    )));
                };
                record.events = Some(events);
                t.insert(audit, json(&record)?.as_slice())
                    .map_err(StoreError::internal)?;
            }
            txn.commit().map_err(StoreError::internal)
        })
    }

    fn erasures(&self) -> impl Future<Output = Result<Vec<ErasureRecord>, StoreError>> + Send {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(StoreError::internal)?;
            let t = match txn.open_table(ERASURES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::internal(e)),
            };
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::internal)? {
                let (_, v) = row.map_err(StoreError::internal)?;
                out.push(unjson(v.value())?);
            }
            Ok(out)
        })
    }
}
