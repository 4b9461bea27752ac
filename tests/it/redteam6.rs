//! Red team h44: the exact lazy audience spill (`propagate::push`, "Lazy
//! audience spill") and PostgreSQL's pipelined append (task h43).

use fusion::score::IncrementalRelspace;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PEOPLE: u32 = 14;
const BRANDS: u32 = 3;

fn driver(wide: usize) -> IncrementalRelspace<f64> {
    let (mut d, _) = IncrementalRelspace::from_inputs(
        PEOPLE as usize,
        BRANDS as usize,
        0.3,
        0.4,
        1e-7,
        &[],
        &[],
        &[],
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

/// `group`: up to that many operations held and settled together.
fn random_operations(seed: u64, group: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut lazy, mut eager) = (driver(3), driver(usize::MAX));
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
    use fusion::store::{AppendMode, EventStore, Outcome, PostgresStore};

    use crate::pg::{TestDb, client};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDb::new().await;
        let stores = [
            PostgresStore::connect(&db.url).await.unwrap(),
            PostgresStore::connect(&db.url).await.unwrap(),
            PostgresStore::connect(&db.url).await.unwrap(),
        ];
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let store = stores[t % 2].clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for round in 0..12 {
                        let events: Vec<_> = (0..16)
                            .map(|k| {
                                let id = if k % 2 == 0 {
                                    format!("shared-{round}-{k}")
                                } else {
                                    format!("own-{t}-{round}-{k}")
                                };
                                let person = format!("p{}", k % 4);
                                crate::store::purchase(&id, i64::from(round), &person, "b")
                            })
                            .collect();
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
        let sql = client(&db.url).await;
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
            if *inserted {
                if let Some(other) = given.insert(*pos, id.clone()) {
                    assert_eq!(&other, id, "position {pos} given to {other} and {id}");
                }
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
