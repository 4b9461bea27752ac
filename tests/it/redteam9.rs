//! Red team h69 (what red team h63 left unattacked): an erasure
//! (`DELETE /v1/entities/{id}`) SIGKILLed at seeded moments on both
//! backends, and cut off between the embedded log's commit and the
//! deletion of the snapshots; `?atomic=true` requests refused (and
//! accepted) while other clients' late events refold; snapshots written
//! while refolds and refused groups roll back, and a restart from one.
//! Real `fusion serve` processes; every claim is a fresh open's bits or
//! what was acknowledged, never a timing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::feed::Stream;
use crate::redteam2::{caught_up, everything, ndjson, same};
use crate::redteam3::event;
use crate::redteam8::{go_on_after_a_kill, kill_seeds, post_shares, shares};
use crate::support::Server;

/// The person erased: an id long enough that its bytes in a snapshot are
/// the person, not chance.
const SUBJECT: &str = "subject.h69-erasure";

/// Minute `slot` after 2026-09-01 (the clock of `redteam3::event`).
fn minute(slot: u32) -> String {
    let at = chrono::DateTime::parse_from_rfc3339("2026-09-01T00:00:00Z").unwrap()
        + chrono::Duration::minutes(i64::from(slot));
    at.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The subject's 24 events, at times among the head's and the stream's:
/// purchases and reviews, follows of a brand, and people following them.
fn subject_events() -> Vec<Value> {
    (0..24u32)
        .map(|k| {
            let (id, time, other) = (format!("s{k}"), minute(5 + 13 * k), format!("p{}", k % 10));
            match k % 5 {
                0 => json!({"id": id, "type": "purchase", "time": time,
                    "person": SUBJECT, "brand": "b0", "amount": 20 + k}),
                1 => json!({"id": id, "type": "review", "time": time,
                    "person": SUBJECT, "brand": "b1", "rating": 1 + k % 5}),
                2 => json!({"id": id, "type": "follow", "time": time,
                    "person": other, "target": SUBJECT}),
                3 => json!({"id": id, "type": "follow", "time": time,
                    "person": SUBJECT, "target": "b2"}),
                _ => json!({"id": id, "type": "purchase", "time": time,
                    "person": SUBJECT, "brand": "b2", "amount": 5 + k}),
            }
        })
        .collect()
}

/// An invalid event naming the subject: kept as a dead letter.
fn subject_dead_letter() -> Value {
    json!({"id": "s-bad", "type": "review", "time": minute(7),
        "person": SUBJECT, "brand": "b0", "rating": 9})
}

/// Whether `needle`'s bytes occur in `hay`.
fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A backend: how to start servers on one store, make its next open a
/// fresh one, and look into its kept snapshots.
enum Store {
    Embedded,
    Postgres(String),
}

impl Store {
    fn start(&self, dir: &Path, flags: &[&str]) -> Server {
        match self {
            Store::Embedded => Server::start(dir, flags),
            Store::Postgres(url) => Server::start_on_database(dir, url, flags),
        }
    }

    fn drop_snapshots(&self, dir: &Path) {
        match self {
            Store::Embedded => {
                let _ = std::fs::remove_dir_all(dir.join("snapshots"));
            }
            Store::Postgres(url) => {
                crate::pg_e2e::Sql::connect(url).query("TRUNCATE snapshot_chunks, snapshots", &[]);
            }
        }
    }

    /// How many kept snapshots (files, temporary ones too; rows) hold
    /// `needle`'s bytes, and how many there are.
    fn snapshots_holding(&self, dir: &Path, needle: &str) -> (usize, usize) {
        match self {
            Store::Embedded => {
                let Ok(entries) = std::fs::read_dir(dir.join("snapshots")) else {
                    return (0, 0);
                };
                let files: Vec<Vec<u8>> = entries
                    .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                    .collect();
                let holding = files.iter().filter(|b| holds(b, needle)).count();
                (holding, files.len())
            }
            Store::Postgres(url) => {
                let sql = crate::pg_e2e::Sql::connect(url);
                // Snapshots here are far below a chunk (1 MiB): an id never
                // straddles two.
                let holding = sql.count(
                    "SELECT count(DISTINCT snapshot) FROM snapshot_chunks \
                     WHERE position($1::bytea in bytes) > 0",
                    &[&needle.as_bytes()],
                );
                let all = sql.count("SELECT count(*) FROM snapshots", &[]);
                (holding as usize, all as usize)
            }
        }
    }
}

/// The flags of every server here: read-your-writes rankings, no rate
/// limit (the tests poll), and a snapshot every `every` events folded.
fn flags(every: &'static str) -> [&'static str; 6] {
    [
        "--staleness",
        "0",
        "--rate-per-address",
        "0",
        "--snapshot-every",
        every,
    ]
}

/// Fails unless a fresh open of the store in `dir` (snapshots removed,
/// the whole log folded) serves `served`; the server last on it stopped.
fn a_fresh_open_serves(store: &Store, dir: &Path, flags: &[&str], served: &Value, what: &str) {
    store.drop_snapshots(dir);
    let fresh = store.start(dir, flags);
    caught_up(&fresh);
    same(
        served,
        &everything(&fresh),
        &format!("{what}: a fresh open"),
    );
}

/// SIGKILLs `s` and fails unless a restart on its store (from the
/// snapshots it left) serves `served`; answers the restarted server.
fn a_restart_after_a_kill_serves(
    s: Server,
    store: &Store,
    dir: &Path,
    flags: &[&str],
    served: &Value,
    what: &str,
) -> Server {
    s.sigkill();
    drop(s);
    let restarted = store.start(dir, flags);
    caught_up(&restarted);
    same(served, &everything(&restarted), what);
    restarted
}

/// The subject is nowhere a client or the disk can reach: no entity, no
/// export, none of their events, in no ranking, summary or explanation,
/// no dead letter, no kept snapshot.
fn wholly_erased(s: &Server, store: &Store, dir: &Path, what: &str) {
    assert_eq!(
        s.get(&format!("/v1/entities/{SUBJECT}")).status,
        404,
        "{what}"
    );
    assert_eq!(
        s.get(&format!("/v1/entities/{SUBJECT}/export")).status,
        404,
        "{what}"
    );
    for e in subject_events() {
        let r = s.get(&format!("/v1/events/{}", e["id"].as_str().unwrap()));
        assert_eq!(r.status, 404, "{what}: {} is still stored", e["id"]);
    }
    let served = everything(s).to_string();
    assert!(!served.contains(SUBJECT), "{what}: served {served}");
    let letters = s.get("/v1/rejected?limit=1000");
    assert_eq!(letters.status, 200, "{}", letters.body);
    assert!(
        !letters.body.to_string().contains(SUBJECT),
        "{what}: a dead letter names the erased person: {}",
        letters.body
    );
    let (holding, kept) = store.snapshots_holding(dir, SUBJECT);
    assert_eq!(
        holding, 0,
        "{what}: {holding} of {kept} kept snapshots hold the erased person"
    );
}

/// The subject is all there: the entity with every one of their events,
/// ranked.
fn wholly_present(s: &Server, what: &str) {
    let r = s.get(&format!("/v1/entities/{SUBJECT}"));
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    assert_eq!(
        r.body["event_count"].as_u64(),
        Some(subject_events().len() as u64),
        "{what}: {}",
        r.body
    );
    for e in subject_events() {
        let r = s.get(&format!("/v1/events/{}", e["id"].as_str().unwrap()));
        assert_eq!(r.status, 200, "{what}: {} is missing", e["id"]);
    }
    assert!(
        everything(s).to_string().contains(SUBJECT),
        "{what}: the subject is ranked nowhere"
    );
}

/// The first events of every store here: 300 of `redteam3::event`, the
/// subject's, and the subject's dead letter; answers the events stored.
fn seed_store(s: &Server) -> Vec<Value> {
    let mut first: Vec<Value> = (0..300).map(event).collect();
    first.extend(subject_events());
    assert_eq!(s.post_ndjson(&ndjson(&first)).status, 200);
    let r = s.post_ndjson(&ndjson(&[subject_dead_letter()]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["rejected_count"], 1, "{}", r.body);
    caught_up(s);
    first
}

/// Regression (red team h69, finding E1): on the embedded store an
/// erasure commits the log's erasure and then deletes the snapshot files
/// (out of that transaction). A process killed in between left snapshots
/// that hold the erased person on disk for good (never loaded: their
/// event count is not the store's, but kept, and pruned only by later
/// saves of the same position or more), and a retried erasure answered
/// 404. Now the erasure's transaction records that snapshots are to be
/// deleted, and an open that finds the record deletes them before
/// anything reads one. The cut is made exactly: the snapshot directory is
/// moved aside while the server runs (so its deletion fails after the
/// log's commit), the server is SIGKILLed, and the directory is put back,
/// which is the disk a SIGKILL between the two steps leaves.
#[test]
fn an_erasure_cut_off_between_the_logs_commit_and_the_snapshots_deletion_leaves_no_snapshot_of_the_person()
 {
    let dir = tempfile::tempdir().unwrap();
    let flags = flags("100000");
    let s = Server::start(dir.path(), &flags);
    seed_store(&s);
    s.terminate();
    let store = Store::Embedded;
    let (holding, _) = store.snapshots_holding(dir.path(), SUBJECT);
    assert!(holding > 0, "premise: a snapshot holds the subject");
    let s = Server::start(dir.path(), &flags);
    let snapshots = dir.path().join("snapshots");
    let aside = dir.path().join("snapshots.aside");
    std::fs::rename(&snapshots, &aside).unwrap();
    std::fs::write(&snapshots, b"not a directory").unwrap();
    let r = s.delete(&format!("/v1/entities/{SUBJECT}"));
    // The log's erasure is committed: the erasure says so, and the state
    // serves what the log holds (before, a 500 left the state unrebuilt,
    // serving the person, and a retry answered 404).
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get(&format!("/v1/entities/{SUBJECT}")).status,
        404,
        "the erasing server serves the person after the log's erasure"
    );
    s.sigkill();
    drop(s);
    std::fs::remove_file(&snapshots).unwrap();
    std::fs::rename(&aside, &snapshots).unwrap();
    let s = Server::start(dir.path(), &flags);
    caught_up(&s);
    wholly_erased(&s, &store, dir.path(), "a restart after the cut");
    let served = everything(&s);
    s.terminate();
    a_fresh_open_serves(&store, dir.path(), &flags, &served, "after the cut");
}

/// Issue #16's erasure under SIGKILL: a store holding the subject (their
/// events, a dead letter, a snapshot), two clients posting late and
/// out-of-order batches of other people's events, an erasure sent
/// meanwhile and the server SIGKILLed a seeded moment after it was sent
/// (0 to 60 ms: before, during or after its steps). After the restart:
/// an erasure that was acknowledged is whole; one that was not is whole
/// or was not done at all (the subject's entity and every event there;
/// only their dead letters may be gone: they go first so that a retry
/// finds the entity, privacy.rs), and the retried erasure is whole. The
/// store always opens, the stream goes on, every acknowledged event of
/// the others is there once, and the served state is a fresh open's.
fn an_erasure_killed(store: &Store, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let flags = flags("60");
    let s = store.start(dir.path(), &flags);
    let first = seed_store(&s);
    s.terminate();
    let (holding, _) = store.snapshots_holding(dir.path(), SUBJECT);
    assert!(
        holding > 0,
        "seed {seed}: premise: a snapshot holds the subject"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut remaining = shares(seed, 300, 900, 2, 20);
    let acked = Mutex::new(first);
    let s = store.start(dir.path(), &flags);
    let _feed = Stream::open(&s, "", &[]);
    let before = acked.lock().unwrap().len() + rng.random_range(10..150);
    let strike = Duration::from_micros(rng.random_range(0..60_000));
    let answer = std::thread::scope(|scope| {
        let (s, acked_ref, remaining) = (&s, &acked, &remaining);
        scope.spawn(move || post_shares(s, remaining, acked_ref));
        let deadline = Instant::now() + Duration::from_secs(300);
        while acked.lock().unwrap().len() < before {
            assert!(Instant::now() < deadline, "seed {seed}: the stream stalled");
            std::thread::yield_now();
        }
        let erasure = scope.spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                s.delete(&format!("/v1/entities/{SUBJECT}")).status
            }))
            .ok()
        });
        // The moment of the kill is what is drawn; nothing waits for it.
        let at = Instant::now() + strike;
        while Instant::now() < at {
            std::thread::yield_now();
        }
        s.sigkill();
        erasure.join().unwrap()
    });
    drop(s);
    go_on_after_a_kill(&mut remaining, &acked.lock().unwrap());
    let what = format!("seed {seed}, killed {strike:?} after the erasure was sent ({answer:?})");
    let s = store.start(dir.path(), &flags);
    caught_up(&s);
    let present = s.get(&format!("/v1/entities/{SUBJECT}")).status == 200;
    if let Some(status) = answer {
        assert_eq!(status, 200, "{what}");
        assert!(!present, "{what}: an acknowledged erasure was undone");
    }
    if present {
        wholly_present(&s, &what);
        let r = s.delete(&format!("/v1/entities/{SUBJECT}"));
        assert_eq!(r.status, 200, "{what}: the retry: {}", r.body);
    }
    wholly_erased(&s, store, dir.path(), &what);
    // A resume from before the restart replays nothing: it is told to
    // start over.
    let mut resumed = Stream::open(&s, "", &[("Last-Event-ID", "1")]);
    assert_eq!(resumed.next().expect("an answer").event, "reset", "{what}");
    post_shares(&s, &remaining, &acked);
    caught_up(&s);
    let acked = acked.into_inner().unwrap();
    let others: BTreeSet<&str> = acked
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .filter(|id| !id.starts_with('s'))
        .collect();
    assert_eq!(
        s.event_count() as usize,
        others.len(),
        "{what}: the others' events"
    );
    let served = everything(&s);
    s.terminate();
    // What the shutdown saved holds no copy either.
    let again = store.start(dir.path(), &flags);
    wholly_erased(&again, store, dir.path(), &format!("{what}, restarted"));
    again.terminate();
    a_fresh_open_serves(store, dir.path(), &flags, &served, &what);
}

#[test]
fn an_erasure_killed_at_any_moment_is_whole_or_not_done_and_never_leaves_a_copy() {
    for seed in kill_seeds(&[1, 2, 3]) {
        an_erasure_killed(&Store::Embedded, seed);
    }
}

#[test]
fn an_erasure_killed_at_any_moment_is_whole_or_not_done_and_never_leaves_a_copy_on_postgres() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for seed in kill_seeds(&[4, 5]) {
        let db = rt.block_on(crate::pg::TestDb::new());
        an_erasure_killed(&Store::Postgres(db.url.clone()), seed);
    }
}

/// What an atomic request of the attack holds besides its late events.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// None: stored whole.
    None,
    /// A review rated 9: refused before anything is stored.
    Invalid,
    /// A purchase whose person is a brand: refused by the role checks.
    Role,
    /// Dated years ahead of the clock: refused on `time`.
    Future,
    /// A stored id with other content: refused by the store (its group
    /// commit rolled back on PostgreSQL, the request's inserts undone on
    /// redb).
    StoredConflict,
    /// The id of a stream event not sent yet, with other content: decided
    /// by whichever commits first.
    Contested,
}

/// Atomic request `k` (a seeded flaw, or none): 5 to 20 events with new
/// ids at times long folded (late: each would refold), the flaw at a
/// seeded place.
fn atomic_request(rng: &mut ChaCha8Rng, k: usize, contested: u32) -> (Flaw, Vec<Value>) {
    let flaw = [
        Flaw::None,
        Flaw::Invalid,
        Flaw::Role,
        Flaw::Future,
        Flaw::StoredConflict,
        Flaw::Contested,
    ][k % 6];
    let mut events: Vec<Value> = (0..rng.random_range(5..20))
        .map(|j| {
            let mut e = event(rng.random_range(0..250));
            e["id"] = json!(format!("atomic{k}-{j}"));
            e
        })
        .collect();
    let bad = match flaw {
        Flaw::None => None,
        Flaw::Invalid => Some(json!({"id": format!("atomic{k}-bad"), "type": "review",
            "time": minute(40), "person": "p1", "brand": "b0", "rating": 9})),
        Flaw::Role => Some(json!({"id": format!("atomic{k}-bad"), "type": "purchase",
            "time": minute(40), "person": "b1", "brand": "b0", "amount": 3})),
        Flaw::Future => Some(json!({"id": format!("atomic{k}-bad"), "type": "purchase",
            "time": "2100-01-01T00:00:00Z", "person": "p1", "brand": "b0", "amount": 3})),
        Flaw::StoredConflict => {
            let mut e = event(5);
            e["time"] = json!(minute(1));
            Some(e)
        }
        Flaw::Contested => {
            let mut e = event(contested);
            e["time"] = json!(minute(2));
            Some(e)
        }
    };
    if let Some(bad) = bad {
        let at = rng.random_range(0..=events.len());
        events.insert(at, bad);
    }
    (flaw, events)
}

/// Issue #11 items 2 and 3 (red team h63's "not attacked"): while two
/// clients post late and out-of-order batches (refolds from checkpoints,
/// roll-backs of the live series) and a snapshot is written every 40
/// events, a third posts `?atomic=true` requests of late events, most with
/// one flaw. Each is stored whole (200, every id there with its content)
/// or not at all (422 naming the flaw, none of its ids stored); what the
/// others posted is all there once; the state then equals a restart from
/// the latest snapshot written mid-stream (the server SIGKILLed, so no
/// snapshot at shutdown) and a fresh open, bit for bit.
fn atomic_requests_during_refolds(store: &Store, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let flags = flags("40");
    let s = store.start(dir.path(), &flags);
    let head: Vec<Value> = (0..250).map(event).collect();
    assert_eq!(s.post_ndjson(&ndjson(&head)).status, 200);
    caught_up(&s);
    let (n, contested) = (1_000u32, 990u32);
    let mut order = shares(seed, 250, n, 2, 25);
    // The contested event goes last, so the atomic request meets it
    // before or after its commit.
    for share in &mut order {
        for batch in share.iter_mut() {
            batch.retain(|e| e["id"] != format!("e{contested}"));
        }
    }
    order[1].push(vec![event(contested)]);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let requests: Vec<(Flaw, Vec<Value>)> = (0..24)
        .map(|k| atomic_request(&mut rng, k, contested))
        .collect();
    let acked = Mutex::new(head);
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let (s, acked, order) = (&s, &acked, &order);
        scope.spawn(move || post_shares(s, order, acked));
        requests
            .iter()
            .map(|(_, events)| {
                let r = s.post(
                    "/v1/events?atomic=true",
                    "application/x-ndjson",
                    ndjson(events).as_bytes(),
                );
                (r.status, r.body)
            })
            .collect()
    });
    caught_up(&s);
    assert!(
        s.metric("fusion_fold_refolds_total") > 0.0,
        "premise: late events refolded"
    );
    let mut stored: BTreeSet<String> = acked
        .into_inner()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut contested_winner = event(contested);
    for ((flaw, events), (status, body)) in requests.iter().zip(&answers) {
        let what = format!("seed {seed}, {flaw:?}");
        let expected_ok = match flaw {
            Flaw::None => true,
            Flaw::Contested => *status == 200,
            _ => false,
        };
        if expected_ok {
            assert_eq!(*status, 200, "{what}: {body}");
            for e in events {
                let id = e["id"].as_str().unwrap();
                let got = s.get(&format!("/v1/events/{id}"));
                assert_eq!(
                    got.status, 200,
                    "{what}: {id} of a stored request is missing"
                );
                stored.insert(id.to_string());
            }
            if let Flaw::Contested = flaw {
                contested_winner = events
                    .iter()
                    .find(|e| e["id"] == format!("e{contested}"))
                    .unwrap()
                    .clone();
            }
        } else {
            assert_eq!(*status, 422, "{what}: {body}");
            assert!(
                body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("nothing was stored")),
                "{what}: {body}"
            );
            assert!(
                !body["errors"].as_array().unwrap().is_empty(),
                "{what}: the answer names the flaw: {body}"
            );
            for e in events {
                let id = e["id"].as_str().unwrap();
                if id.starts_with("atomic") {
                    let got = s.get(&format!("/v1/events/{id}"));
                    assert_eq!(
                        got.status, 404,
                        "{what}: {id} of a refused request was stored"
                    );
                }
            }
        }
    }
    // The contested id holds the content of whichever was acknowledged as
    // stored.
    let got = s.get(&format!("/v1/events/e{contested}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body["time"], contested_winner["time"], "seed {seed}");
    assert_eq!(
        s.event_count() as usize,
        stored.len(),
        "seed {seed}: stored whole or not at all"
    );
    let served = everything(&s);
    let (_, kept) = store.snapshots_holding(dir.path(), "no such bytes");
    assert!(
        kept > 0,
        "seed {seed}: premise: snapshots written mid-stream"
    );
    let restarted = a_restart_after_a_kill_serves(
        s,
        store,
        dir.path(),
        &flags,
        &served,
        &format!("seed {seed}: a restart from a snapshot written mid-stream"),
    );
    restarted.terminate();
    a_fresh_open_serves(store, dir.path(), &flags, &served, &format!("seed {seed}"));
}

#[test]
fn atomic_requests_during_refolds_are_stored_whole_or_not_at_all_and_snapshots_restart_to_a_fresh_open()
 {
    for seed in [7, 8] {
        atomic_requests_during_refolds(&Store::Embedded, seed);
    }
}

#[test]
fn atomic_requests_during_refolds_are_stored_whole_or_not_at_all_and_snapshots_restart_to_a_fresh_open_on_postgres()
 {
    let db = crate::pg_e2e::fresh_db();
    atomic_requests_during_refolds(&Store::Postgres(db.url.clone()), 9);
}

/// A snapshot written while a refused atomic group's late events were in
/// the same rounds as accepted ones: one client's atomic requests are
/// refused one after another while another's late batches refold, and the
/// server is SIGKILLed right after each answer pair (so the latest
/// snapshot is the one written mid-roll-back, not one at shutdown); each
/// restart serves what a fresh open of the same log serves.
#[test]
fn snapshots_written_during_roll_backs_restart_to_a_fresh_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::Embedded;
    let flags = flags("15");
    let s = store.start(dir.path(), &flags);
    let head: Vec<Value> = (0..200).map(event).collect();
    assert_eq!(s.post_ndjson(&ndjson(&head)).status, 200);
    caught_up(&s);
    drop(s);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut late: Vec<Value> = (200..500).map(event).collect();
    late.shuffle(&mut rng);
    for (round, batch) in late.chunks(60).enumerate() {
        let s = store.start(dir.path(), &flags);
        let (_, refused) = atomic_request(&mut rng, 6 * round + 4, 0);
        std::thread::scope(|scope| {
            let s = &s;
            let refusal = scope.spawn(move || {
                s.post(
                    "/v1/events?atomic=true",
                    "application/x-ndjson",
                    ndjson(&refused).as_bytes(),
                )
                .status
            });
            for part in batch.chunks(7) {
                assert_eq!(s.post_ndjson(&ndjson(part)).status, 200);
            }
            assert_eq!(refusal.join().unwrap(), 422);
        });
        caught_up(&s);
        let served = everything(&s);
        drop(a_restart_after_a_kill_serves(
            s,
            &store,
            dir.path(),
            &flags,
            &served,
            &format!("round {round}: a restart from the snapshot written mid-roll-back"),
        ));
    }
    let s = store.start(dir.path(), &flags);
    caught_up(&s);
    let served = everything(&s);
    s.terminate();
    a_fresh_open_serves(&store, dir.path(), &flags, &served, "after the rounds");
}

/// Two servers on one PostgreSQL database: B folds a stream and saves a
/// snapshot every 5 events (back to back), A erases a person B's state
/// holds. A save B began before the erasure and commits after it must not
/// keep the person: once A's erasure is acknowledged and B serves the
/// person no longer, no kept snapshot holds them. (B's refusal is by its
/// own erasure epoch only; A's erasure moves the database's context.)
/// Five people erased, one per attempt, each with B's stream stopped at
/// A's answer so that no later save of B's prunes what the race kept.
#[test]
fn a_snapshot_another_server_saves_across_an_erasure_keeps_no_copy_on_postgres() {
    let db = crate::pg_e2e::fresh_db();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::Postgres(db.url.clone());
    let a = store.start(dir_a.path(), &flags("100000"));
    let b = store.start(dir_b.path(), &flags("5"));
    let head: Vec<Value> = (0..300).map(event).collect();
    assert_eq!(a.post_ndjson(&ndjson(&head)).status, 200);
    let mut next = 300u32;
    for attempt in 0..5 {
        let person = format!("{SUBJECT}-{attempt}");
        let theirs: Vec<Value> = subject_events()
            .into_iter()
            .map(|mut e| {
                let text = e.to_string().replace(SUBJECT, &person);
                e = serde_json::from_str(&text).unwrap();
                e["id"] = json!(format!("{}-{attempt}", e["id"].as_str().unwrap()));
                e
            })
            .collect();
        assert_eq!(b.post_ndjson(&ndjson(&theirs)).status, 200);
        caught_up(&b);
        // A knows the person through its follower.
        let deadline = Instant::now() + Duration::from_secs(60);
        while a.get(&format!("/v1/entities/{person}")).status != 200 {
            assert!(Instant::now() < deadline, "A never followed B's events");
            std::thread::yield_now();
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let from = next;
        let sent = std::thread::scope(|scope| {
            let (b, stop) = (&b, &stop);
            let stream = scope.spawn(move || {
                let mut i = from;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    assert_eq!(b.post_ndjson(&ndjson(&[event(i)])).status, 200);
                    i += 1;
                }
                i
            });
            // B has saved a few snapshots of its own before the erasure.
            while b.event_count() < u64::from(from) + 15 {
                std::thread::yield_now();
            }
            let r = a.delete(&format!("/v1/entities/{person}"));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(r.status, 200, "{}", r.body);
            stream.join().unwrap()
        });
        next = sent;
        let deadline = Instant::now() + Duration::from_secs(60);
        while b.get(&format!("/v1/entities/{person}")).status != 404 {
            assert!(Instant::now() < deadline, "B never reached the erasure");
            std::thread::yield_now();
        }
        caught_up(&b);
        let (holding, kept) = store.snapshots_holding(dir_b.path(), &person);
        assert_eq!(
            holding, 0,
            "attempt {attempt}: {holding} of {kept} kept snapshots hold {person}, erased by A"
        );
    }
}
