//! `AlertStore` on PostgreSQL: the tables of `migrations/0012_alerts.sql`,
//! shared by every server on the database. The only place that knows their
//! rows. Each record is one `jsonb` document beside the columns its queries
//! use.

use std::future::Future;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{Json, ToSql};

use super::{PostgresStore, pg_error, pool_error};
use crate::store::StoreError;
use crate::store::alerts::{
    AlertRecord, AlertStore, Delivery, DeliveryState, Phase, PhaseChange, Phases, Rule, RuleSpec,
    first_delivery,
};

fn id(i: u64) -> i64 {
    i.min(i64::MAX as u64) as i64
}

fn json<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    col: usize,
) -> Result<T, StoreError> {
    row.try_get::<_, Json<T>>(col)
        .map(|Json(v)| v)
        .map_err(|e| StoreError::Internal(format!("undecodable alert record: {e}")))
}

fn state_name(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Dead => "dead",
    }
}

impl AlertStore for PostgresStore {
    fn create_rule(
        &self,
        spec: RuleSpec,
        secret: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Rule, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one(
                    "INSERT INTO alert_rules (created_at, rule, secret) VALUES ($1, $2, $3) RETURNING id",
                    &[&now, &Json(&spec), &secret],
                )
                .await
                .map_err(pg_error)?;
            Ok(Rule {
                id: row.get::<_, i64>(0) as u64,
                spec,
                created_at: now,
                secret,
            })
        }
    }

    fn rules(&self) -> impl Future<Output = Result<Vec<Rule>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT id, created_at, rule, secret FROM alert_rules ORDER BY id",
                    &[],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|r| {
                    Ok(Rule {
                        id: r.get::<_, i64>(0) as u64,
                        created_at: r.get(1),
                        spec: json(r, 2)?,
                        secret: r.get(3),
                    })
                })
                .collect()
        }
    }

    fn delete_rule(&self, rule: u64) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let n = client
                .execute("DELETE FROM alert_rules WHERE id = $1", &[&id(rule)])
                .await
                .map_err(pg_error)?;
            Ok(n > 0)
        }
    }

    fn phases(&self, rule: u64) -> impl Future<Output = Result<Phases, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT person, brand, phase FROM alert_phases WHERE rule_id = $1",
                    &[&id(rule)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter()
                .map(|r| Ok(((r.get(0), r.get(1)), json(r, 2)?)))
                .collect()
        }
    }

    fn commit(
        &self,
        rule: u64,
        changes: Vec<PhaseChange>,
        url: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            // The rule's row locked for the transaction: a delete waits, or
            // came first and then nothing is written.
            let live = tx
                .query_opt(
                    "SELECT 1 FROM alert_rules WHERE id = $1 FOR SHARE",
                    &[&id(rule)],
                )
                .await
                .map_err(pg_error)?;
            if live.is_none() {
                return Ok(Vec::new());
            }
            let rule_id = id(rule);
            let mut fired = Vec::new();
            for c in changes {
                // Compare-and-set: each statement changes the row only if
                // it still holds `from` (an armed relationship has no row,
                // and a concurrent insert of it makes this one conflict
                // once that commits). Under READ COMMITTED a concurrent
                // change of the same row is waited for and then re-checked.
                let key: [&(dyn ToSql + Sync); 3] = [&rule_id, &c.person, &c.brand];
                let applied = match (c.from, c.phase) {
                    (Phase::Armed, Phase::Armed) => 1,
                    (Phase::Armed, to) => tx
                        .execute(
                            "INSERT INTO alert_phases (rule_id, person, brand, phase) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            &[key[0], key[1], key[2], &Json(&to)],
                        )
                        .await
                        .map_err(pg_error)?,
                    (from, Phase::Armed) => tx
                        .execute(
                            "DELETE FROM alert_phases \
                             WHERE rule_id = $1 AND person = $2 AND brand = $3 AND phase = $4",
                            &[key[0], key[1], key[2], &Json(&from)],
                        )
                        .await
                        .map_err(pg_error)?,
                    (from, to) => tx
                        .execute(
                            "UPDATE alert_phases SET phase = $5 \
                             WHERE rule_id = $1 AND person = $2 AND brand = $3 AND phase = $4",
                            &[key[0], key[1], key[2], &Json(&from), &Json(&to)],
                        )
                        .await
                        .map_err(pg_error)?,
                };
                if applied == 1 {
                    fired.extend(c.alert);
                }
            }
            let mut records = Vec::with_capacity(fired.len());
            for alert in fired {
                let alert_id: i64 = tx
                    .query_one("SELECT nextval('alert_events_id_seq')", &[])
                    .await
                    .map_err(pg_error)?
                    .get(0);
                let record = AlertRecord {
                    id: alert_id as u64,
                    rule,
                    alert,
                };
                tx.execute(
                    "INSERT INTO alert_events (id, rule_id, alert) VALUES ($1, $2, $3)",
                    &[&alert_id, &id(rule), &Json(&record)],
                )
                .await
                .map_err(pg_error)?;
                let delivery_id: i64 = tx
                    .query_one("SELECT nextval('alert_deliveries_id_seq')", &[])
                    .await
                    .map_err(pg_error)?
                    .get(0);
                let d = first_delivery(delivery_id as u64, &record, &url, now);
                tx.execute(
                    "INSERT INTO alert_deliveries (id, rule_id, state, next_attempt, delivery) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &delivery_id,
                        &id(rule),
                        &state_name(d.state),
                        &d.next_attempt,
                        &Json(&d),
                    ],
                )
                .await
                .map_err(pg_error)?;
                records.push(record);
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(records)
        }
    }

    fn alerts(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT alert FROM alert_events WHERE rule_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&id(rule), &id(after.unwrap_or(0)), &(limit.min(i64::MAX as usize) as i64)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(|r| json(r, 0)).collect()
        }
    }

    fn deliveries(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = client
                .query(
                    "SELECT delivery FROM alert_deliveries WHERE rule_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&id(rule), &id(after.unwrap_or(0)), &(limit.min(i64::MAX as usize) as i64)],
                )
                .await
                .map_err(pg_error)?;
            rows.iter().map(|r| json(r, 0)).collect()
        }
    }

    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Delivery>, Option<DateTime<Utc>>), StoreError>> + Send
    {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            // SKIP LOCKED: rows another server is claiming now are its own;
            // once it commits, their next attempt is past `now`.
            let rows = tx
                .query(
                    "SELECT delivery FROM alert_deliveries WHERE state = 'pending' AND next_attempt <= $1 \
                     ORDER BY next_attempt, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&now, &(limit.min(i64::MAX as usize) as i64)],
                )
                .await
                .map_err(pg_error)?;
            let mut due: Vec<Delivery> =
                rows.iter().map(|r| json(r, 0)).collect::<Result<_, _>>()?;
            let lease = tx
                .prepare_cached(
                    "UPDATE alert_deliveries SET next_attempt = $2, delivery = $3 WHERE id = $1",
                )
                .await
                .map_err(pg_error)?;
            for d in &mut due {
                d.next_attempt = lease_until;
                tx.execute(&lease, &[&id(d.id), &lease_until, &Json(&*d)])
                    .await
                    .map_err(pg_error)?;
            }
            let taken: Vec<i64> = due.iter().map(|d| id(d.id)).collect();
            let next: Option<DateTime<Utc>> = tx
                .query_one(
                    "SELECT min(next_attempt) FROM alert_deliveries WHERE state = 'pending' AND NOT (id = ANY($1))",
                    &[&taken],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            tx.commit().await.map_err(pg_error)?;
            Ok((due, next))
        }
    }

    fn update_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            let update = tx
                .prepare_cached(
                    "UPDATE alert_deliveries SET state = $2, next_attempt = $3, delivery = $4 WHERE id = $1",
                )
                .await
                .map_err(pg_error)?;
            for delivery in &deliveries {
                tx.execute(
                    &update,
                    &[
                        &id(delivery.id),
                        &state_name(delivery.state),
                        &delivery.next_attempt,
                        &Json(delivery),
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)?;
            Ok(())
        }
    }

    fn erase(&self, entity: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let pool = self.pool.clone();
        let entity = entity.to_string();
        async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute(
                "DELETE FROM alert_phases WHERE person = $1 OR brand = $1",
                &[&entity],
            )
            .await
            .map_err(pg_error)?;
            let gone: Vec<i64> = tx
                .query(
                    "DELETE FROM alert_events WHERE alert->>'person' = $1 OR alert->>'brand' = $1 \
                     RETURNING id",
                    &[&entity],
                )
                .await
                .map_err(pg_error)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute(
                "DELETE FROM alert_deliveries WHERE (delivery->>'alert')::bigint = ANY($1)",
                &[&gone],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            Ok(gone.len() as u64)
        }
    }
}
