//! The PostgreSQL event log: the production backend, and the only module that
//! knows SQL. It keeps the `EventStore` contract of `store` and also writes the
//! materialised `relationship_scores` table that BI tools read. It knows
//! nothing of HTTP or scoring: score rows arrive ready-made.
//!
//! Commits are the scarce resource (each one waits for the WAL to reach the
//! disk), so one writer task owns event appends and folds every request waiting
//! in its queue into a single transaction (group commit, at most two groups
//! committing at once so encoding overlaps the server's work): binary COPY into a
//! per-connection staging table, then one `INSERT ... SELECT ... ON CONFLICT
//! (id) DO NOTHING RETURNING id`, so the database itself decides which events
//! are new. A caller's future resolves only after that commit has returned.
//!
//! Schema: `migrations/*.sql`, applied in order by `migrate` under an advisory
//! lock; docs/postgres.md explains it to SQL readers.

use std::collections::HashSet;
use std::error::Error as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures_util::TryStreamExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

use super::{Appended, EventStore, ScoreRow, StoreError};
use crate::domain::{Entity, EntityId, Event};

mod keys;
mod migrate;
mod tls;

/// Most events folded into one commit; bounds the size of a transaction and
/// of the staging table.
const MAX_EVENTS_PER_COMMIT: usize = 100_000;

/// Group commits under way at once (see `writer_loop`).
const COMMITS_IN_FLIGHT: usize = 2;

/// Append requests that may wait for the writer before callers are held back.
const QUEUE_DEPTH: usize = 1024;

/// Connections kept by the pool: the writer, readers, score refreshes.
const POOL_SIZE: usize = 16;

/// Bound on waiting for a pooled connection, on opening one and on checking
/// one before reuse. deadpool's defaults wait forever, which would turn a
/// database outage into hung requests instead of 503s.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Run once on every new connection. The staging tables live as long as the
/// session and empty themselves at each commit, so a batch costs no DDL.
/// `temp_buffers` must be set before the first use of a temporary table; the
/// default (8 MB) would spill a large batch to temporary files.
const SESSION_SETUP: &str = r#"
SET temp_buffers = '64MB';
CREATE TEMP TABLE fusion_event_stage (
    ord  bigint NOT NULL,
    id   text COLLATE "C" NOT NULL,
    time timestamptz NOT NULL,
    type text NOT NULL,
    refs text[] COLLATE "C" NOT NULL,
    body jsonb NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE fusion_score_stage (
    ord        bigint NOT NULL,
    person     text COLLATE "C" NOT NULL,
    brand      text COLLATE "C" NOT NULL,
    score      double precision NOT NULL,
    raw        double precision NOT NULL,
    sentiment  double precision NOT NULL,
    sales      double precision NOT NULL,
    service    double precision NOT NULL,
    engagement double precision NOT NULL,
    influence  double precision NOT NULL,
    values_    double precision NOT NULL,
    as_of      timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
"#;

const COPY_EVENTS: &str =
    "COPY fusion_event_stage (ord, id, time, type, refs, body) FROM STDIN (FORMAT binary)";
const EVENT_STAGE_TYPES: [Type; 6] = [
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::JSONB,
];

/// DISTINCT ON keeps the first occurrence of an id within the batch (lowest
/// `ord`); ON CONFLICT skips ids already stored; RETURNING says which rows
/// went in. Rows go in id order, so concurrent writers (two servers on one
/// database) take index locks in the same order and cannot deadlock.
const INSERT_NEW_EVENTS: &str = "
INSERT INTO events (id, time, type, refs, body)
SELECT DISTINCT ON (id) id, time, type, refs, body
FROM fusion_event_stage
ORDER BY id, ord
ON CONFLICT (id) DO NOTHING
RETURNING id";

const COPY_SCORES: &str = "COPY fusion_score_stage (ord, person, brand, score, raw, sentiment, \
     sales, service, engagement, influence, values_, as_of) FROM STDIN (FORMAT binary)";
const SCORE_STAGE_TYPES: [Type; 12] = [
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TIMESTAMPTZ,
];

/// ON CONFLICT DO UPDATE may touch a row once per statement, so a batch
/// naming one relationship twice keeps its last row.
const UPSERT_SCORES: &str = "
INSERT INTO relationship_scores AS s (person, brand, score, raw, sentiment, sales, service,
    engagement, influence, values_, as_of)
SELECT DISTINCT ON (person, brand) person, brand, score, raw, sentiment, sales, service,
    engagement, influence, values_, as_of
FROM fusion_score_stage
ORDER BY person, brand, ord DESC
ON CONFLICT (person, brand) DO UPDATE SET
    score = EXCLUDED.score, raw = EXCLUDED.raw, sentiment = EXCLUDED.sentiment,
    sales = EXCLUDED.sales, service = EXCLUDED.service, engagement = EXCLUDED.engagement,
    influence = EXCLUDED.influence, values_ = EXCLUDED.values_, as_of = EXCLUDED.as_of";

/// After the upsert of a refresh: the rows of relationships the refresh
/// does not hold (an anti-join against the staged rows, still there until
/// the commit).
const DELETE_VANISHED_SCORES: &str = "
DELETE FROM relationship_scores s
WHERE NOT EXISTS (
    SELECT 1 FROM fusion_score_stage st WHERE st.person = s.person AND st.brand = s.brand
)";

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// The PostgreSQL backend. Cheap to clone: clones share the pool and the
/// writer task, which ends when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    writer: mpsc::Sender<(Vec<Event>, Reply)>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or a `key=value` connection
    /// string), applies any pending migrations and starts the writer task.
    /// Must be called within a tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = build_pool(url)?;
        for name in migrate::apply(&pool).await? {
            tracing::info!(migration = %name, "applied database migration");
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer_loop(pool.clone(), rx));
        Ok(Self { pool, writer: tx })
    }

    /// Applies the pending migrations of the database at `url` and answers
    /// their names, in order (empty when it was up to date). Safe to run from
    /// several processes at once: they take turns on an advisory lock.
    pub async fn migrate(url: &str) -> Result<Vec<String>, StoreError> {
        let pool = build_pool(url)?;
        migrate::apply(&pool).await
    }

    /// Replaces the materialised relationship scores with `rows`, all in
    /// one transaction so a reader sees the whole refresh or none of it: rows
    /// are upserted, and every row of a relationship not in `rows` is
    /// deleted (a relationship can vanish without its entity being erased:
    /// consent withdrawn, or it existed only through an erased influencer;
    /// keeping its row would leak it). A relationship named twice keeps its
    /// last row.
    pub async fn write_scores(&self, rows: &[ScoreRow]) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let sink = tx.copy_in(COPY_SCORES).await.map_err(pg_error)?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &SCORE_STAGE_TYPES));
        for (ord, row) in rows.iter().enumerate() {
            let ord = ord as i64;
            let [sentiment, sales, service, engagement, influence, values] = &row.components;
            writer
                .as_mut()
                .write(&[
                    &ord,
                    &row.person,
                    &row.brand,
                    &row.score,
                    &row.raw,
                    sentiment,
                    sales,
                    service,
                    engagement,
                    influence,
                    values,
                    &row.as_of,
                ])
                .await
                .map_err(pg_error)?;
        }
        writer.finish().await.map_err(pg_error)?;
        let upsert = tx.prepare_cached(UPSERT_SCORES).await.map_err(pg_error)?;
        tx.execute(&upsert, &[]).await.map_err(pg_error)?;
        let vanished = tx
            .prepare_cached(DELETE_VANISHED_SCORES)
            .await
            .map_err(pg_error)?;
        tx.execute(&vanished, &[]).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    /// Removes the materialised scores of every relationship the entity is
    /// part of (as person or as brand); answers how many rows went.
    pub async fn delete_scores_for(&self, entity: &EntityId) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        client
            .execute(
                "DELETE FROM relationship_scores WHERE person = $1 OR brand = $1",
                &[&entity.as_str()],
            )
            .await
            .map_err(pg_error)
    }
}

impl EventStore for PostgresStore {
    fn append(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        let writer = self.writer.clone();
        async move {
            if events.is_empty() {
                return Ok(Appended { inserted: vec![] });
            }
            let (tx, rx) = oneshot::channel();
            writer
                .send((events, tx))
                .await
                .map_err(|_| StoreError::Internal("the store writer has stopped".into()))?;
            rx.await
                .map_err(|_| StoreError::Internal("the store writer dropped a request".into()))?
        }
    }

    fn scan(&self) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            // Sorted here rather than by the server: an ORDER BY would need an
            // index on (time, id) that every ingested row pays for, or a disk
            // sort of whole rows; the caller holds every event in memory anyway.
            let stmt = client
                .prepare_cached("SELECT body FROM events")
                .await
                .map_err(pg_error)?;
            let rows = client
                .query_raw(&stmt, no_params())
                .await
                .map_err(pg_error)?;
            let mut rows = pin!(rows);
            let mut out = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(pg_error)? {
                let Json(event) = row.try_get::<_, Json<Event>>(0).map_err(|e| {
                    StoreError::Internal(format!(
                        "undecodable event in the store: {}",
                        describe(&e)
                    ))
                })?;
                out.push(event);
            }
            // The canonical order, exactly as the embedded store keys it:
            // event time in whole microseconds, then id byte-wise.
            out.sort_unstable_by(|a, b| {
                (a.time.timestamp_micros(), a.id.as_str())
                    .cmp(&(b.time.timestamp_micros(), b.id.as_str()))
            });
            Ok(out)
        }
    }

    fn put_entity(&self, entity: Entity) -> impl Future<Output = Result<(), StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO entities (id, kind, body) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, body = EXCLUDED.body",
                    &[&entity.id.as_str(), &entity.kind.as_str(), &Json(&entity)],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        }
    }

    fn entities(&self) -> impl Future<Output = Result<Vec<Entity>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query("SELECT body FROM entities ORDER BY id", &[])
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    row.try_get::<_, Json<Entity>>(0).map(|j| j.0).map_err(|e| {
                        StoreError::Internal(format!(
                            "undecodable entity in the store: {}",
                            describe(&e)
                        ))
                    })
                })
                .collect()
        }
    }

    /// Also removes the entity's materialised scores: erasure must not leave
    /// derived copies behind.
    fn erase(&self, id: &EntityId) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        let id = id.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let removed = tx
                .execute(
                    "DELETE FROM events WHERE refs @> ARRAY[$1::text]",
                    &[&id.as_str()],
                )
                .await
                .map_err(pg_error)?;
            tx.execute("DELETE FROM entities WHERE id = $1", &[&id.as_str()])
                .await
                .map_err(pg_error)?;
            tx.execute(
                "DELETE FROM relationship_scores WHERE person = $1 OR brand = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            Ok(removed)
        }
    }

    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .map_err(pg_error)?;
            let n: i64 = row.get(0);
            Ok(n as u64)
        }
    }

    /// Taking a connection already runs the pool's check query (Verified
    /// recycling); a round trip on top proves the server answers now.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            client.simple_query("SELECT 1").await.map_err(pg_error)?;
            Ok(())
        }
    }
}

fn no_params() -> std::iter::Empty<&'static (dyn ToSql + Sync)> {
    std::iter::empty()
}

fn build_pool(url: &str) -> Result<Pool, StoreError> {
    // sslmode=verify-* and sslrootcert are ours to handle (tls.rs).
    let plan = tls::plan(url)?;
    let mut config: tokio_postgres::Config =
        plan.url.parse().map_err(|e: tokio_postgres::Error| {
            StoreError::Internal(format!("invalid database url: {}", describe(&e)))
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("fusion");
    }
    let manager_config = ManagerConfig {
        // A connection that died while idle (server restart, failover) is
        // found out by a test query and replaced before anyone uses it.
        recycling_method: RecyclingMethod::Verified,
    };
    let manager = match &plan.tls {
        None => Manager::from_config(config, NoTls, manager_config),
        Some(check) => Manager::from_config(config, tls::connector(check)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(SESSION_SETUP)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        .map_err(StoreError::internal)
}

/// The writer task: takes every waiting request (up to a cap), commits them
/// together, then answers each. Ends when every `PostgresStore` is dropped.
///
/// Up to `COMMITS_IN_FLIGHT` groups are committed at once, so the server
/// works on one group while the next is being encoded and sent; requests
/// arriving meanwhile wait for a free slot and form the next group. Two
/// groups naming the same id are safe: the database makes the later insert
/// wait for the earlier transaction and then skip the row.
async fn writer_loop(pool: Pool, mut rx: mpsc::Receiver<(Vec<Event>, Reply)>) {
    let slots = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut pending = first.0.len();
        let mut batch = vec![first];
        while pending < MAX_EVENTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(request) => {
                    pending += request.0.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            match commit_appends(&pool, &batch).await {
                Ok(new_ids) => answer(batch, new_ids),
                Err(err) => {
                    if matches!(err, StoreError::Internal(_)) {
                        tracing::error!(error = %err, "append commit failed");
                    }
                    for (_, reply) in batch {
                        let _ = reply.send(Err(copy_error(&err)));
                    }
                }
            }
            drop(slot);
        });
    }
}

/// One transaction for the whole group: stage, insert the new, commit.
/// Answers the ids that were inserted.
async fn commit_appends(
    pool: &Pool,
    batch: &[(Vec<Event>, Reply)],
) -> Result<HashSet<String>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let sink = tx.copy_in(COPY_EVENTS).await.map_err(pg_error)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &EVENT_STAGE_TYPES));
    let mut ord = 0i64;
    let mut refs: Vec<&str> = Vec::new();
    for (events, _) in batch {
        for event in events {
            refs.clear();
            refs.extend(event.references().into_iter().map(|(id, _)| id.as_str()));
            writer
                .as_mut()
                .write(&[
                    &ord,
                    &event.id.as_str(),
                    &event.time,
                    &event.kind.event_type().as_str(),
                    &refs,
                    &Json(event),
                ])
                .await
                .map_err(pg_error)?;
            ord += 1;
        }
    }
    writer.finish().await.map_err(pg_error)?;
    let insert = tx
        .prepare_cached(INSERT_NEW_EVENTS)
        .await
        .map_err(pg_error)?;
    let rows = tx.query(&insert, &[]).await.map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

/// An event was inserted when its id came back from the INSERT and it is the
/// first occurrence of that id in the group (requests in queue order).
fn answer(batch: Vec<(Vec<Event>, Reply)>, mut new_ids: HashSet<String>) {
    for (events, reply) in batch {
        let inserted = events
            .iter()
            .map(|e| new_ids.remove(e.id.as_str()))
            .collect();
        let _ = reply.send(Ok(Appended { inserted }));
    }
}

fn copy_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

/// Errors that mean "the database cannot be reached right now" become
/// `Unavailable` (the HTTP layer answers 503 and the caller retries); the
/// rest are faults.
fn pg_error(err: tokio_postgres::Error) -> StoreError {
    let msg = describe(&err);
    if is_unavailable(&err) {
        StoreError::Unavailable(msg)
    } else {
        StoreError::Internal(msg)
    }
}

fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(kind) => StoreError::Unavailable(format!(
            "no database connection within {}s ({kind:?})",
            POOL_TIMEOUT.as_secs()
        )),
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        PoolError::PostCreateHook(HookError::Backend(e)) => pg_error(e),
        other => StoreError::Internal(other.to_string()),
    }
}

fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(db) = err.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P01/02/03: admin or crash shutdown,
        // server starting up; 53300: too many connections.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    // Refused, reset, timed out: the cause is an io::Error somewhere down
    // the chain. tokio-postgres has no public kind for its own timeout.
    let mut source = err.source();
    while let Some(e) = source {
        if e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    err.to_string().starts_with("timeout")
}

/// tokio-postgres displays a server error as just "db error"; say what the
/// server said instead.
fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    msg
}
