//! `DeadLetterStore` on PostgreSQL: the tables of
//! `migrations/0010_dead_letters.sql`, shared by every server on the
//! database. The only place that knows their rows. A letter is one `jsonb`
//! document beside the columns its filters use.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{Json, ToSql};

use super::{PostgresStore, pg_error, pool_error};
use crate::store::StoreError;
use crate::store::dead_letters::{
    DeadLetter, DeadLetterStats, DeadLetterStore, Filter, Kept, NewLetter, Retention, mentions,
};

/// The WHERE clause of a filter, with its parameters numbered from 1.
fn condition(filter: &Filter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut parts: Vec<String> = vec!["true".into()];
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut add = |sql: &str, p: Box<dyn ToSql + Sync + Send>| {
        params.push(p);
        parts.push(sql.replace('?', &format!("${}", params.len())));
    };
    if let Some(r) = filter.reason {
        add("reason = ?", Box::new(r.as_str().to_string()));
    }
    if let Some(f) = &filter.field {
        add("? = ANY(fields)", Box::new(f.clone()));
    }
    if let Some(r) = &filter.route {
        add("route = ?", Box::new(r.clone()));
    }
    if let Some(t) = filter.from {
        add("received_at >= ?", Box::new(t));
    }
    if let Some(t) = filter.to {
        add("received_at < ?", Box::new(t));
    }
    if let Some(a) = filter.after {
        add("id > ?", Box::new(a.min(i64::MAX as u64) as i64));
    }
    (parts.join(" AND "), params)
}

fn params(p: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    p.iter()
        .map(|b| b.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The retention, in the caller's transaction: the oldest beyond the count,
/// and every letter received before the cutoff; counted as dropped.
const RETAIN: &str = "
WITH doomed AS (
    SELECT id FROM dead_letters
    WHERE received_at < $1
       OR id <= (SELECT id FROM dead_letters ORDER BY id DESC OFFSET $2 LIMIT 1)
), gone AS (
    DELETE FROM dead_letters d USING doomed WHERE d.id = doomed.id RETURNING 1
)
SELECT count(*) FROM gone";

async fn retain(
    tx: &tokio_postgres::Transaction<'_>,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let cutoff = now - retention.max_age;
    let keep = retention.max_count.min(i64::MAX as u64) as i64;
    let n: i64 = tx
        .query_one(RETAIN, &[&cutoff, &keep])
        .await
        .map_err(pg_error)?
        .get(0);
    if n > 0 {
        bump(tx, "dropped", n).await?;
    }
    Ok(n as u64)
}

async fn bump(tx: &tokio_postgres::Transaction<'_>, name: &str, n: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO dead_letter_counters (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = dead_letter_counters.value + EXCLUDED.value",
        &[&name, &n],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

fn letter(row: &tokio_postgres::Row) -> Result<DeadLetter, StoreError> {
    let id: i64 = row.get(0);
    let Json(letter) = row
        .try_get::<_, Json<NewLetter>>(1)
        .map_err(|e| StoreError::Internal(format!("undecodable dead letter {id}: {e}")))?;
    Ok(DeadLetter {
        id: id as u64,
        letter,
    })
}

impl DeadLetterStore for PostgresStore {
    fn keep(
        &self,
        letters: Vec<NewLetter>,
        not_kept: u64,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Kept, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let insert = tx
                .prepare_cached(
                    "INSERT INTO dead_letters (received_at, route, key_id, reason, fields, letter) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .await
                .map_err(pg_error)?;
            let mut ids = Vec::with_capacity(letters.len());
            for l in &letters {
                let fields: Vec<&str> = l.errors.iter().map(|e| e.field.as_str()).collect();
                let row = tx
                    .query_one(
                        &insert,
                        &[
                            &l.received_at,
                            &l.route,
                            &l.key_id,
                            &l.reason.as_str(),
                            &fields,
                            &Json(l),
                        ],
                    )
                    .await
                    .map_err(pg_error)?;
                ids.push(row.get::<_, i64>(0) as u64);
            }
            if not_kept > 0 {
                bump(&tx, "not_kept", not_kept.min(i64::MAX as u64) as i64).await?;
            }
            let dropped = retain(&tx, retention, now).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(Kept { ids, dropped })
        }
    }

    fn list(
        &self,
        filter: Filter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let (cond, p) = condition(&filter);
            let sql = format!(
                "SELECT id, letter FROM dead_letters WHERE {cond} ORDER BY id LIMIT {}",
                limit.min(i64::MAX as usize)
            );
            let rows = client.query(&sql, &params(&p)).await.map_err(pg_error)?;
            rows.iter().map(letter).collect()
        }
    }

    fn remove(&self, ids: Vec<u64>) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let ids: Vec<i64> = ids.iter().map(|&i| i.min(i64::MAX as u64) as i64).collect();
            client
                .execute("DELETE FROM dead_letters WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(pg_error)
        }
    }

    fn delete(&self, filter: Filter) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let (cond, p) = condition(&filter);
            client
                .execute(
                    &format!("DELETE FROM dead_letters WHERE {cond}"),
                    &params(&p),
                )
                .await
                .map_err(pg_error)
        }
    }

    /// Judged in Rust by [`mentions`] (one definition for every backend),
    /// over every letter: erasure is rare and the retention bounds the table.
    fn erase(&self, entity: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        let entity = entity.to_string();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let rows = tx
                .query("SELECT id, letter FROM dead_letters FOR UPDATE", &[])
                .await
                .map_err(pg_error)?;
            let mut doomed = Vec::new();
            for row in &rows {
                let d = letter(row)?;
                if mentions(&d.letter, &entity) {
                    doomed.push(d.id as i64);
                }
            }
            let n = tx
                .execute("DELETE FROM dead_letters WHERE id = ANY($1)", &[&doomed])
                .await
                .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            Ok(n)
        }
    }

    fn purge(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let n = retain(&tx, retention, now).await?;
            tx.commit().await.map_err(pg_error)?;
            Ok(n)
        }
    }

    fn stats(&self) -> impl Future<Output = Result<DeadLetterStats, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM dead_letters), \
                     coalesce((SELECT value FROM dead_letter_counters WHERE name = 'dropped'), 0), \
                     coalesce((SELECT value FROM dead_letter_counters WHERE name = 'not_kept'), 0)",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            Ok(DeadLetterStats {
                held: row.get::<_, i64>(0) as u64,
                dropped: row.get::<_, i64>(1) as u64,
                not_kept: row.get::<_, i64>(2) as u64,
            })
        }
    }
}
