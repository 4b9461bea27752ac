//! Red team h44: the exact lazy audience spill (`propagate::push`, "Lazy
//! audience spill") and PostgreSQL's pipelined append (task h43).

use fusion::score::IncrementalRelspace;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PEOPLE: u32 = 14;
const BRANDS: u32 = 3;

/// A driver over `graph`'s follows, associations and impulses (as a
/// checkpoint build starts: who spreads read from the graph).
fn driver(wide: usize, graph: &Graph) -> IncrementalRelspace<f64> {
    let (mut d, _) = IncrementalRelspace::from_inputs(
        PEOPLE as usize,
        BRANDS as usize,
        0.3,
        0.4,
        1e-7,
        &graph.0,
        &graph.1,
        &graph.2,
    )
    .unwrap();
    d.set_wide(wide);
    d
}

/// Random operations on a small graph where a wide audience is 3
/// followers: follows set and removed (followers crossing the width both
/// ways, followers gaining and losing their first follower), associations
/// set and removed, impulses of both signs, tolerance changes and scaling.
/// After every operation each entry of the lazy driver is within the sum
/// of both bounds of the eager one's, and the moves it records name every
/// entry whose read value changed, with the value read before.
/// Finding 1 (fixed in `propagate::push`'s `delivered`): seed 29 broke the
/// bound 15 times over when a follower of a person whose audience had
/// crossed the width both ways changed its follows after a rescale (a
/// pending amount whose score had cancelled to 0 and been dropped was not
/// counted as spread); the unit test
/// `a_pending_amount_whose_score_cancelled_and_was_dropped_is_still_delivered`
/// pins that case.
#[test]
fn the_lazy_spill_stays_within_the_eager_bound_under_random_graph_changes() {
    for seed in 0..100 {
        random_operations(seed, 1);
    }
}

/// As above, with the operations of one event held and settled together
/// (`hold`/`release`, as the live series applies an event): a follower
/// who starts to spread, a width crossed and a follow change in one
/// settle.
#[test]
fn the_lazy_spill_stays_within_the_eager_bound_when_operations_are_settled_together() {
    for seed in 0..100 {
        random_operations(1_000 + seed, 4);
    }
}

/// As above, from a driver built over a random graph (people 0 and 1
/// wide from the start, some of their followers spreading, impulses
/// already there).
#[test]
fn the_lazy_spill_stays_within_the_eager_bound_from_a_built_graph() {
    for seed in 0..60 {
        let mut rng = ChaCha8Rng::seed_from_u64(50_000 + seed);
        let mut graph: Graph = Default::default();
        for q in 2..PEOPLE {
            for p in 0..PEOPLE {
                let likely = if p < 2 { 0.7 } else { 0.1 };
                if p != q && rng.random_bool(likely) {
                    graph.0.push((q, p, rng.random_range(0.1..3.0)));
                }
            }
            if rng.random_bool(0.2) {
                graph
                    .1
                    .push((q, rng.random_range(0..BRANDS), rng.random_range(0.1..2.0)));
            }
        }
        for _ in 0..10 {
            let (p, b) = (rng.random_range(0..PEOPLE), rng.random_range(0..BRANDS));
            graph.2.push((p, b, rng.random_range(-1.0..2.0)));
        }
        random_operations_from(seed, 1 + (seed as usize % 3), &graph);
    }
}

/// Follows `(q, p, w)`, associations `(p, b, a)`, impulses `(p, b, x)`.
type Graph = (
    Vec<(u32, u32, f64)>,
    Vec<(u32, u32, f64)>,
    Vec<(u32, u32, f64)>,
);

/// `group`: up to that many operations held and settled together.
fn random_operations(seed: u64, group: usize) {
    random_operations_from(seed, group, &Graph::default());
}

fn random_operations_from(seed: u64, group: usize, graph: &Graph) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut lazy, mut eager) = (driver(3, graph), driver(usize::MAX, graph));
    let mut tol: f64 = 1e-7;
    for step in 0..300 {
        let before: Vec<f64> = (0..PEOPLE)
            .flat_map(|p| (0..BRANDS).map(move |b| (p, b)))
            .map(|(p, b)| lazy.score(p, b))
            .collect();
        lazy.track_moves();
        // One operation per step draws nothing here (seed 29 keeps its sequence).
        let n = if group > 1 {
            rng.random_range(1..=group)
        } else {
            1
        };
        if n > 1 {
            lazy.hold();
            eager.hold();
        }
        let mut whats = Vec::new();
        let mut scaled = false;
        for _ in 0..n {
            // Scaling wants nothing held.
            let op = rng.random_range(0..if n > 1 { 9 } else { 10 });
            scaled |= op == 9;
            let what = match op {
                0..=2 => {
                    let (p, b, x) = (
                        rng.random_range(0..PEOPLE),
                        rng.random_range(0..BRANDS),
                        rng.random_range(-1.0..2.0),
                    );
                    for d in [&mut lazy, &mut eager] {
                        d.add_impulse(p, b, x).unwrap();
                    }
                    format!("impulse ({p},{b}) {x}")
                }
                3..=6 => {
                    // Most follows go to people 0 and 1, who cross 3 both ways.
                    let q = rng.random_range(0..PEOPLE);
                    let p = if rng.random_bool(0.6) {
                        rng.random_range(0..2)
                    } else {
                        rng.random_range(0..PEOPLE)
                    };
                    if p == q {
                        continue;
                    }
                    let w = rng.random_bool(0.7).then(|| rng.random_range(0.1..3.0));
                    for d in [&mut lazy, &mut eager] {
                        d.set_follow(q, p, w).unwrap();
                    }
                    format!("follow {q}->{p} {w:?}")
                }
                7 => {
                    let (p, b) = (rng.random_range(0..PEOPLE), rng.random_range(0..BRANDS));
                    let a = rng.random_bool(0.6).then(|| rng.random_range(0.1..2.0));
                    for d in [&mut lazy, &mut eager] {
                        d.set_association(p, b, a).unwrap();
                    }
                    format!("association ({p},{b}) {a:?}")
                }
                8 => {
                    tol = if rng.random_bool(0.5) {
                        tol * 4.0
                    } else {
                        tol / 4.0
                    };
                    tol = tol.clamp(1e-10, 1e-4);
                    for d in [&mut lazy, &mut eager] {
                        d.set_tolerance(tol).unwrap();
                    }
                    format!("tolerance {tol}")
                }
                _ => {
                    let k = rng.random_range(0.2..1.5);
                    for d in [&mut lazy, &mut eager] {
                        d.scale(&k);
                    }
                    format!("scale {k}")
                }
            };
            whats.push(what);
        }
        if n > 1 {
            lazy.release();
            eager.release();
        }
        let what = whats.join(", ");
        let moves = lazy.take_moves();
        let bound = lazy.error_bound() + eager.error_bound() + 1e-12;
        for p in 0..PEOPLE {
            for b in 0..BRANDS {
                let (l, e) = (lazy.score(p, b), eager.score(p, b));
                assert!(
                    (l - e).abs() <= bound * (1.0 + e.abs()),
                    "seed {seed} step {step} after {what}: ({p},{b}) lazy {l} eager {e}, bound {bound}"
                );
                let was = before[(p * BRANDS + b) as usize];
                if l != was && !scaled {
                    let m = moves.iter().find(|m| (m.0, m.1) == (p, b));
                    assert!(
                        m.is_some_and(|m| m.2 == was && m.3 == l),
                        "seed {seed} step {step} after {what}: ({p},{b}) moved {was} -> {l}, recorded {m:?}"
                    );
                }
            }
        }
    }
}

/// Two stores (two servers) append groups that share ids while a third
/// erases people the groups name, again and again: every position below
/// the head is given once, to a stored event, to an acknowledged event an
/// erasure later removed, or to an erasure (nothing skipped, nothing
/// repeated); the head is never behind a stored row; and every
/// acknowledged event is either stored at its acknowledged position or
/// names a person erased after it was acknowledged.
#[test]
fn erasures_during_concurrent_appends_leave_positions_dense_and_lose_nothing_acknowledged() {
    use std::collections::{BTreeMap, BTreeSet};

    use fusion::domain::EntityId;
    use fusion::store::{AppendMode, EventStore, Outcome};

    use crate::pg::client;

    crate::pg::with_connected_stores(3, |url, stores| async move {
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let store = stores[t % 2].clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for round in 0..12 {
                        let events =
                            crate::store::contended_group(t, round, 16, |k| format!("p{}", k % 4));
                        let appended = store
                            .append(events.clone(), AppendMode::EachEvent)
                            .await
                            .unwrap();
                        for (k, e) in events.iter().enumerate() {
                            let outcome = &appended.outcomes[k];
                            assert!(
                                matches!(outcome, Outcome::Inserted | Outcome::Duplicate),
                                "{}: {outcome:?}",
                                e.id
                            );
                            if let Some(pos) = appended.positions[k] {
                                acked.push((
                                    e.id.as_str().to_owned(),
                                    format!("p{}", k % 4),
                                    pos,
                                    *outcome == Outcome::Inserted,
                                ));
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        let eraser = {
            let store = stores[2].clone();
            tokio::spawn(async move {
                let mut erased = Vec::new();
                for i in 0..10 {
                    let who = format!("p{}", i % 2);
                    store.erase(&EntityId::new(&who).unwrap()).await.unwrap();
                    erased.push(who);
                    tokio::task::yield_now().await;
                }
                erased
            })
        };
        let mut acked = Vec::new();
        for task in tasks {
            acked.extend(task.await.unwrap());
        }
        let erased: BTreeSet<String> = eraser.await.unwrap().into_iter().collect();
        let sql = client(&url).await;
        let stored: BTreeMap<String, u64> = sql
            .query("SELECT id, pos FROM events", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect();
        let head = sql
            .query_one("SELECT pos FROM log_head", &[])
            .await
            .unwrap()
            .get::<_, i64>(0) as u64;
        let context = sql
            .query_one("SELECT pos FROM log_context", &[])
            .await
            .unwrap()
            .get::<_, Option<i64>>(0);
        assert!(
            stored.values().all(|&p| p < head),
            "a stored row at or past the head {head}"
        );
        assert!(context.is_none_or(|c| (c as u64) < head));
        // Positions given: each inserted acknowledgement's (once), plus the
        // erasures'; the rest of 0..head must be nothing.
        let mut given: BTreeMap<u64, String> = BTreeMap::new();
        for (id, person, pos, inserted) in &acked {
            // Erased after its acknowledgement, an event may be sent again
            // (a shared id) and stored at a later position.
            let kept = stored.get(id) == Some(pos);
            assert!(
                kept || erased.contains(person),
                "{id} acknowledged at {pos} is lost or moved (stored at {:?}; its person {person} was never erased)",
                stored.get(id)
            );
            if *inserted && let Some(other) = given.insert(*pos, id.clone()) {
                assert_eq!(&other, id, "position {pos} given to {other} and {id}");
            }
        }
        let free: Vec<u64> = (0..head).filter(|p| !given.contains_key(p)).collect();
        assert_eq!(
            free.len(),
            10,
            "positions below the head {head} given to no event: {free:?} (10 erasures)"
        );
        assert!(
            acked.iter().any(|a| !stored.contains_key(&a.0)),
            "no erasure removed an acknowledged event"
        );
    });
}

/// A person with 300 followers (wide) and followers who change what they
/// spread, as NDJSON lines in time order: followers who gain their first
/// follower or association and lose them again, consent withdrawn and
/// granted again, the audience crossing the width down and up, and posts
/// of both signs between each change.
fn widening_story() -> Vec<fusion::domain::Event> {
    let mut lines = Vec::new();
    let mut n = 0u32;
    let mut add = |body: String| {
        let t = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z").unwrap()
            + chrono::Duration::minutes(i64::from(n) * 7);
        lines.push(format!(
            r#"{{"id":"e{n}","time":"{}",{body}}}"#,
            t.to_utc().format("%Y-%m-%dT%H:%M:%SZ")
        ));
        n += 1;
    };
    let follow = |p: &str, t: &str| format!(r#""type":"follow","person":"{p}","target":"{t}""#);
    let unfollow = |p: &str, t: &str| format!(r#""type":"unfollow","person":"{p}","target":"{t}""#);
    let post = |s: f64| format!(r#""type":"post","person":"w","brand":"b0","sentiment":{s}"#);
    let consent = |p: &str, g: bool| format!(r#""type":"consent","person":"{p}","granted":{g}"#);
    for f in 0..300 {
        add(follow(&format!("f{f}"), "w"));
        if f % 29 == 0 {
            add(format!(
                r#""type":"purchase","person":"f{f}","brand":"b1","amount":20.0,"currency":"USD""#
            ));
        }
    }
    add(post(0.8));
    add(follow("g0", "f5"));
    add(r#""type":"endorsement","person":"f6","brand":"b2","strength":0.7"#.to_owned());
    add(post(0.6));
    add(consent("f7", false));
    add(post(-0.4));
    add(consent("f7", true));
    add(post(0.9));
    for f in 8..61 {
        add(unfollow(&format!("f{f}"), "w"));
    }
    add(post(-0.7));
    add(unfollow("g0", "f5"));
    add(post(0.5));
    add(follow("f9", "f10"));
    for f in 8..61 {
        add(follow(&format!("f{f}"), "w"));
    }
    add(post(0.3));
    add(unfollow("f9", "f10"));
    add(consent("w", false));
    add(post(0.2));
    add(consent("w", true));
    add(post(-0.9));
    let text = lines.join("\n");
    let values = fusion::ingest::parse_ndjson(text.as_bytes()).unwrap();
    let model = fusion::score::ScoringModel::default_model();
    let checked = fusion::ingest::validate_all(&values, &model.currency);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    checked.good.into_iter().map(|(_, e)| e).collect()
}

/// Live series through the widening story: after every change, within its
/// bound of the batch and the bits of a fresh build of the same events;
/// and the whole story in shuffled batches has the same bits.
#[test]
fn followers_who_start_and_stop_spreading_and_an_audience_crossing_the_width_keep_a_fresh_builds_bits()
 {
    use std::sync::Arc;

    use fusion::score::{ScoreState, ScoringModel};
    use rand::seq::SliceRandom;

    let model = Arc::new(ScoringModel::default_model());
    let events = widening_story();
    let mut log = crate::support::MemoryLog::new(Arc::clone(&model));
    let mut deferred = 0;
    for (i, chunk) in events.chunks(11).enumerate() {
        log.append(chunk.to_vec());
        assert!(log.state.sync_live(|| false));
        let at = chunk.last().unwrap().time + chrono::Duration::hours(1);
        deferred = log.state.live().stats().deferred;
        if i % 3 == 0 || i * 11 > 300 {
            crate::live::check(&log.state, at, &format!("chunk {i}, deferred {deferred}"));
            let mut fresh = ScoreState::build(Arc::clone(&model), Vec::new(), log.events.clone());
            assert!(fresh.sync_live(|| false));
            assert_eq!(
                format!("{:?}", log.state.live_components_at(at).unwrap()),
                format!("{:?}", fresh.live_components_at(at).unwrap()),
                "chunk {i}"
            );
        }
    }
    assert!(deferred > 0, "nothing deferred");
    let at = events.last().unwrap().time + chrono::Duration::hours(1);
    let expected = format!("{:?}", log.state.live_components_at(at).unwrap());
    for seed in 0..3 {
        let mut shuffled = events.clone();
        shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut log = crate::support::MemoryLog::new(Arc::clone(&model));
        for chunk in shuffled.chunks(97) {
            log.append(chunk.to_vec());
            assert!(log.state.sync_live(|| false));
        }
        assert_eq!(
            format!("{:?}", log.state.live_components_at(at).unwrap()),
            expected,
            "shuffled, seed {seed}"
        );
    }
}

/// Two servers on one PostgreSQL take streams with shared ids; one is
/// killed (SIGKILL) while its clients post, so groups of its appends are
/// rolled back mid-way, then started again: every acknowledged event is
/// stored, positions are exactly 0..head (a rolled-back group gives none
/// out), and both servers read every relationship alike at the highest
/// acknowledged position.
#[test]
fn a_server_killed_mid_append_leaves_dense_positions_and_both_servers_converge() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use crate::pg::client;
    use crate::pg_e2e::fresh_db;
    use crate::support::Server;

    let purchase = |id: &str, n: u32| -> Value {
        json!({"id": id, "type": "purchase",
               "time": format!("2026-11-01T{:02}:{:02}:00Z", 10 + n % 5, (n * 7) % 60),
               "person": format!("p{}", n % 5), "brand": format!("b{}", n % 2),
               "amount": 10 + n % 13, "currency": "USD"})
    };
    let db = fresh_db();
    let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(Server::start_on_database(da.path(), &db.url, &[]));
    let b = Arc::new(Server::start_on_database(dbb.path(), &db.url, &[]));
    let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let highest = Arc::new(Mutex::new(0u64));
    let clients: Vec<_> = (0..4u32)
        .map(|c| {
            let s = Arc::clone(if c % 2 == 0 { &a } else { &b });
            let (acked, highest) = (Arc::clone(&acked), Arc::clone(&highest));
            std::thread::spawn(move || {
                for batch in 0..40u32 {
                    let ids: Vec<String> = (0..25u32)
                        .map(|i| {
                            if i % 3 == 0 {
                                format!("shared-{batch}-{i}")
                            } else {
                                format!("c{c}-{batch}-{i}")
                            }
                        })
                        .collect();
                    let body: String = ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| format!("{}\n", purchase(id, batch * 25 + i as u32)))
                        .collect();
                    // The killed server's clients stop at the first failure.
                    let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        s.post_ndjson(&body)
                    })) else {
                        return;
                    };
                    if r.status != 200 {
                        return;
                    }
                    let p: u64 = r.header("fusion-position").unwrap().parse().unwrap();
                    let mut h = highest.lock().unwrap();
                    *h = (*h).max(p);
                    acked.lock().unwrap().extend(ids);
                }
            })
        })
        .collect();
    crate::pg_e2e::poll(
        "the first acknowledgements",
        std::time::Duration::from_secs(60),
        || (acked.lock().unwrap().len() >= 100).then_some(()),
    );
    a.sigkill();
    for c in clients {
        c.join().unwrap();
    }
    let own_on_a = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.starts_with("c0-") || i.starts_with("c2-"))
        .count();
    eprintln!(
        "acknowledged {} events, {own_on_a} of the killed server's own (of 1,280)",
        acked.lock().unwrap().len()
    );
    assert!(
        own_on_a < 2 * 40 * 16,
        "the kill came after the killed server's clients were done"
    );
    drop(a);
    let a = Server::start_on_database(da.path(), &db.url, &[]);
    let r = a.post_ndjson(&format!("{}\n", purchase("after-restart", 3)));
    assert_eq!(r.status, 200, "{}", r.body);
    let last: u64 = r.header("fusion-position").unwrap().parse().unwrap();
    let highest = (*highest.lock().unwrap()).max(last);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sql = rt.block_on(async {
        let sql = client(&db.url).await;
        let ids: BTreeSet<String> = sql
            .query("SELECT id FROM events", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let positions: Vec<i64> = sql
            .query("SELECT pos FROM events ORDER BY pos", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let head: i64 = sql
            .query_one("SELECT pos FROM log_head", &[])
            .await
            .unwrap()
            .get(0);
        (ids, positions, head)
    });
    let (ids, positions, head) = sql;
    let lost: Vec<String> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|i| !ids.contains(*i))
        .cloned()
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert_eq!(
        positions,
        (0..head).collect::<Vec<_>>(),
        "positions not 0..head"
    );
    let at = "2026-11-02T00:00:00Z";
    for p in 0..5 {
        for br in 0..2 {
            let read = |s: &Server| {
                let r = s.get(&format!(
                    "/v1/relationships/p{p}/b{br}?at={at}&min_position={highest}&wait=30"
                ));
                assert_ne!(r.status, 503, "{}", r.body);
                (r.status, crate::support::comparable(r.body))
            };
            assert_eq!(read(&a), read(&b), "p{p}-b{br}");
        }
    }
}
