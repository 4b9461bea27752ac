//! Alerts that don't flap (issue #13, item 2): rules over every
//! relationship of their brands, evaluated when the scores move and on a
//! periodic sweep, whose crossings become alerts in the store and webhook
//! deliveries from a durable outbox.
//!
//! - `rule.rs`: one relationship's state machine (armed → pending(dwell) →
//!   fired → re-armed past the second threshold), pure.
//! - `webhook.rs`: which URLs may be called, the signature, one try, the
//!   backoff.
//! - here: `Alerts`, the service. Two tasks: the evaluator and the
//!   deliverer.
//!
//! **When rules are evaluated.** The evaluator wakes every [`TICK`]; it
//! evaluates every rule when the engine's version moved since the last
//! evaluation (any change of the scores' inputs), when the sweep is
//! due (`AlertConfig::sweep`, default 60 s at the server's clock: decay
//! alone moves scores without moving the version, and the sweep is what
//! catches an advocate going quiet), and when woken by [`Alerts::on_changes`]
//! or a new rule. Scores and 7-day trends come from the engine's shared
//! ranking (`Engine::ranking`) within the engine's staleness, the one
//! readers share: under a stream the evaluation follows the ranking's
//! builds (and skips a tick whose ranking it has evaluated already)
//! instead of asking for a whole build at every change. Values are read at
//! the evaluation's `now`, which is the time the state machine is given
//! (the dwell is measured on that axis).
//!
//! **The change feed.** `on_changes` is the hook for the change feed
//! (issue #13, item 1): call it with the relationships a fold moved and the
//! evaluator runs at once instead of at its next tick. Until the feed is
//! wired, the version watch covers every change.
//!
//! **Delivery.** An alert and its delivery are written in one transaction
//! (`store::alerts`), and only by the evaluation whose phase change
//! applies (compare-and-set: several servers on one database record a
//! crossing once). The deliverer claims due deliveries from the store for
//! a lease (two tries' timeouts and a margin; on PostgreSQL with `FOR
//! UPDATE SKIP LOCKED`, so each goes to one server), tries them on the
//! blocking pool, and writes each outcome back: delivered on a 2xx, else
//! retried after `webhook::backoff`, dead after `max_tries`. A delivery
//! tried but not written back (a crash) is due again when its lease ends,
//! on any server: at least once, with the same idempotency key.
//!
//! Must not: score anything itself, or speak HTTP to clients.

pub mod rule;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::domain::{EntityId, EntityKind};
use crate::engine::{Engine, Ranking};
use crate::store::alerts::{
    AlertBook, AlertRecord, AlertStore, Delivery, DeliveryState, Metric, NewAlert, Phase,
    PhaseChange, Rule, RuleSpec,
};
use crate::store::{EventStore, StoreError};

/// How often the evaluator looks at the engine's version.
pub const TICK: Duration = Duration::from_millis(200);
/// Longest a deliverer sleeps without looking at the outbox (another
/// server on the same database may have written to it).
const IDLE: Duration = Duration::from_secs(1);
/// Deliveries tried at once.
const BATCH: usize = 64;
/// What a claim of due deliveries lasts beyond two tries' timeouts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Longest dwell a rule may ask for: 30 days.
pub const MAX_DWELL_SECONDS: u64 = 30 * 86_400;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// How alerts run; `fusion serve` flags set them.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Period of the sweep at the server's clock.
    pub sweep: Duration,
    /// Allow webhooks to loopback, private and link-local addresses.
    pub allow_private: bool,
    /// Tries before a delivery is dead.
    pub max_tries: u32,
    /// The first retry's delay; each further one doubles it.
    pub backoff: Duration,
    /// The longest delay between tries.
    pub backoff_cap: Duration,
    /// Time a receiver has to answer one try.
    pub timeout: Duration,
}

impl Default for AlertConfig {
    /// Sweep every 60 s, public webhooks only, 8 tries, backoff from 10 s
    /// up to 1 h, 10 s per try.
    fn default() -> Self {
        AlertConfig {
            sweep: Duration::from_secs(60),
            allow_private: false,
            max_tries: 8,
            backoff: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a rule or an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The rule is not valid: which field, and why.
    #[error("invalid field `{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A relationship the change feed says moved (`Alerts::on_changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedRelationship {
    pub person: EntityId,
    pub brand: EntityId,
}

/// The alert service: rules, evaluation and delivery over one store.
pub struct Alerts {
    book: AlertBook,
    config: AlertConfig,
    sender: webhook::Sender,
    evaluate: Notify,
    deliver: Notify,
    /// When each rule was last evaluated (this process only).
    evaluated: Mutex<HashMap<u64, DateTime<Utc>>>,
    /// Where fired alerts are announced besides their webhooks: the
    /// change feed (`Alerts::announce_to`).
    announce: std::sync::OnceLock<Arc<dyn AlertSink>>,
}

/// Where fired alerts are announced as they are recorded (the change
/// feed, `http::stream::Hub`). Told after the alerts are durable in the
/// store; an announcement is not retained or resumable, the store is.
pub trait AlertSink: Send + Sync + 'static {
    /// Alerts recorded together, in the order recorded.
    fn announce(&self, alerts: &[AlertRecord]);
}

fn invalid(field: &'static str, message: impl Into<String>) -> AlertError {
    AlertError::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks a rule's fields other than its URL's addresses.
fn check_spec(spec: &RuleSpec) -> Result<(), AlertError> {
    if let Some(b) = &spec.brand {
        EntityId::new(b).map_err(|e| invalid("brand", e.to_string()))?;
    }
    if let Some(k) = spec.kind
        && !matches!(k, EntityKind::Consumer | EntityKind::Influencer)
    {
        return Err(invalid("kind", "must be consumer or influencer"));
    }
    let range = match spec.metric {
        Metric::Score => 0.0..=100.0,
        Metric::Trend7d => -100.0..=100.0,
    };
    for (field, v) in [("threshold", spec.threshold), ("rearm", spec.rearm)] {
        if !range.contains(&v) {
            return Err(invalid(
                field,
                format!(
                    "must be a number from {} to {} for this metric",
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    let far_side = match spec.direction {
        crate::store::alerts::Direction::Below => spec.rearm >= spec.threshold,
        crate::store::alerts::Direction::Above => spec.rearm <= spec.threshold,
    };
    if !far_side {
        return Err(invalid(
            "rearm",
            "must be on the other side of the threshold (at or above it for `below`, at or \
             below it for `above`): the rule re-arms when the value crosses back past it",
        ));
    }
    if spec.dwell_seconds > MAX_DWELL_SECONDS {
        return Err(invalid(
            "dwell_seconds",
            format!("must be at most {MAX_DWELL_SECONDS} (30 days)"),
        ));
    }
    if spec.webhook_url.len() > MAX_URL_LEN {
        return Err(invalid(
            "webhook_url",
            format!("must be at most {MAX_URL_LEN} bytes"),
        ));
    }
    Ok(())
}

impl Alerts {
    pub fn new(book: AlertBook, config: AlertConfig) -> Arc<Alerts> {
        let sender = webhook::Sender::new(config.timeout, config.allow_private);
        Arc::new(Alerts {
            book,
            config,
            sender,
            evaluate: Notify::new(),
            deliver: Notify::new(),
            evaluated: Mutex::new(HashMap::new()),
            announce: std::sync::OnceLock::new(),
        })
    }

    /// The store of rules, alerts and deliveries.
    pub fn book(&self) -> &AlertBook {
        &self.book
    }

    /// Checks and stores a rule with a new secret (answered once, in the
    /// returned rule), and wakes the evaluator. `Invalid` names the field.
    pub async fn create(&self, spec: RuleSpec, now: DateTime<Utc>) -> Result<Rule, AlertError> {
        check_spec(&spec)?;
        let (url, allow) = (spec.webhook_url.clone(), self.config.allow_private);
        // Resolving a host name blocks.
        tokio::task::spawn_blocking(move || webhook::check_url(&url, allow))
            .await
            .map_err(|e| AlertError::Store(StoreError::internal(e)))?
            .map_err(|e| invalid("webhook_url", e.to_string()))?;
        let secret = format!("whsec_{}", crate::auth::hex(&crate::auth::random_bytes()));
        let rule = self.book.create_rule(spec, secret, now).await?;
        self.evaluate.notify_one();
        Ok(rule)
    }

    /// When the rule was last evaluated by this process.
    pub fn evaluated_at(&self, rule: u64) -> Option<DateTime<Utc>> {
        self.evaluated.lock().get(&rule).copied()
    }

    /// Announces fired alerts to `sink` from now on (once; a second call
    /// is ignored).
    pub fn announce_to(&self, sink: Arc<dyn AlertSink>) {
        let _ = self.announce.set(sink);
    }

    /// The hook of the change feed: these relationships moved, so evaluate
    /// now rather than at the next tick. Every rule is evaluated on the
    /// current scores (a rule's brands may be many; the list is for when
    /// the evaluation narrows to them).
    pub fn on_changes(&self, changed: &[ChangedRelationship]) {
        if !changed.is_empty() {
            self.evaluate.notify_one();
        }
    }

    /// Starts the evaluator and the deliverer on the current tokio runtime;
    /// they run as long as the runtime does.
    pub fn start<S: EventStore>(self: &Arc<Self>, engine: Arc<Engine<S>>) {
        tokio::spawn(Arc::clone(self).evaluate_loop(engine));
        tokio::spawn(Arc::clone(self).deliver_loop());
    }

    async fn evaluate_loop<S: EventStore>(self: Arc<Self>, engine: Arc<Engine<S>>) {
        // The engine's version when last evaluated, and the (generation,
        // position) of the ranking evaluated then.
        let mut version_seen: Option<u64> = None;
        let mut seen: Option<(u64, u64)> = None;
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            let woken = tokio::select! {
                _ = self.evaluate.notified() => true,
                _ = tokio::time::sleep(TICK) => false,
            };
            let sweep_due = last_sweep.is_none_or(|t| t.elapsed() >= self.config.sweep);
            let version = engine.version();
            let moved = version_seen != Some(version);
            if !woken && !sweep_due && !moved {
                continue;
            }
            let started = tokio::time::Instant::now();
            let now = Utc::now();
            // The shared ranking, within the engine's staleness: asking for
            // the folded position would force a whole ranking build at every
            // change of a stream, for one evaluator (readers share it).
            let ranking = match engine.ranking(now, 0).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(cause = %e, "could not evaluate the alert rules; will retry");
                    continue;
                }
            };
            let this = (ranking.generation, ranking.position);
            if !woken && !sweep_due && seen == Some(this) {
                // Nothing new to evaluate until the ranking catches up.
                continue;
            }
            if let Err(e) = self.evaluate_all(&ranking, now).await {
                // Retried at the next change or sweep, not at every tick.
                tracing::warn!(cause = %e, "could not evaluate the alert rules; will retry");
            }
            seen = Some(this);
            version_seen = Some(version);
            if sweep_due {
                last_sweep = Some(started);
            }
        }
    }

    /// Evaluates every rule at `now` on `ranking`; writes what changed.
    async fn evaluate_all(&self, ranking: &Ranking, now: DateTime<Utc>) -> Result<(), AlertError> {
        let rules = self.book.rules().await?;
        if rules.is_empty() {
            return Ok(());
        }
        for rule in rules {
            let phases: HashMap<(String, String), Phase> =
                self.book.phases(rule.id).await?.into_iter().collect();
            let mut changes = Vec::new();
            let brands = ranking.by_brand.iter().filter(|(b, _)| {
                rule.spec
                    .brand
                    .as_deref()
                    .is_none_or(|want| b.as_str() == want)
            });
            for (_, relations) in brands {
                for rel in relations {
                    if rule.spec.kind.is_some_and(|k| k != rel.kind) {
                        continue;
                    }
                    let value = match rule.spec.metric {
                        Metric::Score => rel.score.score,
                        Metric::Trend7d => rel.trend.d7,
                    };
                    let key = (
                        rel.person.as_str().to_string(),
                        rel.brand.as_str().to_string(),
                    );
                    let old = phases.get(&key).copied().unwrap_or(Phase::Armed);
                    let (new, firing) = rule::step(&rule.spec, old, now, value);
                    // A firing always moves the phase (to `Fired`).
                    if new != old {
                        let alert = firing.map(|f| NewAlert {
                            person: key.0.clone(),
                            brand: key.1.clone(),
                            kind: rel.kind,
                            metric: rule.spec.metric,
                            direction: rule.spec.direction,
                            threshold: rule.spec.threshold,
                            value,
                            crossed_at: f.crossed_at,
                            fired_at: now,
                        });
                        changes.push(PhaseChange {
                            person: key.0,
                            brand: key.1,
                            from: old,
                            phase: new,
                            alert,
                        });
                    }
                }
            }
            if !changes.is_empty() {
                let records = self
                    .book
                    .commit(rule.id, changes, rule.spec.webhook_url.clone(), now)
                    .await?;
                if !records.is_empty() {
                    tracing::info!(rule = rule.id, alerts = records.len(), "alerts fired");
                    if let Some(sink) = self.announce.get() {
                        sink.announce(&records);
                    }
                    self.deliver.notify_one();
                }
            }
            self.evaluated.lock().insert(rule.id, now);
        }
        Ok(())
    }

    async fn deliver_loop(self: Arc<Self>) {
        loop {
            let now = Utc::now();
            let next = match self.deliver_due(now).await {
                Ok(Some(next)) => next,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(cause = %e, "could not deliver webhooks; will retry");
                    IDLE
                }
            };
            tokio::select! {
                _ = self.deliver.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    /// Tries the deliveries due at `now`; answers how long to wait for the
    /// next (`None`: more are due now).
    async fn deliver_due(&self, now: DateTime<Utc>) -> Result<Option<Duration>, AlertError> {
        // Claimed for two tries' time and a margin: long enough that no
        // other server tries them meanwhile, short enough that a delivery
        // whose deliverer died mid-try goes out soon after.
        let lease = 2 * self.config.timeout + LEASE_MARGIN;
        let lease_until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let (due, next) = self.book.claim_due(now, lease_until, BATCH).await?;
        if due.is_empty() {
            let wait = next.map_or(IDLE, |n| (n - now).to_std().unwrap_or(Duration::ZERO));
            return Ok(Some(wait.min(IDLE)));
        }
        let secrets: HashMap<u64, String> = self
            .book
            .rules()
            .await?
            .into_iter()
            .map(|r| (r.id, r.secret))
            .collect();
        let tries = due.into_iter().filter_map(|d| {
            let secret = secrets.get(&d.rule)?.clone();
            let sender = self.sender.clone();
            Some(tokio::task::spawn_blocking(move || {
                let at = Utc::now();
                let outcome =
                    sender.send(&d.url, &d.body, &d.idempotency_key, &secret, at.timestamp());
                (d, at, outcome)
            }))
        });
        let mut tried = Vec::new();
        for t in futures_util::future::join_all(tries).await {
            let (d, at, outcome) = t.map_err(|e| AlertError::Store(StoreError::internal(e)))?;
            tried.push(self.after_try(d, at, outcome));
        }
        // One commit for the batch: a commit is a disk sync.
        self.book.update_deliveries(tried).await?;
        Ok(None)
    }

    /// A delivery after a try at `at`.
    fn after_try(
        &self,
        mut d: Delivery,
        at: DateTime<Utc>,
        outcome: Result<(), String>,
    ) -> Delivery {
        d.tries += 1;
        d.last_attempt = Some(at);
        match outcome {
            Ok(()) => {
                d.state = DeliveryState::Delivered;
                d.delivered_at = Some(Utc::now());
                d.last_error = None;
            }
            Err(e) => {
                tracing::debug!(delivery = d.id, tries = d.tries, cause = %e, "webhook try failed");
                d.last_error = Some(e);
                if d.tries >= self.config.max_tries {
                    d.state = DeliveryState::Dead;
                } else {
                    let wait = webhook::backoff(
                        self.config.backoff,
                        self.config.backoff_cap,
                        d.tries,
                        rand::random_range(0.5..=1.0),
                    );
                    d.next_attempt = at + chrono::Duration::from_std(wait).unwrap_or_default();
                }
            }
        }
        d
    }
}
