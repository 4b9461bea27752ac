//! Late events refolded from an event-time checkpoint (issue #11, item 3):
//! the state made from a checkpoint and the events after it is the
//! canonical fold of the whole log, bit for bit (batch scores, the live
//! series, every explanation), in any arrival order and batching, with
//! duplicates, events at the checkpoint's own time and events older than
//! every checkpoint (which fold the whole log); and a real server refolds
//! late events from its checkpoints, builds whole only for an event older
//! than all of them, and ends with the scores of a fold of the same log.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::{Event, Logged};
use fusion::score::{FoldCheckpoint, ScoreState, ScoringModel};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::determinism::{fingerprint, random_events, story_events};
use crate::support::Server;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Checkpoints kept at most, as the fold thread keeps them.
const KEEP: usize = 4;

/// How a batch was folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Folded {
    InPlace,
    Refold,
    Whole,
}

/// A log and its state folded as the engine's fold thread folds it: in
/// place when a batch is later than everything, else refolded from the
/// newest checkpoint every new event comes after (the log's events from
/// a minute before it on as its tail: those it folded are skipped), else
/// built whole; a checkpoint is taken after every batch.
struct CheckpointedLog {
    events: Vec<Event>,
    state: ScoreState,
    checkpoints: Vec<FoldCheckpoint>,
    counts: [usize; 3],
}

impl CheckpointedLog {
    fn new() -> Self {
        let state = ScoreState::new(model());
        CheckpointedLog {
            events: Vec::new(),
            checkpoints: vec![state.fold_checkpoint()],
            state,
            counts: [0; 3],
        }
    }

    fn logged(&self) -> Vec<Logged> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| Logged {
                position: i as u64,
                event: e.clone(),
            })
            .collect()
    }

    /// Stores `batch` (new events get the next positions) and folds it with
    /// `again`, events stored before sent once more (a duplicate the
    /// store answered with its copy).
    fn append(&mut self, batch: Vec<Event>, again: Vec<usize>) -> Folded {
        let mut logged: Vec<Logged> = again
            .into_iter()
            .map(|i| Logged {
                position: i as u64,
                event: self.events[i].clone(),
            })
            .collect();
        for event in batch {
            logged.push(Logged {
                position: self.events.len() as u64,
                event: event.clone(),
            });
            self.events.push(event);
        }
        let how = self.fold(logged);
        self.counts[how as usize] += 1;
        self.checkpoints.push(self.state.fold_checkpoint());
        if self.checkpoints.len() > KEEP {
            self.checkpoints.remove(0);
        }
        how
    }

    fn fold(&mut self, batch: Vec<Logged>) -> Folded {
        if self.state.apply(batch.clone()) {
            return Folded::InPlace;
        }
        let from = self
            .checkpoints
            .iter()
            .rev()
            .find(|c| batch.iter().all(|e| c.takes(e)));
        if let Some(c) = from {
            let start = c.latest().map(|l| l.0 - Duration::minutes(1));
            let tail: Vec<Logged> = self
                .logged()
                .into_iter()
                .filter(|l| start.is_none_or(|s| l.event.time >= s))
                .collect();
            let state = &self.state;
            if let Some(made) = c.refold(tail, |p| state.folded(p)) {
                let first = made.changed_from.expect("a late event is new");
                assert!(
                    batch
                        .iter()
                        .any(|l| (l.event.time, l.event.id.clone()) == first),
                    "the earliest change is one of the batch's events"
                );
                self.state = made.state;
                self.checkpoints.retain(|c| c.is_before(first.0, &first.1));
                return Folded::Refold;
            }
        }
        self.state = ScoreState::from_log(model(), Vec::new(), self.logged());
        self.checkpoints.clear();
        Folded::Whole
    }
}

/// `events` posted in a shuffled order (seeded), in batches of 1 to 7,
/// about one batch in five sending an earlier event again.
fn posted(events: &[Event], seed: u64) -> CheckpointedLog {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Mostly in order, as a stream stamped at send arrives: each event
    // moved a few places at most.
    let mut order: Vec<(usize, usize)> = (0..events.len())
        .map(|i| (i + rng.random_range(0..12), i))
        .collect();
    order.sort();
    let mut shuffled: Vec<Event> = order.into_iter().map(|(_, i)| events[i].clone()).collect();
    if seed % 4 == 3 {
        shuffled.shuffle(&mut rng);
    }
    let mut log = CheckpointedLog::new();
    let mut rest = &shuffled[..];
    while !rest.is_empty() {
        let k = rng.random_range(1..=rest.len().min(7));
        let again = if !log.events.is_empty() && rng.random_range(0..5) == 0 {
            vec![rng.random_range(0..log.events.len())]
        } else {
            Vec::new()
        };
        log.append(rest[..k].to_vec(), again);
        rest = &rest[k..];
    }
    log
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    events
}

#[test]
fn a_refold_from_a_checkpoint_is_the_fold_of_the_whole_log_in_any_order_and_batching() {
    let times = [
        t("2026-11-05T09:00:00Z"),
        t("2026-11-12T22:15:00Z"),
        t("2027-01-01T00:00:00Z"),
    ];
    let events = sorted(story_events());
    let whole = ScoreState::build(model(), vec![], events.clone());
    let reference = fingerprint(&whole, &events, &times);
    let mut counts = [0; 3];
    for seed in 0..12 {
        let log = posted(&events, seed);
        assert_eq!(
            fingerprint(&log.state, &log.events, &times),
            reference,
            "arrival order seed {seed}"
        );
        for (c, n) in counts.iter_mut().zip(log.counts) {
            *c += n;
        }
    }
    assert!(counts[Folded::Refold as usize] > 0, "no refold: {counts:?}");
    assert!(
        counts[Folded::Whole as usize] > 0,
        "no whole build: {counts:?}"
    );
}

#[test]
fn a_refold_is_the_fold_of_the_whole_log_on_random_streams_with_ties() {
    let times = [
        t("2026-01-01T00:30:00Z"),
        t("2026-01-02T00:00:00Z"),
        t("2026-06-01T00:00:00Z"),
    ];
    let mut counts = [0; 3];
    for stream in 0..3 {
        // Every type; times folded onto 40 minutes, so runs of equal
        // times straddle the checkpoints (and the live series' ones).
        let start = t("2026-01-01T00:00:00Z");
        let events: Vec<Event> = random_events(stream + 10, 300)
            .into_iter()
            .map(|mut e| {
                let minutes = (e.time - start).num_minutes().rem_euclid(40);
                e.time = start + Duration::minutes(minutes);
                e
            })
            .collect();
        let events = sorted(events);
        let whole = ScoreState::build(model(), vec![], events.clone());
        let reference = fingerprint(&whole, &events, &times);
        for seed in 0..3 {
            let log = posted(&events, seed);
            assert_eq!(
                fingerprint(&log.state, &log.events, &times),
                reference,
                "stream {stream}, order {seed}"
            );
            for (c, n) in counts.iter_mut().zip(log.counts) {
                *c += n;
            }
        }
    }
    assert!(counts[Folded::Refold as usize] > 0, "no refold: {counts:?}");
}

fn purchase(id: &str, time: &str, person: &str) -> Event {
    let v = json!({"id": id, "type": "purchase", "time": time, "person": person,
        "brand": "b", "amount": 10});
    let mut checked = fusion::ingest::validate_all(&[v], &model().currency);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    checked.good.remove(0).1
}

/// An event at the checkpoint's own time is refolded when it comes after
/// the checkpoint's latest event in canonical order (a larger id), and
/// folds the whole log when it comes before it; one older than every
/// checkpoint folds the whole log too. Each time, the fold's bits.
#[test]
fn events_at_the_checkpoint_time_or_older_than_every_checkpoint_are_placed_exactly() {
    let w = "2026-10-10T00:00:00Z";
    let mut log = CheckpointedLog::new();
    log.append(
        vec![
            purchase("a", "2026-10-01T00:00:00Z", "p1"),
            purchase("m", w, "p2"),
        ],
        Vec::new(),
    );
    // The checkpoint of the empty log would take any event: only the one
    // ending at (w, "m") is kept from here.
    log.checkpoints.remove(0);
    // This batch comes after it.
    assert_eq!(
        log.append(
            vec![purchase("z", "2026-10-20T00:00:00Z", "p1")],
            Vec::new()
        ),
        Folded::InPlace
    );
    let cases = [
        (purchase("n", w, "p3"), Folded::Refold),
        (purchase("c", w, "p1"), Folded::Whole),
        (purchase("o", "2026-09-01T00:00:00Z", "p2"), Folded::Whole),
    ];
    for (event, expected) in cases {
        let id = event.id.clone();
        // The checkpoint taken after the latest event is no use to a late
        // one: the oldest kept (ending at (w, "m") until a whole build) is.
        log.checkpoints.truncate(1);
        assert_eq!(log.append(vec![event], Vec::new()), expected, "{id}");
        let whole = ScoreState::build(model(), vec![], sorted(log.events.clone()));
        let times = [t(w), t("2026-11-01T00:00:00Z")];
        assert_eq!(
            fingerprint(&log.state, &log.events, &times),
            fingerprint(&whole, &sorted(log.events.clone()), &times),
            "after {id}"
        );
    }
}

// ---- a real server ----

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

fn day(i: u32, hour: u32) -> String {
    format!("2026-09-{:02}T{hour:02}:00:00Z", 1 + i)
}

fn event(id: &str, time: &str, i: u32) -> Value {
    match i % 3 {
        0 => json!({"id": id, "type": "purchase", "time": time,
            "person": format!("p{}", i % 9), "brand": format!("b{}", (i / 3) % 3), "amount": 10 + i % 7}),
        1 => json!({"id": id, "type": "follow", "time": time,
            "person": format!("p{}", i % 9), "target": format!("p{}", (i + 4) % 9)}),
        _ => json!({"id": id, "type": "review", "time": time,
            "person": format!("p{}", i % 9), "brand": format!("b{}", (i / 3) % 3), "rating": 1 + i % 5}),
    }
}

/// A server restarted on a log of days 1 to 10 checkpoints it at open:
/// days 21 to 25 fold in place, late events of days 11 to 20 refold from
/// that checkpoint (no whole build), and one of day 0 (older than every
/// checkpoint) builds whole; the scores are then those of a server that
/// folded the same log sent whole.
#[test]
fn a_server_refolds_late_events_from_its_checkpoints_and_builds_whole_only_before_them() {
    let head: Vec<Value> = (0..10)
        .map(|i| event(&format!("h{i}"), &day(i, 12), i))
        .collect();
    let later: Vec<Value> = (20..25)
        .map(|i| event(&format!("l{i}"), &day(i, 12), i))
        .collect();
    let late: Vec<Value> = (10..20)
        .map(|i| event(&format!("m{i}"), &day(i, 6), i))
        .collect();
    let oldest = vec![event("o0", "2026-08-01T00:00:00Z", 4)];

    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path(), &[]);
    assert_eq!(first.post_ndjson(&ndjson(&head)).status, 200);
    first.terminate();
    let a = Server::start(dir.path(), &[]);
    assert_eq!(a.post_ndjson(&ndjson(&later)).status, 200);
    for batch in late.chunks(3) {
        let r = a.post_ndjson(&ndjson(batch));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(a.metric("fusion_fold_refolds_total"), 4.0);
    let late_builds = "fusion_fold_rebuilds_total{cause=\"late\"}";
    assert_eq!(a.metric(late_builds), 0.0);
    assert_eq!(a.post_ndjson(&ndjson(&oldest)).status, 200);
    assert_eq!(a.metric(late_builds), 1.0);

    let dir_b = tempfile::tempdir().unwrap();
    let b = Server::start(dir_b.path(), &[]);
    let all: Vec<Value> = [head, later, late, oldest].concat();
    assert_eq!(b.post_ndjson(&ndjson(&all)).status, 200);
    assert_eq!(a.event_count(), b.event_count());
    for brand in ["b0", "b1", "b2"] {
        let path = format!("/v1/brands/{brand}/relationships?limit=100&at=2026-12-01T00:00:00Z");
        let (ra, rb) = (a.get(&path), b.get(&path));
        assert_eq!(ra.status, 200, "{}", ra.body);
        assert_eq!(ra.body["items"], rb.body["items"], "{brand}");
    }
}
