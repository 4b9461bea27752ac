//! Snapshots of the derived state (issue #10, item 2): a state loaded from
//! a snapshot plus the log after it is bit for bit a full fold's, on both
//! backends, late events in the tail included; snapshots cut off halfway,
//! corrupted, or made with another model are ignored and the log folded;
//! erasure reaches every snapshot.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fusion::domain::{EntityId, Event};
use fusion::engine::{Engine, EngineOptions, Snapshots};
use fusion::generate::GenerateConfig;
use fusion::score::{ScoreState, ScoringModel};
use fusion::store::{AppendMode, EmbeddedStore, EventStore, PostgresStore};

use crate::pg::TestDb;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// A small generated stream, validated, in the generator's (time) order.
fn stream(events: u64) -> Vec<Event> {
    let config = GenerateConfig {
        seed: 7,
        people: 150,
        influencers: 6,
        brands: 8,
        events,
        ..GenerateConfig::default()
    };
    crate::support::generated_events(&config)
}

fn with_snapshots() -> EngineOptions {
    EngineOptions {
        snapshots: Snapshots::LoadAndWrite { every: 0 },
        ..EngineOptions::default()
    }
}

async fn append<S: EventStore>(store: &S, events: &[Event]) {
    for batch in events.chunks(300) {
        store
            .append(batch.to_vec(), AppendMode::EachEvent)
            .await
            .unwrap();
    }
}

/// Every number the engine serves, as exact text (`Debug` prints each f64
/// in its shortest exact form): the scores of every relationship at the
/// latest event and a day later (live or batch, as the read policy
/// decides), the batch at the latest event, the live series' components,
/// and every relationship's explanation.
async fn fingerprint<S: EventStore>(engine: &Engine<S>) -> Vec<String> {
    let (at, keys, mut out) = {
        let state = engine.state().unwrap();
        let at: DateTime<Utc> = state.latest_time().expect("events folded");
        let mut out = vec![format!("events {}", state.event_count())];
        for t in [at, at + chrono::Duration::days(1)] {
            let scores = state.scores_at(t).finish(engine.model());
            out.push(format!("{:?}", scores.scores));
        }
        let batch = state.batch(at);
        out.push(format!("{:?}", batch.scores));
        out.push(format!("{:?}", state.live_components_at(at)));
        let keys: Vec<(EntityId, EntityId)> = batch.scores.keys().cloned().collect();
        (at, keys, out)
    };
    assert!(!keys.is_empty());
    for (person, brand) in keys {
        let explained = engine.relationship(&person, &brand, at).await.unwrap();
        out.push(format!("{explained:?}"));
    }
    out
}

/// Fails on the first line where two fingerprints differ, showing only it.
fn same(a: &[String], b: &[String], what: &str) {
    let cut = |s: &str| s.chars().take(3_000).collect::<String>();
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            let at = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
            let skip = at.saturating_sub(200);
            panic!(
                "{what}: line {i} differs at character {at}:\n{}\n{}",
                cut(&x.chars().skip(skip).collect::<String>()),
                cut(&y.chars().skip(skip).collect::<String>())
            );
        }
    }
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: fingerprints of different lengths"
    );
}

/// Opens an engine; `snapshots` false folds the whole log (the reference).
async fn open<S: EventStore>(store: S, snapshots: bool) -> Engine<S> {
    let options = if snapshots {
        with_snapshots()
    } else {
        EngineOptions::default()
    };
    Engine::open_with(store, model(), options).await.unwrap()
}

/// A snapshot of the first part of `events`, then the rest appended to the
/// store: the state loaded from the snapshot and the tail is the full
/// fold's, bit for bit; answers whether the snapshot was used.
async fn snapshot_then_tail<S: EventStore + Clone>(
    store: S,
    head: &[Event],
    tail: &[Event],
) -> bool {
    append(&store, head).await;
    {
        let first = open(store.clone(), true).await;
        assert!(
            first.write_snapshot().await.unwrap(),
            "a snapshot is written"
        );
    }
    append(&store, tail).await;
    let loaded = open(store.clone(), true).await;
    let folded = open(store.clone(), false).await;
    assert!(!folded.opened_from_snapshot());
    assert_eq!(
        loaded.state().unwrap().event_count(),
        head.len() + tail.len()
    );
    same(
        &fingerprint(&loaded).await,
        &fingerprint(&folded).await,
        "snapshot and tail",
    );
    loaded.opened_from_snapshot()
}

/// The stream split by time, and a tail of late events: the second part
/// with every fifth event of the first part held back into it.
fn splits() -> (Vec<Event>, Vec<Event>, Vec<Event>, Vec<Event>) {
    let events = stream(1_500);
    assert_eq!(events.len(), 1_500);
    let (head, tail) = events.split_at(events.len() * 3 / 5);
    let (mut late_head, mut late_tail) = (Vec::new(), Vec::new());
    for (i, e) in head.iter().enumerate() {
        if i % 5 == 4 {
            late_tail.push(e.clone());
        } else {
            late_head.push(e.clone());
        }
    }
    late_tail.extend(tail.iter().cloned());
    (head.to_vec(), tail.to_vec(), late_head, late_tail)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_and_its_tail_give_the_full_folds_bits_on_the_embedded_store() {
    let (head, tail, late_head, late_tail) = splits();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert!(
        snapshot_then_tail(store, &head, &tail).await,
        "a tail of later events is folded onto the snapshot"
    );
    short_tails(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (dir, store)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    // Late events cannot be appended to a folded state: the whole log is
    // folded, and the answers are still the full fold's.
    assert!(!snapshot_then_tail(store, &late_head, &late_tail).await);
}

/// Tails shorter than the way to the live series' next checkpoint (none,
/// as after a graceful stop, and five events), after 895 events (895 mod
/// 128 = 127): the series is rebuilt at the checkpoint before the
/// snapshot and the snapshot's journal of deltas applied again.
async fn short_tails<D, S: EventStore + Clone>(fresh: impl Fn() -> (D, S)) {
    let events = stream(1_500);
    for tail in [0, 5] {
        let (_keep, store) = fresh();
        let (head, tail) = events[..895 + tail].split_at(895);
        assert!(snapshot_then_tail(store, head, tail).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_and_its_tail_give_the_full_folds_bits_on_postgres() {
    let (head, tail, late_head, late_tail) = splits();
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    assert!(snapshot_then_tail(store, &head, &tail).await);
    for tail in [0, 5] {
        let db = TestDb::new().await;
        let store = PostgresStore::connect(&db.url).await.unwrap();
        let events = &head[..head.len() - 5 + tail];
        let (head, tail) = events.split_at(head.len() - 5);
        assert!(snapshot_then_tail(store, head, tail).await);
    }
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    assert!(!snapshot_then_tail(store, &late_head, &late_tail).await);
}

/// The snapshot files of an embedded store's data directory.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("snapshots"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "snapshot"));
    v.sort();
    v
}

/// Waits (with a generous deadline) for a snapshot this model can load,
/// written in the background after a full fold.
async fn a_valid_snapshot_appears(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let valid = files(dir).iter().any(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            ScoreState::from_snapshot(&bytes, model()).is_ok()
        });
        if valid {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no valid snapshot was written after the full fold"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_corrupted_and_other_models_snapshots_are_ignored_and_replaced() {
    let events = stream(800);
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    append(&store, &events).await;
    let reference = fingerprint(&open(store.clone(), false).await).await;
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 2] = [
        ("cut off halfway", |b| b.truncate(b.len() / 2)),
        ("one byte flipped", |b| {
            let i = b.len() * 2 / 3;
            b[i] ^= 0x10
        }),
    ];
    for (what, damage) in damages {
        {
            let engine = open(store.clone(), true).await;
            engine.write_snapshot().await.unwrap();
        }
        for f in files(dir.path()) {
            let mut bytes = std::fs::read(&f).unwrap();
            damage(&mut bytes);
            std::fs::write(&f, bytes).unwrap();
        }
        let engine = open(store.clone(), true).await;
        assert!(
            !engine.opened_from_snapshot(),
            "a snapshot {what} was loaded"
        );
        same(&fingerprint(&engine).await, &reference, what);
        // A new snapshot follows the full fold.
        a_valid_snapshot_appears(dir.path()).await;
        drop(engine);
        let again = open(store.clone(), true).await;
        assert!(again.opened_from_snapshot(), "after a snapshot {what}");
        same(&fingerprint(&again).await, &reference, what);
    }
    // A snapshot made with another model is not this model's state.
    let mut other = ScoringModel::default_model();
    other.spread *= 2.0;
    let engine = Engine::open_with(store.clone(), Arc::new(other), with_snapshots())
        .await
        .unwrap();
    assert!(!engine.opened_from_snapshot());
}

/// Erasure deletes every snapshot, and no restart ever shows the person,
/// even from a snapshot written before the erasure and put back (as a
/// server that had not heard of it would write).
async fn erasure_reaches_snapshots<S: EventStore + Clone>(store: S) {
    let events = stream(800);
    append(&store, &events).await;
    let engine = Arc::new(open(store.clone(), true).await);
    assert!(engine.write_snapshot().await.unwrap());
    let person = EntityId::new("p3").unwrap();
    assert!(engine.state().unwrap().kind(&person).is_some());
    let before = store.snapshots().await.unwrap();
    assert!(!before.is_empty());
    engine.erase(&person).await.unwrap();
    // Whatever snapshot exists now was made after the erasure.
    for bytes in store.snapshots().await.unwrap() {
        assert!(
            !before.contains(&bytes),
            "a snapshot from before the erasure survived it"
        );
        let (_, state) = ScoreState::from_snapshot(&bytes, model()).unwrap();
        assert_eq!(state.kind(&person), None);
    }
    drop(engine);
    let restarted = open(store.clone(), true).await;
    assert_eq!(restarted.state().unwrap().kind(&person), None);
    // A stale snapshot holding the person, saved back: refused on load
    // (the store holds fewer events than it and its tail).
    let stale = before.into_iter().next().unwrap();
    let (header, _) = ScoreState::from_snapshot(&stale, model()).unwrap();
    let meta = fusion::store::SnapshotMeta {
        position: header.position + 1_000_000,
        events: header.events,
        format: header.format,
        model: header.model,
        // The store's context: the save is kept, and the load refuses it.
        context: store.context_position().await.unwrap(),
    };
    assert!(
        store
            .save_snapshot(stale, meta, store.snapshot_epoch())
            .await
            .unwrap()
    );
    let again = open(store.clone(), true).await;
    assert!(!again.opened_from_snapshot());
    assert_eq!(again.state().unwrap().kind(&person), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_every_snapshot_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    erasure_reaches_snapshots(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_every_snapshot_on_postgres() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    erasure_reaches_snapshots(store).await;
}

/// The cadence: a snapshot is written in the background once `every`
/// events were folded since the last one, and a start loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_written_every_so_many_events_folded() {
    let events = stream(600);
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let options = EngineOptions {
        snapshots: Snapshots::LoadAndWrite { every: 250 },
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(store.clone(), model(), options)
        .await
        .unwrap();
    let now = Utc::now();
    for batch in events.chunks(50) {
        let batch = batch.iter().cloned().enumerate().collect();
        engine.submit(batch, Vec::new(), false, now).await.unwrap();
    }
    // Two periodic snapshots (at 250 and 500 events, or the first rounds
    // past them), polled with a generous deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let counts: Vec<u64> = store
            .snapshots()
            .await
            .unwrap()
            .iter()
            .map(|b| fusion::score::SnapshotHeader::read(b).unwrap().events)
            .collect();
        if counts.iter().any(|n| *n >= 500) {
            assert!(counts.iter().all(|n| *n >= 250), "{counts:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot past 500 events: {counts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(engine);
    let again = open(store.clone(), true).await;
    assert!(again.opened_from_snapshot());
    assert_eq!(again.state().unwrap().event_count(), 600);
}

/// A snapshot larger than a piece goes to the store and back a piece at a
/// time, and one whose writer stops before its end is not kept (at 10M
/// events of issue #10's shape a snapshot is over 3 GB, and encoding it
/// into one buffer asked for twice that at once: task h32 streams it).
async fn a_snapshot_of_many_pieces_is_kept_whole_and_one_cut_off_is_not<S: EventStore>(store: S) {
    use fusion::store::snapshots::PIECE;
    use fusion::store::{SnapshotMeta, SnapshotPiece};
    let bytes: Vec<u8> = (0..PIECE * 5 / 2).map(|i| (i * 7 % 251) as u8).collect();
    let meta = |position| SnapshotMeta {
        position,
        events: position + 1,
        format: fusion::score::snapshot::FORMAT_VERSION,
        model: [7; 32],
        context: None,
    };
    // Cut off: the writer stops after two pieces, without its end.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let writer = tokio::spawn({
        let bytes = bytes.clone();
        async move {
            for piece in bytes.chunks(PIECE).take(2) {
                tx.send(SnapshotPiece::Bytes(piece.to_vec())).await.unwrap();
            }
        }
    });
    let epoch = store.snapshot_epoch();
    assert!(
        store
            .save_snapshot_stream(rx, meta(5), epoch)
            .await
            .is_err()
    );
    writer.await.unwrap();
    assert!(store.snapshot(0).await.unwrap().is_none(), "nothing kept");
    // Whole: three pieces in, three pieces out.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let writer = tokio::spawn({
        let bytes = bytes.clone();
        async move {
            for piece in bytes.chunks(PIECE) {
                tx.send(SnapshotPiece::Bytes(piece.to_vec())).await.unwrap();
            }
            tx.send(SnapshotPiece::End).await.unwrap();
        }
    });
    assert!(
        store
            .save_snapshot_stream(rx, meta(9), epoch)
            .await
            .unwrap()
    );
    writer.await.unwrap();
    let mut read = store.snapshot_stream(0).await.unwrap().expect("kept");
    let mut pieces = Vec::new();
    while let Some(piece) = read.recv().await {
        pieces.push(piece.unwrap());
    }
    assert_eq!(pieces.len(), 3);
    assert!(pieces.iter().all(|p| p.len() <= PIECE));
    assert_eq!(pieces.concat(), bytes);
    assert!(store.snapshot_stream(1).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_many_pieces_is_kept_whole_and_one_cut_off_is_not_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    a_snapshot_of_many_pieces_is_kept_whole_and_one_cut_off_is_not(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_many_pieces_is_kept_whole_and_one_cut_off_is_not_on_postgres() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    a_snapshot_of_many_pieces_is_kept_whole_and_one_cut_off_is_not(store).await;
}

/// Whether redb finds the file at `path` not closed cleanly: it then
/// repairs it (every page read and checked) before it opens it.
fn needs_repair(path: &Path) -> bool {
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::clone(&repaired);
    let db = redb::Database::builder()
        .set_repair_callback(move |_| seen.store(true, std::sync::atomic::Ordering::SeqCst))
        .create(path)
        .unwrap();
    drop(db);
    repaired.load(std::sync::atomic::Ordering::SeqCst)
}

/// Regression (task h37): `serve` stopped gracefully, `ingest`, `score`
/// and `rescore` ended with the engine's threads still holding the
/// embedded store, so redb found the file not closed cleanly and repaired
/// it at every start: at 10M events of issue #10's shape, as long as
/// decoding the snapshot. They now let go of it, and the next open
/// repairs nothing.
#[test]
fn a_graceful_stop_and_the_commands_leave_the_embedded_store_closed_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.redb");
    let server = crate::support::Server::start(dir.path(), &[]);
    let posted = server.post_ndjson(&crate::support::story_lines().join("\n"));
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert!(server.terminate().success());
    assert!(!needs_repair(&file), "serve left the store to be repaired");
    for small in ["dead_letters.redb", "alerts.redb"] {
        let path = dir.path().join(small);
        assert!(path.exists(), "{small} was not created");
        assert!(!needs_repair(&path), "serve left {small} to be repaired");
    }
    let story = dir.path().join("story.ndjson");
    std::fs::write(&story, crate::support::story_lines().join("\n")).unwrap();
    let commands: [&[&str]; 3] = [
        &["ingest", story.to_str().unwrap()],
        &["score", "artist", "sweater"],
        &["rescore"],
    ];
    for command in commands {
        let run = std::process::Command::new(crate::support::bin())
            .args(command)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(run.status.success(), "{command:?}: {run:?}");
        assert!(
            !needs_repair(&file),
            "{command:?} left the store to be repaired"
        );
    }
}

/// Task h37 found, at 10M events, a previous-format binary's save at the
/// same position replacing a format-4 snapshot, and each binary's pruning
/// deleting the other's snapshots, so the newer binary folded the whole
/// log (15 minutes) at its next start. Snapshots of one format now replace
/// and prune only each other, on both backends.
async fn saves_of_another_format_leave_this_formats_snapshot<S: EventStore>(store: S) {
    use fusion::store::SnapshotMeta;
    let meta = |position, format| SnapshotMeta {
        position,
        events: position + 1,
        format,
        model: [7; 32],
        context: None,
    };
    let epoch = store.snapshot_epoch();
    let ours = b"this format at 10".to_vec();
    assert!(
        store
            .save_snapshot(ours.clone(), meta(10, 4), epoch)
            .await
            .unwrap()
    );
    for position in [10, 20, 30, 40] {
        let theirs = format!("format 3 at {position}").into_bytes();
        assert!(
            store
                .save_snapshot(theirs, meta(position, 3), epoch)
                .await
                .unwrap()
        );
    }
    let kept = store.snapshots().await.unwrap();
    assert!(kept.contains(&ours), "the other format pushed it out");
    assert!(
        !kept.contains(&b"format 3 at 10".to_vec()),
        "pruned per format"
    );
    assert_eq!(kept.len(), fusion::store::snapshots::SNAPSHOTS_KEPT + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_of_another_format_leave_this_formats_snapshot_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    saves_of_another_format_leave_this_formats_snapshot(EmbeddedStore::open(dir.path()).unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_of_another_format_leave_this_formats_snapshot_on_postgres() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url).await.unwrap();
    saves_of_another_format_leave_this_formats_snapshot(store).await;
}
