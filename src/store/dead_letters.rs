//! The dead-letter store: every event an ingest route (or `fusion ingest`)
//! rejected, and every malformed body (up to a size cap), kept durably with
//! why, where and when, for inspection and replay (issue #16; Snowplow calls
//! them failed events). Optional behaviour of a store, so its own trait
//! (`DeadLetterStore`) with its own tables or file: `dead_letters.redb`
//! beside the embedded event log (`DeadLetterFile`; the log's own file and
//! format are untouched), the `dead_letters` tables on PostgreSQL
//! (`postgres/dead_letters.rs`, migration 0010) and `MemoryDeadLetters` for
//! the service run in-process.
//!
//! Contract every backend keeps (`tests/it/dead_letters.rs` runs one suite
//! against all three):
//! - `keep` answers only once the letters are durable; it applies the
//!   retention in the same transaction: past `max_count` letters, or older
//!   than `max_age`, the oldest go first, and a durable counter says how
//!   many went (`DeadLetterStats::dropped`);
//! - ids grow with every letter kept, so they order letters by arrival and
//!   serve as list cursors;
//! - `erase` removes every letter that mentions an entity ([`mentions`]).
//!
//! Never holds an API key: the route names the key by its public id, and
//! raw text is passed through [`redact_keys`] before it is kept. Knows no
//! HTTP, mapping or validation: letters arrive made.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;

/// Largest raw text kept for one letter; a longer malformed body is cut
/// there (`truncated`). An event is at most 4 MiB parsed, but the letters
/// of one request hold at most 1,000 of these.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// Letters kept per request; past this they are only counted
/// (`DeadLetterStats::not_kept`, and `request.rejected` on each letter).
pub const MAX_LETTERS_PER_REQUEST: usize = 1000;

/// Why a letter was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The whole body could not be read as JSON of its route's shape.
    Malformed,
    /// The mapping file has no rule for the message's type or event name.
    Unmapped,
    /// A field (of the event, or of the message it was mapped from) is
    /// invalid, or an arrival check refused it (time, roles).
    Invalid,
    /// Its id names a stored event with other content.
    Conflict,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Malformed,
        Reason::Unmapped,
        Reason::Invalid,
        Reason::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Unmapped => "unmapped",
            Reason::Invalid => "invalid",
            Reason::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One problem of a letter (as the ingest answer gives it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LetterError {
    pub field: String,
    pub message: String,
}

/// The request a letter came in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// The request's id (`X-Request-Id`), or the file of `fusion ingest`.
    pub id: String,
    /// How many events or messages the request rejected, kept or not.
    pub rejected: u64,
}

/// A letter as the caller makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLetter {
    pub received_at: DateTime<Utc>,
    /// The route pattern (`/v1/events`, `/v1/batch`, …) or `fusion ingest`.
    pub route: String,
    /// The public id of the API key used; never the key.
    pub key_id: Option<String>,
    pub reason: Reason,
    /// The event's JSON as sent (a line, an array element, a message), or
    /// the body of a malformed request; base64 when it is not UTF-8 text.
    pub raw: String,
    #[serde(default)]
    pub raw_base64: bool,
    /// `raw` was cut at [`MAX_RAW_BYTES`].
    #[serde(default)]
    pub truncated: bool,
    pub errors: Vec<LetterError>,
    pub request: RequestInfo,
    /// What a replay needs besides `raw`: the batch's `sentAt` of a
    /// Segment message, the attributes of a binary-mode CloudEvent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

impl NewLetter {
    /// Sets `raw` from bytes as sent: redacted, cut at [`MAX_RAW_BYTES`],
    /// base64 when not UTF-8 (or holding U+0000, which PostgreSQL's text
    /// cannot hold).
    pub fn with_raw(mut self, bytes: &[u8], presented_key: Option<&str>) -> Self {
        let cut = bytes.len() > MAX_RAW_BYTES;
        let mut end = bytes.len().min(MAX_RAW_BYTES);
        let text = loop {
            match std::str::from_utf8(&bytes[..end]) {
                Ok(t) => break Some(t),
                // A cut inside a character: step back to its start.
                Err(e) if cut && e.error_len().is_none() => end = e.valid_up_to(),
                Err(_) => break None,
            }
        };
        match text {
            Some(t) if !t.contains('\0') => {
                self.raw = redact_keys(t, presented_key);
                self.raw_base64 = false;
            }
            _ => {
                use base64::Engine as _;
                self.raw = base64::engine::general_purpose::STANDARD.encode(&bytes[..end]);
                self.raw_base64 = true;
            }
        }
        self.truncated = cut;
        self
    }
}

/// A kept letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    #[serde(flatten)]
    pub letter: NewLetter,
}

/// Which letters an operation is about; every condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub reason: Option<Reason>,
    /// Some error names this field (`amount`, `properties.revenue`).
    pub field: Option<String>,
    pub route: Option<String>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    /// Ids greater than this (the cursor of a listing).
    pub after: Option<u64>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        let l = &d.letter;
        self.reason.is_none_or(|r| l.reason == r)
            && self
                .field
                .as_ref()
                .is_none_or(|f| l.errors.iter().any(|e| &e.field == f))
            && self.route.as_ref().is_none_or(|r| &l.route == r)
            && self.from.is_none_or(|t| l.received_at >= t)
            && self.to.is_none_or(|t| l.received_at < t)
            && self.after.is_none_or(|a| d.id > a)
    }
}

/// How long letters are kept: at most `max_count`, none older than
/// `max_age`; past either, the oldest go first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    pub max_count: u64,
    pub max_age: Duration,
}

impl Default for Retention {
    /// 100,000 letters, 30 days.
    fn default() -> Self {
        Self {
            max_count: 100_000,
            max_age: Duration::days(30),
        }
    }
}

/// What `keep` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kept {
    /// The ids given to the letters, in order.
    pub ids: Vec<u64>,
    /// Older letters dropped by the retention in the same transaction.
    pub dropped: u64,
}

/// Counts of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DeadLetterStats {
    /// Letters held now.
    pub held: u64,
    /// Letters dropped by the retention, ever.
    pub dropped: u64,
    /// Rejections never kept because their request had more than
    /// [`MAX_LETTERS_PER_REQUEST`], ever.
    pub not_kept: u64,
}

pub trait DeadLetterStore: Send + Sync + 'static {
    /// Keeps `letters` durably (ids in arrival order), counts `not_kept`
    /// rejections of the same request that were not kept, and applies the
    /// retention as of `now`, all in one transaction.
    fn keep(
        &self,
        letters: Vec<NewLetter>,
        not_kept: u64,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Kept, StoreError>> + Send;

    /// The first `limit` letters that match, by id.
    fn list(
        &self,
        filter: Filter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send;

    /// Removes these letters; answers how many there were.
    fn remove(&self, ids: Vec<u64>) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Removes every letter that matches; answers how many.
    fn delete(&self, filter: Filter) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Removes every letter that mentions the entity ([`mentions`]).
    fn erase(&self, entity: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Applies the retention as of `now` (for when nothing is kept for a
    /// while); answers how many went.
    fn purge(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn stats(&self) -> impl Future<Output = Result<DeadLetterStats, StoreError>> + Send;
}

/// Whether a letter mentions an entity, for erasure: a string of its raw
/// JSON (at any depth, key or value) equal to the id (compared in NFC, as
/// ids are), or, when the raw text is not JSON (a malformed body), the id
/// as a JSON string anywhere in it. Its errors mention only what its raw
/// text holds.
pub fn mentions(letter: &NewLetter, entity: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    fn walk(v: &Value, id: &str) -> bool {
        let same = |s: &str| s == id || s.nfc().eq(id.chars());
        match v {
            Value::String(s) => same(s),
            Value::Array(items) => items.iter().any(|x| walk(x, id)),
            Value::Object(m) => m.iter().any(|(k, x)| same(k) || walk(x, id)),
            _ => false,
        }
    }
    if letter.raw_base64 {
        return false;
    }
    match serde_json::from_str::<Value>(&letter.raw) {
        Ok(v) => walk(&v, entity),
        Err(_) => {
            let quoted = serde_json::to_string(entity).unwrap_or_default();
            letter.raw.contains(&quoted)
        }
    }
}

/// `raw` without API keys: Fusion keys (`fsk_<id>_<secret>`) keep their
/// public id and lose the secret, and the key the request presented (any
/// form, such as the bootstrap key) is replaced whole. A Segment batch
/// carries its write key in the body (`writeKey`), so a malformed one
/// would otherwise be kept with it.
pub fn redact_keys(raw: &str, presented: Option<&str>) -> String {
    let mut out = match presented {
        Some(k) if k.len() >= 8 && raw.contains(k) => raw.replace(k, "[redacted key]"),
        _ => raw.to_string(),
    };
    let mut from = 0;
    while let Some(at) = out[from..].find("fsk_").map(|i| i + from) {
        let rest = &out.as_bytes()[at + 4..];
        let id_len = rest
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        if id_len > 0 && rest.get(id_len) == Some(&b'_') {
            let secret_at = at + 4 + id_len + 1;
            let secret_len = out.as_bytes()[secret_at..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_')
                .count();
            if secret_len > 0 {
                out.replace_range(secret_at..secret_at + secret_len, "[redacted]");
            }
        }
        from = at + 4;
    }
    out
}

/// Which letters the retention drops, oldest (lowest id) first: those
/// received before `now - max_age`, then as many more as keep the count
/// within `max_count`. `ordered` is every letter's (id, received_at) by id.
fn doomed(ordered: &[(u64, DateTime<Utc>)], retention: Retention, now: DateTime<Utc>) -> usize {
    let cutoff = now - retention.max_age;
    let old = ordered.iter().take_while(|(_, t)| *t < cutoff).count();
    let over = (ordered.len() as u64).saturating_sub(retention.max_count) as usize;
    old.max(over)
}

// ---------------------------------------------------------------------------
// In memory.

/// Letters in this process's memory, for the service run in-process
/// (tests); the same contract as the others.
#[derive(Clone, Default)]
pub struct MemoryDeadLetters(Arc<Mutex<MemoryInner>>);

#[derive(Default)]
struct MemoryInner {
    letters: BTreeMap<u64, DeadLetter>,
    next: u64,
    stats: DeadLetterStats,
}

impl MemoryInner {
    fn retain(&mut self, retention: Retention, now: DateTime<Utc>) -> u64 {
        let ordered: Vec<(u64, DateTime<Utc>)> = self
            .letters
            .values()
            .map(|d| (d.id, d.letter.received_at))
            .collect();
        let n = doomed(&ordered, retention, now);
        for (id, _) in &ordered[..n] {
            self.letters.remove(id);
        }
        self.stats.dropped += n as u64;
        n as u64
    }
}

impl DeadLetterStore for MemoryDeadLetters {
    async fn keep(
        &self,
        letters: Vec<NewLetter>,
        not_kept: u64,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> Result<Kept, StoreError> {
        let mut m = self.0.lock();
        let mut ids = Vec::with_capacity(letters.len());
        for letter in letters {
            m.next += 1;
            let id = m.next;
            m.letters.insert(id, DeadLetter { id, letter });
            ids.push(id);
        }
        m.stats.not_kept += not_kept;
        let dropped = m.retain(retention, now);
        Ok(Kept { ids, dropped })
    }

    async fn list(&self, filter: Filter, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let m = self.0.lock();
        Ok(m.letters
            .values()
            .filter(|d| filter.matches(d))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn remove(&self, ids: Vec<u64>) -> Result<u64, StoreError> {
        let mut m = self.0.lock();
        Ok(ids
            .iter()
            .filter(|id| m.letters.remove(id).is_some())
            .count() as u64)
    }

    async fn delete(&self, filter: Filter) -> Result<u64, StoreError> {
        let mut m = self.0.lock();
        let before = m.letters.len();
        m.letters.retain(|_, d| !filter.matches(d));
        Ok((before - m.letters.len()) as u64)
    }

    async fn erase(&self, entity: &str) -> Result<u64, StoreError> {
        let mut m = self.0.lock();
        let before = m.letters.len();
        m.letters.retain(|_, d| !mentions(&d.letter, entity));
        Ok((before - m.letters.len()) as u64)
    }

    async fn purge(&self, retention: Retention, now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.0.lock().retain(retention, now))
    }

    async fn stats(&self) -> Result<DeadLetterStats, StoreError> {
        let m = self.0.lock();
        Ok(DeadLetterStats {
            held: m.letters.len() as u64,
            ..m.stats
        })
    }
}

// ---------------------------------------------------------------------------
// Beside the embedded store: a redb file of its own.

const LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("dead_letter_counters");
const NEXT_ID: &str = "next_id";
const DROPPED: &str = "dropped";
const NOT_KEPT: &str = "not_kept";

/// `dead_letters.redb` in the embedded store's data directory: its own
/// file, so the event log's file and format stay as they are and a flood of
/// rejections never competes with event commits for the log's writer. Held
/// open by the process; one transaction per call (every call is a commit,
/// and rejections come in batches, one per request). After an I/O error
/// (a full disk), redb refuses everything until reopened, so the next call
/// reopens the file first.
#[derive(Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
    db: Arc<Mutex<Option<Database>>>,
}

fn redb_error(err: impl Into<redb::Error>) -> StoreError {
    match err.into() {
        redb::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            StoreError::Full(format!("no space left for the dead-letter store: {e}"))
        }
        other => StoreError::Internal(format!("dead-letter store: {other}")),
    }
}

fn decode(bytes: &[u8]) -> Result<DeadLetter, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable dead letter: {e}")))
}

impl DeadLetterFile {
    /// Opens (or creates) `dir/dead_letters.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Internal(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
        let file = DeadLetterFile {
            path: dir.join("dead_letters.redb"),
            db: Arc::new(Mutex::new(None)),
        };
        file.with(|_| Ok(()))?;
        Ok(file)
    }

    fn open_database(&self) -> Result<Database, StoreError> {
        let db = Database::create(&self.path).map_err(|e| {
            StoreError::Internal(format!("cannot open {}: {e}", self.path.display()))
        })?;
        let txn = db.begin_write().map_err(redb_error)?;
        txn.open_table(LETTERS).map_err(redb_error)?;
        txn.open_table(COUNTERS).map_err(redb_error)?;
        txn.commit().map_err(redb_error)?;
        Ok(db)
    }

    /// Runs `f` on the open database; a failure drops the handle, so the
    /// next call reopens the file (redb refuses everything after an I/O
    /// error until then).
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.db.lock();
        if guard.is_none() {
            *guard = Some(self.open_database()?);
        }
        let out = f(guard.as_ref().expect("opened above"));
        if out.is_err() {
            *guard = None;
        }
        out
    }

    fn blocking<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let me = self.clone();
        async move {
            let run = move || me.with(f);
            match tokio::runtime::Handle::try_current() {
                Ok(h) => h.spawn_blocking(run).await.map_err(StoreError::internal)?,
                Err(_) => run(),
            }
        }
    }

    /// Removes the letters for which `doomed` says so, in one transaction.
    fn remove_where(
        &self,
        doomed: impl Fn(&DeadLetter) -> bool + Send + 'static,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let n = {
                let mut table = txn.open_table(LETTERS).map_err(redb_error)?;
                let mut gone = Vec::new();
                for row in table.iter().map_err(redb_error)? {
                    let (k, v) = row.map_err(redb_error)?;
                    if doomed(&decode(v.value())?) {
                        gone.push(k.value());
                    }
                }
                for id in &gone {
                    table.remove(id).map_err(redb_error)?;
                }
                gone.len() as u64
            };
            txn.commit().map_err(redb_error)?;
            Ok(n)
        })
    }
}

/// The retention inside a write transaction; answers how many went.
fn retain_redb(
    letters: &mut redb::Table<u64, &[u8]>,
    counters: &mut redb::Table<&str, u64>,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let cutoff = now - retention.max_age;
    let len = letters.len().map_err(redb_error)?;
    let over = len.saturating_sub(retention.max_count);
    let mut gone = Vec::new();
    for row in letters.iter().map_err(redb_error)? {
        let (k, v) = row.map_err(redb_error)?;
        if (gone.len() as u64) < over || decode(v.value())?.letter.received_at < cutoff {
            gone.push(k.value());
        } else {
            break;
        }
    }
    for id in &gone {
        letters.remove(id).map_err(redb_error)?;
    }
    let n = gone.len() as u64;
    if n > 0 {
        let dropped = counters
            .get(DROPPED)
            .map_err(redb_error)?
            .map_or(0, |v| v.value());
        counters.insert(DROPPED, dropped + n).map_err(redb_error)?;
    }
    Ok(n)
}

impl DeadLetterStore for DeadLetterFile {
    fn keep(
        &self,
        letters: Vec<NewLetter>,
        not_kept: u64,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Kept, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let kept = {
                let mut table = txn.open_table(LETTERS).map_err(redb_error)?;
                let mut counters = txn.open_table(COUNTERS).map_err(redb_error)?;
                let mut next = counters
                    .get(NEXT_ID)
                    .map_err(redb_error)?
                    .map_or(0, |v| v.value());
                let mut ids = Vec::with_capacity(letters.len());
                for letter in letters {
                    next += 1;
                    let bytes = serde_json::to_vec(&DeadLetter { id: next, letter })
                        .map_err(StoreError::internal)?;
                    table.insert(next, bytes.as_slice()).map_err(redb_error)?;
                    ids.push(next);
                }
                counters.insert(NEXT_ID, next).map_err(redb_error)?;
                if not_kept > 0 {
                    let n = counters
                        .get(NOT_KEPT)
                        .map_err(redb_error)?
                        .map_or(0, |v| v.value());
                    counters
                        .insert(NOT_KEPT, n + not_kept)
                        .map_err(redb_error)?;
                }
                let dropped = retain_redb(&mut table, &mut counters, retention, now)?;
                Kept { ids, dropped }
            };
            txn.commit().map_err(redb_error)?;
            Ok(kept)
        })
    }

    fn list(
        &self,
        filter: Filter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let table = txn.open_table(LETTERS).map_err(redb_error)?;
            let mut out = Vec::new();
            for row in table
                .range(super::bounds::after(filter.after))
                .map_err(redb_error)?
            {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row.map_err(redb_error)?;
                let d = decode(v.value())?;
                if filter.matches(&d) {
                    out.push(d);
                }
            }
            Ok(out)
        })
    }

    fn remove(&self, ids: Vec<u64>) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let mut n = 0;
            {
                let mut table = txn.open_table(LETTERS).map_err(redb_error)?;
                for id in ids {
                    if table.remove(id).map_err(redb_error)?.is_some() {
                        n += 1;
                    }
                }
            }
            txn.commit().map_err(redb_error)?;
            Ok(n)
        })
    }

    fn delete(&self, filter: Filter) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.remove_where(move |d| filter.matches(d))
    }

    fn erase(&self, entity: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let entity = entity.to_string();
        self.remove_where(move |d| mentions(&d.letter, &entity))
    }

    fn purge(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let n = {
                let mut table = txn.open_table(LETTERS).map_err(redb_error)?;
                let mut counters = txn.open_table(COUNTERS).map_err(redb_error)?;
                retain_redb(&mut table, &mut counters, retention, now)?
            };
            txn.commit().map_err(redb_error)?;
            Ok(n)
        })
    }

    fn stats(&self) -> impl Future<Output = Result<DeadLetterStats, StoreError>> + Send {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let table = txn.open_table(LETTERS).map_err(redb_error)?;
            let counters = txn.open_table(COUNTERS).map_err(redb_error)?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(counters
                    .get(k)
                    .map_err(redb_error)?
                    .map_or(0, |v| v.value()))
            };
            Ok(DeadLetterStats {
                held: table.len().map_err(redb_error)?,
                dropped: get(DROPPED)?,
                not_kept: get(NOT_KEPT)?,
            })
        })
    }
}

// ---------------------------------------------------------------------------
// The runtime choice.

/// The dead-letter store of a running Fusion, beside its event store.
#[derive(Clone)]
pub enum DeadLetters {
    File(DeadLetterFile),
    Postgres(super::PostgresStore),
    /// In this process only: the service run in-process by tests.
    Memory(MemoryDeadLetters),
}

impl DeadLetters {
    /// The store that goes with an event store: PostgreSQL's tables, or
    /// `dead_letters.redb` in the embedded store's directory.
    pub fn beside(store: &super::Backend, data_dir: &Path) -> Result<DeadLetters, StoreError> {
        Ok(match store {
            super::Backend::Postgres(pg) => DeadLetters::Postgres(pg.clone()),
            super::Backend::Embedded(_) => DeadLetters::File(DeadLetterFile::open(data_dir)?),
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            DeadLetters::File($s) => $call.await,
            DeadLetters::Postgres($s) => $call.await,
            DeadLetters::Memory($s) => $call.await,
        }
    };
}

impl DeadLetterStore for DeadLetters {
    async fn keep(
        &self,
        letters: Vec<NewLetter>,
        not_kept: u64,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> Result<Kept, StoreError> {
        delegate!(self, s => s.keep(letters, not_kept, retention, now))
    }
    async fn list(&self, filter: Filter, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        delegate!(self, s => s.list(filter, limit))
    }
    async fn remove(&self, ids: Vec<u64>) -> Result<u64, StoreError> {
        delegate!(self, s => s.remove(ids))
    }
    async fn delete(&self, filter: Filter) -> Result<u64, StoreError> {
        delegate!(self, s => s.delete(filter))
    }
    async fn erase(&self, entity: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.erase(entity))
    }
    async fn purge(&self, retention: Retention, now: DateTime<Utc>) -> Result<u64, StoreError> {
        delegate!(self, s => s.purge(retention, now))
    }
    async fn stats(&self) -> Result<DeadLetterStats, StoreError> {
        delegate!(self, s => s.stats())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: &str) -> NewLetter {
        NewLetter {
            received_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            route: "/v1/events".into(),
            key_id: None,
            reason: Reason::Invalid,
            raw: String::new(),
            raw_base64: false,
            truncated: false,
            errors: vec![],
            request: RequestInfo {
                id: "r".into(),
                rejected: 1,
            },
            context: None,
        }
        .with_raw(raw.as_bytes(), None)
    }

    #[test]
    fn keys_never_reach_a_letter() {
        let key = "fsk_0123456789abcdef_SECRETsecret-_0123456789";
        let l = letter(&format!(r#"{{"writeKey":"{key}","batch":[}}"#));
        assert!(!l.raw.contains("SECRET"), "{}", l.raw);
        assert!(l.raw.contains("fsk_0123456789abcdef_[redacted]"));
        let bootstrap = "a-bootstrap-admin-key-of-some-length-0000";
        let l = letter(&format!("x {bootstrap} y"))
            .with_raw(format!("x {bootstrap} y").as_bytes(), Some(bootstrap));
        assert_eq!(l.raw, "x [redacted key] y");
    }

    #[test]
    fn long_or_binary_raw_text_is_cut_or_encoded() {
        let long = "é".repeat(MAX_RAW_BYTES);
        let l = letter(&long);
        assert!(l.truncated && l.raw.len() <= MAX_RAW_BYTES && !l.raw_base64);
        let l = letter("a\0b");
        assert!(l.raw_base64);
    }

    #[test]
    fn mentions_finds_ids_in_json_and_in_malformed_text() {
        assert!(mentions(
            &letter(r#"{"person":"ann","x":[{"y":"bob"}]}"#),
            "bob"
        ));
        assert!(!mentions(&letter(r#"{"person":"annie"}"#), "ann"));
        assert!(mentions(&letter(r#"{"person":"ann", oops"#), "ann"));
        // NFC: the same name typed two ways.
        assert!(mentions(
            &letter("{\"person\":\"Jose\u{301}\"}"),
            "Jos\u{e9}"
        ));
    }

    #[test]
    fn the_oldest_go_first() {
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        let ordered = [(1, t(10)), (2, t(20)), (3, t(30)), (4, t(40))];
        let r = Retention {
            max_count: 3,
            max_age: Duration::seconds(100),
        };
        assert_eq!(doomed(&ordered, r, t(50)), 1);
        assert_eq!(doomed(&ordered, r, t(125)), 2);
    }
}
