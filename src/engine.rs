//! The engine: the single owner of derived state, and the one place where
//! ingest meets scoring.
//!
//! Write path: validated events -> the arrival checks (event time not too
//! far ahead of the clock the edge passes in; role checks against the
//! graph) -> the store (durable; group-committed with concurrent requests)
//! -> folded into the `ScoreState`. A request is answered only after both,
//! so a client reads its own writes. Duplicates and conflicts (an id sent
//! again with other content) are decided by the store, and the state folds
//! only the store's copies: what this request inserted, and the stored copy
//! of any id it has not folded yet.
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
//!
//! **A fold that fails** (a panic anywhere in a change of state) is caught:
//! the state is marked broken (no poisoned locks: parking_lot), the waiting
//! writers get `EngineError::NotFolded` (their events are durable), reads
//! and new writes get `EngineError::NotReady` (503) rather than a state that
//! may be half-changed, and a recovery task rebuilds the state from the log
//! off the lock (with back-off while that fails) and hands it to the fold
//! thread, which swaps it in: ready again, without a restart. Opening does
//! the same: a log that cannot be folded leaves an engine that says why,
//! never one that cannot start. `EngineOptions::fold_faults` injects such
//! failures for the tests (`FUSION_FAULT_INJECT`, read by `serve` only).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};

use crate::domain::{Entity, EntityId, EntityKind, Event, EventId};
use crate::ingest::{FieldError, Rejection, Warning};
use crate::score::{
    BatchScores, BrandStats, Explanation, RelSnapshot, RelationScore, ScoreState, ScoresAt,
    ScoringModel,
};
use crate::store::{AppendMode, Appended, EventStore, Outcome, StoreError};

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
    /// The state cannot be read or changed now: a fold failed and it is
    /// being rebuilt from the log (the reason says why); retry shortly.
    #[error("the scores are being rebuilt from the event log ({0}); retry shortly")]
    NotReady(String),
    /// The request's events are stored durably, but folding them into the
    /// scores failed; the state is being rebuilt from the log, which holds
    /// them. A retry is answered as duplicates.
    #[error(
        "the {events} new events were stored durably, but the scores could not be updated \
         ({reason}); they are being rebuilt from the event log, which holds these events: \
         do not resend them (a resend is counted as duplicates)"
    )]
    NotFolded { events: usize, reason: String },
    /// A fault in a read (a bug): nothing was changed.
    #[error("internal error: {0}")]
    Internal(String),
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
    /// About kept events, by index: fields kept but not used by their type
    /// (validation), and duplicates whose attributes differed from the
    /// stored event's (the stored ones stay).
    pub warnings: Vec<Warning>,
}

impl IngestReport {
    /// Adds validation's warnings, leaving out those of rejected events
    /// (nothing of those was kept), beside the store's, in index order.
    pub fn with_warnings(mut self, mut warnings: Vec<Warning>) -> Self {
        warnings.retain(|w| {
            self.rejected
                .binary_search_by_key(&w.index, |r| r.index)
                .is_err()
        });
        self.warnings.extend(warnings);
        self.warnings.sort_by_key(|w| w.index);
        self
    }
}

/// What a rejection says of an event sent under a stored id with other
/// content.
pub const CONFLICT_MESSAGE: &str = "conflicts with the stored event with this id: its type, \
    time or fields differ; an id names one event, so send a changed event under a new id";

/// What a warning says of a duplicate with other attributes.
pub const OTHER_ATTRIBUTES_MESSAGE: &str = "differ from those of the stored event with this id, \
    which were kept: the event is a duplicate (attributes are the sender's metadata, not content)";

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

/// What a brand's summary needs besides its scores (`Engine::brand_facts`).
#[derive(Debug, Clone)]
pub struct BrandFacts {
    /// The registered name, if any.
    pub name: Option<String>,
    /// Service and sales KPIs.
    pub stats: BrandStats,
}

/// An entity's 360° facts besides its relationships (`Engine::entity_facts`).
#[derive(Debug, Clone)]
pub struct EntityFacts {
    /// Its kind.
    pub kind: EntityKind,
    /// Its registration, if it was registered.
    pub registration: Option<Entity>,
    /// Its follower count now (people only).
    pub followers: Option<u64>,
    /// How many stored events name it.
    pub event_count: usize,
    /// The latest events naming it, newest first.
    pub recent: Vec<Event>,
}

/// A page of a timeline (`Engine::timeline`).
#[derive(Debug, Clone)]
pub struct TimelinePage {
    /// Events, newest first.
    pub events: Vec<Event>,
    /// The id to ask the next page with, when there is one.
    pub next_cursor: Option<EventId>,
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

/// How the engine behaves at its edges; `Default` is what `serve` uses
/// without flags.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Events dated more than this ahead of the clock the caller passes to
    /// `submit` are rejected on `time` (a sender's broken clock must not
    /// make every later event late, each refolding the log).
    pub max_future_skew: Duration,
    /// Test hook: the next this many folds (of new events, or rebuilds of
    /// the log after a failure) fail. `serve` sets it from
    /// `FUSION_FAULT_INJECT=fold:N`; zero (inert) everywhere else.
    pub fold_faults: u32,
    /// Test hook: the fold of the log when the engine opens fails
    /// (`FUSION_FAULT_INJECT=open`); false everywhere else.
    pub fail_open: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::hours(24),
            fold_faults: 0,
            fail_open: false,
        }
    }
}

/// Whether the engine can serve, and what has happened to it (`/readyz`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Events in the state (0 while it is being rebuilt).
    pub events: usize,
    /// Folds that failed since start (each one made the state rebuild).
    pub fold_failures: u64,
    /// Rebuilds of the state from the log that completed.
    pub recoveries: u64,
}

/// A read of the current state; see `Engine::state`.
pub type StateGuard<'a> = MappedRwLockReadGuard<'a, ScoreState>;

/// The state and whether it may be read.
struct Slot {
    state: ScoreState,
    /// Set when a change of state failed: the state may be half-changed
    /// and is not served until a rebuild from the log replaces it.
    broken: Option<String>,
}

/// The derived state and what guards it; shared with the fold thread and
/// the recovery task.
struct Derived {
    slot: RwLock<Slot>,
    /// Serialises changes, so a refold on a copy never loses a concurrent fold.
    fold: Mutex<()>,
    /// Bumped on every change of state.
    version: AtomicU64,
    /// Injected failures left (`EngineOptions::fold_faults`).
    faults: AtomicU32,
    fold_failures: AtomicU64,
    recoveries: AtomicU64,
    /// Why the latest rebuild failed, while it keeps failing.
    rebuild_failure: Mutex<Option<String>>,
    /// Wakes the recovery task after a failure.
    failed: tokio::sync::mpsc::UnboundedSender<()>,
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

impl Derived {
    fn read(&self) -> Result<StateGuard<'_>, EngineError> {
        let slot = self.slot.read();
        if let Some(reason) = &slot.broken {
            return Err(EngineError::NotReady(reason.clone()));
        }
        Ok(RwLockReadGuard::map(slot, |s| &s.state))
    }

    fn broken(&self) -> Option<String> {
        self.slot.read().broken.clone()
    }

    /// Fails here if a fault is injected (`EngineOptions::fold_faults`).
    fn fault_point(&self) {
        let injected = self
            .faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            panic!("injected fold failure (FUSION_FAULT_INJECT)");
        }
    }

    /// Runs `change` on the state: in place when it is cheap (`in_place`
    /// says so), else on a copy that is swapped in, so readers are not held
    /// up by a refold. A panic is caught: the state is marked broken and
    /// rebuilt from the log (module docs), and the reason is returned.
    fn change<T>(
        &self,
        payload: T,
        in_place: impl FnOnce(&ScoreState, &T) -> bool,
        change: impl FnOnce(&mut ScoreState, T),
    ) -> Result<(), String> {
        let _guard = self.fold.lock();
        if let Some(reason) = self.broken() {
            return Err(reason);
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let cheap = in_place(&self.slot.read().state, &payload);
            if cheap {
                change(&mut self.slot.write().state, payload);
            } else {
                let mut next = self.slot.read().state.clone();
                change(&mut next, payload);
                self.slot.write().state = next;
            }
        }));
        self.version.fetch_add(1, Ordering::SeqCst);
        outcome.map_err(|panic| self.fail(&panic_message(&*panic)))
    }

    /// Marks the state broken and wakes the recovery task; answers the
    /// reason as readiness will give it.
    fn fail(&self, cause: &str) -> String {
        let reason = format!("a fold failed: {cause}");
        tracing::error!(%reason, "the scoring state is broken; rebuilding it from the event log");
        self.fold_failures.fetch_add(1, Ordering::SeqCst);
        self.slot.write().broken = Some(reason.clone());
        self.version.fetch_add(1, Ordering::SeqCst);
        let _ = self.failed.send(());
        reason
    }

    /// Swaps in a state rebuilt from the log: ready again.
    fn restore(&self, state: ScoreState) {
        let _guard = self.fold.lock();
        *self.slot.write() = Slot {
            state,
            broken: None,
        };
        *self.rebuild_failure.lock() = None;
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        self.version.fetch_add(1, Ordering::SeqCst);
        tracing::info!("the scoring state was rebuilt from the event log; ready again");
    }
}

/// Answers a writer waiting for a fold: the reason if it failed.
type FoldReply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Work for the fold thread.
enum FoldJob {
    /// Stored events to fold, and who waits for them.
    Fold(Vec<Event>, FoldReply),
    /// A state rebuilt from the log after a failure, to swap in.
    Restore(Box<ScoreState>),
}

/// The fold thread: takes every job waiting, folds them together (one
/// refold at most, however many of them came late), then answers each.
/// Concurrent writers whose batches arrive out of event-time order would
/// otherwise each refold the log; here they share one refold per round,
/// and no HTTP worker thread is held up by it. While the state is broken,
/// jobs wait for the rebuilt state and are folded into it.
fn fold_loop(derived: Arc<Derived>, rx: std::sync::mpsc::Receiver<FoldJob>) {
    let mut queued: VecDeque<FoldJob> = VecDeque::new();
    let mut parked: Vec<(Vec<Event>, FoldReply)> = Vec::new();
    loop {
        let job = match queued.pop_front() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut jobs = match job {
            FoldJob::Restore(state) => {
                derived.restore(*state);
                // What waited for the rebuild is folded into it (anything
                // the rebuild already holds is skipped by `apply`).
                queued.extend(parked.drain(..).map(|(e, tx)| FoldJob::Fold(e, tx)));
                continue;
            }
            FoldJob::Fold(events, tx) => vec![(events, tx)],
        };
        while let Ok(more) = rx.try_recv() {
            match more {
                FoldJob::Fold(events, tx) => jobs.push((events, tx)),
                restore @ FoldJob::Restore(_) => {
                    queued.push_back(restore);
                    break;
                }
            }
        }
        if derived.broken().is_some() {
            parked.extend(jobs);
            continue;
        }
        let mut events = Vec::new();
        let mut waiting = Vec::with_capacity(jobs.len());
        for (e, tx) in jobs {
            events.extend(e);
            waiting.push(tx);
        }
        let outcome = derived.change(
            events,
            |s, events| s.appends_in_order(events),
            |s, events| {
                s.apply(events);
                derived.fault_point();
            },
        );
        for tx in waiting {
            let _ = tx.send(outcome.clone());
        }
        if outcome.is_ok()
            && let Some(job) = sync_live(&derived, &rx)
        {
            queued.push_back(job);
        }
    }
}

/// Longest hold of the write lock by one slice of live-series catch-up.
const SYNC_SLICE: std::time::Duration = std::time::Duration::from_millis(20);

/// Brings the live series up to date after the writers were answered, in
/// slices of at most `SYNC_SLICE` under the write lock, so readers wait at
/// most one slice; yields to new fold jobs (folding comes first, the series
/// catches up after: a job that arrives is returned). Until it has caught
/// up, readers get batch evaluations. A failure is a fold failure.
fn sync_live(derived: &Derived, rx: &std::sync::mpsc::Receiver<FoldJob>) -> Option<FoldJob> {
    loop {
        {
            let _guard = derived.fold.lock();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let slot = derived.slot.read();
                if slot.broken.is_some() || slot.state.live_synced() {
                    return true;
                }
                drop(slot);
                let deadline = Instant::now() + SYNC_SLICE;
                derived
                    .slot
                    .write()
                    .state
                    .sync_live(|| Instant::now() >= deadline)
            }));
            match outcome {
                Ok(true) => return None,
                Ok(false) => {}
                Err(panic) => {
                    derived.fail(&panic_message(&*panic));
                    return None;
                }
            }
        }
        match rx.try_recv() {
            Ok(job) => return Some(job),
            Err(std::sync::mpsc::TryRecvError::Empty) => continue,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

/// First wait before a failed rebuild is tried again; it doubles up to
/// `REBUILD_BACKOFF_MAX`.
const REBUILD_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
const REBUILD_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The recovery task: after each failure, rebuilds the state from the log
/// (off every lock) until that works, then hands it to the fold thread.
async fn recovery_loop<S: EventStore>(
    store: Arc<S>,
    model: Arc<ScoringModel>,
    derived: Arc<Derived>,
    mut failed: tokio::sync::mpsc::UnboundedReceiver<()>,
    folder: std::sync::mpsc::Sender<FoldJob>,
) {
    while failed.recv().await.is_some() {
        // Failures noticed meanwhile are covered by this rebuild.
        while failed.try_recv().is_ok() {}
        let mut wait = REBUILD_BACKOFF;
        loop {
            match rebuild(&*store, &model, &derived).await {
                Ok(state) => {
                    if folder.send(FoldJob::Restore(Box::new(state))).is_err() {
                        return;
                    }
                    break;
                }
                Err(reason) => {
                    tracing::error!(%reason, retry_in = ?wait, "cannot rebuild the scoring state");
                    *derived.rebuild_failure.lock() = Some(reason);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(REBUILD_BACKOFF_MAX);
                }
            }
        }
    }
}

/// The state of the whole log, built on a blocking thread; a panic is a
/// failure with its message.
async fn rebuild<S: EventStore>(
    store: &S,
    model: &Arc<ScoringModel>,
    derived: &Arc<Derived>,
) -> Result<ScoreState, String> {
    let entities = store.entities().await.map_err(|e| e.to_string())?;
    let events = store.scan().await.map_err(|e| e.to_string())?;
    let (model, derived) = (Arc::clone(model), Arc::clone(derived));
    tokio::task::spawn_blocking(move || {
        catch_unwind(AssertUnwindSafe(|| {
            derived.fault_point();
            ScoreState::build(model, entities, events)
        }))
        .map_err(|panic| {
            derived.fold_failures.fetch_add(1, Ordering::SeqCst);
            format!(
                "the event log could not be folded: {}",
                panic_message(&*panic)
            )
        })
    })
    .await
    .map_err(|e| e.to_string())?
}

pub struct Engine<S> {
    store: Arc<S>,
    model: Arc<ScoringModel>,
    options: EngineOptions,
    derived: Arc<Derived>,
    folder: std::sync::mpsc::Sender<FoldJob>,
    /// Stopped when the engine is dropped; then the fold thread ends too
    /// (its last sender is gone) and the store is let go.
    recovery: tokio::task::JoinHandle<()>,
    ranking: RwLock<Option<Arc<Ranking>>>,
    ranking_build: tokio::sync::Mutex<()>,
}

impl<S> Drop for Engine<S> {
    fn drop(&mut self) {
        self.recovery.abort();
    }
}

impl<S: EventStore> Engine<S> {
    /// Opens the engine on a store with the default options: replays the
    /// whole log into state.
    pub async fn open(store: S, model: Arc<ScoringModel>) -> Result<Self, EngineError> {
        Self::open_with(store, model, EngineOptions::default()).await
    }

    /// Opens the engine on a store: replays the whole log into state. An
    /// unreachable store is an error; a log that cannot be folded is not:
    /// the engine then starts not ready, says why, and keeps trying to
    /// rebuild (module docs). Must be called within a tokio runtime.
    pub async fn open_with(
        store: S,
        model: Arc<ScoringModel>,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let store = Arc::new(store);
        let entities = store.entities().await?;
        let events = store.scan().await?;
        let m = Arc::clone(&model);
        let fail = options.fail_open;
        let built = tokio::task::spawn_blocking(move || {
            catch_unwind(AssertUnwindSafe(|| {
                if fail {
                    panic!("injected failure of the fold at open (FUSION_FAULT_INJECT)");
                }
                ScoreState::build(m, entities, events)
            }))
            .map_err(|panic| panic_message(&*panic))
        })
        .await
        .map_err(|e| EngineError::Internal(e.to_string()))?;
        let (failed_tx, failed_rx) = tokio::sync::mpsc::unbounded_channel();
        let (state, broken) = match built {
            Ok(state) => (state, None),
            Err(cause) => (ScoreState::new(Arc::clone(&model)), Some(cause)),
        };
        let derived = Arc::new(Derived {
            slot: RwLock::new(Slot {
                state,
                broken: None,
            }),
            fold: Mutex::new(()),
            version: Default::default(),
            faults: AtomicU32::new(options.fold_faults),
            fold_failures: Default::default(),
            recoveries: Default::default(),
            rebuild_failure: Mutex::new(None),
            failed: failed_tx,
        });
        if let Some(cause) = broken {
            derived.fail(&format!("the event log could not be folded: {cause}"));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let for_thread = Arc::clone(&derived);
        std::thread::Builder::new()
            .name("fusion-fold".into())
            .spawn(move || fold_loop(for_thread, rx))
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let recovery = tokio::spawn(recovery_loop(
            Arc::clone(&store),
            Arc::clone(&model),
            Arc::clone(&derived),
            failed_rx,
            tx.clone(),
        ));
        Ok(Self {
            store,
            model,
            options,
            derived,
            folder: tx,
            recovery,
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
    /// `NotReady` while a failed fold is being repaired (the state may be
    /// half-changed then, so it is not served).
    pub fn state(&self) -> Result<StateGuard<'_>, EngineError> {
        self.derived.read()
    }

    pub fn version(&self) -> u64 {
        self.derived.version.load(Ordering::SeqCst)
    }

    /// Whether the engine can serve: its state is whole and the store
    /// answers. The reason names what is wrong.
    pub async fn readiness(&self) -> Readiness {
        let fold_failures = self.derived.fold_failures.load(Ordering::SeqCst);
        let recoveries = self.derived.recoveries.load(Ordering::SeqCst);
        let (events, mut reason) = match self.state() {
            Ok(state) => (state.event_count(), None),
            Err(EngineError::NotReady(why)) => {
                let rebuild = self.derived.rebuild_failure.lock().clone();
                let why = match rebuild {
                    Some(r) => format!("{why}; the rebuild from the event log failed too: {r}"),
                    None => format!("{why}; the state is being rebuilt from the event log"),
                };
                (0, Some(why))
            }
            Err(other) => (0, Some(other.to_string())),
        };
        if reason.is_none()
            && let Err(e) = self.store.ping().await
        {
            reason = Some(e.to_string());
        }
        Readiness {
            ready: reason.is_none(),
            reason,
            events,
            fold_failures,
            recoveries,
        }
    }

    /// Stores and applies validated events. `rejected` are the events of the
    /// same request that failed validation; with `atomic` any of them (or an
    /// event the arrival checks refuse) rejects the whole request. `now` is
    /// the arrival time (the edge reads the clock): events dated more than
    /// `EngineOptions::max_future_skew` after it are refused on `time`.
    pub async fn submit(
        &self,
        events: Vec<(usize, Event)>,
        rejected: Vec<Rejection>,
        atomic: bool,
        now: DateTime<Utc>,
    ) -> Result<IngestReport, EngineError> {
        let mut pending = HashMap::new();
        let (report, new) = self
            .store_checked(events, rejected, atomic, true, now, &mut pending)
            .await?;
        if !new.is_empty() {
            self.fold_stored(new).await?;
        }
        Ok(report)
    }

    /// The first half of `submit`: the arrival checks (time against `now`,
    /// roles), then the durable append.
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
        now: DateTime<Utc>,
        pending: &mut HashMap<EntityId, EntityKind>,
    ) -> Result<(IngestReport, Vec<Event>), EngineError> {
        let latest_accepted = now + self.options.max_future_skew;
        let mut good = Vec::with_capacity(events.len());
        {
            let state = self.state()?;
            for (index, event) in events {
                let refused = if event.time > latest_accepted {
                    Some(FieldError {
                        field: "time".into(),
                        message: format!(
                            "is more than {} ahead of the server clock ({}); \
                             check the sender's clock",
                            describe(self.options.max_future_skew),
                            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ),
                    })
                } else {
                    state
                        .check_roles(&event, pending)
                        .err()
                        .map(|conflict| FieldError {
                            field: conflict.field.to_string(),
                            message: conflict.message,
                        })
                };
                match refused {
                    None => good.push((index, event)),
                    Some(error) => rejected.push(Rejection {
                        index,
                        id: Some(event.id.to_string()),
                        errors: vec![error],
                    }),
                }
            }
        }
        rejected.sort_by_key(|r| r.index);
        if atomic && !rejected.is_empty() {
            return Err(EngineError::AtomicRejected(rejected));
        }
        let mode = if atomic {
            AppendMode::AllOrNothing
        } else {
            AppendMode::EachEvent
        };
        let ids: Vec<EventId> = good.iter().map(|(_, e)| e.id.clone()).collect();
        let (indices, good): (Vec<usize>, Vec<Event>) = good.into_iter().unzip();
        let (appended, kept) = if good.is_empty() {
            let none = Appended {
                outcomes: Vec::new(),
            };
            (none, Vec::new())
        } else if keep {
            (self.store.append(good.clone(), mode).await?, good)
        } else {
            (self.store.append(good, mode).await?, Vec::new())
        };
        let mut kept = kept.into_iter();
        // The state folds only what the store holds: the events inserted
        // now (the store holds exactly these copies) and, for an id the
        // store held already but this process has not folded (another
        // server's event, a commit that completed as a crashed server
        // died, a concurrent request that won), the stored copy.
        let mut warnings = Vec::new();
        let mut stored_ids = Vec::new();
        let mut new = Vec::new();
        {
            // Stored already: a failure now is a failure to fold them.
            let state = self.state().map_err(|e| EngineError::NotFolded {
                events: appended.accepted(),
                reason: e.to_string(),
            })?;
            for (k, outcome) in appended.outcomes.iter().enumerate() {
                let (index, id) = (indices[k], &ids[k]);
                let event = kept.next();
                let mut refuse = |field: &str, message: String| {
                    rejected.push(Rejection {
                        index,
                        id: Some(id.to_string()),
                        errors: vec![FieldError {
                            field: field.to_string(),
                            message,
                        }],
                    })
                };
                match outcome {
                    Outcome::Inserted => {
                        new.extend(event);
                        continue;
                    }
                    Outcome::Duplicate => {}
                    Outcome::DuplicateOtherAttributes => warnings.push(Warning {
                        index,
                        id: Some(id.to_string()),
                        field: "attributes".into(),
                        message: OTHER_ATTRIBUTES_MESSAGE.into(),
                    }),
                    Outcome::Conflict => refuse("id", CONFLICT_MESSAGE.into()),
                    Outcome::Refused(reason) => {
                        refuse("", reason.clone());
                        continue;
                    }
                    Outcome::NotStored => continue,
                }
                if keep && !state.contains(id) {
                    stored_ids.push(id.clone());
                }
            }
        }
        rejected.sort_by_key(|r| r.index);
        let refused = |o: &Outcome| {
            matches!(
                o,
                Outcome::NotStored | Outcome::Refused(_) | Outcome::Conflict
            )
        };
        if atomic && appended.outcomes.iter().any(refused) {
            return Err(EngineError::AtomicRejected(rejected));
        }
        if !stored_ids.is_empty() {
            new.extend(self.store.events_by_id(stored_ids).await?);
        }
        let report = IngestReport {
            accepted: appended.accepted(),
            duplicates: appended.duplicates(),
            rejected_count: rejected.len(),
            rejected,
            warnings,
        };
        Ok((report, new))
    }

    /// Folds stored events into the state (on the fold thread) and returns
    /// once they are readable; `NotFolded` if the fold failed (the events
    /// stay stored; the state is rebuilt from the log).
    pub async fn fold_stored(&self, events: Vec<Event>) -> Result<(), EngineError> {
        let count = events.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.folder.send(FoldJob::Fold(events, tx)).is_err() {
            return Err(EngineError::Internal("the fold thread has stopped".into()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(EngineError::NotFolded {
                events: count,
                reason,
            }),
            Err(_) => Err(EngineError::Internal("the fold thread has stopped".into())),
        }
    }

    /// Runs a change of state (registration, erasure, a swap) after the
    /// store has it; a failure is reported as `NotReady` (the state is
    /// rebuilt from the store, which has the change).
    fn change_state<T>(
        &self,
        payload: T,
        in_place: impl FnOnce(&ScoreState, &T) -> bool,
        change: impl FnOnce(&mut ScoreState, T),
    ) -> Result<(), EngineError> {
        self.derived
            .change(payload, in_place, change)
            .map_err(EngineError::NotReady)
    }

    /// Registers or replaces an entity.
    pub async fn register(&self, entity: Entity) -> Result<(), EngineError> {
        if let Some(kind) = self.state()?.kind(&entity.id)
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
        self.change_state(entity, |_, _| false, |s, e| s.register(e))
    }

    /// Erases an entity: its events, edges and relationships, and every
    /// score they touched is recomputed as if they had never been.
    pub async fn erase(&self, id: &EntityId) -> Result<u64, EngineError> {
        if self.state()?.kind(id).is_none() {
            return Err(EngineError::NotFound(format!("no entity '{id}'")));
        }
        let removed = self.store.erase(id).await?;
        self.change_state(id, |_, _| false, |s, id| s.erase(id))?;
        Ok(removed)
    }

    /// The kind of an entity, `None` when no event or registration names it.
    pub fn kind(&self, id: &EntityId) -> Result<Option<EntityKind>, EngineError> {
        Ok(self.state()?.kind(id))
    }

    /// What a brand's summary needs besides its scores: its registered name
    /// and KPIs. `None` when `brand` is not a brand.
    pub fn brand_facts(&self, brand: &EntityId) -> Result<Option<BrandFacts>, EngineError> {
        let state = self.state()?;
        if state.kind(brand) != Some(EntityKind::Brand) {
            return Ok(None);
        }
        Ok(Some(BrandFacts {
            name: state.registration(brand).and_then(|e| e.name.clone()),
            stats: state.brand_stats(brand),
        }))
    }

    /// The score of (person, brand) at each of `times` (50 where there is
    /// no relationship then); `None` when there is none at any of them nor
    /// at `also`.
    pub fn history(
        &self,
        person: &EntityId,
        brand: &EntityId,
        times: &[DateTime<Utc>],
        also: DateTime<Utc>,
    ) -> Result<Option<Vec<f64>>, EngineError> {
        let state = self.state()?;
        let scores: Vec<Option<f64>> = times
            .iter()
            .map(|&t| state.explain(person, brand, t).map(|e| e.score))
            .collect();
        if scores.iter().all(Option::is_none) && state.explain(person, brand, also).is_none() {
            return Ok(None);
        }
        Ok(Some(
            scores.into_iter().map(|s| s.unwrap_or(50.0)).collect(),
        ))
    }

    /// The facts of an entity's 360° view besides its relationships: kind,
    /// registration, follower count at `now` (people), how many events name
    /// it and the latest `recent` of them, newest first. `None` when no
    /// event or registration names it.
    pub async fn entity_facts(
        &self,
        id: &EntityId,
        now: DateTime<Utc>,
        recent: usize,
    ) -> Result<Option<EntityFacts>, EngineError> {
        let state = self.state()?;
        let Some(kind) = state.kind(id) else {
            return Ok(None);
        };
        let timeline = state.timeline(id);
        Ok(Some(EntityFacts {
            kind,
            registration: state.registration(id).cloned(),
            followers: kind.is_person().then(|| state.followers_at(id, now)),
            event_count: timeline.len(),
            recent: timeline
                .iter()
                .rev()
                .take(recent)
                .map(|&p| state.event_at(p).clone())
                .collect(),
        }))
    }

    /// A page of an entity's timeline, newest first (event time, then id):
    /// at most `limit` events before the event `cursor` (an id of this
    /// timeline), or from the newest. `None` when `cursor` is not an event
    /// of the timeline. An entity nothing names has an empty timeline.
    pub async fn timeline(
        &self,
        id: &EntityId,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Option<TimelinePage>, EngineError> {
        let state = self.state()?;
        let tl = state.timeline(id);
        let start = match cursor {
            None => tl.len(),
            Some(c) => match tl.iter().position(|&p| state.event_at(p).id.as_str() == c) {
                Some(i) => i,
                None => return Ok(None),
            },
        };
        let events: Vec<Event> = tl[..start]
            .iter()
            .rev()
            .take(limit)
            .map(|&p| state.event_at(p).clone())
            .collect();
        let more = start > events.len();
        Ok(Some(TimelinePage {
            next_cursor: more.then(|| events.last().map(|e| e.id.clone())).flatten(),
            events,
        }))
    }

    /// What the impact of a brand's action needs from the state
    /// (`validity::impact::gather`); the estimate runs without the state.
    pub fn impact_inputs(
        &self,
        spec: &crate::validity::impact::ImpactSpec,
    ) -> Result<
        Result<crate::validity::impact::ImpactInputs, crate::validity::ValidityError>,
        EngineError,
    > {
        let state = self.state()?;
        Ok(crate::validity::impact::gather(&state, spec))
    }

    /// One relationship at `at`, with trend and reasons.
    pub fn relationship(
        &self,
        person: &EntityId,
        brand: &EntityId,
        at: DateTime<Utc>,
    ) -> Result<Option<(Explanation, Trend)>, EngineError> {
        let state = self.state()?;
        let Some(now) = state.explain(person, brand, at) else {
            return Ok(None);
        };
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
        Ok(Some((now, trend)))
    }

    /// The ranking of every relationship at about `now`: the shared one if it
    /// is current, else a fresh batch evaluation (one at a time).
    pub async fn ranking(
        self: &Arc<Self>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Ranking>, EngineError> {
        let fresh =
            |r: &Ranking| r.version == self.version() && (now - r.as_of) < Duration::seconds(60);
        if let Some(r) = self.ranking.read().as_ref()
            && fresh(r)
        {
            return Ok(Arc::clone(r));
        }
        let _building = self.ranking_build.lock().await;
        if let Some(r) = self.ranking.read().as_ref()
            && fresh(r)
        {
            return Ok(Arc::clone(r));
        }
        let version = self.version();
        let engine = Arc::clone(self);
        let ranking = tokio::task::spawn_blocking(move || engine.build_ranking(now, version))
            .await
            .map_err(|e| EngineError::Internal(format!("the ranking task failed: {e}")))??;
        let ranking = Arc::new(ranking);
        *self.ranking.write() = Some(Arc::clone(&ranking));
        Ok(ranking)
    }

    /// Every relationship's score at `now`, without trends (for the
    /// materialised table): from the live series when `now` is at or after
    /// the latest event, else a batch evaluation on a snapshot.
    pub async fn current_scores(
        self: &Arc<Self>,
        now: DateTime<Utc>,
    ) -> Result<BatchScores, EngineError> {
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let scores = engine.state()?.scores_at(now);
            Ok(scores.finish(&engine.model))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("the scoring task failed: {e}")))?
    }

    /// Takes snapshots at now and at the trend points under the read lock,
    /// then propagates them without it, so folds are not held up.
    fn build_ranking(&self, now: DateTime<Utc>, version: u64) -> Result<Ranking, EngineError> {
        let times = [
            now,
            now - Duration::days(1),
            now - Duration::days(7),
            now - Duration::days(30),
        ];
        // Now from the live series (kept per event); the trend points are in
        // the past, where only a batch evaluation knows the graph.
        let (current, snapshots, kinds) = {
            let state = self.state()?;
            let current = state.scores_at(now);
            let snapshots: Vec<RelSnapshot> = times[1..]
                .iter()
                .map(|&t| RelSnapshot::build(&state, t))
                .collect();
            let kinds: HashMap<EntityId, EntityKind> = state.entities().into_iter().collect();
            (current, snapshots, kinds)
        };
        let current = current.finish(&self.model);
        let past: Vec<BatchScores> = snapshots
            .into_iter()
            .zip(&times[1..])
            .map(|(s, t)| s.into_scores(&self.model, *t))
            .collect();
        Ok(rank(current, &past, &kinds, version))
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
            let fresh = tokio::task::spawn_blocking(move || {
                catch_unwind(AssertUnwindSafe(|| {
                    ScoreState::build(model, entities, events)
                }))
                .map_err(|panic| {
                    EngineError::Internal(format!(
                        "the event log could not be folded: {}",
                        panic_message(&*panic)
                    ))
                })
            })
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
            Some(fresh)
        } else {
            None
        };
        let engine = Arc::clone(self);
        let (fresh, report) = tokio::task::spawn_blocking(move || {
            let state = engine.state()?;
            let (before, live_synced) = match state.scores_at(now) {
                ScoresAt::Live(scores) => (scores, true),
                batch @ ScoresAt::Batch(_) => (batch.finish(&engine.model), false),
            };
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
            Ok::<_, EngineError>((fresh, report))
        })
        .await
        .map_err(|e| EngineError::Internal(format!("the rescore task failed: {e}")))??;
        if let Some(fresh) = fresh {
            self.change_state(fresh, |_, _| true, |s, fresh| *s = fresh)?;
        }
        Ok(RescoreReport {
            seconds: started.elapsed().as_secs_f64(),
            ..report
        })
    }
}

/// `24h`, `90m`, `30s`: a skew as its flag would give it.
fn describe(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
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
