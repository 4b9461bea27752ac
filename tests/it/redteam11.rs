//! Red team h71 (session 31): the live catch-up cut by entries touched
//! (`IncrementalRelspace::settle_until`, `WORK_PER_ASK`) and rankings read
//! from the live series as it stands while it lags
//! (`ScoreState::live_lagging_at`, `LiveSeries::reflected_position`, the
//! ranking maintainer's floor). Score-level where the property lives in
//! the series (deterministic), engine-level where it lives in the
//! maintainer and the readers (any interleaving must hold it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::{EntityId, Event};
use fusion::score::{ScoreState, ScoringModel};
use proptest::prelude::*;

use crate::live_drift::{follower_bodies, one_a_second};
use crate::live_plan::logged;

/// `followers` people who follow "star" (a wide audience: more than
/// `WIDE_AUDIENCE`) and endorse a brand each, then `tail`: events by the
/// star and some followers, each one of them reaching the whole audience
/// or a part of it.
fn wide_stream(followers: u32) -> (Vec<Event>, Vec<Event>) {
    let mut bodies = follower_bodies(followers);
    let head = bodies.len();
    bodies.push(r#""type":"purchase","person":"star","brand":"x0","amount":90"#.into());
    bodies.push(r#""type":"purchase","person":"f3","brand":"x1","amount":20"#.into());
    bodies.push(r#""type":"endorsement","person":"star","brand":"x2","strength":0.9"#.into());
    bodies.push(r#""type":"purchase","person":"star","brand":"x1","amount":40"#.into());
    bodies.push(r#""type":"follow","person":"f9","target":"f3""#.into());
    bodies.push(r#""type":"purchase","person":"star","brand":"y2","amount":15"#.into());
    let mut events = one_a_second(bodies);
    let tail = events.split_off(head);
    (events, tail)
}

/// How `settle` is cut: `stop` for the asks between events (`step`),
/// `cut` for the asks within an event's pushes, each cycled.
#[derive(Debug, Clone)]
struct Cuts {
    between: Vec<bool>,
    within: Vec<bool>,
}

/// Catches `state` up, cut as `cuts` says; answers the movements
/// recorded and how many calls it took.
fn catch_up_cut(state: &mut ScoreState, cuts: &Cuts) -> (String, usize) {
    let mut movements = Vec::new();
    let (mut b, mut w) = (0usize, 0usize);
    let mut calls = 0;
    loop {
        // Builds at checkpoints first, as the live thread plans them.
        while let Some(planner) = state.live_planner() {
            drop(state.install_live(planner.plan().run()));
        }
        let done = state.apply_live_deferring(
            |_| {
                b += 1;
                cuts.between[b % cuts.between.len()]
            },
            || {
                w += 1;
                cuts.within[w % cuts.within.len()]
            },
        );
        movements.extend(state.take_movements());
        calls += 1;
        assert!(calls < 100_000, "no progress");
        if done && state.live_planner().is_none() {
            break;
        }
    }
    (format!("{movements:?}"), calls)
}

/// The series and its recorded movements for `tail` folded on `head`,
/// caught up as `cuts` says.
fn series_cut(head: &[Event], tail: &[Event], cuts: &Cuts) -> (String, String, u64, usize) {
    let model = Arc::new(ScoringModel::default_model());
    let mut state = ScoreState::build(model, vec![], head.to_vec());
    assert!(state.sync_live(|| false));
    state.record_movements(true);
    state.take_movements();
    assert!(state.apply(logged(tail, head.len())));
    let (movements, calls) = catch_up_cut(&mut state, cuts);
    assert!(state.live_synced());
    let latest = state.latest_time().unwrap();
    (
        format!("{:?}", state.live_components_at(latest)),
        movements,
        state.live().stats().pushes,
        calls,
    )
}

/// Task h71, the cut: `release_until` with any stop pattern (cut at every
/// ask, never, or as proptest draws) makes the series and the movements
/// a change feed records (every follower's first hop tracked at a wide
/// audience) that the uncut catch-up makes, bit for bit.
#[test]
fn any_cut_of_an_events_pushes_makes_the_series_and_movements_made_at_once() {
    let (head, tail) = wide_stream(1_500);
    let never = Cuts {
        between: vec![false],
        within: vec![false],
    };
    let reference = series_cut(&head, &tail, &never);
    let always = series_cut(
        &head,
        &tail,
        &Cuts {
            between: vec![true],
            within: vec![true],
        },
    );
    assert!(always.3 > 2 * tail.len(), "cut within events: {}", always.3);
    assert_eq!(always.0, reference.0, "the series");
    assert_eq!(always.1, reference.1, "the movements");
    assert_eq!(always.2, reference.2, "the pushes");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 6,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::vec(any::<bool>(), 1..5),
        proptest::collection::vec(any::<bool>(), 1..9),
    );
    runner
        .run(&strategy, |(between, within)| {
            let cut = series_cut(&head, &tail, &Cuts { between, within });
            prop_assert_eq!(&cut.0, &reference.0);
            prop_assert_eq!(&cut.1, &reference.1);
            prop_assert_eq!(cut.2, reference.2);
            Ok(())
        })
        .unwrap();
}

/// Relationships (person, brand) of the rows a state answers as it
/// stands while its series lags, with the position they reflect.
fn lagging_keys(
    state: &ScoreState,
    at: DateTime<Utc>,
) -> Option<(BTreeSet<(EntityId, EntityId)>, u64)> {
    let model = ScoringModel::default_model();
    let (rows, reflected) = state.live_lagging_at(at)?;
    let keys = rows.finish(&model).scores.into_keys().collect();
    Some((keys, reflected))
}

/// The relationships of the log's events of positions below `position`,
/// from their own series caught up.
fn prefix_keys(
    events: &[Event],
    position: u64,
    at: DateTime<Utc>,
) -> BTreeSet<(EntityId, EntityId)> {
    let model = Arc::new(ScoringModel::default_model());
    let mut prefix = ScoreState::build(model, vec![], events[..position as usize].to_vec());
    assert!(prefix.sync_live(|| false));
    prefix
        .live_components_at(at)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Task h71, position honesty and privacy at the series: while a stream
/// overtakes the series and the live thread then catches up an event at
/// a time, the series as it stands answers for exactly the log below
/// the position it says it reflects (log order is canonical order here),
/// that position never goes back, and once it is past a consent
/// withdrawal the person is in no row (a ranking read with
/// `min_position` past the withdrawal's answer lists them nowhere).
#[test]
fn a_lagging_series_answers_for_its_reflected_prefix_and_drops_a_withdrawn_person_once_past_it() {
    let mut bodies: Vec<String> = (0..380)
        .map(|i| {
            format!(
                r#""type":"purchase","person":"p{}","brand":"b{}","amount":{}"#,
                i % 40,
                i % 5,
                10 + i % 7
            )
        })
        .collect();
    // The withdrawal at position 330: after the latest build's
    // checkpoint (256), applied one by one.
    let withdrawal = 330u64;
    bodies[withdrawal as usize] = r#""type":"consent","person":"p3","granted":false"#.into();
    let events = one_a_second(bodies);
    let at = events.last().unwrap().time + Duration::hours(1);
    let p3 = EntityId::new("p3").unwrap();
    let model = Arc::new(ScoringModel::default_model());
    let mut state = ScoreState::build(Arc::clone(&model), vec![], events[..100].to_vec());
    assert!(state.sync_live(|| false));
    assert!(state.apply(logged(&events[100..200], 100)));
    let planner = state.live_planner().expect("a checkpoint passed");
    assert!(state.apply(logged(&events[200..], 200)));
    drop(state.install_live(planner.plan().run()));
    let mut last = 0;
    let mut checked = BTreeMap::new();
    loop {
        if let Some((keys, reflected)) = lagging_keys(&state, at) {
            assert!(reflected >= last, "went back: {reflected} after {last}");
            last = reflected;
            let listed = keys.iter().any(|(p, _)| *p == p3);
            if reflected > withdrawal {
                assert!(!listed, "p3 listed at {reflected}, past its withdrawal");
            }
            if (reflected % 29 == 0 || reflected.abs_diff(withdrawal) <= 1)
                && !checked.contains_key(&reflected)
            {
                assert_eq!(
                    keys,
                    prefix_keys(&events, reflected, at),
                    "the relationships of the log below {reflected}"
                );
                checked.insert(reflected, keys.len());
            }
        }
        while let Some(planner) = state.live_planner() {
            drop(state.install_live(planner.plan().run()));
        }
        if state.live_synced() {
            break;
        }
        state.apply_live_deferring(|_| true, || false);
    }
    assert!(
        checked.contains_key(&withdrawal) && checked.contains_key(&(withdrawal + 1)),
        "{checked:?}"
    );
    let latest = state.latest_time().unwrap();
    assert!(
        state
            .live_components_at(latest)
            .unwrap()
            .iter()
            .all(|((p, _), _)| *p != p3)
    );
}

/// Events of `values`, validated, indexed as a request's.
fn validated(values: &[serde_json::Value]) -> Vec<(usize, Event)> {
    let checked = fusion::ingest::validate_all(values, &ScoringModel::default_model().currency);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    checked.good
}

/// A purchase by `person` at acme, `i` seconds after a fixed start.
fn bought(i: usize, person: &str) -> serde_json::Value {
    let start = DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let time = (start + Duration::seconds(i as i64)).to_rfc3339();
    serde_json::json!({"id": format!("e{i}"), "type": "purchase", "time": time,
        "person": person, "brand": "acme", "amount": 5 + i % 9})
}

/// An engine on an embedded store in `dir`, with a staleness of 1 ms: its
/// ranking maintainer, started by the first ranking read, rebuilds as
/// soon as anything moved.
async fn engine_in(
    dir: &std::path::Path,
) -> Arc<fusion::engine::Engine<fusion::store::EmbeddedStore>> {
    let store = fusion::store::EmbeddedStore::open(dir).unwrap();
    Arc::new(
        fusion::engine::Engine::open_with(
            store,
            Arc::new(ScoringModel::default_model()),
            fusion::engine::EngineOptions {
                staleness: std::time::Duration::from_millis(1),
                ..fusion::engine::EngineOptions::default()
            },
        )
        .await
        .unwrap(),
    )
}

/// Task h71, position honesty and never backwards at the engine: under a
/// stream that passes checkpoints (the live series lags, so the
/// maintainer serves the series as it stands), every ranking read of now
/// has a position that never goes back (across refolds of late events
/// and a registration too), and lists every person whose
/// purchase the log holds below it. Whatever the interleaving of the
/// live thread, the maintainer and the reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_read_under_a_stream_never_go_back_and_list_every_event_below_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path()).await;
    // (end position of a batch, its people)
    let mut batches: Vec<(u64, Vec<String>)> = Vec::new();
    let mut last = 0;
    let mut i = 0;
    // Reads answered from the series as it stands (a position inside a
    // batch: no fold ended there).
    let mut lagging = 0;
    for round in 0..30 {
        let mut people: Vec<String> = (0..211).map(|k| format!("u{}", i + k)).collect();
        let mut values: Vec<_> = people
            .iter()
            .enumerate()
            .map(|(k, p)| bought(i + k, p))
            .collect();
        i += people.len();
        // Every fourth round ends with a late event (a refold that adds
        // events before the series' latest), by a person of its own.
        if round >= 20 && round % 4 == 3 {
            let late = format!("late{round}");
            let mut v = bought(round, &late);
            v["id"] = format!("late{round}").into();
            values.push(v);
            people.push(late);
        }
        // A registration (a new generation, not one that only added).
        if round == 25 {
            engine
                .register(fusion::domain::Entity {
                    id: EntityId::new("acme").unwrap(),
                    kind: fusion::domain::EntityKind::Brand,
                    name: Some("Acme".into()),
                    followers: None,
                    interests: Vec::new(),
                })
                .await
                .unwrap();
        }
        let report = engine
            .submit(validated(&values), Vec::new(), false, Utc::now())
            .await
            .unwrap();
        if round == 0 {
            assert_eq!(
                report.position,
                people.len() as u64,
                "the position after the batch"
            );
        }
        batches.push((report.position, people));
        for _ in 0..2 {
            let r = engine.ranking(Utc::now(), 0).await.unwrap();
            assert!(r.position >= last, "went back: {} after {last}", r.position);
            if !r.settled && batches.iter().all(|(end, _)| *end != r.position) {
                lagging += 1;
            }
            last = r.position;
            for (end, people) in &batches {
                if *end <= r.position {
                    for p in people {
                        let id = EntityId::new(p).unwrap();
                        assert!(
                            r.by_person.contains_key(&id),
                            "{p} (below {end}) missing at position {}",
                            r.position
                        );
                    }
                }
            }
            assert!(
                r.by_person.len() <= i + round,
                "no one the log does not hold"
            );
        }
    }
    eprintln!("{lagging} reads from the series as it stands");
    // Liveness: once the stream stops, the series catches up and the
    // maintainer replaces whatever it served by a settled ranking of
    // every folded event (woken by the catch-up, not by a read's age).
    let folded = engine.position();
    let mut reads = 0u64;
    loop {
        let r = engine.ranking(Utc::now(), 0).await.unwrap();
        assert!(r.position >= last, "went back: {} after {last}", r.position);
        last = r.position;
        if r.settled && r.position == folded {
            break;
        }
        reads += 1;
        assert!(reads < 50_000_000, "stuck at {} of {folded}", r.position);
        tokio::task::yield_now().await;
    }
}

/// Task h71, privacy at the engine: under a stream with the maintainer
/// serving the series as it stands, a consent withdrawal answered with
/// position P leaves its person out of every ranking read with
/// `min_position` P or more; and after an erasure's answer no ranking read
/// at all lists the erased person (ARCHITECTURE "Privacy"; the erasure is
/// a new generation, which no ranking of before may answer for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_ranking_never_lists_a_withdrawn_person_past_the_withdrawal_nor_an_erased_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path()).await;
    let withdrawn = EntityId::new("withdrawn").unwrap();
    let erased = EntityId::new("erased").unwrap();
    let mut i = 0;
    let mut post = |extra: Vec<serde_json::Value>| {
        let mut values: Vec<_> = (0..211)
            .map(|k| bought(i + k, &format!("u{}", (i + k) % 997)))
            .collect();
        i += values.len();
        for mut v in extra {
            v["id"] = format!("x{i}").into();
            v["time"] = bought(i, "-")["time"].clone();
            i += 1;
            values.push(v);
        }
        values
    };
    let mut withdrawal = None;
    let mut erased_done = false;
    let mut ends = Vec::new();
    let mut lagging = 0;
    for round in 0..16 {
        let extra = match round {
            0 | 1 => vec![bought(0, "withdrawn"), bought(0, "erased")],
            6 => vec![
                serde_json::json!({"type": "consent", "person": "withdrawn", "granted": false}),
            ],
            _ => vec![],
        };
        let values = post(extra);
        let report = engine
            .submit(validated(&values), Vec::new(), false, Utc::now())
            .await
            .unwrap();
        ends.push(report.position);
        if round == 6 {
            withdrawal = Some(report.position);
        }
        if round == 9 {
            engine.erase(&erased).await.unwrap();
            erased_done = true;
        }
        for min in [0, report.position] {
            let r = engine.ranking(Utc::now(), min).await.unwrap();
            if !r.settled && !ends.contains(&r.position) {
                lagging += 1;
            }
            if let Some(p) = withdrawal
                && min >= p
            {
                assert!(r.position >= p);
                assert!(
                    !r.by_person.contains_key(&withdrawn),
                    "withdrawn listed at {} (min_position {min}, withdrawal {p})",
                    r.position
                );
            }
            if erased_done {
                assert!(
                    !r.by_person.contains_key(&erased),
                    "erased listed at {}",
                    r.position
                );
            } else if round >= 1 {
                assert!(r.by_person.contains_key(&erased) || r.position < 250);
            }
        }
    }
    eprintln!("{lagging} reads from the series as it stands");
}
