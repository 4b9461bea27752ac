//! `KeyStore` on PostgreSQL: the tables of `migrations/0004_security.sql`
//! (`api_keys`, `fusion_secrets`, `erasure_audit`), shared by every server
//! on the database. The only place that knows their rows.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{PostgresStore, pg_error, pool_error};
use crate::auth::{KeyId, KeyRecord, SecretHash};
use crate::store::StoreError;
use crate::store::keys::{ErasureRecord, KeyStore};

fn record(row: &tokio_postgres::Row) -> Result<KeyRecord, StoreError> {
    let id: String = row.get("id");
    let bad = |what: &str| StoreError::Internal(format!("key {id:?} in api_keys has a bad {what}"));
    let hash: Vec<u8> = row.get("secret_sha256");
    let role: String = row.get("role");
    Ok(KeyRecord {
        id: KeyId::new(id.clone()).map_err(|_| bad("id"))?,
        role: role.parse().map_err(|_| bad("role"))?,
        hash: SecretHash(hash.try_into().map_err(|_| bad("hash"))?),
        created: row.get("created"),
        expires: row.get("expires"),
        revoked: row.get("revoked"),
        last_used: row.get("last_used"),
    })
}

impl KeyStore for PostgresStore {
    fn create_key(&self, record: KeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "INSERT INTO api_keys (id, role, secret_sha256, created, expires) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &record.id.as_str(),
                        &record.role.as_str(),
                        &record.hash.0.as_slice(),
                        &record.created,
                        &record.expires,
                    ],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        }
    }

    fn keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let stmt = client
                .prepare_cached(
                    "SELECT id, role, secret_sha256, created, expires, revoked, last_used \
                     FROM api_keys ORDER BY created, id",
                )
                .await
                .map_err(pg_error)?;
            let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
            rows.iter().map(record).collect()
        }
    }

    fn revoke_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let pool = self.pool.clone();
        let id = id.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let n = client
                .execute(
                    "UPDATE api_keys SET revoked = coalesce(revoked, $2) WHERE id = $1",
                    &[&id.as_str(), &at],
                )
                .await
                .map_err(pg_error)?;
            Ok(n == 1)
        }
    }

    fn note_key_use(
        &self,
        uses: Vec<(KeyId, DateTime<Utc>)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            if uses.is_empty() {
                return Ok(());
            }
            let ids: Vec<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
            let times: Vec<DateTime<Utc>> = uses.iter().map(|(_, t)| *t).collect();
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE api_keys k SET last_used = u.at \
                     FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at) \
                     WHERE k.id = u.id AND (k.last_used IS NULL OR k.last_used < u.at)",
                    &[&ids, &times],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        }
    }

    fn secret(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Result<[u8; 32], StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            // The first server to ask creates it; a concurrent second one's
            // insert does nothing, and both read the winner's.
            client
                .execute(
                    "INSERT INTO fusion_secrets (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &crate::auth::random_bytes().as_slice()],
                )
                .await
                .map_err(pg_error)?;
            let value: Vec<u8> = client
                .query_one("SELECT value FROM fusion_secrets WHERE name = $1", &[&name])
                .await
                .map_err(pg_error)?
                .get(0);
            value
                .try_into()
                .map_err(|_| StoreError::Internal(format!("the secret {name:?} is not 32 bytes")))
        }
    }

    fn begin_erasure(
        &self,
        at: DateTime<Utc>,
        key_id: Option<KeyId>,
        subject_hash: String,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let id: i64 = client
                .query_one(
                    "INSERT INTO erasure_audit (at, key_id, subject_hash) VALUES ($1, $2, $3) \
                     RETURNING id",
                    &[&at, &key_id.as_ref().map(KeyId::as_str), &subject_hash],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            Ok(id as u64)
        }
    }

    fn finish_erasure(
        &self,
        audit: u64,
        events: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            client
                .execute(
                    "UPDATE erasure_audit SET events = $2 WHERE id = $1",
                    &[&(audit as i64), &(events as i64)],
                )
                .await
                .map_err(pg_error)?;
            Ok(())
        }
    }

    fn erasures(&self) -> impl Future<Output = Result<Vec<ErasureRecord>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT id, at, key_id, subject_hash, events FROM erasure_audit ORDER BY id",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|row| {
                    let key_id: Option<String> = row.get("key_id");
                    Ok(ErasureRecord {
                        id: row.get::<_, i64>("id") as u64,
                        at: row.get("at"),
                        key_id: key_id
                            .map(KeyId::new)
                            .transpose()
                            .map_err(|e| StoreError::Internal(format!("erasure_audit: {e}")))?,
                        subject_hash: row.get("subject_hash"),
                        events: row.get::<_, Option<i64>>("events").map(|n| n as u64),
                    })
                })
                .collect()
        }
    }
}
