//! Snapshots of the derived state in PostgreSQL: the `snapshots` table of
//! the same database (migration 0011), so every server can load them.
//! Opaque bytes here (`store::snapshots` says how erasure reaches them);
//! must not know scoring.

use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;

use super::{pg_error, pool_error};
use crate::store::snapshots::SNAPSHOTS_KEPT;
use crate::store::{SnapshotMeta, StoreError};

/// This server's erasures so far, and the lock that orders a save's check
/// and insert with an erasure's bump.
#[derive(Debug, Default)]
pub(super) struct Epoch {
    erasures: AtomicU64,
    order: tokio::sync::Mutex<()>,
}

impl Epoch {
    pub(super) fn get(&self) -> u64 {
        self.erasures.load(Ordering::SeqCst)
    }

    /// An erasure begins: saves of states from before it are refused from
    /// now on (the erasure's transaction deletes those saved before).
    pub(super) async fn bump(&self) {
        let _order = self.order.lock().await;
        self.erasures.fetch_add(1, Ordering::SeqCst);
    }
}

/// Inserts a snapshot unless an erasure came after `epoch`, and deletes
/// all but the newest `SNAPSHOTS_KEPT` of its model, in one transaction.
pub(super) async fn save(
    pool: &Pool,
    epoch: &Epoch,
    bytes: Vec<u8>,
    meta: SnapshotMeta,
    of: u64,
) -> Result<bool, StoreError> {
    let _order = epoch.order.lock().await;
    if epoch.get() != of {
        return Ok(false);
    }
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let (position, events, format) = (
        i64::try_from(meta.position).map_err(StoreError::internal)?,
        i64::try_from(meta.events).map_err(StoreError::internal)?,
        meta.format as i32,
    );
    tx.execute(
        "INSERT INTO snapshots (position, events, format, model, snapshot) \
         VALUES ($1, $2, $3, $4, $5)",
        &[&position, &events, &format, &meta.model.as_slice(), &bytes],
    )
    .await
    .map_err(pg_error)?;
    tx.execute(
        "DELETE FROM snapshots WHERE model = $2 AND id NOT IN \
         (SELECT id FROM snapshots WHERE model = $2 ORDER BY position DESC, id DESC LIMIT $1)",
        &[&(SNAPSHOTS_KEPT as i64), &meta.model.as_slice()],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(true)
}

/// The kept snapshot `rank` places from the newest, as [`latest`] orders
/// them; `None` past the oldest.
pub(super) async fn nth(pool: &Pool, rank: usize) -> Result<Option<Vec<u8>>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let offset = i64::try_from(rank).unwrap_or(i64::MAX);
    let row = client
        .query_opt(
            "SELECT snapshot FROM snapshots ORDER BY position DESC, id DESC OFFSET $1 LIMIT 1",
            &[&offset],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// The kept snapshots (of every model), newest first.
pub(super) async fn latest(pool: &Pool) -> Result<Vec<Vec<u8>>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(
            "SELECT snapshot FROM snapshots ORDER BY position DESC, id DESC",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}
