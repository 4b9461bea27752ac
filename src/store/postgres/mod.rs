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
//! (id) DO NOTHING`, so the database itself decides which events are new; the
//! same statement answers the stored digest of the others, which are
//! compared with theirs (`events.digest`, `digest.rs`): duplicate or
//! conflict. That statement and the commit are sent with the `log_head` lock
//! (pipelined; a group with an all-or-nothing request commits after the
//! answer). A caller's future resolves only after that commit has returned,
//! so nothing decided on the statement's answer may fail the group: an
//! answer this process cannot read (a stored body without a digest that it
//! cannot decode) refuses that one event (`outcomes_of`).
//!
//! **One request's bad event fails no other** (issue #9, item 5). A data
//! error (SQLSTATE classes 22, 23, 54: a value the database cannot hold, a
//! constraint) aborts the whole group's transaction, so the group is split
//! and committed again: at request boundaries, then within the offending
//! request (unless it is all-or-nothing), down to the one event, which is
//! refused with the database's message. A clean group costs nothing extra;
//! one bad event costs about log2 of the group's size in commits. An
//! all-or-nothing request with a conflict is taken out the same way.
//!
//! Schema: `migrations/*.sql`, applied in order by `migrate` under an advisory
//! lock; docs/postgres.md explains it to SQL readers.

use std::collections::{HashMap, HashSet};
use std::error::Error as _;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures_util::TryStreamExt;
use futures_util::future::{join, join3};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

use super::digest::Sameness;
use super::{
    AppendMode, Appended, ContentKey, Digest, EventStore, Outcome, ScoreRow, StoreError, body,
};
use crate::domain::{Entity, EntityId, Event, EventId, LogPosition, Logged};

mod alerts;
mod dead_letters;
mod follow;
mod keys;
mod migrate;
mod snapshots;
mod tls;

pub use follow::LogWatch;

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
    ord    bigint NOT NULL,
    id     text COLLATE "C" NOT NULL,
    time   timestamptz NOT NULL,
    type   text NOT NULL,
    refs   text[] COLLATE "C" NOT NULL,
    body   jsonb NOT NULL,
    digest bytea NOT NULL
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

const COPY_EVENTS: &str = "COPY fusion_event_stage (ord, id, time, type, refs, body, digest) \
     FROM STDIN (FORMAT binary)";
const EVENT_STAGE_TYPES: [Type; 7] = [
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::JSONB,
    Type::BYTEA,
];

/// Takes the one-row lock that numbers events: every append of every
/// server takes it before inserting, so positions are given out and
/// committed in the same order (migration 0005).
const LOCK_LOG_HEAD: &str = "SELECT pos FROM log_head FOR UPDATE";

/// Runs right after `LOCK_LOG_HEAD`, in the same transaction, so its
/// snapshot is taken with the lock held and reads the head the previous
/// holder left, and every row an append committed before. DISTINCT ON
/// keeps the first occurrence of an id within the batch (lowest `ord`);
/// the stored row of each id, if any, is read once (`staged`: exact under
/// the lock, which every writer holds; ON CONFLICT stays as a guard); the
/// ids not stored get consecutive positions from the head in id order, one
/// `entity_events` row per entity they name, and the head moves past them,
/// all in this one statement: every round trip between the lock and the
/// commit is time every other append of every server waits (task h43).
/// Answers one row per distinct staged id: its position (new or stored),
/// whether it went in now, and the stored digest (the body where an older
/// row has none yet) of one stored before, so the outcomes need no
/// further statement and the commit can be sent with this one.
const INSERT_NEW_EVENTS: &str = "
WITH head AS (
    SELECT pos FROM log_head
), staged AS (
    SELECT s.id, s.time, s.type, s.refs, s.body, s.digest,
        e.id IS NOT NULL AS stored, e.pos AS stored_pos, e.digest AS stored_digest,
        CASE WHEN e.id IS NOT NULL AND e.digest IS NULL THEN e.body END AS stored_body
    FROM (SELECT DISTINCT ON (id) * FROM fusion_event_stage ORDER BY id, ord) s
    LEFT JOIN events e ON e.id = s.id
), new AS (
    INSERT INTO events (id, time, type, refs, body, digest, pos)
    SELECT id, time, type, refs, body, digest,
        (SELECT pos FROM head) + row_number() OVER (ORDER BY id) - 1
    FROM staged
    WHERE NOT stored
    ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING id, time, refs, pos
), indexed AS (
    INSERT INTO entity_events (entity, time, id)
    SELECT DISTINCT r, time, id FROM new, unnest(refs) AS r
), advanced AS (
    UPDATE log_head SET pos = (SELECT max(pos) + 1 FROM new)
    WHERE EXISTS (SELECT 1 FROM new)
)
SELECT s.id, coalesce(n.pos, s.stored_pos), n.id IS NOT NULL, s.stored_digest, s.stored_body
FROM staged s LEFT JOIN new n ON n.id = s.id";

/// A chunk of the log in canonical order (`EventStore::scan_from`):
/// the first, and the one after a (time, id).
const SCAN_FIRST: &str = "SELECT pos, body FROM events ORDER BY time, id LIMIT $1";
const SCAN_AFTER: &str = "SELECT pos, body FROM events WHERE (time, id) > ($1, $2) \
     ORDER BY time, id LIMIT $3";

/// Rows per batch when filling the digests of rows stored before them.
const BACKFILL_BATCH: usize = 10_000;

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

/// One append waiting for the writer, encoded by the caller: each event's
/// JSON body and digest (`Digest::write_json`: one serialisation for both).
struct Request {
    events: Vec<Event>,
    bodies: Vec<Vec<u8>>,
    digests: Vec<Digest>,
    mode: AppendMode,
    reply: Reply,
}

/// A JSON body serialised already, sent as `jsonb` as tokio-postgres's
/// `Json` would send it (version byte 1, then the text).
#[derive(Debug)]
struct RawJson<'a>(&'a [u8]);

impl ToSql for RawJson<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0);
        Ok(tokio_postgres::types::IsNull::No)
    }

    tokio_postgres::types::accepts!(JSON, JSONB);
    tokio_postgres::types::to_sql_checked!();
}

/// A stored body as the database sends it (`jsonb`: a version byte, then
/// the text), for `store::body` to decode.
struct RawBody(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawBody {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("unsupported jsonb version".into()),
            }
        } else {
            raw
        };
        Ok(RawBody(text.to_vec()))
    }

    tokio_postgres::types::accepts!(JSON, JSONB);
}

/// The event of a `(pos, body)` row.
fn logged(row: &tokio_postgres::Row) -> Result<Logged, StoreError> {
    let undecodable = |e: tokio_postgres::Error| {
        StoreError::Internal(format!("undecodable event in the store: {}", describe(&e)))
    };
    let position: i64 = row.try_get(0).map_err(undecodable)?;
    let body: RawBody = row.try_get(1).map_err(undecodable)?;
    Ok(Logged {
        position: position as u64,
        event: body::decode(&body.0)?,
    })
}

/// The PostgreSQL backend. Cheap to clone: clones share the pool and the
/// writer task, which ends when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    writer: mpsc::Sender<Request>,
    /// This server's erasures so far, and the lock that orders snapshot
    /// saves with them (`store::snapshots`).
    snapshot_epoch: Arc<snapshots::Epoch>,
    /// The connection string, for the log's listener (`follow.rs`).
    url: Arc<str>,
    /// Context epochs this process made (`follow.rs`).
    own_context: Arc<follow::OwnContext>,
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
        // Not needed for correctness (a missing digest is computed where it
        // is needed), so a failure here is only logged.
        match backfill_digests(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "computed the content digests of older events"),
            Err(e) => tracing::warn!(cause = %e, "could not fill older events' digests yet"),
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer_loop(pool.clone(), rx));
        Ok(Self {
            pool,
            writer: tx,
            snapshot_epoch: Arc::default(),
            url: Arc::from(url),
            own_context: Arc::default(),
        })
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
    fn append_keyed(
        &self,
        events: Vec<Event>,
        keys: Vec<Option<ContentKey>>,
        mode: AppendMode,
    ) -> impl Future<Output = Result<Appended, StoreError>> + Send {
        let writer = self.writer.clone();
        async move {
            if events.is_empty() {
                return Ok(Appended {
                    outcomes: vec![],
                    positions: vec![],
                });
            }
            let (bodies, digests) = events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut json = Vec::with_capacity(256);
                    let key = keys.get(i).copied().flatten();
                    let digest = body::encode(e, key.as_ref(), &mut json);
                    (json, digest)
                })
                .unzip();
            let (tx, rx) = oneshot::channel();
            writer
                .send(Request {
                    events,
                    bodies,
                    digests,
                    mode,
                    reply: tx,
                })
                .await
                .map_err(|_| StoreError::Internal("the store writer has stopped".into()))?;
            rx.await
                .map_err(|_| StoreError::Internal("the store writer dropped a request".into()))?
        }
    }

    fn events_by_id(
        &self,
        ids: Vec<EventId>,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let client = pool.get().await.map_err(pool_error)?;
            let wanted: Vec<&str> = ids.iter().map(EventId::as_str).collect();
            let rows = client
                .query(
                    "SELECT pos, body FROM events WHERE id = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(pg_error)?;
            let mut found: HashMap<EventId, Logged> = HashMap::with_capacity(rows.len());
            for row in rows {
                let logged = logged(&row)?;
                found.insert(logged.event.id.clone(), logged);
            }
            Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
        }
    }

    fn events_at(
        &self,
        positions: Vec<LogPosition>,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            if positions.is_empty() {
                return Ok(Vec::new());
            }
            let client = pool.get().await.map_err(pool_error)?;
            let wanted: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
            let rows = client
                .query(
                    "SELECT pos, body FROM events WHERE pos = ANY($1)",
                    &[&wanted],
                )
                .await
                .map_err(pg_error)?;
            let mut found: HashMap<u64, Logged> = HashMap::with_capacity(rows.len());
            for row in rows {
                let logged = logged(&row)?;
                found.insert(logged.position, logged);
            }
            Ok(positions.iter().filter_map(|p| found.remove(p)).collect())
        }
    }

    fn tail(
        &self,
        after: Option<LogPosition>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let after = after.map_or(-1, |p| p as i64);
            let rows = client
                .query(
                    "SELECT pos, body FROM events WHERE pos > $1 ORDER BY pos LIMIT $2",
                    &[&after, &(limit as i64)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(logged).collect()
        }
    }

    fn scan_from(
        &self,
        after: Option<(chrono::DateTime<chrono::Utc>, EventId)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Logged>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            // The canonical order, exactly as the embedded store keys it:
            // event time in whole microseconds (what timestamptz holds),
            // then id byte-wise (COLLATE "C"); `events_canonical` serves it.
            // Rows are decoded as they arrive (`query_raw`), so the server
            // produces the next rows while these decode (`store::scan`).
            let limit = limit as i64;
            let rows = match &after {
                None => {
                    let stmt = client.prepare_cached(SCAN_FIRST).await.map_err(pg_error)?;
                    client
                        .query_raw(&stmt, [&limit as &(dyn ToSql + Sync)])
                        .await
                }
                Some((t, id)) => {
                    let stmt = client.prepare_cached(SCAN_AFTER).await.map_err(pg_error)?;
                    let id = id.as_str();
                    client
                        .query_raw(&stmt, [t as &(dyn ToSql + Sync), &id, &limit])
                        .await
                }
            }
            .map_err(pg_error)?;
            let mut rows = pin!(rows);
            let mut out = Vec::with_capacity((limit as usize).min(super::SCAN_CHUNK));
            while let Some(row) = rows.try_next().await.map_err(pg_error)? {
                out.push(logged(&row)?);
            }
            Ok(out)
        }
    }

    fn entity_events(
        &self,
        entity: &EntityId,
        before: Option<EventId>,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<Logged>>, StoreError>> + Send {
        let pool = self.pool.clone();
        let entity = entity.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = match &before {
                None => {
                    client
                        .query(
                            "SELECT e.pos, e.body FROM entity_events x JOIN events e ON e.id = x.id \
                             WHERE x.entity = $1 ORDER BY x.time DESC, x.id DESC LIMIT $2",
                            &[&entity.as_str(), &(limit as i64)],
                        )
                        .await
                }
                Some(id) => {
                    let cursor = client
                        .query_opt(
                            "SELECT x.time FROM events e JOIN entity_events x \
                             ON x.entity = $1 AND x.time = e.time AND x.id = e.id WHERE e.id = $2",
                            &[&entity.as_str(), &id.as_str()],
                        )
                        .await
                        .map_err(pg_error)?;
                    let Some(cursor) = cursor else {
                        return Ok(None);
                    };
                    let t: chrono::DateTime<chrono::Utc> = cursor.get(0);
                    client
                        .query(
                            "SELECT e.pos, e.body FROM entity_events x JOIN events e ON e.id = x.id \
                             WHERE x.entity = $1 AND (x.time, x.id) < ($2, $3) \
                             ORDER BY x.time DESC, x.id DESC LIMIT $4",
                            &[&entity.as_str(), &t, &id.as_str(), &(limit as i64)],
                        )
                        .await
                }
            }
            .map_err(pg_error)?;
            rows.iter().map(logged).collect::<Result<_, _>>().map(Some)
        }
    }

    fn put_entity(&self, entity: Entity) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (pool, own) = (self.pool.clone(), Arc::clone(&self.own_context));
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            // The log's context changes: other servers rebuild, and the
            // change takes a log position (`follow.rs`).
            let epoch = follow::bump_context(&tx).await?;
            tx.execute(
                "INSERT INTO entities (id, kind, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, body = EXCLUDED.body",
                &[&entity.id.as_str(), &entity.kind.as_str(), &Json(&entity)],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            own.made(epoch);
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
        let epoch = Arc::clone(&self.snapshot_epoch);
        let own = Arc::clone(&self.own_context);
        async move {
            // A snapshot save waiting on this lock sees the new epoch and
            // keeps nothing; one saved before is deleted below.
            epoch.bump().await;
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            // The log's context changes: other servers rebuild, and the
            // erasure takes a log position, first (`follow.rs`).
            let context = follow::bump_context(&tx).await?;
            // Every snapshot may hold the entity (`store::snapshots`).
            tx.execute("DELETE FROM snapshots", &[])
                .await
                .map_err(pg_error)?;
            // The entity's events through `entity_events`, and every
            // index row of theirs (one per entity they name).
            let removed: i64 = tx
                .query_one(
                    "WITH doomed AS ( \
                         DELETE FROM events WHERE id IN \
                             (SELECT id FROM entity_events WHERE entity = $1) \
                         RETURNING id, time, refs \
                     ), unindexed AS ( \
                         DELETE FROM entity_events x \
                         USING (SELECT unnest(refs) AS entity, time, id FROM doomed) d \
                         WHERE x.entity = d.entity AND x.time = d.time AND x.id = d.id \
                     ) \
                     SELECT count(*) FROM doomed",
                    &[&id.as_str()],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let removed = removed as u64;
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
            own.made(context);
            Ok(removed)
        }
    }

    fn context_position(
        &self,
    ) -> impl Future<Output = Result<Option<LogPosition>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT pos FROM log_context", &[])
                .await
                .map_err(pg_error)?;
            let pos: Option<i64> = row.get(0);
            Ok(pos.map(|p| p as LogPosition))
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

    fn snapshot_epoch(&self) -> u64 {
        self.snapshot_epoch.get()
    }

    fn save_snapshot_stream(
        &self,
        pieces: super::SnapshotPieces,
        meta: super::SnapshotMeta,
        epoch: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let (pool, order) = (self.pool.clone(), Arc::clone(&self.snapshot_epoch));
        async move { snapshots::save(&pool, &order, pieces, meta, epoch).await }
    }

    fn snapshots(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move { snapshots::latest(&pool).await }
    }

    fn snapshot_stream(
        &self,
        rank: usize,
    ) -> impl Future<Output = Result<Option<super::SnapshotRead>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move { snapshots::nth(&pool, rank).await }
    }
}

fn no_params() -> std::iter::Empty<&'static (dyn ToSql + Sync)> {
    std::iter::empty()
}

/// The connection settings of `url`, and its TLS check (`None`: no TLS):
/// what the pool and the log's listener (`follow.rs`) connect with.
fn connection_config(
    url: &str,
) -> Result<(tokio_postgres::Config, Option<tls::Check>), StoreError> {
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
    Ok((config, plan.tls))
}

fn build_pool(url: &str) -> Result<Pool, StoreError> {
    let (config, tls) = connection_config(url)?;
    let manager_config = ManagerConfig {
        // A connection that died while idle (server restart, failover) is
        // found out by a test query and replaced before anyone uses it.
        recycling_method: RecyclingMethod::Verified,
    };
    let manager = match &tls {
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
async fn writer_loop(pool: Pool, mut rx: mpsc::Receiver<Request>) {
    let slots = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut pending = first.events.len();
        let mut batch = vec![first];
        while pending < MAX_EVENTS_PER_COMMIT {
            match rx.try_recv() {
                Ok(request) => {
                    pending += request.events.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        crate::telemetry::record_commit_group(batch.len());
        let pool = pool.clone();
        tokio::spawn(async move {
            match commit_group(&pool, &batch).await {
                Ok(placed) => {
                    for (request, placed) in batch.into_iter().zip(placed) {
                        let (outcomes, positions) = placed.into_iter().unzip();
                        let _ = request.reply.send(Ok(Appended {
                            outcomes,
                            positions,
                        }));
                    }
                }
                Err(err) => {
                    if matches!(err, StoreError::Internal(_)) {
                        tracing::error!(error = %err, "append commit failed");
                    }
                    for request in batch {
                        let _ = request.reply.send(Err(err.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}

/// One event of a group: its request and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    request: usize,
    position: usize,
}

/// What became of one event: its outcome and log position.
type Placed = (Outcome, Option<u64>);

/// Why one transaction of a group did not commit.
enum Attempt {
    /// A data error (module docs): the group is split.
    Data(String),
    /// These all-or-nothing requests have a conflict or an event refused
    /// (their outcomes as found, and for an answer compared with an event
    /// new in the attempt, that event's item): they are taken out and the
    /// rest committed again.
    AtomicConflict(Vec<(Item, Placed, Option<Item>)>),
    /// Anything else fails the whole group.
    Store(StoreError),
}

/// A data error: the values of this transaction cannot be stored (class
/// 22 data exception, 23 integrity constraint, 54 program limit).
fn attempt_error(err: tokio_postgres::Error) -> Attempt {
    let data = err
        .as_db_error()
        .is_some_and(|db| matches!(&db.code().code()[..2], "22" | "23" | "54"));
    if data {
        Attempt::Data(describe(&err))
    } else {
        Attempt::Store(pg_error(err))
    }
}

/// Commits a group (module docs): every event gets its outcome and
/// position, unless the group fails as a whole (unavailable, a fault).
async fn commit_group(pool: &Pool, batch: &[Request]) -> Result<Vec<Vec<Placed>>, StoreError> {
    let items: Vec<Item> = batch
        .iter()
        .enumerate()
        .flat_map(|(request, r)| {
            (0..r.events.len()).map(move |position| Item { request, position })
        })
        .collect();
    let mut out: Vec<Vec<Option<Placed>>> =
        batch.iter().map(|r| vec![None; r.events.len()]).collect();
    commit_items(pool, batch, items, &mut out).await?;
    Ok(out
        .into_iter()
        .map(|v| {
            v.into_iter()
                .map(|o| o.unwrap_or((Outcome::NotStored, None)))
                .collect()
        })
        .collect())
}

/// Commits `items` in one transaction, or splits them (module docs).
fn commit_items<'a>(
    pool: &'a Pool,
    batch: &'a [Request],
    items: Vec<Item>,
    out: &'a mut Vec<Vec<Option<Placed>>>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
    Box::pin(async move {
        if items.is_empty() {
            return Ok(());
        }
        match try_commit(pool, batch, &items).await {
            Ok(outcomes) => {
                for (item, outcome) in items.iter().zip(outcomes) {
                    out[item.request][item.position] = Some(outcome);
                }
                Ok(())
            }
            Err(Attempt::Store(err)) => Err(err),
            Err(Attempt::AtomicConflict(found)) => {
                // A conflict with another request's event new in this
                // attempt is not decided: that event may not go in once
                // this attempt is rolled back (another server may store its
                // id meanwhile). Such a request is committed again after
                // the rest, as if it came after them, and judged then
                // (red team h52). A conflict with a row stored before, or
                // within the request, refuses it; so does an event refused
                // (compared with a stored row that cannot be read).
                let refused: HashSet<usize> = found
                    .iter()
                    .filter(|(item, (o, _), first)| match o {
                        Outcome::Conflict => first.is_none_or(|f| f.request == item.request),
                        Outcome::Refused(_) => true,
                        _ => false,
                    })
                    .map(|(i, ..)| i.request)
                    .collect();
                let later: HashSet<usize> = found
                    .iter()
                    .map(|(i, ..)| i.request)
                    .filter(|r| !refused.contains(r))
                    .collect();
                for (item, placed, first) in found {
                    if !refused.contains(&item.request) {
                        continue;
                    }
                    out[item.request][item.position] = Some(match (placed, first) {
                        // Rolled back: nothing of it stored, no position.
                        ((Outcome::Inserted, _), _) => (Outcome::NotStored, None),
                        // Compared with an event of the rolled-back
                        // attempt: its row is no one's now. A conflict
                        // within the request stays the reason, with no
                        // position; anything else is not stored.
                        ((Outcome::Conflict, _), Some(f)) if f.request == item.request => {
                            (Outcome::Conflict, None)
                        }
                        (_, Some(_)) => (Outcome::NotStored, None),
                        (other, None) => other,
                    });
                }
                let (rest, again): (Vec<Item>, Vec<Item>) = items
                    .into_iter()
                    .filter(|i| !refused.contains(&i.request))
                    .partition(|i| !later.contains(&i.request));
                commit_items(pool, batch, rest, out).await?;
                commit_items(pool, batch, again, out).await
            }
            Err(Attempt::Data(reason)) => {
                let first = items[0].request;
                let split = items.iter().position(|i| i.request != first);
                if let Some(_other) = split {
                    // Several requests: halve at a request boundary.
                    let mid_request = items[items.len() / 2].request.max(first + 1);
                    let at = items
                        .iter()
                        .position(|i| i.request >= mid_request)
                        .unwrap_or(items.len());
                    let right = items[at..].to_vec();
                    let left = items[..at].to_vec();
                    commit_items(pool, batch, left, out).await?;
                    commit_items(pool, batch, right, out).await
                } else if items.len() == 1 || batch[first].mode == AppendMode::AllOrNothing {
                    let message = format!("the event store cannot hold this event: {reason}");
                    for item in items {
                        out[item.request][item.position] =
                            Some((Outcome::Refused(message.clone()), None));
                    }
                    Ok(())
                } else {
                    let right = items[items.len() / 2..].to_vec();
                    let left = items[..items.len() / 2].to_vec();
                    commit_items(pool, batch, left, out).await?;
                    commit_items(pool, batch, right, out).await
                }
            }
        }
    })
}

/// One transaction for `items`: stage, insert the new, compare the rest
/// with what is stored, commit. Answers each item's outcome.
async fn try_commit(
    pool: &Pool,
    batch: &[Request],
    items: &[Item],
) -> Result<Vec<Placed>, Attempt> {
    let event = |i: &Item| &batch[i.request].events[i.position];
    let digest = |i: &Item| &batch[i.request].digests[i.position];
    let mut client = pool
        .get()
        .await
        .map_err(|e| Attempt::Store(pool_error(e)))?;
    // Prepared (once per connection) before the transaction, which is
    // tokio-postgres's own rather than deadpool's: the pipelined commit
    // forgets it below, and deadpool's holds a count of the connection's
    // statement cache that forgetting would leak (red team h52).
    let lock = client
        .prepare_cached(LOCK_LOG_HEAD)
        .await
        .map_err(attempt_error)?;
    let insert = client
        .prepare_cached(INSERT_NEW_EVENTS)
        .await
        .map_err(attempt_error)?;
    let tx = tokio_postgres::Client::transaction(&mut client)
        .await
        .map_err(attempt_error)?;
    let sink = tx.copy_in(COPY_EVENTS).await.map_err(attempt_error)?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &EVENT_STAGE_TYPES));
    let mut refs: Vec<&str> = Vec::new();
    for (ord, item) in items.iter().enumerate() {
        let e = event(item);
        refs.clear();
        refs.extend(e.references().into_iter().map(|(id, _)| id.as_str()));
        let bytes = digest(item).to_bytes();
        let body = RawJson(&batch[item.request].bodies[item.position]);
        writer
            .as_mut()
            .write(&[
                &(ord as i64),
                &e.id.as_str(),
                &e.time,
                &e.kind.event_type().as_str(),
                &refs,
                &body,
                &bytes.as_slice(),
            ])
            .await
            .map_err(attempt_error)?;
    }
    writer.finish().await.map_err(attempt_error)?;
    // Under the lock from here to the commit: positions are given out in
    // commit order (module docs). The COPY above overlaps another group's
    // commit; the lock waits for it. The statements, prepared above, are
    // sent together (pipelined), so the insert starts as soon as the
    // lock is granted, without a round trip to this process in between;
    // and unless an all-or-nothing request may have to be rolled back
    // (decided on the insert's answer), the commit goes with them: every
    // other outcome is decided whatever is committed, so nothing under
    // the lock waits for this process at all.
    let decide_first = items
        .iter()
        .any(|i| batch[i.request].mode == AppendMode::AllOrNothing);
    let asked = Instant::now();
    let locking = async {
        let locked = tx.execute(&lock, &[]).await;
        (locked, Instant::now())
    };
    let ((locked, held_from), inserted, committed) = if decide_first {
        let (locking, inserted) = join(locking, tx.query(&insert, &[])).await;
        (locking, inserted, None)
    } else {
        let (locking, inserted, committed) =
            join3(locking, tx.query(&insert, &[]), tx.batch_execute("COMMIT")).await;
        (locking, inserted, Some(committed))
    };
    /// How the transaction ends: its commit sent with the statements,
    /// or still open (decided on the insert's answer).
    enum Ending<'t> {
        Sent(Result<(), tokio_postgres::Error>),
        Open(tokio_postgres::Transaction<'t>),
    }
    let ending = match committed {
        Some(committed) => {
            // Ended by that COMMIT (after a failed statement it rolled
            // back): dropping `tx` would send a ROLLBACK outside any
            // transaction. It holds only the borrow of the connection
            // (tokio-postgres's: nothing leaks).
            std::mem::forget(tx);
            Ending::Sent(committed)
        }
        None => Ending::Open(tx),
    };
    locked.map_err(attempt_error)?;
    let hold = LogHeadHold {
        waited: held_from.saturating_duration_since(asked),
        from: held_from,
    };
    let rows = inserted.map_err(attempt_error)?;
    // Infallible: an answer this process cannot read is that event's
    // outcome, not the group's. With the COMMIT already sent, an error
    // here answered 500 for a group that was stored (task h64).
    let (outcomes, firsts) = outcomes_of(batch, items, &rows);
    match ending {
        Ending::Sent(committed) => committed.map_err(attempt_error)?,
        Ending::Open(tx) => {
            let conflicted: HashSet<usize> = items
                .iter()
                .zip(&outcomes)
                .filter(|(i, (o, _))| {
                    matches!(o, Outcome::Conflict | Outcome::Refused(_))
                        && batch[i.request].mode == AppendMode::AllOrNothing
                })
                .map(|(i, _)| i.request)
                .collect();
            if !conflicted.is_empty() {
                // Rolled back when `tx` drops.
                return Err(Attempt::AtomicConflict(
                    items
                        .iter()
                        .zip(outcomes)
                        .zip(firsts)
                        .filter(|((i, _), _)| conflicted.contains(&i.request))
                        .map(|((i, o), first)| (*i, o, first.map(|f| items[f])))
                        .collect(),
                ));
            }
            tx.commit().await.map_err(attempt_error)?;
        }
    }
    hold.record();
    Ok(outcomes)
}

/// Each item's outcome and position from the answer of `INSERT_NEW_EVENTS`
/// (a row per distinct id): the first occurrence of an id that went in is
/// inserted; a later one in the batch is compared with it, and one stored
/// before with the stored digest. Beside each answer, the index in `items`
/// of the event inserted now that it was compared with, if any (its
/// position is the attempt's: gone if the attempt is rolled back).
///
/// An event whose id is stored in a row without a digest whose body this
/// version cannot decode (a row written before migration 0003 that the
/// digest backfill could not fill either) cannot be told duplicate or
/// conflict: it is refused ([`UNREADABLE_STORED`]), and the cause logged.
/// The rest of the group is answered as it went: the commit may have been
/// sent with the statement (pipelined), so an error here would answer a
/// stored group as not stored, and a retry would see duplicates.
fn outcomes_of(
    batch: &[Request],
    items: &[Item],
    rows: &[tokio_postgres::Row],
) -> (Vec<Placed>, Vec<Option<usize>>) {
    let event = |i: &Item| &batch[i.request].events[i.position];
    let digest = |i: &Item| &batch[i.request].digests[i.position];
    /// What the statement answered for one id.
    enum Found {
        /// Inserted now at this position, by the item at `first`.
        New { pos: u64, first: Option<usize> },
        /// Stored before, at this position, with this digest.
        Stored { pos: u64, digest: Digest },
        /// Stored before, without a digest, in a body this process cannot
        /// decode.
        Unreadable,
    }
    let mut found: HashMap<&str, Found> = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: &str = row.get(0);
        let pos = row.get::<_, Option<i64>>(1);
        let inserted: bool = row.get(2);
        let Some(pos) = pos.map(|p| p as u64) else {
            // Neither inserted nor stored (another transaction's row
            // the guard met): as if gone, below.
            continue;
        };
        let answer = if inserted {
            Found::New { pos, first: None }
        } else {
            let stored = match row.get::<_, Option<&[u8]>>(3).and_then(Digest::from_bytes) {
                Some(d) => Ok(d),
                None => row
                    .try_get::<_, RawBody>(4)
                    .map_err(|e| format!("undecodable event in the store: {}", describe(&e)))
                    .and_then(|body| body::decode(&body.0).map_err(|e| e.to_string()))
                    .map(|event| Digest::of(&event)),
            };
            match stored {
                Ok(digest) => Found::Stored { pos, digest },
                Err(cause) => {
                    tracing::error!(
                        id, position = pos, %cause,
                        "a stored event without a digest cannot be read: events with its id \
                         are refused until it is repaired"
                    );
                    Found::Unreadable
                }
            }
        };
        found.insert(id, answer);
    }
    let compare = |ours: &Digest, stored: &Digest| match ours.compare(stored) {
        Sameness::Same => Outcome::Duplicate,
        Sameness::OtherAttributes => Outcome::DuplicateOtherAttributes,
        Sameness::Conflicting => Outcome::Conflict,
    };
    let mut out = Vec::with_capacity(items.len());
    let mut firsts = vec![None; items.len()];
    for (ord, item) in items.iter().enumerate() {
        out.push(match found.get_mut(event(item).id.as_str()) {
            Some(Found::New { pos, first }) => match *first {
                None => {
                    *first = Some(ord);
                    (Outcome::Inserted, Some(*pos))
                }
                Some(first) => {
                    firsts[ord] = Some(first);
                    (compare(digest(item), digest(&items[first])), Some(*pos))
                }
            },
            Some(Found::Stored {
                pos,
                digest: stored,
            }) => (compare(digest(item), stored), Some(*pos)),
            Some(Found::Unreadable) => (Outcome::Refused(UNREADABLE_STORED.into()), None),
            // A row gone meanwhile (erased by another transaction) stored
            // nothing of this event: a duplicate of an event that is no more.
            None => (Outcome::Duplicate, None),
        });
    }
    (out, firsts)
}

/// Why an event is refused whose id is stored in a row this version
/// cannot read (`outcomes_of`); the server's log has the cause.
const UNREADABLE_STORED: &str = "an event with this id is stored but cannot be read, so this one \
     cannot be compared with it; nothing of it was stored (the server's log says why: an \
     operator must repair the stored event)";

/// One append's time on the `log_head` lock, as this process sees it:
/// the wait for it (behind other appends, of any server) and its hold
/// from the grant's answer to the commit's (what every other append
/// waits). Recorded for committed appends only.
struct LogHeadHold {
    waited: Duration,
    from: Instant,
}

impl LogHeadHold {
    fn record(&self) {
        crate::telemetry::record_log_head(self.waited, self.from.elapsed());
    }
}

/// Fills the digest of rows stored before digests existed (migration
/// 0003), in batches; answers how many. Safe to run from several servers
/// at once: a row gets the same digest whoever computes it.
async fn backfill_digests(pool: &Pool) -> Result<u64, StoreError> {
    let reader = pool.get().await.map_err(pool_error)?;
    let writer = pool.get().await.map_err(pool_error)?;
    let stmt = reader
        .prepare("SELECT id, body FROM events WHERE digest IS NULL")
        .await
        .map_err(pg_error)?;
    let rows = reader
        .query_raw(&stmt, no_params())
        .await
        .map_err(pg_error)?;
    let mut rows = pin!(rows);
    let mut done = 0u64;
    let mut ids: Vec<String> = Vec::with_capacity(BACKFILL_BATCH);
    let mut digests: Vec<Vec<u8>> = Vec::with_capacity(BACKFILL_BATCH);
    loop {
        let row = rows.try_next().await.map_err(pg_error)?;
        if let Some(row) = &row {
            let id: String = row.get(0);
            let raw = row.try_get::<_, RawBody>(1).map_err(|e| {
                StoreError::Internal(format!("undecodable event {id}: {}", describe(&e)))
            })?;
            let event = body::decode(&raw.0)?;
            ids.push(id);
            digests.push(Digest::of(&event).to_bytes().to_vec());
        }
        if ids.len() >= BACKFILL_BATCH || (row.is_none() && !ids.is_empty()) {
            done += writer
                .execute(
                    "UPDATE events e SET digest = d.digest \
                     FROM unnest($1::text[], $2::bytea[]) AS d(id, digest) \
                     WHERE e.id = d.id AND e.digest IS NULL",
                    &[&ids, &digests],
                )
                .await
                .map_err(pg_error)?;
            ids.clear();
            digests.clear();
        }
        if row.is_none() {
            return Ok(done);
        }
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
