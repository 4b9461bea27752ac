//! What the service reports about itself: the names of its Prometheus
//! metrics, the few helpers the engine and the HTTP layer record them with,
//! and the logging set-up (text or JSON). Metric names live only here.
//!
//! Recording goes through the `metrics` facade: with no recorder installed
//! (every command but `serve`, and the library's tests) it costs nothing.
//! Must not decide anything: it only counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};

use crate::engine::IngestReport;

/// What a metric is, for its `# TYPE` line and its start value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A counter with no labels: exposed at 0 from the start.
    Counter,
    /// A counter whose series are its labels' values, each from its first
    /// count (the values are not all known in advance).
    LabelledCounter,
    /// A gauge: exposed at 0 from the start.
    Gauge,
    /// A histogram: exposed from its first sample.
    Histogram,
}

/// One metric the service exposes: its name, kind and help text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The Prometheus name.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// The `# HELP` text, which is also the constant's documentation.
    pub help: &'static str,
}

/// Declares each metric once: a documented constant for its name, and an
/// entry of [`METRICS`] with its kind and help text, so the `# HELP` lines
/// and the start values cannot drift from the names.
macro_rules! metrics_table {
    ($($name:ident = $value:literal, $kind:ident, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $name: &str = $value;
        )*
        /// Every metric the service exposes (`register`).
        pub const METRICS: &[Metric] = &[
            $(Metric { name: $value, kind: MetricKind::$kind, help: $help },)*
        ];
    };
}

metrics_table! {
    EVENTS_ACCEPTED = "fusion_events_accepted_total", Counter,
        "Events stored by a request (new ids).";
    EVENTS_DUPLICATE = "fusion_events_duplicate_total", Counter,
        "Events whose id was already stored.";
    EVENTS_REJECTED = "fusion_events_rejected_total", Counter,
        "Events refused, whatever the number of bad fields.";
    EVENT_FIELD_ERRORS = "fusion_event_field_errors_total", LabelledCounter,
        "Field errors of refused events, by field (`field` label; `other` for a field no event type has, so senders cannot grow the label set).";
    COMMIT_SECONDS = "fusion_commit_seconds", Histogram,
        "Seconds from handing events to the store to their commit.";
    LOG_HEAD_WAIT_SECONDS = "fusion_log_head_wait_seconds", Histogram,
        "PostgreSQL: seconds a committed append waited for the `log_head` row lock that numbers events (behind other appends, of any server).";
    LOG_HEAD_HOLD_SECONDS = "fusion_log_head_hold_seconds", Histogram,
        "PostgreSQL: seconds a committed append held the `log_head` row lock, from its grant to the commit (every other append waits that long).";
    COMMIT_GROUP_REQUESTS = "fusion_commit_group_requests", Histogram,
        "Append requests the store committed together in one transaction (group commit), per commit.";
    FOLD_WAIT_SECONDS = "fusion_fold_wait_seconds", Histogram,
        "Seconds a write waits for the fold after its commit (the reorder window, the round, a refold).";
    WRITE_TRANSIT_SECONDS = "fusion_write_transit_seconds", Histogram,
        "Seconds from the earliest event time of a change to its sending to the fold thread (the sender's stamp to the fold, the commit included; the reorder window holds back stragglers only when this is shorter than it).";
    FOLD_LAG_EVENTS = "fusion_fold_lag_events", Gauge,
        "Stored events waiting to be folded into the scores.";
    FOLD_LAG_SECONDS = "fusion_fold_lag_seconds", Gauge,
        "Age of the oldest such wait, seconds.";
    LIVE_LAG_EVENTS = "fusion_live_lag_events", Gauge,
        "Folded events the live series (every relationship's current score) has not applied yet (a drift rebuild it owes counted as one).";
    LIVE_LAG_SECONDS = "fusion_live_lag_seconds", Gauge,
        "Seconds since the live series was last current: since the first change after it caught up (0 when caught up).";
    LIVE_BUILDS = "fusion_live_builds_total", Counter,
        "Checkpoint builds of the live series installed (a batch evaluation of every relationship each, off the state's lock).";
    LIVE_BUILDS_DISCARDED = "fusion_live_builds_discarded_total", Counter,
        "Checkpoint builds of the live series thrown away: a state that changed their inputs was swapped in while they ran.";
    LIVE_BUILD_SECONDS = "fusion_live_build_seconds", Histogram,
        "Seconds each checkpoint build of the live series took (its plan's read of the inputs and the build, both off the locks), installed or not.";
    LIVE_FOLD_LOCK_HOLD_SECONDS = "fusion_live_fold_lock_hold_seconds", Histogram,
        "Seconds the live thread held the fold lock (the fold thread waits that long at most), each time, by `what`: `plan` (a copy of what a checkpoint build's or a drift rebuild's plan reads, or finding nothing to do), `slice` (one slice of per-event catch-up). (`install`, a build swapped in, held it until task h66; it now takes the write lock alone.)";
    LIVE_FOLD_LOCK_HOLD_MAX_SECONDS = "fusion_live_fold_lock_hold_max_seconds", Gauge,
        "The longest such hold since start, seconds.";
    LIVE_LONG_EVENTS = "fusion_live_long_events_total", LabelledCounter,
        "Events of the live thread's catch-up that took over 50 ms each (a slice checks its 5 ms budget between events only), by `cause`: `check` (the event ended with a drift check, a pass over every residual row), `pushes` (its pushes alone).";
    LIVE_EVENT_MAX_SECONDS = "fusion_live_event_max_seconds", Gauge,
        "The longest one event of the live thread's catch-up took to apply since start (a drift check after it included), seconds.";
    LIVE_EVENT_MAX_PUSHES = "fusion_live_event_max_pushes", Gauge,
        "The entries that longest event pushed.";
    LIVE_DRIFT_BUILDS = "fusion_live_drift_builds_total", LabelledCounter,
        "Drift rebuilds of the live series (the drift check passed its limit) made off the locks by the live thread, by `outcome`: `installed`, `discarded` (a state that changed their inputs was swapped in, or an event of the same time came).";
    LIVE_DRIFT_BUILD_SECONDS = "fusion_live_drift_build_seconds", Histogram,
        "Seconds each drift rebuild took (its read of the inputs and the build, off the locks), installed or not.";
    RANKING_BUILD_SECONDS = "fusion_ranking_build_seconds", Histogram,
        "Seconds each phase of a ranking build took, by `phase`: `read` (under the state's read lock: the live series' rows or a batch snapshot of now, the trend points' snapshots), `evaluate` (now scored off the lock: the live rows, or a batch evaluation when the live series lags), `past` (the trend points' batch evaluations, when not reused), `rank` (grouping, sorting and summaries per brand), `total` (the whole build, its wait for the lock included).";
    RANKING_BUILDS = "fusion_ranking_builds_total", LabelledCounter,
        "Ranking builds by where their scores of now came from, `rows`: `live` (the live series, caught up), `lagging` (the live series as it stands while it lags, its position the one it reflects), `batch` (a batch evaluation of every relationship: the series lags and answers no ranking, or a time before the latest event).";
    RANKING_AGE_SECONDS = "fusion_ranking_age_seconds", Histogram,
        "Age of the ranking each brand listing, summary or dashboard read of now was answered from: seconds since it was taken, 0 when it reflects every folded event (readers never wait for a build; the ranking maintainer keeps it within the staleness while builds take less than half of it).";
    RANKING_LAG_EVENTS = "fusion_ranking_lag_events", Gauge,
        "Folded events the ranking served by the latest listing, summary or dashboard read did not reflect.";
    FOLD_ROUND_SECONDS = "fusion_fold_round_seconds", Histogram,
        "Seconds each phase of a fold thread's round took, by `phase`: `lock` (waiting for the fold lock, held by the live thread's plan copies and slices), `fold` (events later than everything folded, in place, the lock waits included), `refold` (late events from a checkpoint, or a whole build), `publish` (the position and a snapshot's capture), `checkpoint` (a copy of the fold's state, at most every 0.5 s, the lock waits included), `checkpoint_lock` (its wait for the fold lock and the read lock, which the live thread's holds lengthen), `total` (the whole round).";
    RELATIONSHIP_READ_SECONDS = "fusion_relationship_read_seconds", Histogram,
        "Seconds each phase of an uncached relationship read took, by `phase`: `lock` (waiting for the state's read lock), `walk` (one adjoint walk taken, per walk: none when kept ones served), `pass` (the sums over what the walks reach, the trend and the draft of the reasons, walks excluded), `reasons` (the listed events, from the kept ones or the store), `json` (the answer's body), `total` (the engine's whole read, from the lock's wait to the reasons).";
    LIVE_RESUMES = "fusion_live_resumes_total", Counter,
        "Refolds of late events after the live series' checkpoint that continued the series (its events since pushed) instead of building it again.";
    HTTP_SECONDS = "fusion_http_request_duration_seconds", Histogram,
        "Request latency by method, route pattern (never the raw path: it holds ids) and status.";
    STORE_ERRORS = "fusion_store_errors_total", LabelledCounter,
        "Store failures seen by the service, by kind (`unavailable`, `full`, `internal`).";
    OPEN_CONNECTIONS = "fusion_open_connections", Gauge,
        "Client connections open now.";
    REFUSALS = "fusion_requests_refused_total", LabelledCounter,
        "Requests refused by the edge, by status (401, 403, 421, 429).";
    EVENTS_HELD = "fusion_events", Gauge,
        "Events in the state.";
    WRITE_LOCK_HOLD_SECONDS = "fusion_write_lock_hold_seconds", Histogram,
        "How long the scoring state's write lock was held, each time (readers wait that long at most).";
    WRITE_LOCK_HOLD_MAX_SECONDS = "fusion_write_lock_hold_max_seconds", Gauge,
        "The longest such hold since start, seconds.";
    EVENTS_OVERLOADED = "fusion_events_overloaded_total", Counter,
        "Events refused by back-pressure (503 `overloaded`): the fold queue was full.";
    FOLD_REBUILDS = "fusion_fold_rebuilds_total", LabelledCounter,
        "Builds of the whole state from the log by the fold thread, by cause (`late`: an event earlier than the latest folded; `context`: a registration or an erasure).";
    FOLD_REBUILD_SECONDS = "fusion_fold_rebuild_seconds", Histogram,
        "Seconds each such build took (off the state's lock; folds wait).";
    FOLD_REFOLDS = "fusion_fold_refolds_total", Counter,
        "Refolds by the fold thread for late events from an event-time checkpoint before them (the events after it, not the whole log).";
    FOLD_REFOLD_SECONDS = "fusion_fold_refold_seconds", Histogram,
        "Seconds each refold took, the store's read of the events after the checkpoint included (off the state's lock; folds wait).";
    FOLD_REFOLD_EVENTS = "fusion_fold_refold_events", Histogram,
        "Events each refold folded on its checkpoint.";
    FOLD_REFOLD_READ_SECONDS = "fusion_fold_refold_read_seconds", Histogram,
        "Seconds each refold spent producing the events after its checkpoint, from the fold thread's memory or read from the store (part of `fusion_fold_refold_seconds`).";
    FOLD_REFOLD_TAILS = "fusion_fold_refold_tails_total", LabelledCounter,
        "Refolds by where their tail came from: `memory` (the events the fold thread keeps), `store` (read back: the memory did not reach the checkpoint), `mismatch` (a memory tail that would not give the state's events plus the round's: the state was built from the store instead; a bug if ever nonzero).";
    FOLD_RECENT_EVENTS = "fusion_fold_recent_events", Gauge,
        "Events the fold thread keeps in memory for refolds' tails (those folded since its oldest checkpoint), after the last round.";
    FOLD_RECENT_BYTES = "fusion_fold_recent_bytes", Gauge,
        "Estimated bytes of `fusion_fold_recent_events` (the events, their ids, texts and free objects).";
    DEAD_LETTERS_KEPT = "fusion_dead_letters_kept_total", LabelledCounter,
        "Rejections kept in the dead-letter store, by route pattern.";
    DEAD_LETTERS_NOT_KEPT = "fusion_dead_letters_not_kept_total", Counter,
        "Rejections not kept: past the first 1,000 of one request.";
    DEAD_LETTERS_DROPPED = "fusion_dead_letters_dropped_total", Counter,
        "Letters the retention (count and age) dropped, oldest first.";
    DEAD_LETTERS_REPLAYED = "fusion_dead_letters_replayed_total", Counter,
        "Letters replayed, ingested and removed.";
    DEAD_LETTERS_HELD = "fusion_dead_letters", Gauge,
        "Letters held now (sampled at each scrape).";
    FEED_SUBSCRIBERS = "fusion_feed_subscribers", Gauge,
        "Subscribers of the change feed (`GET /v1/stream`) connected now.";
    FEED_CHANGES = "fusion_feed_changes_published_total", Counter,
        "Changes the feed published.";
    FEED_CUTOFFS = "fusion_feed_cutoffs_total", Counter,
        "Subscribers cut off for falling behind (`event: cutoff`).";
}

/// Describes every metric of [`METRICS`] to the installed recorder (its
/// `# HELP` line) and exposes each unlabelled counter and gauge at 0, so a
/// metric is on `/metrics` from the start and not only after its first
/// count: a dashboard's `rate()` needs the 0 before the first cut-off.
pub fn register() {
    for m in METRICS {
        match m.kind {
            MetricKind::Counter => {
                metrics::describe_counter!(m.name, m.help);
                counter!(m.name).increment(0);
            }
            MetricKind::LabelledCounter => metrics::describe_counter!(m.name, m.help),
            MetricKind::Gauge => {
                metrics::describe_gauge!(m.name, m.help);
                gauge!(m.name).increment(0.0);
            }
            MetricKind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Events the log follower sent to the fold (`engine::follow`): those
/// another server of the same database stored, and now and then one of
/// this server's own read between its commit and its fold (folded once).
pub const FOLLOWED_EVENTS: &str = "fusion_followed_events_total";
/// Rebuilds of the state because another server registered or erased.
pub const FOLLOWED_REBUILDS: &str = "fusion_followed_rebuilds_total";

/// Histogram buckets for every `*_seconds` metric: 0.5 ms to 30 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Histogram buckets for `fusion_commit_group_requests`: 1 to 1,024
/// requests in one commit.
pub const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Counts what one submission did.
pub fn record_ingest(report: &IngestReport) {
    counter!(EVENTS_ACCEPTED).increment(report.accepted as u64);
    counter!(EVENTS_DUPLICATE).increment(report.duplicates as u64);
    counter!(EVENTS_REJECTED).increment(report.rejected_count as u64);
    record_field_errors(&report.rejected);
}

/// Counts refused events and their field errors (an atomic request).
pub fn record_rejections(rejected: &[crate::ingest::Rejection]) {
    counter!(EVENTS_REJECTED).increment(rejected.len() as u64);
    record_field_errors(rejected);
}

fn record_field_errors(rejected: &[crate::ingest::Rejection]) {
    for r in rejected {
        for e in &r.errors {
            counter!(EVENT_FIELD_ERRORS, "field" => field_label(&e.field)).increment(1);
        }
    }
}

/// A bounded label for a field name: a wire field (`performers[2]` counts as
/// `performers`), or `other`.
fn field_label(field: &str) -> &'static str {
    let base = field.split(['[', '.']).next().unwrap_or(field);
    crate::ingest::ALL_FIELDS
        .iter()
        .find(|f| **f == base)
        .copied()
        .unwrap_or("other")
}

/// Counts the letters one request kept (one route each), those past the
/// per-request cap, and those the retention dropped meanwhile.
pub fn record_dead_letters(routes: &[String], not_kept: u64, dropped: u64) {
    let mut by_route: BTreeMap<&str, u64> = BTreeMap::new();
    for r in routes {
        *by_route.entry(route_label(r)).or_default() += 1;
    }
    for (route, n) in by_route {
        counter!(DEAD_LETTERS_KEPT, "route" => route).increment(n);
    }
    counter!(DEAD_LETTERS_NOT_KEPT).increment(not_kept);
    counter!(DEAD_LETTERS_DROPPED).increment(dropped);
}

/// A bounded label for a route: an ingest route's pattern, or `other`.
fn route_label(route: &str) -> &'static str {
    [
        "/v1/events",
        "/v1/batch",
        "/v1/track",
        "/v1/identify",
        "/v1/group",
        "/v1/cloudevents",
        "fusion ingest",
    ]
    .into_iter()
    .find(|r| *r == route)
    .unwrap_or("other")
}

pub fn record_replayed(n: u64) {
    counter!(DEAD_LETTERS_REPLAYED).increment(n);
}

/// Sets the gauge of letters held (at a scrape).
pub fn sample_dead_letters(held: u64) {
    gauge!(DEAD_LETTERS_HELD).set(held as f64);
}

/// Records one hold of the state's write lock (and the longest so far).
pub fn record_write_lock_hold(held: Duration) {
    static LONGEST_NS: AtomicU64 = AtomicU64::new(0);
    histogram!(WRITE_LOCK_HOLD_SECONDS).record(held.as_secs_f64());
    record_longest(&LONGEST_NS, WRITE_LOCK_HOLD_MAX_SECONDS, held);
}

/// Sets the gauge `name` to `held` when it is the longest of `longest`
/// (nanoseconds) so far; answers whether it was.
fn record_longest(longest: &AtomicU64, name: &'static str, held: Duration) -> bool {
    let ns = held.as_nanos().min(u64::MAX as u128) as u64;
    let longer = ns > longest.fetch_max(ns, Ordering::Relaxed);
    if longer {
        gauge!(name).set(held.as_secs_f64());
    }
    longer
}

/// Records one hold of the fold lock by the live thread, held for `what`
/// (`plan` or `slice`; `engine::live`), and the longest so far.
pub fn record_live_fold_lock_hold(what: &'static str, held: Duration) {
    static LONGEST_NS: AtomicU64 = AtomicU64::new(0);
    histogram!(LIVE_FOLD_LOCK_HOLD_SECONDS, "what" => what).record(held.as_secs_f64());
    record_longest(&LONGEST_NS, LIVE_FOLD_LOCK_HOLD_MAX_SECONDS, held);
}

/// Longest event of the live thread's catch-up so far (nanoseconds).
static LIVE_EVENT_LONGEST_NS: AtomicU64 = AtomicU64::new(0);

/// One event of the live thread's catch-up (`engine::live`) took `took`
/// and pushed `pushes` entries; `checked`: a drift check followed it.
/// Counts it when over 50 ms, and keeps the longest.
pub fn record_live_event(took: Duration, pushes: u64, checked: bool) {
    if took >= Duration::from_millis(50) {
        let cause = if checked { "check" } else { "pushes" };
        counter!(LIVE_LONG_EVENTS, "cause" => cause).increment(1);
    }
    if record_longest(&LIVE_EVENT_LONGEST_NS, LIVE_EVENT_MAX_SECONDS, took) {
        gauge!(LIVE_EVENT_MAX_PUSHES).set(pushes as f64);
    }
}

/// One drift rebuild of the live series made off the locks, how long it
/// took, and whether it was installed.
pub fn record_live_drift_build(took: Duration, installed: bool) {
    let outcome = if installed { "installed" } else { "discarded" };
    counter!(LIVE_DRIFT_BUILDS, "outcome" => outcome).increment(1);
    histogram!(LIVE_DRIFT_BUILD_SECONDS).record(took.as_secs_f64());
}

/// Counts one build of the whole state by the fold thread, with its cause
/// (`late` or `context`) and how long it took.
pub fn record_fold_rebuild(cause: &'static str, took: Duration) {
    counter!(FOLD_REBUILDS, "cause" => cause).increment(1);
    histogram!(FOLD_REBUILD_SECONDS).record(took.as_secs_f64());
}

/// Counts one refold from an event-time checkpoint by the fold thread,
/// with the events it folded on the checkpoint and how long it took.
pub fn record_fold_refold(events: usize, took: Duration) {
    counter!(FOLD_REFOLDS).increment(1);
    histogram!(FOLD_REFOLD_SECONDS).record(took.as_secs_f64());
    histogram!(FOLD_REFOLD_EVENTS).record(events as f64);
}

/// A refold's read of the events after its checkpoint (`engine::refold`).
pub fn record_fold_refold_read(took: Duration) {
    histogram!(FOLD_REFOLD_READ_SECONDS).record(took.as_secs_f64());
}

/// Where a refold's tail came from: `memory`, `store` or `mismatch`
/// (`engine::refold`).
pub fn record_fold_refold_tail(source: &'static str) {
    counter!(FOLD_REFOLD_TAILS, "source" => source).increment(1);
}

/// The events the fold thread keeps for refolds, and their estimated bytes.
pub fn record_fold_recent(events: usize, bytes: usize) {
    gauge!(FOLD_RECENT_EVENTS).set(events as f64);
    gauge!(FOLD_RECENT_BYTES).set(bytes as f64);
}

/// One checkpoint build of the live series: how long it took, and whether
/// it was installed or thrown away (`engine::live`).
pub fn record_live_build(took: Duration, installed: bool) {
    counter!(if installed {
        LIVE_BUILDS
    } else {
        LIVE_BUILDS_DISCARDED
    })
    .increment(1);
    histogram!(LIVE_BUILD_SECONDS).record(took.as_secs_f64());
}

/// One phase of a ranking build (`engine::rankings`): `read`, `evaluate`,
/// `past`, `rank` or `total`.
pub fn record_ranking_build(phase: &'static str, took: Duration) {
    histogram!(RANKING_BUILD_SECONDS, "phase" => phase).record(took.as_secs_f64());
}

/// A ranking build read its scores of now from `rows`: `live`, `lagging`
/// or `batch` (`Engine::build_ranking`).
pub fn record_ranking_rows(rows: &'static str) {
    counter!(RANKING_BUILDS, "rows" => rows).increment(1);
}

/// A listing, summary or dashboard read of now was answered from a
/// ranking `age` old that lags the folded log by `lag` events
/// (`Engine::ranking_lag`).
pub fn record_ranking_served(age: Duration, lag: u64) {
    histogram!(RANKING_AGE_SECONDS).record(age.as_secs_f64());
    gauge!(RANKING_LAG_EVENTS).set(lag as f64);
}

/// One phase of a fold thread's round (`engine::fold_loop`) took this long.
pub fn record_fold_round(phase: &'static str, took: Duration) {
    histogram!(FOLD_ROUND_SECONDS, "phase" => phase).record(took.as_secs_f64());
}

/// One phase of an uncached relationship read (`Engine::relationship`, the
/// relationship route): `lock`, `walk`, `pass`, `reasons`, `json` or
/// `total`.
pub fn record_relationship_read(phase: &'static str, took: Duration) {
    histogram!(RELATIONSHIP_READ_SECONDS, "phase" => phase).record(took.as_secs_f64());
}

/// A refold continued the live series instead of building it again.
pub fn record_live_resume() {
    counter!(LIVE_RESUMES).increment(1);
}

/// Counts the events of a write refused by back-pressure.
pub fn record_overloaded(events: usize) {
    counter!(EVENTS_OVERLOADED).increment(events as u64);
}

/// One group commit of the store's writer: how many append requests it
/// took (`store::embedded`, `store::postgres`).
pub fn record_commit_group(requests: usize) {
    histogram!(COMMIT_GROUP_REQUESTS).record(requests as f64);
}

/// One PostgreSQL append's wait for the `log_head` lock and its hold
/// (`store::postgres`).
pub fn record_log_head(waited: Duration, held: Duration) {
    histogram!(LOG_HEAD_WAIT_SECONDS).record(waited.as_secs_f64());
    histogram!(LOG_HEAD_HOLD_SECONDS).record(held.as_secs_f64());
}

pub fn record_commit(elapsed: Duration) {
    histogram!(COMMIT_SECONDS).record(elapsed.as_secs_f64());
}

/// A write's wait for the fold of its events, after their commit.
pub fn record_fold_wait(elapsed: Duration) {
    histogram!(FOLD_WAIT_SECONDS).record(elapsed.as_secs_f64());
}

/// A change's transit from its earliest event's time to the fold thread
/// (nothing for an event dated ahead of the clock).
pub fn record_write_transit(transit: chrono::TimeDelta) {
    if let Ok(transit) = transit.to_std() {
        histogram!(WRITE_TRANSIT_SECONDS).record(transit.as_secs_f64());
    }
}

pub fn record_store_error(err: &crate::store::StoreError) {
    let kind = match err {
        crate::store::StoreError::Unavailable(_) => "unavailable",
        crate::store::StoreError::Full(_) => "full",
        crate::store::StoreError::Internal(_) => "internal",
    };
    counter!(STORE_ERRORS, "kind" => kind).increment(1);
}

/// Events handed to the fold thread and not folded yet, by ticket.
struct FoldWaits {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, (Instant, usize)>>,
}

fn fold_waits() -> &'static FoldWaits {
    static WAITS: OnceLock<FoldWaits> = OnceLock::new();
    WAITS.get_or_init(|| FoldWaits {
        next: AtomicU64::new(0),
        waiting: Mutex::new(BTreeMap::new()),
    })
}

/// Held while events wait for the fold thread; dropping it ends the wait.
pub struct FoldWait(u64);

impl FoldWait {
    pub fn begin(events: usize) -> Self {
        let waits = fold_waits();
        let ticket = waits.next.fetch_add(1, Ordering::Relaxed);
        waits
            .waiting
            .lock()
            .expect("fold waits lock")
            .insert(ticket, (Instant::now(), events));
        FoldWait(ticket)
    }
}

impl Drop for FoldWait {
    fn drop(&mut self) {
        fold_waits()
            .waiting
            .lock()
            .expect("fold waits lock")
            .remove(&self.0);
    }
}

/// Since when the live series has been behind the folded events: from
/// the first change after it was last current (not from the first scrape
/// that saw it behind), until the live thread finds it current again.
///
/// Why (task h34's debt): the moment was taken at the first scrape that saw
/// the series behind, so under a stream that let it catch up now and then
/// every scrape read about 0 s while `fusion_live_lag_events` read 400 to
/// 7,500; and a scrape took "no pending events" for current, while a series
/// waiting for a checkpoint build has none pending and is not.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct BehindSince(Option<Instant>);

impl BehindSince {
    /// The series is current (`true`) or behind (`false`) at `now`.
    fn note(&mut self, current: bool, now: Instant) {
        match (current, self.0) {
            (true, _) => self.0 = None,
            (false, None) => self.0 = Some(now),
            (false, Some(_)) => {}
        }
    }

    /// Seconds behind at `now` (0 when current).
    fn seconds(&self, now: Instant) -> f64 {
        self.0
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
    }
}

fn live_behind() -> &'static Mutex<BehindSince> {
    static SINCE: Mutex<BehindSince> = Mutex::new(BehindSince(None));
    &SINCE
}

/// The live thread says whether the live series is current (after each
/// catch-up), and the state's changes that leave it behind say `false`
/// as they wake the live thread.
pub fn live_synced(synced: bool) {
    live_behind()
        .lock()
        .expect("live lag lock")
        .note(synced, Instant::now());
}

/// Sets the lag gauges (called when metrics are scraped): `live_events`
/// is the state's count of folded events the live series has not applied,
/// `live_current` whether it is current (`ScoreState::live_synced`: no
/// pending event and no checkpoint build owed).
pub fn sample_lags(live_events: usize, live_current: bool, events_held: usize) {
    let now = Instant::now();
    let (events, oldest) = {
        let waiting = fold_waits().waiting.lock().expect("fold waits lock");
        let events: usize = waiting.values().map(|(_, n)| n).sum();
        let oldest = waiting.values().map(|(t, _)| *t).min();
        (events, oldest)
    };
    gauge!(FOLD_LAG_EVENTS).set(events as f64);
    gauge!(FOLD_LAG_SECONDS).set(oldest.map_or(0.0, |t| (now - t).as_secs_f64()));
    gauge!(LIVE_LAG_EVENTS).set(live_events as f64);
    let seconds = {
        let mut behind = live_behind().lock().expect("live lag lock");
        // A change that did not wake the live thread (none should) is
        // still counted, from this scrape on.
        behind.note(live_current, now);
        behind.seconds(now)
    };
    gauge!(LIVE_LAG_SECONDS).set(seconds);
    gauge!(EVENTS_HELD).set(events_held as f64);
}

/// Counts one open connection while it lives (kept in the connection's
/// extensions, dropped when the connection closes).
pub struct ConnectionGauge;

impl ConnectionGauge {
    pub fn open() -> Self {
        gauge!(OPEN_CONNECTIONS).increment(1.0);
        ConnectionGauge
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

/// Counts events followed from other servers.
pub fn record_followed(events: usize) {
    counter!(FOLLOWED_EVENTS).increment(events as u64);
}

/// Counts a rebuild for another server's registration or erasure.
pub fn record_followed_rebuild() {
    counter!(FOLLOWED_REBUILDS).increment(1);
}

/// Counts changes the feed published.
pub fn record_feed_changes(n: usize) {
    counter!(FEED_CHANGES).increment(n as u64);
}

/// Counts a subscriber cut off.
pub fn record_feed_cutoff() {
    counter!(FEED_CUTOFFS).increment(1);
}

/// Counts one feed subscriber while it lives (kept by its stream).
pub struct SubscriberGauge;

impl SubscriberGauge {
    pub fn open() -> Self {
        gauge!(FEED_SUBSCRIBERS).increment(1.0);
        SubscriberGauge
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        gauge!(FEED_SUBSCRIBERS).decrement(1.0);
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the span's fields (request id, route, key id).
    Json,
}

/// Installs the global subscriber on stderr, filtered by `RUST_LOG`
/// (default `info`). A second call does nothing.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {

    /// Task h34 saw `fusion_live_lag_seconds` read 0 throughout streams
    /// while `fusion_live_lag_events` read 400 to 7,500: the moment the
    /// series fell behind was taken at the first scrape that saw it, and
    /// "no pending events" was taken for current.
    #[test]
    fn the_live_lag_counts_from_the_change_that_left_the_series_behind_not_from_the_scrape() {
        let t0 = Instant::now();
        let ms = |n| t0 + std::time::Duration::from_millis(n);
        let mut behind = BehindSince::default();
        behind.note(false, t0); // a fold wakes the live thread
        behind.note(false, ms(300)); // the first scrape sees it behind
        assert!((behind.seconds(ms(300)) - 0.3).abs() < 1e-9);
        behind.note(false, ms(700)); // another change: still since t0
        assert!((behind.seconds(ms(900)) - 0.9).abs() < 1e-9);
        behind.note(true, ms(1000)); // caught up
        assert_eq!(behind.seconds(ms(1000)), 0.0);
        behind.note(false, ms(1100));
        assert!((behind.seconds(ms(1150)) - 0.05).abs() < 1e-9);
    }

    use super::*;

    /// Regression: two metrics merged in as plain constants, outside the
    /// table, and so had no `# HELP` line and no start value. Every metric
    /// name of this file is declared through `metrics_table!`.
    #[test]
    fn every_metric_is_declared_in_the_table() {
        let source = include_str!("telemetry.rs");
        let plain = ["pub const ", ": &str = \"fusion_"].concat();
        let stray: Vec<&str> = source.lines().filter(|l| l.contains(&plain)).collect();
        assert!(
            stray.is_empty(),
            "declare these in metrics_table!: {stray:?}"
        );
        for m in METRICS {
            assert!(m.name.starts_with("fusion_") && !m.help.is_empty(), "{m:?}");
        }
    }

    #[test]
    fn field_labels_are_bounded() {
        assert_eq!(field_label("amount"), "amount");
        assert_eq!(field_label("performers[3]"), "performers");
        assert_eq!(field_label("colour"), "other");
        assert_eq!(field_label("line 7"), "other");
    }
}
