//! The alert store (issue #13, item 2): alert rules, each relationship's
//! place in a rule's state machine, the alerts fired, and the webhook
//! outbox. Optional behaviour of a store, so its own trait (`AlertStore`)
//! with its own tables or file: `alerts.redb` beside the embedded event log
//! (`AlertFile`), the `alert_*` tables on PostgreSQL
//! (`postgres/alerts.rs`, migration 0012).
//!
//! Contract every backend keeps (`tests/it/alerts.rs` runs one suite
//! against both):
//! - every call answers only once its writes are durable;
//! - `commit` writes a rule's phase changes, its new alerts and one outbox
//!   delivery per alert in one transaction, so an alert is never recorded
//!   without its delivery, nor delivered without being recorded, and a
//!   crash between evaluation and commit fires it again on the next
//!   evaluation (at least once); nothing is written for a deleted rule;
//! - deleting a rule removes its phases, alerts and deliveries;
//! - ids grow with every rule, alert and delivery.
//!
//! A rule keeps its webhook secret: the HMAC signature needs the secret
//! itself (a hash of it would not sign), so it is stored as given, and the
//! API shows it only once, at creation.
//!
//! Knows no HTTP, scoring or webhook sending: records arrive made, the
//! state machine is `alerts::rule`'s.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::domain::EntityKind;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The Fusion Score, 0 to 100.
    Score,
    /// The score now minus the score 7 days before, in points.
    #[serde(rename = "trend_7d")]
    Trend7d,
}

/// Which side of the threshold is the alert's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The value is below the threshold (an advocate turning at-risk).
    Below,
    /// The value is above the threshold.
    Above,
}

/// A rule as its author gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The brand whose relationships it watches; `None`: every brand.
    #[serde(default)]
    pub brand: Option<String>,
    /// Only relationships of people of this kind (consumer or influencer).
    #[serde(default)]
    pub kind: Option<EntityKind>,
    pub metric: Metric,
    pub direction: Direction,
    /// The value whose crossing (to `direction`'s side) makes a relationship
    /// pending.
    pub threshold: f64,
    /// Hysteresis: after firing, the relationship re-arms only once the
    /// value is back past this (above it for `below`, below it for `above`).
    pub rearm: f64,
    /// How long, in event time (the time scores are read at), the value
    /// must stay past the threshold before the alert fires; 0: at once.
    #[serde(default)]
    pub dwell_seconds: u64,
    /// Where deliveries are POSTed (http or https).
    pub webhook_url: String,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: RuleSpec,
    pub created_at: DateTime<Utc>,
    /// The HMAC key of its deliveries (module docs: why it is kept).
    pub secret: String,
}

/// Where one relationship stands in one rule's state machine. `Armed` is
/// the default and is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a crossing.
    Armed,
    /// Past the threshold since `since` (event time), waiting out the dwell.
    Pending { since: DateTime<Utc> },
    /// Fired at `at`; waits to cross back past the re-arm threshold.
    Fired { at: DateTime<Utc> },
}

/// The phases of a rule's relationships: ((person, brand), phase).
pub type Phases = Vec<((String, String), Phase)>;

/// One relationship's move under a rule, as an evaluation decided it: from
/// the phase it read to the one it reached (`Armed` removes it), with the
/// alert its crossing fired, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseChange {
    pub person: String,
    pub brand: String,
    /// The phase the evaluation read (`Armed` when none was stored).
    pub from: Phase,
    /// The phase it reached.
    pub phase: Phase,
    /// The alert the crossing fired.
    pub alert: Option<NewAlert>,
}

/// An alert as the evaluation makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAlert {
    pub person: String,
    pub brand: String,
    pub kind: EntityKind,
    pub metric: Metric,
    pub direction: Direction,
    pub threshold: f64,
    /// The value when it fired.
    pub value: f64,
    /// When the value crossed the threshold (event time).
    pub crossed_at: DateTime<Utc>,
    /// When the dwell was over and it fired (event time).
    pub fired_at: DateTime<Utc>,
}

/// A recorded alert: the webhook's body is this, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: u64,
    pub rule: u64,
    #[serde(flatten)]
    pub alert: NewAlert,
}

impl AlertRecord {
    /// The idempotency key of its delivery: the same on every retry and
    /// after restarts (`Fusion-Idempotency-Key`).
    pub fn idempotency_key(&self) -> String {
        format!("fusion-alert-{}-{}", self.rule, self.id)
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up after the configured number of tries (dead letter).
    Dead,
}

/// One webhook delivery of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub rule: u64,
    pub alert: u64,
    pub url: String,
    /// The exact bytes POSTed on every try (the signature covers them).
    pub body: String,
    pub idempotency_key: String,
    pub state: DeliveryState,
    /// Tries made so far.
    pub tries: u32,
    /// When it is tried next (pending only).
    pub next_attempt: DateTime<Utc>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Why the last try failed (status or transport error).
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

pub trait AlertStore: Send + Sync + 'static {
    /// Stores a new rule with its secret; answers it with its id.
    fn create_rule(
        &self,
        spec: RuleSpec,
        secret: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Rule, StoreError>> + Send;

    /// Every rule, by id.
    fn rules(&self) -> impl Future<Output = Result<Vec<Rule>, StoreError>> + Send;

    /// Removes a rule with its phases, alerts and deliveries; answers
    /// whether it existed.
    fn delete_rule(&self, id: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The phases of a rule's relationships that are not armed:
    /// ((person, brand), phase).
    fn phases(&self, rule: u64) -> impl Future<Output = Result<Phases, StoreError>> + Send;

    /// In one transaction: the phase changes, their alerts and one pending
    /// delivery per alert (due at `now`, to `url`); answers the alerts as
    /// recorded. Nothing, and no alerts, when the rule is gone.
    ///
    /// A change applies only if the relationship's stored phase is still
    /// its `from` (compare-and-set); otherwise it is dropped with its
    /// alert. Several servers on one database evaluate the same rules over
    /// the same scores: the first to commit a crossing records it, once,
    /// and the others' evaluations of it change nothing.
    fn commit(
        &self,
        rule: u64,
        changes: Vec<PhaseChange>,
        url: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send;

    /// A rule's alerts with ids above `after`, the first `limit` by id.
    fn alerts(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send;

    /// A rule's deliveries with ids above `after`, the first `limit` by id.
    fn deliveries(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Claims up to `limit` pending deliveries due at `now`, earliest
    /// first, until `lease_until`: their next attempt moves there, so no
    /// other deliverer (another server on the same database) takes them
    /// meanwhile, and one its deliverer never wrote back (it died mid-try)
    /// is due again once the lease ends. Answers them as claimed, and the
    /// earliest `next_attempt` of the pending ones left.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Delivery>, Option<DateTime<Utc>>), StoreError>> + Send;

    /// Writes back deliveries after their tries (state, tries, times,
    /// error), in one transaction (one commit per batch of tries, not per
    /// try); one that is gone (its rule was deleted meanwhile) stays gone.
    fn update_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Erasure: removes every phase and alert whose person or brand is
    /// `entity`, with the alerts' deliveries; answers how many alerts
    /// went. Rules naming it as their brand stay (they hold no personal
    /// data and watch nothing once it is gone).
    fn erase(&self, entity: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// Whether an alert names the entity (erasure).
pub fn names(alert: &NewAlert, entity: &str) -> bool {
    alert.person == entity || alert.brand == entity
}

/// The pending delivery of a just-recorded alert.
pub fn first_delivery(id: u64, record: &AlertRecord, url: &str, now: DateTime<Utc>) -> Delivery {
    Delivery {
        id,
        rule: record.rule,
        alert: record.id,
        url: url.to_string(),
        body: serde_json::to_string(record).expect("an alert serialises"),
        idempotency_key: record.idempotency_key(),
        state: DeliveryState::Pending,
        tries: 0,
        next_attempt: now,
        last_attempt: None,
        last_error: None,
        delivered_at: None,
    }
}

// ---------------------------------------------------------------------------
// Beside the embedded store: a redb file of its own.

const RULES: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_rules");
const PHASES: TableDefinition<(u64, &str, &str), &[u8]> = TableDefinition::new("alert_phases");
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_deliveries");
/// The pending deliveries by (next attempt in microseconds, id): what
/// `due` reads, so a large outbox of delivered ones costs it nothing.
const PENDING: TableDefinition<(i64, u64), ()> = TableDefinition::new("alert_pending");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("alert_counters");

/// `alerts.redb` in the embedded store's data directory: its own file, so
/// the event log's file and format stay as they are. One transaction per
/// call. After an I/O error redb refuses everything until reopened, so the
/// next call reopens the file first (as `DeadLetterFile` does).
#[derive(Clone)]
pub struct AlertFile {
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
            StoreError::Full(format!("no space left for the alert store: {e}"))
        }
        other => StoreError::Internal(format!("alert store: {other}")),
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable alert record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(StoreError::internal)
}

/// The next id of a counter, taken inside a write transaction.
fn next_id(counters: &mut redb::Table<&str, u64>, name: &str) -> Result<u64, StoreError> {
    let next = counters
        .get(name)
        .map_err(redb_error)?
        .map_or(0, |v| v.value())
        + 1;
    counters.insert(name, next).map_err(redb_error)?;
    Ok(next)
}

impl AlertFile {
    /// Opens (or creates) `dir/alerts.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Internal(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
        let file = AlertFile {
            path: dir.join("alerts.redb"),
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
        txn.open_table(RULES).map_err(redb_error)?;
        txn.open_table(PHASES).map_err(redb_error)?;
        txn.open_table(ALERTS).map_err(redb_error)?;
        txn.open_table(DELIVERIES).map_err(redb_error)?;
        txn.open_table(PENDING).map_err(redb_error)?;
        txn.open_table(COUNTERS).map_err(redb_error)?;
        txn.commit().map_err(redb_error)?;
        Ok(db)
    }

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

    /// Every record of a table keyed by id whose decoded value passes `keep`,
    /// ids above `after`, at most `limit`.
    fn scan<T>(
        &self,
        table: TableDefinition<'static, u64, &'static [u8]>,
        after: Option<u64>,
        limit: usize,
        keep: impl Fn(&T) -> bool + Send + 'static,
    ) -> impl Future<Output = Result<Vec<T>, StoreError>> + Send
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let t = txn.open_table(table).map_err(redb_error)?;
            let mut out = Vec::new();
            for row in t.range(super::bounds::after(after)).map_err(redb_error)? {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = row.map_err(redb_error)?;
                let value: T = decode(v.value())?;
                if keep(&value) {
                    out.push(value);
                }
            }
            Ok(out)
        })
    }
}

impl AlertStore for AlertFile {
    fn create_rule(
        &self,
        spec: RuleSpec,
        secret: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Rule, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let rule = {
                let mut counters = txn.open_table(COUNTERS).map_err(redb_error)?;
                let mut rules = txn.open_table(RULES).map_err(redb_error)?;
                let rule = Rule {
                    id: next_id(&mut counters, "rule")?,
                    spec,
                    created_at: now,
                    secret,
                };
                rules
                    .insert(rule.id, encode(&rule)?.as_slice())
                    .map_err(redb_error)?;
                rule
            };
            txn.commit().map_err(redb_error)?;
            Ok(rule)
        })
    }

    fn rules(&self) -> impl Future<Output = Result<Vec<Rule>, StoreError>> + Send {
        self.scan(RULES, None, usize::MAX, |_: &Rule| true)
    }

    fn delete_rule(&self, id: u64) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let existed = {
                let mut rules = txn.open_table(RULES).map_err(redb_error)?;
                let existed = rules.remove(id).map_err(redb_error)?.is_some();
                let mut phases = txn.open_table(PHASES).map_err(redb_error)?;
                phases
                    .retain_in(super::bounds::rows_of(id), |_, _| false)
                    .map_err(redb_error)?;
                let mut alerts = txn.open_table(ALERTS).map_err(redb_error)?;
                alerts
                    .retain(|_, v| decode::<AlertRecord>(v).map_or(true, |a| a.rule != id))
                    .map_err(redb_error)?;
                let mut deliveries = txn.open_table(DELIVERIES).map_err(redb_error)?;
                deliveries
                    .retain(|_, v| decode::<Delivery>(v).map_or(true, |d| d.rule != id))
                    .map_err(redb_error)?;
                drop_unlisted(
                    &mut txn.open_table(PENDING).map_err(redb_error)?,
                    &deliveries,
                )?;
                existed
            };
            txn.commit().map_err(redb_error)?;
            Ok(existed)
        })
    }

    fn phases(&self, rule: u64) -> impl Future<Output = Result<Phases, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(redb_error)?;
            let t = txn.open_table(PHASES).map_err(redb_error)?;
            let mut out = Vec::new();
            for row in t.range(super::bounds::rows_of(rule)).map_err(redb_error)? {
                let (k, v) = row.map_err(redb_error)?;
                let (_, person, brand) = k.value();
                out.push(((person.to_string(), brand.to_string()), decode(v.value())?));
            }
            Ok(out)
        })
    }

    fn commit(
        &self,
        rule: u64,
        changes: Vec<PhaseChange>,
        url: String,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let records = {
                let rules = txn.open_table(RULES).map_err(redb_error)?;
                if rules.get(rule).map_err(redb_error)?.is_none() {
                    return Ok(Vec::new());
                }
                let mut phases = txn.open_table(PHASES).map_err(redb_error)?;
                let mut fired = Vec::new();
                for c in changes {
                    let key = (rule, c.person.as_str(), c.brand.as_str());
                    let stored: Phase = match phases.get(key).map_err(redb_error)? {
                        Some(v) => decode(v.value())?,
                        None => Phase::Armed,
                    };
                    if stored != c.from {
                        continue;
                    }
                    if c.phase == Phase::Armed {
                        phases.remove(key).map_err(redb_error)?;
                    } else {
                        phases
                            .insert(key, encode(&c.phase)?.as_slice())
                            .map_err(redb_error)?;
                    }
                    fired.extend(c.alert);
                }
                let mut counters = txn.open_table(COUNTERS).map_err(redb_error)?;
                let mut alerts = txn.open_table(ALERTS).map_err(redb_error)?;
                let mut deliveries = txn.open_table(DELIVERIES).map_err(redb_error)?;
                let mut pending = txn.open_table(PENDING).map_err(redb_error)?;
                let mut records = Vec::with_capacity(fired.len());
                for alert in fired {
                    let record = AlertRecord {
                        id: next_id(&mut counters, "alert")?,
                        rule,
                        alert,
                    };
                    alerts
                        .insert(record.id, encode(&record)?.as_slice())
                        .map_err(redb_error)?;
                    let delivery =
                        first_delivery(next_id(&mut counters, "delivery")?, &record, &url, now);
                    deliveries
                        .insert(delivery.id, encode(&delivery)?.as_slice())
                        .map_err(redb_error)?;
                    pending
                        .insert((delivery.next_attempt.timestamp_micros(), delivery.id), ())
                        .map_err(redb_error)?;
                    records.push(record);
                }
                records
            };
            txn.commit().map_err(redb_error)?;
            Ok(records)
        })
    }

    fn alerts(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        self.scan(ALERTS, after, limit, move |a: &AlertRecord| a.rule == rule)
    }

    fn deliveries(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send {
        self.scan(DELIVERIES, after, limit, move |d: &Delivery| d.rule == rule)
    }

    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<Delivery>, Option<DateTime<Utc>>), StoreError>> + Send
    {
        let now_micros = now.timestamp_micros();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let (claimed, next) = {
                let mut pending = txn.open_table(PENDING).map_err(redb_error)?;
                let mut deliveries = txn.open_table(DELIVERIES).map_err(redb_error)?;
                let mut due = Vec::new();
                let mut next = None;
                for row in pending.iter().map_err(redb_error)? {
                    let (k, _) = row.map_err(redb_error)?;
                    let (at, id) = k.value();
                    let Some(v) = deliveries.get(id).map_err(redb_error)? else {
                        continue;
                    };
                    let d: Delivery = decode(v.value())?;
                    if d.state != DeliveryState::Pending {
                        continue;
                    }
                    if due.len() >= limit || at > now_micros {
                        next = Some(d.next_attempt);
                        break;
                    }
                    due.push(d);
                }
                for d in &mut due {
                    pending
                        .remove((d.next_attempt.timestamp_micros(), d.id))
                        .map_err(redb_error)?;
                    d.next_attempt = lease_until;
                    pending
                        .insert((lease_until.timestamp_micros(), d.id), ())
                        .map_err(redb_error)?;
                    deliveries
                        .insert(d.id, encode(&*d)?.as_slice())
                        .map_err(redb_error)?;
                }
                (due, next)
            };
            if !claimed.is_empty() {
                txn.commit().map_err(redb_error)?;
            }
            Ok((claimed, next))
        })
    }

    fn update_deliveries(
        &self,
        deliveries: Vec<Delivery>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            {
                let mut t = txn.open_table(DELIVERIES).map_err(redb_error)?;
                let mut pending = txn.open_table(PENDING).map_err(redb_error)?;
                for delivery in &deliveries {
                    let old: Option<Delivery> = match t.get(delivery.id).map_err(redb_error)? {
                        Some(v) => Some(decode(v.value())?),
                        None => None,
                    };
                    let Some(old) = old else { continue };
                    pending
                        .remove((old.next_attempt.timestamp_micros(), old.id))
                        .map_err(redb_error)?;
                    t.insert(delivery.id, encode(delivery)?.as_slice())
                        .map_err(redb_error)?;
                    if delivery.state == DeliveryState::Pending {
                        pending
                            .insert((delivery.next_attempt.timestamp_micros(), delivery.id), ())
                            .map_err(redb_error)?;
                    }
                }
            }
            txn.commit().map_err(redb_error)?;
            Ok(())
        })
    }

    fn erase(&self, entity: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let entity = entity.to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(redb_error)?;
            let n = {
                let mut phases = txn.open_table(PHASES).map_err(redb_error)?;
                phases
                    .retain(|(_, person, brand), _| person != entity && brand != entity)
                    .map_err(redb_error)?;
                let mut alerts = txn.open_table(ALERTS).map_err(redb_error)?;
                let mut gone = std::collections::HashSet::new();
                for row in alerts.iter().map_err(redb_error)? {
                    let (k, v) = row.map_err(redb_error)?;
                    if names(&decode::<AlertRecord>(v.value())?.alert, &entity) {
                        gone.insert(k.value());
                    }
                }
                alerts
                    .retain(|id, _| !gone.contains(&id))
                    .map_err(redb_error)?;
                let mut deliveries = txn.open_table(DELIVERIES).map_err(redb_error)?;
                deliveries
                    .retain(|_, v| decode::<Delivery>(v).map_or(true, |d| !gone.contains(&d.alert)))
                    .map_err(redb_error)?;
                drop_unlisted(
                    &mut txn.open_table(PENDING).map_err(redb_error)?,
                    &deliveries,
                )?;
                gone.len() as u64
            };
            txn.commit().map_err(redb_error)?;
            Ok(n)
        })
    }
}

/// Removes the index entries of deliveries that are gone.
fn drop_unlisted(
    pending: &mut redb::Table<(i64, u64), ()>,
    deliveries: &redb::Table<u64, &[u8]>,
) -> Result<(), StoreError> {
    pending
        .retain(|(_, id), _| deliveries.get(id).ok().flatten().is_some())
        .map_err(redb_error)
}

// ---------------------------------------------------------------------------
// The runtime choice.

/// The alert store of a running Fusion, beside its event store.
#[derive(Clone)]
pub enum AlertBook {
    File(AlertFile),
    Postgres(super::PostgresStore),
}

impl AlertBook {
    /// The store that goes with an event store: PostgreSQL's tables, or
    /// `alerts.redb` in the embedded store's directory.
    pub fn beside(store: &super::Backend, data_dir: &Path) -> Result<AlertBook, StoreError> {
        Ok(match store {
            super::Backend::Postgres(pg) => AlertBook::Postgres(pg.clone()),
            super::Backend::Embedded(_) => AlertBook::File(AlertFile::open(data_dir)?),
        })
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AlertBook::File($s) => $call.await,
            AlertBook::Postgres($s) => $call.await,
        }
    };
}

impl AlertStore for AlertBook {
    async fn create_rule(
        &self,
        spec: RuleSpec,
        secret: String,
        now: DateTime<Utc>,
    ) -> Result<Rule, StoreError> {
        delegate!(self, s => s.create_rule(spec, secret, now))
    }
    async fn rules(&self) -> Result<Vec<Rule>, StoreError> {
        delegate!(self, s => s.rules())
    }
    async fn delete_rule(&self, id: u64) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete_rule(id))
    }
    async fn phases(&self, rule: u64) -> Result<Phases, StoreError> {
        delegate!(self, s => s.phases(rule))
    }
    async fn commit(
        &self,
        rule: u64,
        changes: Vec<PhaseChange>,
        url: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        delegate!(self, s => s.commit(rule, changes, url, now))
    }
    async fn alerts(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        delegate!(self, s => s.alerts(rule, after, limit))
    }
    async fn deliveries(
        &self,
        rule: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        delegate!(self, s => s.deliveries(rule, after, limit))
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<DateTime<Utc>>), StoreError> {
        delegate!(self, s => s.claim_due(now, lease_until, limit))
    }
    async fn update_deliveries(&self, deliveries: Vec<Delivery>) -> Result<(), StoreError> {
        delegate!(self, s => s.update_deliveries(deliveries))
    }
    async fn erase(&self, entity: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.erase(entity))
    }
}
