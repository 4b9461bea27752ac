//! The engine: the single owner of derived state, and the one place where
//! ingest meets scoring.
//!
//! Write path: validated events -> role checks against the graph -> the store
//! (durable; group-committed with concurrent requests) -> folded into the
//! `ScoreState`. A request is answered only after both, so a client reads its
//! own writes. Duplicates are decided by the store.
//!
//! Read path: a single relationship is explained on demand from the current
//! state under a read lock (exact, at any time). Ranked lists and brand
//! summaries read a `Ranking`: every relationship now from the live series
//! (incremental, kept per event; a batch evaluation while it catches up) and
//! batch evaluations at the trend points, recomputed on a blocking thread
//! when the state has changed, and shared.
//!
//! Folding happens on one fold thread that takes every waiting batch at
//! once. Folding late events refolds the log; that happens on a copy so
//! readers are never held up by it, and concurrent late batches share it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{Entity, EntityId, EntityKind, Event};
use crate::ingest::{FieldError, Rejection, Warning};
use crate::score::relspace::RelSnapshot;
use crate::score::{BatchScores, Explanation, RelationScore, ScoreState, ScoringModel};
use crate::store::{EventStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `atomic` was asked for and some events were invalid: nothing stored.
    #[error("{} of the events are invalid; nothing was stored", .0.len())]
    AtomicRejected(Vec<Rejection>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// What a submission did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    /// The rejected events (the HTTP edge keeps the first 1,000).
    pub rejected: Vec<Rejection>,
    /// How many events were rejected, including any not listed in `rejected`.
    pub rejected_count: usize,
    /// Fields of kept events that were stored but are not used by their
    /// type (validation's warnings), by index.
    pub warnings: Vec<Warning>,
}

impl IngestReport {
    /// Adds validation's warnings, leaving out those of rejected events
    /// (nothing of those was kept).
    pub fn with_warnings(mut self, mut warnings: Vec<Warning>) -> Self {
        warnings.retain(|w| {
            self.rejected
                .binary_search_by_key(&w.index, |r| r.index)
                .is_err()
        });
        self.warnings = warnings;
        self
    }
}

/// Trend of a score: now minus 1, 7 and 30 days before.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Trend {
    pub d1: f64,
    pub d7: f64,
    pub d30: f64,
}

/// One ranked relationship.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RankedRelation {
    pub person: EntityId,
    pub brand: EntityId,
    pub kind: EntityKind,
    #[serde(flatten)]
    pub score: RelationScore,
    pub trend: Trend,
}

/// Every relationship's score at `as_of`, with trends, grouped by brand and
/// by person. Built from one batch evaluation per trend point.
#[derive(Debug, Clone)]
pub struct Ranking {
    pub as_of: DateTime<Utc>,
    pub version: u64,
    pub by_brand: HashMap<EntityId, Vec<RankedRelation>>,
    pub by_person: HashMap<EntityId, Vec<(EntityId, f64)>>,
    pub relationships: usize,
}

/// How far the incremental (live) scores had drifted from a full batch
/// recompute.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RescoreReport {
    pub events: usize,
    pub relationships: usize,
    /// Largest absolute score difference, in points.
    pub max_drift: f64,
    /// The live series' own bound on its error, raw units.
    pub live_error_bound: f64,
    /// Whether the live series had caught up (else `max_drift` compares a
    /// batch with a batch).
    pub live_synced: bool,
    /// Work the live series has done since it was built.
    pub live: crate::score::live::LiveStats,
    pub seconds: f64,
    pub as_of: DateTime<Utc>,
}

/// The derived state and what guards it; shared with the fold thread.
struct Derived {
    state: RwLock<ScoreState>,
    /// Serialises changes, so a refold on a copy never loses a concurrent fold.
    fold: Mutex<()>,
    /// Bumped on every change of state.
    version: std::sync::atomic::AtomicU64,
}

impl Derived {
    fn read(&self) -> RwLockReadGuard<'_, ScoreState> {
        self.state.read().expect("state lock")
    }

    /// Runs `change` on the state: in place when it is cheap (`in_place`
    /// says so), else on a copy that is swapped in, so readers are not held
    /// up by a refold.
    fn change<T>(
        &self,
        payload: T,
        in_place: impl FnOnce(&ScoreState, &T) -> bool,
        change: impl FnOnce(&mut ScoreState, T),
    ) {
        let _guard = self.fold.lock().expect("fold lock");
        let cheap = in_place(&self.read(), &payload);
        if cheap {
            change(&mut self.state.write().expect("state lock"), payload);
        } else {
            let mut next = self.read().clone();
            change(&mut next, payload);
            *self.state.write().expect("state lock") = next;
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Events to fold, and who waits for them.
type FoldJob = (Vec<Event>, tokio::sync::oneshot::Sender<()>);

/// The fold thread: takes every job waiting, folds them together (one
/// refold at most, however many of them came late), then answers each.
/// Concurrent writers whose batches arrive out of event-time order would
/// otherwise each refold the log; here they share one refold per round,
/// and no HTTP worker thread is held up by it.
fn fold_loop(derived: Arc<Derived>, rx: std::sync::mpsc::Receiver<FoldJob>) {
    let mut next: Option<FoldJob> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut events = first.0;
        let mut waiting = vec![first.1];
        while let Ok((more, tx)) = rx.try_recv() {
            events.extend(more);
            waiting.push(tx);
        }
        derived.change(
            events,
            |s, events| s.appends_in_order(events),
            |s, events| {
                s.apply(events);
            },
        );
        for tx in waiting {
            let _ = tx.send(());
        }
        next = sync_live(&derived, &rx);
    }
}

/// Longest hold of the write lock by one slice of live-series catch-up.
const SYNC_SLICE: std::time::Duration = std::time::Duration::from_millis(20);

/// Brings the live series up to date after the writers were answered, in
/// slices of at most `SYNC_SLICE` under the write lock, so readers wait at
/// most one slice; yields to new fold jobs (folding comes first, the series
/// catches up after: a job that arrives is returned). Until it has caught
/// up, readers get batch evaluations.
fn sync_live(derived: &Derived, rx: &std::sync::mpsc::Receiver<FoldJob>) -> Option<FoldJob> {
    loop {
        {
            let _guard = derived.fold.lock().expect("fold lock");
            if derived.read().live_synced() {
                return None;
            }
            let caught_up = derived
                .state
                .write()
                .expect("state lock")
                .sync_live(Some(Instant::now() + SYNC_SLICE));
            if caught_up {
                return None;
            }
        }
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(std::sync::mpsc::TryRecvError::Empty) => continue,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

pub struct Engine<S> {
    store: S,
    model: Arc<ScoringModel>,
    derived: Arc<Derived>,
    folder: Mutex<std::sync::mpsc::Sender<FoldJob>>,
    ranking: RwLock<Option<Arc<Ranking>>>,
    ranking_build: tokio::sync::Mutex<()>,
}

impl<S: EventStore> Engine<S> {
    /// Opens the engine on a store: replays the whole log into state.
    pub async fn open(store: S, model: Arc<ScoringModel>) -> Result<Self, EngineError> {
        let entities = store.entities().await?;
        let events = store.scan().await?;
        let m = Arc::clone(&model);
        let state = tokio::task::spawn_blocking(move || ScoreState::build(m, entities, events))
            .await
            .map_err(|e| EngineError::Store(StoreError::internal(e)))?;
        let derived = Arc::new(Derived {
            state: RwLock::new(state),
            fold: Mutex::new(()),
            version: Default::default(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let for_thread = Arc::clone(&derived);
        std::thread::Builder::new()
            .name("fusion-fold".into())
            .spawn(move || fold_loop(for_thread, rx))
            .map_err(|e| EngineError::Store(StoreError::internal(e)))?;
        Ok(Self {
            store,
            model,
            derived,
            folder: Mutex::new(tx),
            ranking: RwLock::new(None),
            ranking_build: tokio::sync::Mutex::new(()),
        })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn model(&self) -> &ScoringModel {
        &self.model
    }

    /// The current state, read-locked. Writers hold the lock only to fold
    /// events that come after everything seen, or to swap in a refolded copy.
    pub fn state(&self) -> RwLockReadGuard<'_, ScoreState> {
        self.derived.read()
    }

    pub fn version(&self) -> u64 {
        self.derived
            .version
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stores and applies validated events. `rejected` are the events of the
    /// same request that failed validation; with `atomic` any of them (or a
    /// role conflict found here) rejects the whole request.
    pub async fn submit(
        &self,
        events: Vec<(usize, Event)>,
        rejected: Vec<Rejection>,
        atomic: bool,
    ) -> Result<IngestReport, EngineError> {
        let mut pending = HashMap::new();
        let (report, new) = self
            .store_checked(events, rejected, atomic, true, &mut pending)
            .await?;
        if !new.is_empty() {
            self.fold_stored(new).await;
        }
        Ok(report)
    }

    /// The first half of `submit`: role checks, then the durable append.
    /// With `keep`, answers the events that were new too; a caller that folds
    /// them must do so in order. `pending` carries the kinds given to new
    /// entities by events not folded (yet), so a bulk loader can store batch
    /// after batch with the same checks as the service.
    pub async fn store_checked(
        &self,
        events: Vec<(usize, Event)>,
        mut rejected: Vec<Rejection>,
        atomic: bool,
        keep: bool,
        pending: &mut HashMap<EntityId, EntityKind>,
    ) -> Result<(IngestReport, Vec<Event>), EngineError> {
        let mut good = Vec::with_capacity(events.len());
        {
            let state = self.state();
            for (index, event) in events {
                match state.check_roles(&event, pending) {
                    Ok(()) => good.push(event),
                    Err(conflict) => rejected.push(Rejection {
                        index,
                        id: Some(event.id.to_string()),
                        errors: vec![FieldError {
                            field: conflict.field.to_string(),
                            message: conflict.message,
                        }],
                    }),
                }
            }
        }
        rejected.sort_by_key(|r| r.index);
        if atomic && !rejected.is_empty() {
            return Err(EngineError::AtomicRejected(rejected));
        }
        let (appended, good) = if good.is_empty() {
            (
                crate::store::Appended {
                    inserted: Vec::new(),
                },
                good,
            )
        } else if keep {
            (self.store.append(good.clone()).await?, good)
        } else {
            (self.store.append(good).await?, Vec::new())
        };
        // A duplicate this process has not folded is an event another process
        // stored (a second server, or a commit that completed after a crash
        // was replayed): an id names one event, so fold the copy we were sent.
        let new: Vec<Event> = {
            let state = self.state();
            good.into_iter()
                .zip(&appended.inserted)
                .filter_map(|(e, &ins)| (ins || !state.contains(&e.id)).then_some(e))
                .collect()
        };
        let report = IngestReport {
            accepted: appended.accepted(),
            duplicates: appended.duplicates(),
            rejected_count: rejected.len(),
            rejected,
            warnings: Vec::new(),
        };
        Ok((report, new))
    }

    /// Folds stored events into the state (on the fold thread) and returns
    /// once they are readable.
    pub async fn fold_stored(&self, events: Vec<Event>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.folder.lock().expect("folder lock").send((events, tx));
        if sent.is_ok() {
            let _ = rx.await;
        }
    }

    /// Registers or replaces an entity.
    pub async fn register(&self, entity: Entity) -> Result<(), EngineError> {
        if let Some(kind) = self.state().kind(&entity.id)
            && kind.is_person() != entity.kind.is_person()
            && kind != entity.kind
        {
            return Err(EngineError::Invalid(format!(
                "'{}' is already known as a {}; it cannot become a {}",
                entity.id,
                kind.as_str(),
                entity.kind.as_str()
            )));
        }
        self.store.put_entity(entity.clone()).await?;
        self.derived
            .change(entity, |_, _| false, |s, e| s.register(e));
        Ok(())
    }

    /// Erases an entity: its events, edges and relationships, and every
    /// score they touched is recomputed as if they had never been.
    pub async fn erase(&self, id: &EntityId) -> Result<u64, EngineError> {
        if self.state().kind(id).is_none() {
            return Err(EngineError::NotFound(format!("no entity '{id}'")));
        }
        let removed = self.store.erase(id).await?;
        self.derived.change(id, |_, _| false, |s, id| s.erase(id));
        Ok(removed)
    }

    /// One relationship at `at`, with trend and reasons.
    pub fn relationship(
        &self,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
    ) -> Option<(Explanation, Trend)> {
        let state = self.state();
        let now = state.explain(person, brand, at)?;
        let past = |days: i64| {
            state
                .score_at(person, brand, at - Duration::days(days))
                .unwrap_or(50.0)
        };
        let trend = Trend {
            d1: now.score - past(1),
            d7: now.score - past(7),
            d30: now.score - past(30),
        };
        Some((now, trend))
    }

    /// The ranking of every relationship at about `now`: the shared one if it
    /// is current, else a fresh batch evaluation (one at a time).
    pub async fn ranking(self: &Arc<Self>, now: DateTime<Utc>) -> Arc<Ranking> {
        let fresh =
            |r: &Ranking| r.version == self.version() && (now - r.as_of) < Duration::seconds(60);
        if let Some(r) = self.ranking.read().expect("ranking lock").as_ref()
            && fresh(r)
        {
            return Arc::clone(r);
        }
        let _building = self.ranking_build.lock().await;
        if let Some(r) = self.ranking.read().expect("ranking lock").as_ref()
            && fresh(r)
        {
            return Arc::clone(r);
        }
        let version = self.version();
        let engine = Arc::clone(self);
        let ranking =
            tokio::task::spawn_blocking(move || Arc::new(engine.build_ranking(now, version)))
                .await
                .expect("ranking task");
        *self.ranking.write().expect("ranking lock") = Some(Arc::clone(&ranking));
        ranking
    }

    /// Every relationship's score at `now`, without trends (for the
    /// materialised table): from the live series when `now` is at or after
    /// the latest event, else a batch evaluation on a snapshot.
    pub async fn current_scores(self: &Arc<Self>, now: DateTime<Utc>) -> BatchScores {
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let snapshot = {
                let state = engine.state();
                if let Some(live) = live_scores(&state, now) {
                    return live;
                }
                RelSnapshot::build(&state, now)
            };
            snapshot.into_scores(&engine.model, now)
        })
        .await
        .expect("scoring task")
    }

    /// Takes snapshots at now and at the trend points under the read lock,
    /// then propagates them without it, so folds are not held up.
    fn build_ranking(&self, now: DateTime<Utc>, version: u64) -> Ranking {
        let times = [
            now,
            now - Duration::days(1),
            now - Duration::days(7),
            now - Duration::days(30),
        ];
        // Now from the live series (kept per event); the trend points are in
        // the past, where only a batch evaluation knows the graph.
        let (live, snapshots, kinds) = {
            let state = self.state();
            let live = live_scores(&state, now);
            let snapshots: Vec<RelSnapshot> = times
                .iter()
                .skip(usize::from(live.is_some()))
                .map(|&t| RelSnapshot::build(&state, t))
                .collect();
            let kinds: HashMap<EntityId, EntityKind> = state.entities().into_iter().collect();
            (live, snapshots, kinds)
        };
        let mut batches: Vec<BatchScores> = live.into_iter().collect();
        let skip = batches.len();
        batches.extend(
            snapshots
                .into_iter()
                .zip(times.into_iter().skip(skip))
                .map(|(s, t)| s.into_scores(&self.model, t)),
        );
        let current = batches.remove(0);
        rank(current, &batches, &kinds, version)
    }

    /// Full batch recompute, compared with the incremental (live) scores
    /// the engine serves at `now`. With `replay`, the log is first replayed
    /// into a fresh state, which is compared and swapped in (the service:
    /// its state has lived through many folds); without, the batch runs on
    /// the current state (`fusion rescore`, whose state was just folded from
    /// the log: one state in memory instead of two).
    pub async fn rescore(
        self: &Arc<Self>,
        now: DateTime<Utc>,
        replay: bool,
    ) -> Result<RescoreReport, EngineError> {
        let started = Instant::now();
        let fresh = if replay {
            let entities = self.store.entities().await?;
            let events = self.store.scan().await?;
            let model = Arc::clone(&self.model);
            let fresh =
                tokio::task::spawn_blocking(move || ScoreState::build(model, entities, events))
                    .await
                    .map_err(|e| EngineError::Store(StoreError::internal(e)))?;
            Some(fresh)
        } else {
            None
        };
        let engine = Arc::clone(self);
        let (fresh, report) = tokio::task::spawn_blocking(move || {
            let state = engine.state();
            let live = live_scores(&state, now);
            let live_synced = live.is_some();
            let before = live.unwrap_or_else(|| state.batch(now));
            let batch_of = fresh.as_ref().unwrap_or(&state);
            let after = batch_of.batch(now);
            let report = RescoreReport {
                events: batch_of.event_count(),
                relationships: after.scores.len(),
                max_drift: drift(&before, &after),
                live_error_bound: state.live().error_bound(),
                live_synced,
                live: state.live().stats(),
                seconds: 0.0,
                as_of: now,
            };
            drop(state);
            (fresh, report)
        })
        .await
        .map_err(|e| EngineError::Store(StoreError::internal(e)))?;
        if let Some(fresh) = fresh {
            self.derived
                .change(fresh, |_, _| true, |s, fresh| *s = fresh);
        }
        Ok(RescoreReport {
            seconds: started.elapsed().as_secs_f64(),
            ..report
        })
    }
}

/// The live series' scores at `now`, if `now` is at or after the latest event.
fn live_scores(state: &ScoreState, now: DateTime<Utc>) -> Option<BatchScores> {
    let model = state.model();
    let rows = state.live_components_at(now)?;
    Some(BatchScores {
        at: now,
        scores: rows
            .into_iter()
            .map(|(k, c)| (k, RelationScore::from_components(model, c)))
            .collect(),
    })
}

/// Largest score difference between two evaluations, counting a relationship
/// missing on one side as 50 there.
pub fn drift(a: &BatchScores, b: &BatchScores) -> f64 {
    let mut worst = 0.0f64;
    for (k, x) in &a.scores {
        let y = b.scores.get(k).map_or(50.0, |s| s.score);
        worst = worst.max((x.score - y).abs());
    }
    for (k, y) in &b.scores {
        if !a.scores.contains_key(k) {
            worst = worst.max((y.score - 50.0).abs());
        }
    }
    worst
}

fn rank(
    current: BatchScores,
    past: &[BatchScores],
    kinds: &HashMap<EntityId, EntityKind>,
    version: u64,
) -> Ranking {
    let now = current.at;
    let then = |i: usize, k: &(EntityId, EntityId)| past[i].scores.get(k).map_or(50.0, |s| s.score);
    let mut by_brand: HashMap<EntityId, Vec<RankedRelation>> = HashMap::new();
    let mut by_person: BTreeMap<EntityId, Vec<(EntityId, f64)>> = BTreeMap::new();
    for (key, score) in &current.scores {
        let (person, brand) = key;
        let trend = Trend {
            d1: score.score - then(0, key),
            d7: score.score - then(1, key),
            d30: score.score - then(2, key),
        };
        by_brand
            .entry(brand.clone())
            .or_default()
            .push(RankedRelation {
                person: person.clone(),
                brand: brand.clone(),
                kind: kinds.get(person).copied().unwrap_or(EntityKind::Consumer),
                score: *score,
                trend,
            });
        by_person
            .entry(person.clone())
            .or_default()
            .push((brand.clone(), score.score));
    }
    Ranking {
        as_of: now,
        version,
        relationships: current.scores.len(),
        by_brand,
        by_person: by_person.into_iter().collect(),
    }
}
