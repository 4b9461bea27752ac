//! Schema migrations: the SQL files of `migrations/`, compiled in, applied in
//! order and recorded in `fusion_migrations`. Owns nothing else: it never
//! edits or reverts an applied migration (a change is a new file).
//!
//! Everything runs in one transaction holding a transaction-level advisory
//! lock, so servers starting together take turns: the first applies, the
//! others then find nothing to do. PostgreSQL DDL is transactional, so a
//! failed migration leaves no half-built schema behind.

use std::collections::HashSet;

use deadpool_postgres::Pool;

use super::{pg_error, pool_error};
use crate::store::StoreError;

/// In application order. Names are recorded, so never rename one.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_events", include_str!("migrations/0001_events.sql")),
    (
        "0002_relationship_scores",
        include_str!("migrations/0002_relationship_scores.sql"),
    ),
    (
        "0003_event_digests",
        include_str!("migrations/0003_event_digests.sql"),
    ),
    (
        "0004_security",
        include_str!("migrations/0004_security.sql"),
    ),
    (
        "0005_log_positions",
        include_str!("migrations/0005_log_positions.sql"),
    ),
    (
        "0010_dead_letters",
        include_str!("migrations/0010_dead_letters.sql"),
    ),
    (
        "0011_snapshots",
        include_str!("migrations/0011_snapshots.sql"),
    ),
    ("0012_alerts", include_str!("migrations/0012_alerts.sql")),
    (
        "0013_log_follow",
        include_str!("migrations/0013_log_follow.sql"),
    ),
    (
        "0014_snapshot_chunks",
        include_str!("migrations/0014_snapshot_chunks.sql"),
    ),
    (
        "0015_context_position",
        include_str!("migrations/0015_context_position.sql"),
    ),
];

/// Key of the advisory lock serialising migrations ("fusion" in ASCII).
const LOCK_KEY: i64 = 0x6675_7369_6f6e;

/// Applies the pending migrations; answers their names in order.
pub(super) async fn apply(pool: &Pool) -> Result<Vec<String>, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg_error)?;
    // Under the lock, so two first starts cannot both create it.
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fusion_migrations (
             name text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         COMMENT ON TABLE fusion_migrations IS 'Schema migrations applied by Fusion.';",
    )
    .await
    .map_err(pg_error)?;
    let done: HashSet<String> = tx
        .query("SELECT name FROM fusion_migrations", &[])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        if done.contains(*name) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|e| {
            let err = pg_error(e);
            match err {
                StoreError::Internal(m) => {
                    StoreError::Internal(format!("migration {name} failed: {m}"))
                }
                unavailable => unavailable,
            }
        })?;
        tx.execute("INSERT INTO fusion_migrations (name) VALUES ($1)", &[name])
            .await
            .map_err(pg_error)?;
        applied.push((*name).to_string());
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(applied)
}
