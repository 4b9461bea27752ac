//! Red team h33 on the live series carried through refolds (task h31):
//! a real server takes rounds late by fewer than 128 positions (the series
//! is continued or replayed) mixed with rounds late by more (it is built
//! again), ties at equal times, duplicates, late events at the live
//! checkpoint's origin, registrations, erasures and consent changes between
//! late rounds, snapshots written after resumes, a change-feed subscriber
//! attached meanwhile, and a SIGKILL mid-stream; what it serves must be what
//! a restart (from its snapshot, and from the whole log) serves, bit for bit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::redteam2::{BRANDS, caught_up, everything, ndjson, same};
use crate::support::Server;

/// Event `i`: a minute slot each, every third event sharing the slot of
/// the one before (ties at equal times), purchases, follows of people and
/// brands, reviews, consent changes and sales reports among 10 people.
pub(crate) fn event(i: u32) -> Value {
    let slot = i - i / 3;
    let time = minute(slot);
    let id = format!("e{i}");
    let person = format!("p{}", i % 10);
    let brand = BRANDS[(i as usize / 7) % 3];
    match i % 7 {
        0 | 3 => json!({"id": id, "type": "purchase", "time": time,
            "person": person, "brand": brand, "amount": 10 + i % 13}),
        1 => json!({"id": id, "type": "follow", "time": time,
            "person": person, "target": format!("p{}", (i + 3) % 10)}),
        2 => json!({"id": id, "type": "review", "time": time,
            "person": person, "brand": brand, "rating": 1 + i % 5}),
        4 => json!({"id": id, "type": "follow", "time": time,
            "person": person, "target": brand}),
        5 => json!({"id": id, "type": "consent", "time": time,
            "person": person, "granted": i % 4 != 1}),
        _ => json!({"id": id, "type": "brand_sales", "time": time,
            "brand": brand, "amount": 1000 + i}),
    }
}

/// Minute `slot` after 2026-09-01.
fn minute(slot: u32) -> String {
    let at = chrono::DateTime::parse_from_rfc3339("2026-09-01T00:00:00Z").unwrap()
        + chrono::Duration::minutes(i64::from(slot));
    at.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One step of the attack: a body to post, or an entity change.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Post(Vec<Value>),
    Influencer(String),
    Erase(String),
    /// Wait for the fold and the live series (so the next refold finds a
    /// series that applied past its late event: a replay from `base`).
    CatchUp,
}

/// The attack's steps for `seed`: `head` events in order, then rounds of
/// 3 to 7 events in order, each followed by late events: one held back
/// from the round before (late by fewer than 128 positions: the series
/// continues), now and then one held back from far earlier (late by more:
/// it is built again), a new event stamped exactly at the time of the
/// event at a multiple of 128 in the log (the live checkpoint's origin),
/// duplicates of the round before, and registrations, erasures between;
/// a wait for the live series after a round with probability `catch_up`.
pub(crate) fn steps(seed: u64, head: u32, n: u32, catch_up: f64) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = vec![Step::Post((0..head).map(event).collect())];
    // Times of the events sent so far, for the checkpoint origins.
    let mut times: Vec<String> = (0..head)
        .map(|i| event(i)["time"].as_str().unwrap().to_string())
        .collect();
    let mut far: Vec<Value> = Vec::new();
    let mut held: Option<Value> = None;
    let mut previous: Vec<Value> = Vec::new();
    let mut extra = 0u32;
    let mut i = head;
    let mut round = 0u32;
    while i < n {
        let k = rng.random_range(3..=7).min(n - i);
        let mut batch: Vec<Value> = (i..i + k).map(event).collect();
        i += k;
        round += 1;
        // Some events are held back a long way.
        if batch.len() > 1 && rng.random_bool(0.15) {
            far.push(batch.remove(0));
        }
        let late_now = held.take();
        if batch.len() > 1 && rng.random_bool(0.7) {
            held = batch.pop();
        }
        for e in &batch {
            times.push(e["time"].as_str().unwrap().to_string());
        }
        if !batch.is_empty() {
            steps.push(Step::Post(batch.clone()));
        }
        let mut late: Vec<Value> = late_now.into_iter().collect();
        if far.len() > 2 && rng.random_bool(0.3) {
            late.push(far.remove(0));
        }
        if rng.random_bool(0.2) {
            // At the origin of the latest live checkpoint, and a tie there.
            let mut sorted = times.clone();
            sorted.sort();
            let origin = (sorted.len() / 128) * 128;
            if origin > 0 {
                for at in [origin - 1, origin.min(sorted.len() - 1)] {
                    extra += 1;
                    late.push(json!({"id": format!("x{extra}"), "type": "purchase",
                        "time": sorted[at], "person": format!("p{}", extra % 10),
                        "brand": BRANDS[extra as usize % 3], "amount": 7}));
                }
            }
        }
        for e in &late {
            times.push(e["time"].as_str().unwrap().to_string());
        }
        if !late.is_empty() {
            steps.push(Step::Post(late));
        }
        if rng.random_bool(0.25) && !previous.is_empty() {
            steps.push(Step::Post(previous.clone()));
        }
        previous = batch;
        match round % 23 {
            7 => steps.push(Step::Influencer(format!("p{}", round % 10))),
            15 => steps.push(Step::Erase(format!("p{}", round % 10))),
            _ => {}
        }
        if rng.random_bool(catch_up) {
            steps.push(Step::CatchUp);
        }
    }
    let rest: Vec<Value> = held.into_iter().chain(far).collect();
    if !rest.is_empty() {
        steps.push(Step::Post(rest));
    }
    steps
}

/// Runs `steps` against `s`, adding the events acknowledged to `acked`.
/// Stops quietly at the first request that fails when `may_die` (the
/// server was killed).
pub(crate) fn run(s: &Server, steps: &[Step], may_die: bool, acked: &std::sync::Mutex<Vec<Value>>) {
    for step in steps {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match step {
            Step::Post(events) => {
                let r = s.post_ndjson(&ndjson(events));
                assert_eq!(r.status, 200, "{}", r.body);
                acked.lock().unwrap().extend(events.iter().cloned());
            }
            Step::Influencer(id) => {
                let r = s.put_json(
                    &format!("/v1/entities/{id}"),
                    &json!({"kind": "influencer"}),
                );
                assert!(r.status < 300, "{}", r.body);
            }
            Step::Erase(id) => {
                let r = s.delete(&format!("/v1/entities/{id}"));
                assert!(r.status < 300, "{}", r.body);
            }
            Step::CatchUp => {
                if !may_die {
                    caught_up(s);
                }
            }
        }));
        if ok.is_err() {
            assert!(may_die, "a step failed: {step:?}");
            return;
        }
    }
}

/// Late rounds near and far, ties, duplicates, checkpoint origins and
/// entity changes through a server that writes snapshots after resumes:
/// what it serves, read at once and after the live series caught up, is
/// what a restart from its snapshot serves (read at once too), and what a
/// restart from the whole log serves (a fresh open), bit for bit.
#[test]
fn late_rounds_near_and_far_with_entity_changes_serve_a_fresh_opens_bits() {
    for (seed, catch_up) in [(1u64, 0.4), (2, 0.4), (5, 0.0), (6, 0.9)] {
        let dir = tempfile::tempdir().unwrap();
        let flags = ["--staleness", "0", "--snapshot-every", "97"];
        let s = Server::start(dir.path(), &flags);
        let acked = std::sync::Mutex::new(Vec::new());
        run(&s, &steps(seed, 200, 620, catch_up), false, &acked);
        // Read at once, while the series may still catch up: a listing at
        // a time the series answers for waits for it (red team h28, F1).
        let at_once = everything(&s);
        caught_up(&s);
        let resumes = s.metric("fusion_live_resumes_total");
        let refolds = s.metric("fusion_fold_refolds_total");
        assert!(
            resumes > 0.0 && refolds > 0.0,
            "premise: {resumes} resumes, {refolds} refolds"
        );
        let count = s.event_count();
        let live = everything(&s);
        same(
            &live,
            &at_once,
            &format!("seed {seed}: a read before catch-up"),
        );
        s.terminate();
        let s = Server::start(dir.path(), &flags);
        let started = everything(&s);
        caught_up(&s);
        assert_eq!(s.event_count(), count, "seed {seed}");
        same(&live, &started, &format!("seed {seed}: a read at start"));
        same(
            &live,
            &everything(&s),
            &format!("seed {seed}: a restart from a snapshot"),
        );
        s.terminate();
        let snapshots = dir.path().join("snapshots");
        assert!(snapshots.is_dir(), "premise: snapshots written");
        std::fs::remove_dir_all(&snapshots).unwrap();
        let s = Server::start(dir.path(), &flags);
        caught_up(&s);
        same(
            &live,
            &everything(&s),
            &format!("seed {seed}: a restart from the whole log"),
        );
    }
}

/// A SIGKILL in the middle of such rounds: nothing acknowledged is lost
/// (sent again, each is a duplicate), and the restart serves what a second
/// restart from the whole log serves.
#[test]
fn a_kill_mid_way_through_late_rounds_loses_nothing_and_restarts_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--staleness", "0", "--snapshot-every", "61"];
    let a = Server::start(dir.path(), &flags);
    let acked = std::sync::Mutex::new(Vec::new());
    // No erasure: sending an erased person's events again is another matter.
    let all: Vec<Step> = steps(3, 150, 900, 0.4)
        .into_iter()
        .filter(|s| !matches!(s, Step::Erase(_)))
        .collect();
    std::thread::scope(|scope| {
        let (a_ref, acked_ref, all) = (&a, &acked, &all);
        scope.spawn(move || run(a_ref, all, true, acked_ref));
        let deadline = Instant::now() + Duration::from_secs(180);
        while acked.lock().unwrap().len() < 450 {
            assert!(Instant::now() < deadline, "the rounds stalled");
            std::thread::yield_now();
        }
        a.sigkill();
    });
    let acked = acked.into_inner().unwrap();
    drop(a);
    let b = Server::start(dir.path(), &flags);
    caught_up(&b);
    let count = b.event_count();
    let r = b.post_ndjson(&ndjson(&acked));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.event_count(), count, "an acknowledged event was lost");
    caught_up(&b);
    let first = everything(&b);
    b.terminate();
    let _ = std::fs::remove_dir_all(dir.path().join("snapshots"));
    let c = Server::start(dir.path(), &flags);
    caught_up(&c);
    same(&first, &everything(&c), "a restart from the whole log");
}

/// Regression (red team h33, finding 1): a change-feed subscriber attached
/// during late rounds read SSE id 288, then a replay's changes with id
/// 286: a series replayed from its copy at the checkpoint gave its replay
/// the largest *pending* position, and a late event at the checkpoint's
/// origin (folded before it, the log's largest position, published
/// already) is not pending; a client resuming with `Last-Event-ID: 288`
/// silently missed the replay's changes. Now the ids never go back, no
/// event is published twice for one relationship, every delta is at
/// least the asked minimum, and the server serves a fresh open's bits.
#[test]
fn the_feeds_ids_never_go_back_when_the_live_series_replays_from_its_copy() {
    for (seed, catch_up) in [(4u64, 0.4), (7, 0.0), (8, 0.8)] {
        let dir = tempfile::tempdir().unwrap();
        let flags = ["--staleness", "0"];
        let s = Server::start(dir.path(), &flags);
        // An erasure has no log position: its replay's id cannot be after
        // every one published (finding 3, scripts/redteam/feed_erasure.rs).
        let all: Vec<Step> = steps(seed, 200, 560, catch_up)
            .into_iter()
            .filter(|s| !matches!(s, Step::Erase(_)))
            .collect();
        let acked = std::sync::Mutex::new(Vec::new());
        // Head first, then one subscriber, the first half of the rounds,
        // another subscriber attached while the series resumes, the rest.
        run(&s, &all[..1], false, &acked);
        caught_up(&s);
        let early = crate::feed::Stream::open(&s, "", &[]);
        assert_eq!(early.status, 200);
        let half = all.len() / 2;
        run(&s, &all[1..half], false, &acked);
        let late = crate::feed::Stream::open(&s, "", &[]);
        assert_eq!(late.status, 200);
        run(&s, &all[half..], false, &acked);
        caught_up(&s);
        // A sentinel moved last: every change before it has been published.
        let sentinel = json!({"id": "sentinel", "type": "purchase",
            "time": "2026-11-30T00:00:00Z", "person": "zz", "brand": "bz", "amount": 500});
        assert_eq!(s.post_ndjson(&ndjson(&[sentinel])).status, 200);
        assert!(
            s.metric("fusion_live_resumes_total") > 0.0,
            "premise: resumes"
        );
        for (name, mut feed) in [("early", early), ("late", late)] {
            let what = format!("seed {seed}, {name} subscriber");
            let mut changes = Vec::new();
            loop {
                let e = feed.next().expect("the feed ended");
                assert_eq!(e.event, "change", "{what}: {e:?}");
                if e.data["person"] == "zz" {
                    break;
                }
                changes.push(e);
            }
            feed_is_in_order(&changes, &what);
        }
        let live = everything(&s);
        s.terminate();
        let s = Server::start(dir.path(), &flags);
        caught_up(&s);
        same(&live, &everything(&s), &format!("seed {seed}: a restart"));
    }
}

/// The SSE ids of `changes` never go back, every delta is at least the
/// default minimum, and no event is published twice for one relationship.
pub(crate) fn feed_is_in_order(changes: &[crate::feed::Sse], what: &str) {
    let mut last_id = 0u64;
    let mut seen: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (n, e) in changes.iter().enumerate() {
        if let Some(id) = &e.id {
            let id: u64 = id.parse().unwrap();
            assert!(
                id >= last_id,
                "{what}, change {n}: id {id} after {last_id}: {:?}",
                e.data
            );
            last_id = id;
        }
        let delta = e.data["delta"].as_f64().unwrap();
        assert!(
            delta.abs() >= 0.5,
            "{what}, change {n}: delta {delta}: {:?}",
            e.data
        );
        if let Some(cause) = e.data["cause"]["event"].as_str() {
            let key = (
                e.data["person"].as_str().unwrap().to_string(),
                e.data["brand"].as_str().unwrap().to_string(),
                cause.to_string(),
            );
            if let Some(before) = seen.insert(key.clone(), n) {
                panic!("{what}: {key:?} published twice: changes {before} and {n}");
            }
        }
    }
}

/// Rankings (task h31, item 2): once a ranking build has taken longer
/// than the staleness, readers are answered at once from the latest
/// ranking. With a staleness shorter than any build (a millisecond), each
/// round adds a new person's late purchase (a refold): a listing asking
/// `min_position` of that ingest still reflects it (the person is
/// listed, `Fusion-Position` at least that); a listing without it is
/// honest either way (it lists the person exactly when its position says
/// it reflects the ingest); with `--staleness 0` every listing reflects
/// every acknowledged event; a position not reached is a `504`.
#[test]
fn rankings_that_stop_waiting_still_honour_min_position_and_say_what_they_reflect() {
    for staleness in ["0.001", "0"] {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(dir.path(), &["--staleness", staleness]);
        let head: Vec<Value> = (0..200).map(event).collect();
        assert_eq!(s.post_ndjson(&ndjson(&head)).status, 200);
        caught_up(&s);
        let listed = |r: &crate::support::Reply, person: &str| {
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["person"] == person)
        };
        let position = |r: &crate::support::Reply| -> u64 {
            r.header("fusion-position")
                .expect("a listing carries Fusion-Position")
                .parse()
                .unwrap()
        };
        assert_eq!(s.get("/v1/brands/b0/relationships?limit=1000").status, 200);
        let mut lagged = 0;
        for k in 0..12u32 {
            let person = format!("n{k}");
            let late = json!({"id": format!("n{k}"), "type": "purchase",
                "time": minute(100 + k), "person": person, "brand": "b0", "amount": 30});
            let r = s.post_ndjson(&ndjson(&[late]));
            assert_eq!(r.status, 200, "{}", r.body);
            let p: u64 = r.header("fusion-position").unwrap().parse().unwrap();
            let plain = s.get("/v1/brands/b0/relationships?limit=1000");
            assert_eq!(plain.status, 200, "{}", plain.body);
            assert_eq!(
                listed(&plain, &person),
                position(&plain) >= p,
                "staleness {staleness}, round {k}: a listing at position {} \
                 (ingest at {p}) lists {person}: {}",
                position(&plain),
                listed(&plain, &person)
            );
            if staleness == "0" {
                assert!(listed(&plain, &person), "staleness 0, round {k}");
            }
            lagged += usize::from(position(&plain) < p);
            let asked = s.get(&format!(
                "/v1/brands/b0/relationships?limit=1000&min_position={p}"
            ));
            assert_eq!(asked.status, 200, "{}", asked.body);
            assert!(position(&asked) >= p, "round {k}: {}", position(&asked));
            assert!(listed(&asked, &person), "staleness {staleness}, round {k}");
            let beyond = s.get(&format!(
                "/v1/brands/b0/relationships?limit=1000&min_position={}&wait=0",
                p + 1000
            ));
            assert_eq!(beyond.status, 504, "{}", beyond.body);
        }
        if staleness != "0" {
            assert!(lagged > 0, "premise: a listing answered without waiting");
        }
    }
}

/// The late rounds on PostgreSQL (the store's scan from a checkpoint's
/// microsecond is another implementation): a live server and a restart
/// serve the same bits.
#[test]
fn late_rounds_on_postgres_serve_a_restarts_bits() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(crate::pg::TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--staleness", "0"];
    let s = Server::start_on_database(dir.path(), &db.url, &flags);
    let acked = std::sync::Mutex::new(Vec::new());
    run(&s, &steps(11, 200, 520, 0.3), false, &acked);
    let at_once = everything(&s);
    caught_up(&s);
    assert!(
        s.metric("fusion_live_resumes_total") > 0.0,
        "premise: resumes"
    );
    let count = s.event_count();
    let live = everything(&s);
    same(&live, &at_once, "a read before catch-up");
    s.terminate();
    let s = Server::start_on_database(dir.path(), &db.url, &flags);
    caught_up(&s);
    assert_eq!(s.event_count(), count);
    same(&live, &everything(&s), "a restart");
}
