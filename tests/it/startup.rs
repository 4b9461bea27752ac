//! A start that does not wait for the live series (issue #10, task h25:
//! `EngineOptions::ready_before_live`, what `serve` does): the engine is
//! ready once every stored event is folded, the live series is built on
//! the live thread, and what reads every relationship at once waits for
//! it. These tests hold that such a start answers the same bits as a start
//! that waited, from a snapshot and from the whole log, and that a change
//! feed attached while the series is being built is told what it would
//! have been told.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fusion::domain::{EntityId, Event};
use fusion::engine::{Engine, EngineOptions, Snapshots};
use fusion::feed::{Change, FeedSink};
use fusion::generate::{GenerateConfig, write_ndjson};
use fusion::score::ScoringModel;
use fusion::store::{AppendMode, EmbeddedStore, EventStore};

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// A generated stream as JSON lines (large enough that the live series'
/// build is not instant).
fn lines() -> Vec<serde_json::Value> {
    let config = GenerateConfig {
        seed: 11,
        people: 300,
        influencers: 8,
        brands: 10,
        events: 6_000,
        ..GenerateConfig::default()
    };
    let mut out = Vec::new();
    write_ndjson(&config, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn validated(values: &[serde_json::Value]) -> Vec<Event> {
    let valid = fusion::ingest::validate_all(values, &model().currency);
    assert!(valid.rejected.is_empty(), "{:?}", valid.rejected);
    valid.good.into_iter().map(|(_, e)| e).collect()
}

async fn store_of(dir: &std::path::Path, events: &[Event]) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir).unwrap();
    for batch in events.chunks(500) {
        store
            .append(batch.to_vec(), AppendMode::EachEvent)
            .await
            .unwrap();
    }
    store
}

fn options(snapshots: Snapshots, ready_before_live: bool) -> EngineOptions {
    EngineOptions {
        snapshots,
        ready_before_live,
        ..EngineOptions::default()
    }
}

/// Every relationship's ranking entries and scores at `at`, as exact text.
async fn rankings<S: EventStore>(engine: &Arc<Engine<S>>, at: DateTime<Utc>) -> Vec<String> {
    let ranking = engine.ranking(at, 0).await.unwrap();
    let mut out: Vec<String> = ranking
        .by_brand
        .iter()
        .map(|(brand, list)| format!("{brand} {list:?}"))
        .collect();
    out.sort();
    let scores = engine.current_scores(at).await.unwrap();
    out.push(format!("{:?}", scores.scores));
    out
}

fn latest<S: EventStore>(engine: &Engine<S>) -> DateTime<Utc> {
    engine.state().unwrap().latest_time().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_does_not_wait_for_the_live_series_ranks_as_one_that_waited() {
    let events = validated(&lines());
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(dir.path(), &events).await;

    // The reference: a start that builds the live series before it returns.
    let waited = Arc::new(
        Engine::open_with(
            store.clone(),
            model(),
            options(Snapshots::LoadAndWrite { every: 0 }, false),
        )
        .await
        .unwrap(),
    );
    assert!(waited.readiness().await.rankings_ready);
    let at = latest(&waited) + chrono::Duration::hours(1);
    let expected = rankings(&waited, at).await;
    assert!(waited.write_snapshot().await.unwrap());
    drop(waited);

    // From the snapshot, and from the whole log: ranked at once after the
    // open returns, so the reads wait for the build.
    for snapshots in [Snapshots::Load, Snapshots::Off] {
        let engine = Arc::new(
            Engine::open_with(store.clone(), model(), options(snapshots, true))
                .await
                .unwrap(),
        );
        assert_eq!(
            engine.opened_from_snapshot(),
            snapshots == Snapshots::Load,
            "{snapshots:?}"
        );
        assert!(engine.readiness().await.ready, "{snapshots:?}");
        let got = rankings(&engine, at).await;
        assert_eq!(got, expected, "{snapshots:?}");
        assert!(engine.readiness().await.rankings_ready, "{snapshots:?}");
        assert!(engine.state().unwrap().live_synced(), "{snapshots:?}");
    }
}

/// Collects what a change feed publishes.
#[derive(Default)]
struct Collect(Mutex<Vec<Change>>);

impl FeedSink for Collect {
    fn publish(&self, changes: Vec<Change>) {
        self.0.lock().unwrap().extend(changes);
    }
    fn forget(&self, _: &EntityId) {}
}

/// Opens the engine on a copy of the stored stream, attaches a change feed
/// at once, stores `next` and answers what the feed published once the
/// live series has applied it.
async fn feed_after_start(
    stored: &[Event],
    next: &[serde_json::Value],
    ready_before_live: bool,
) -> Vec<Change> {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(dir.path(), stored).await;
    let engine = Arc::new(
        Engine::open_with(store, model(), options(Snapshots::Off, ready_before_live))
            .await
            .unwrap(),
    );
    let sink = engine.attach_feed(|_| Arc::new(Collect::default()));
    let next = validated(next);
    let arrival = next[0].time + chrono::Duration::minutes(1);
    let report = engine
        .submit(
            next.into_iter().enumerate().collect(),
            Vec::new(),
            false,
            arrival,
        )
        .await
        .unwrap();
    assert_eq!(report.accepted, 1, "{report:?}");
    engine.live_built().await;
    // The live thread applies the new event after the fold answers.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up = engine.state().unwrap().live_synced();
        let published = sink.0.lock().unwrap().clone();
        if caught_up && !published.is_empty() {
            return published;
        }
        assert!(
            Instant::now() < deadline,
            "nothing published: {published:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A feed attached while the live series is still being built (regression:
/// attaching it then replayed every folded relationship to it, and the
/// feed's tracker kept all of them) publishes exactly what it publishes
/// after a start that waited: the new event's change, nothing older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_attached_while_the_live_series_is_built_is_told_what_it_would_have_been() {
    let values = lines();
    let stored = validated(&values);
    let mut next = values
        .iter()
        .rev()
        .find(|v| v["type"] == "purchase")
        .expect("the stream has purchases")
        .clone();
    let after = stored.iter().map(|e| e.time).max().unwrap() + chrono::Duration::hours(1);
    next["id"] = "startup-feed-next".into();
    next["time"] = after.to_rfc3339().into();
    next["amount"] = 5000.0.into();
    let next = [next];
    let waited = feed_after_start(&stored, &next, false).await;
    let background = feed_after_start(&stored, &next, true).await;
    assert_eq!(background, waited);
    // Only the new event's changes: none of the stored events'.
    let position = waited[0].position;
    assert!(waited.iter().all(|c| c.position == position), "{waited:?}");
}

/// Two snapshots at two points of the log, the newest `damage`d by the
/// caller: a start reads the newest, refuses it, reads the one before it
/// and folds the longer tail onto it, giving the full fold's rankings.
/// `EventStore::snapshot` ranks them as `snapshots` orders them.
async fn an_older_snapshot_is_read_when_the_newest_is_refused<S, F>(store: S, damage: F)
where
    S: EventStore + Clone,
    F: AsyncFnOnce(&S),
{
    let events = validated(&lines());
    let (head, tail) = events.split_at(events.len() / 2);
    let with = |snapshots| options(snapshots, false);
    let write = async |events: &[Event]| {
        for batch in events.chunks(500) {
            store
                .append(batch.to_vec(), AppendMode::EachEvent)
                .await
                .unwrap();
        }
        let engine = Engine::open_with(
            store.clone(),
            model(),
            with(Snapshots::LoadAndWrite { every: 0 }),
        )
        .await
        .unwrap();
        assert!(engine.write_snapshot().await.unwrap());
    };
    write(head).await;
    write(tail).await;
    let kept = store.snapshots().await.unwrap();
    assert_eq!(kept.len(), 2);
    for (rank, bytes) in kept.iter().enumerate() {
        assert_eq!(store.snapshot(rank).await.unwrap().as_ref(), Some(bytes));
    }
    assert_eq!(store.snapshot(2).await.unwrap(), None);

    let reference = Arc::new(
        Engine::open_with(store.clone(), model(), with(Snapshots::Off))
            .await
            .unwrap(),
    );
    let at = latest(&reference) + chrono::Duration::hours(1);
    let expected = rankings(&reference, at).await;
    drop(reference);
    damage(&store).await;
    let engine = Arc::new(
        Engine::open_with(store.clone(), model(), with(Snapshots::Load))
            .await
            .unwrap(),
    );
    assert!(engine.opened_from_snapshot());
    assert_eq!(rankings(&engine, at).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_snapshot_is_read_when_the_newest_is_refused_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let snapshots = dir.path().join("snapshots");
    an_older_snapshot_is_read_when_the_newest_is_refused(store, async |_: &EmbeddedStore| {
        // Names sort by position: the last is the newest.
        let mut files: Vec<_> = std::fs::read_dir(&snapshots)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "snapshot"))
            .collect();
        files.sort();
        let newest = files.last().unwrap();
        let mut bytes = std::fs::read(newest).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(newest, bytes).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_snapshot_is_read_when_the_newest_is_refused_on_postgres() {
    let db = crate::pg::TestDb::new().await;
    let store = fusion::store::PostgresStore::connect(&db.url)
        .await
        .unwrap();
    let url = db.url.clone();
    an_older_snapshot_is_read_when_the_newest_is_refused(
        store,
        async |_: &fusion::store::PostgresStore| {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            // Its bytes are in chunks (migration 0014): cut after 1,000.
            client
                .batch_execute(
                    "CREATE TEMP TABLE newest AS SELECT id FROM snapshots \
                         ORDER BY position DESC, id DESC LIMIT 1; \
                     DELETE FROM snapshot_chunks WHERE snapshot IN (SELECT id FROM newest) \
                         AND seq > 0; \
                     UPDATE snapshot_chunks SET bytes = substring(bytes from 1 for 1000) \
                         WHERE snapshot IN (SELECT id FROM newest) AND seq = 0",
                )
                .await
                .unwrap();
        },
    )
    .await;
}

/// After a full fold at open, the snapshot written then is saved before the
/// live series' first build runs (regression: at 10M events of the issue's
/// shape the build, beside the snapshot's encoding, outgrew the machine
/// before the snapshot was saved, so every start folded the whole log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_of_a_full_fold_is_saved_before_the_live_series_is_built() {
    let events = validated(&lines());
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(dir.path(), &events).await;
    let engine = Engine::open_with(
        store.clone(),
        model(),
        options(Snapshots::LoadAndWrite { every: 0 }, true),
    )
    .await
    .unwrap();
    assert!(!engine.opened_from_snapshot());
    engine.live_built().await;
    assert_eq!(store.snapshots().await.unwrap().len(), 1);
}
