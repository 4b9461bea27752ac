//! The late fold's invariant: a state reached by any arrival order and
//! batching, late events folded in place where the fold can place them and
//! the log refolded where it cannot, is bit for bit the state of one
//! canonical fold of the same events (a complete dump of it, and every
//! relationship's explanation and batch score), and its live series stays
//! within its bound of a batch evaluation.

use std::fmt::Write as _;
use std::sync::Arc;

use rand::RngExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{FoldState, Placement};
use crate::domain::{Event, Logged};
use crate::generate::{GenerateConfig, Generator};
use crate::graph::Handle;
use crate::score::ScoreState;
use crate::score::model::ScoringModel;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// A generated stream (`crate::generate`): every event type, people who
/// follow, attend, endorse and withdraw consent, over `days` of event time.
fn generated(seed: u64, events: u64, days: u32) -> Vec<Logged> {
    let config = GenerateConfig {
        seed,
        people: 200,
        influencers: 12,
        brands: 8,
        events,
        days,
        ..GenerateConfig::default()
    };
    let mut generator = Generator::new(&config).expect("a valid config");
    let mut body = Vec::new();
    let mut line = Vec::new();
    while generator.next_line(&mut line) {
        body.extend_from_slice(&line);
        body.push(b'\n');
        line.clear();
    }
    let values = crate::ingest::parse_ndjson(&body).expect("the generator writes NDJSON");
    let checked = crate::ingest::validate_all(&values, &model().currency);
    assert!(
        checked.rejected.is_empty(),
        "{:?}",
        checked.rejected.first()
    );
    let events: Vec<Event> = checked.good.into_iter().map(|(_, e)| e).collect();
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Logged {
            position: i as u64,
            event,
        })
        .collect()
}

/// Everything the fold state holds, with entities by id (handles are
/// numbered in arrival order, which is not part of the state's meaning),
/// every f64 by its bits (`{:?}` prints the shortest representation that
/// reads back to the same bits).
fn dump(f: &FoldState) -> String {
    let table = f.table();
    let name = |h: Handle| table.name(h).to_string();
    let by_id = |mut v: Vec<(String, String)>| {
        v.sort();
        v.into_iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect::<String>()
    };
    let mut out = String::new();
    let mut entities: Vec<_> = table
        .handles()
        .map(|h| format!("{} {:?}", name(h), table.kind(h)))
        .collect();
    entities.sort();
    writeln!(out, "entities {entities:?}").unwrap();
    writeln!(out, "registrations {:?}", f.registrations).unwrap();
    writeln!(
        out,
        "folded {:?} count {} latest {:?}",
        f.folded.words, f.count, f.latest
    )
    .unwrap();
    out += &by_id(
        f.impulses
            .iter()
            .map(|(p, l)| {
                let rows: Vec<_> = (0..l.len())
                    .map(|i| {
                        let b = name(l.brand[i]);
                        (b, l.component[i], l.time[i], l.amount[i], l.event[i])
                    })
                    .collect();
                (name(*p), format!("{rows:?}"))
            })
            .collect(),
    );
    out += &by_id(
        f.event_counts
            .iter()
            .enumerate()
            .map(|(i, n)| (name(Handle::from_index(i as u32)), format!("events {n}")))
            .collect(),
    );
    out += &by_id(
        f.audience
            .iter()
            .map(|(p, s)| (name(*p), format!("audience {s:?}")))
            .collect(),
    );
    out += &by_id(
        f.occasions
            .iter()
            .map(|(o, info)| {
                let mut joined: Vec<_> = info
                    .participants
                    .iter()
                    .map(|(p, x)| (name(*p), *x))
                    .collect();
                joined.sort();
                let mut set: Vec<_> = info.joined.iter().map(|(p, x)| (name(*p), *x)).collect();
                set.sort();
                let host = info.host.map(name);
                (
                    name(*o),
                    format!("occasion {host:?} {:?} {joined:?} {set:?}", info.time),
                )
            })
            .collect(),
    );
    out += &by_id(
        f.hosted
            .iter()
            .map(|(b, os)| {
                (
                    name(*b),
                    format!(
                        "hosts {:?}",
                        os.iter().map(|o| name(*o)).collect::<Vec<_>>()
                    ),
                )
            })
            .collect(),
    );
    out += &by_id(
        f.sales
            .iter()
            .map(|(b, s)| (name(*b), format!("sales {s:?}")))
            .collect(),
    );
    out += &by_id(
        f.consent
            .iter()
            .map(|(p, s)| (name(*p), format!("consent {s:?}")))
            .collect(),
    );
    out += &by_id(
        f.interests
            .iter()
            .map(|(tag, ps)| {
                (
                    tag.clone(),
                    format!("{:?}", ps.iter().map(|p| name(*p)).collect::<Vec<_>>()),
                )
            })
            .collect(),
    );
    out += &by_id(
        f.brand_stats
            .iter()
            .map(|(b, s)| (name(*b), format!("stats {s:?}")))
            .collect(),
    );
    let mut provisional: Vec<_> = f.provisional.iter().map(|p| name(*p)).collect();
    provisional.sort();
    writeln!(out, "provisional {provisional:?}").unwrap();
    let (_, _, edges) = f.graph.to_parts();
    out += &by_id(
        edges
            .into_iter()
            .map(|(a, b, kind, history)| {
                (
                    format!("{} {} {kind:?}", name(a), name(b)),
                    format!("{history:?}"),
                )
            })
            .collect(),
    );
    let g = &f.late;
    for (what, map) in [
        ("reach", &g.reach),
        ("associations", &g.associations),
        ("sales", &g.sales),
        ("joins", &g.joins),
    ] {
        out += &by_id(
            map.iter()
                .map(|(h, t)| (name(*h), format!("{what} {t:?}")))
                .collect(),
        );
    }
    out
}

/// Every relationship's explanation and batch score at `at`.
fn scores(f: &FoldState, at: chrono::DateTime<chrono::Utc>) -> String {
    let batch = f.batch(at);
    let mut out = String::new();
    for ((p, b), s) in &batch.scores {
        writeln!(out, "{p} {b} {s:?} {:?}", f.explain(p, b, at)).unwrap();
    }
    out
}

/// What one arrival did: batches folded in place, late events among them,
/// refolds.
#[derive(Debug, Default)]
struct Arrival {
    in_place: usize,
    late: usize,
    refolds: usize,
    /// Event types that declined, with how many times.
    declined: std::collections::BTreeMap<&'static str, usize>,
}

/// Folds `log` as it arrives in `batches` (what the engine's fold thread
/// does: a batch the fold declines makes a refold of everything arrived).
fn arrive(batches: Vec<Vec<Logged>>) -> (ScoreState, Arrival) {
    let mut state = ScoreState::new(model());
    let mut arrived: Vec<Logged> = Vec::new();
    let mut counts = Arrival::default();
    for batch in batches {
        arrived.extend(batch.iter().cloned());
        match state.placement(&batch) {
            Placement::InPlace { late } => {
                counts.in_place += 1;
                counts.late += late;
                state.apply_placed(batch);
            }
            Placement::Refold { .. } => {
                for l in &batch {
                    if matches!(
                        state.placement(std::slice::from_ref(l)),
                        Placement::Refold { .. }
                    ) {
                        *counts
                            .declined
                            .entry(l.event.kind.event_type().as_str())
                            .or_default() += 1;
                    }
                }
                assert!(
                    !state.clone().apply(batch),
                    "apply declines what placement declines"
                );
                counts.refolds += 1;
                state = ScoreState::from_log(model(), Vec::new(), arrived.clone());
            }
        }
        state.sync_live(|| false);
    }
    (state, counts)
}

/// Cuts `log` into batches of 1 to `max` events.
fn batches(log: Vec<Logged>, max: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<Logged>> {
    let mut out = Vec::new();
    let mut rest = log.into_iter().peekable();
    while rest.peek().is_some() {
        let n = rng.random_range(1..=max);
        out.push(rest.by_ref().take(n).collect());
    }
    out
}

/// A stream's arrival: canonical order disturbed by up to `jitter` places
/// (concurrent clients whose batches overtake each other).
fn jittered(mut log: Vec<Logged>, jitter: usize, rng: &mut ChaCha8Rng) -> Vec<Logged> {
    super::sort_canonically(&mut log);
    let mut keyed: Vec<(f64, Logged)> = log
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i as f64 + rng.random::<f64>() * jitter as f64, l))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, l)| l).collect()
}

/// Asserts two dumps are equal, naming the first lines that differ.
fn same(got: &str, canonical: &str, what: &str) {
    if got == canonical {
        return;
    }
    let (a, b): (Vec<_>, Vec<_>) = (got.lines().collect(), canonical.lines().collect());
    let first = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i));
    let line = |v: &[&str], i: usize| v.get(i).map(|l| l.chars().take(3000).collect::<String>());
    let i = first.expect("the dumps differ");
    panic!(
        "{what} differs at line {i}:\n got       {:?}\n canonical {:?}",
        line(&a, i),
        line(&b, i)
    );
}

/// Compares the state with the canonical fold, bit for bit, and the live
/// series with a batch evaluation, within its bound.
fn check_against_canonical(state: &ScoreState, canonical: &ScoreState, what: &str) {
    same(
        &dump(&state.fold),
        &dump(&canonical.fold),
        &format!("{what}: the fold's state"),
    );
    let at = canonical.latest_time().expect("events") + chrono::Duration::days(1);
    same(
        &scores(&state.fold, at),
        &scores(&canonical.fold, at),
        &format!("{what}: scores"),
    );
    // The live series: within its bound of the batch (its bits may differ
    // with the arrival order: `score::live`, "Late events").
    let live = state.live_components_at(at).expect("synced");
    let batch = canonical.fold.batch(at);
    let bound = state.live().error_bound() + 1e-5;
    let live: std::collections::BTreeMap<_, _> = live.into_iter().collect();
    for (k, s) in &batch.scores {
        let v = live.get(k).copied().unwrap_or([0.0; 6]);
        for (x, y) in v.iter().zip(&s.components) {
            assert!(
                (x - y).abs() <= bound,
                "{what}: live {k:?} {x} against batch {y}, bound {bound}"
            );
        }
    }
    for (k, v) in &live {
        if !batch.scores.contains_key(k) {
            assert!(
                v.iter().all(|x| x.abs() <= bound),
                "{what}: live {k:?} has {v:?}, batch none"
            );
        }
    }
}

/// A stream from concurrent clients (batches overtaking each other) folds
/// nearly every late event in place, and the state is the canonical
/// fold's, bit for bit.
#[test]
fn late_events_folded_in_place_give_the_canonical_state_bit_for_bit() {
    for seed in [1u64, 2, 3] {
        let log = generated(seed, 3_000, 20);
        let canonical = ScoreState::from_log(model(), Vec::new(), log.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let arrival = jittered(log, 40, &mut rng);
        let (state, counts) = arrive(batches(arrival, 25, &mut rng));
        eprintln!("seed {seed} jittered: {counts:?}");
        assert!(counts.late > 500, "the arrival has late events: {counts:?}");
        assert!(
            counts.in_place > 4 * counts.refolds,
            "most batches fold in place: {counts:?}"
        );
        check_against_canonical(&state, &canonical, &format!("seed {seed}, jittered"));
    }
}

/// Any order and batching, however far events come from their place
/// (most then refold; those folded in place still land where they belong).
#[test]
fn any_arrival_order_and_batching_gives_the_canonical_state_bit_for_bit() {
    for seed in [4u64, 5] {
        let log = generated(seed, 1_500, 10);
        let canonical = ScoreState::from_log(model(), Vec::new(), log.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut shuffled = log;
        shuffled.shuffle(&mut rng);
        let (state, counts) = arrive(batches(shuffled, 8, &mut rng));
        eprintln!("seed {seed} shuffled: {counts:?}");
        assert!(counts.late > 0, "{counts:?}");
        check_against_canonical(&state, &canonical, &format!("seed {seed}, shuffled"));
    }
}
