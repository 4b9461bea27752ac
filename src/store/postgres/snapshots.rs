//! Snapshots of the derived state in PostgreSQL: the `snapshots` table of
//! the same database (migration 0011), so every server can load them, their
//! bytes in `snapshot_chunks` (migration 0014), a piece per row, written
//! and read a piece at a time (`store::snapshots`, "Streamed"). Opaque
//! bytes here (`store::snapshots` says how erasure reaches them); must not
//! know scoring.

use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;

use super::{pg_error, pool_error};
use crate::domain::LogPosition;
use crate::store::snapshots::{PIECES_IN_FLIGHT, SNAPSHOTS_KEPT};
use crate::store::{SnapshotMeta, SnapshotPiece, SnapshotPieces, SnapshotRead, StoreError};

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

/// Inserts a snapshot, a row per piece as `pieces` bring them, unless an
/// erasure came after `of`, and deletes all but the newest
/// `SNAPSHOTS_KEPT` of its model and format (another format's are another
/// binary's, as in `SnapshotDir`), in one transaction: nothing is kept when
/// the pieces stop before their end. The erasure lock is taken only to
/// check the epoch and commit, not while the pieces come.
pub(super) async fn save(
    pool: &Pool,
    epoch: &Epoch,
    mut pieces: SnapshotPieces,
    meta: SnapshotMeta,
    of: u64,
) -> Result<bool, StoreError> {
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
    let id: i64 = tx
        .query_one(
            "INSERT INTO snapshots (position, events, format, model) \
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&position, &events, &format, &meta.model.as_slice()],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let insert = tx
        .prepare("INSERT INTO snapshot_chunks (snapshot, seq, bytes) VALUES ($1, $2, $3)")
        .await
        .map_err(pg_error)?;
    let mut seq = 0i32;
    let mut ended = false;
    while let Some(piece) = pieces.recv().await {
        match piece {
            SnapshotPiece::Bytes(bytes) => {
                tx.execute(&insert, &[&id, &seq, &bytes])
                    .await
                    .map_err(pg_error)?;
                seq += 1;
            }
            SnapshotPiece::End => {
                ended = true;
                break;
            }
        }
    }
    if !ended {
        // The transaction rolls back as it is dropped.
        return Err(StoreError::Internal(
            "the snapshot's writer stopped before its end; nothing was kept".into(),
        ));
    }
    let _order = epoch.order.lock().await;
    if epoch.get() != of {
        return Ok(false);
    }
    // Another server's erasure (or registration) since the state was
    // built: it may hold the erased entity, and that erasure's delete of
    // every snapshot has run or waits for this row (the share lock keeps
    // it from committing between this check and the commit). Refused, as
    // this server's own erasures refuse it above (red team h69: such a
    // save was kept, holding the erased person).
    let context: Option<i64> = tx
        .query_one("SELECT pos FROM log_context FOR SHARE", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    if context.map(|p| p as LogPosition) != meta.context {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM snapshots WHERE model = $2 AND format = $3 AND id NOT IN \
         (SELECT id FROM snapshots WHERE model = $2 AND format = $3 \
          ORDER BY position DESC, id DESC LIMIT $1)",
        &[&(SNAPSHOTS_KEPT as i64), &meta.model.as_slice(), &format],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(true)
}

/// The kept snapshot `rank` places from the newest, as [`latest`] orders
/// them, its chunks read one at a time by a task of their own; `None` past
/// the oldest. A snapshot deleted meanwhile (an erasure) ends early: its
/// reader finds it truncated.
pub(super) async fn nth(pool: &Pool, rank: usize) -> Result<Option<SnapshotRead>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let offset = i64::try_from(rank).unwrap_or(i64::MAX);
    let row = client
        .query_opt(
            "SELECT id FROM snapshots ORDER BY position DESC, id DESC OFFSET $1 LIMIT 1",
            &[&offset],
        )
        .await
        .map_err(pg_error)?;
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.get(0);
    let (tx, rx) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
    tokio::spawn(async move {
        let chunk = match client
            .prepare("SELECT bytes FROM snapshot_chunks WHERE snapshot = $1 AND seq = $2")
            .await
        {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(pg_error(e))).await;
                return;
            }
        };
        for seq in 0i32.. {
            let piece = match client.query_opt(&chunk, &[&id, &seq]).await {
                Ok(Some(row)) => Ok(row.get::<_, Vec<u8>>(0)),
                Ok(None) => return,
                Err(e) => Err(pg_error(e)),
            };
            let failed = piece.is_err();
            if tx.send(piece).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(Some(rx))
}

/// The kept snapshots (of every model), newest first, each put together.
pub(super) async fn latest(pool: &Pool) -> Result<Vec<Vec<u8>>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(
            "SELECT id FROM snapshots ORDER BY position DESC, id DESC",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let chunks = client
            .query(
                "SELECT bytes FROM snapshot_chunks WHERE snapshot = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        out.push(
            chunks
                .iter()
                .flat_map(|c| c.get::<_, &[u8]>(0).to_vec())
                .collect(),
        );
    }
    Ok(out)
}
