//! The lazy audience spill of the live series (`propagate::push`, "Lazy
//! audience spill"; issue #11, item 3): on generated streams where people
//! have wide audiences, the series defers their spill, stays within its
//! bound of the batch, its bits are the same whatever the order of
//! arrival, the batching and where the catch-up stops, and the change
//! feed's movements carry the first hop readers see.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use fusion::domain::{EntityId, Event, Logged};
use fusion::generate::{GenerateConfig, write_ndjson};
use fusion::score::{CHECKPOINT_EVENTS, Components, MoveCause, ScoreState, ScoringModel};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::live::check;
use crate::support::MemoryLog;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

/// A `fusion generate` stream in which a few people gain several hundred
/// followers (above `score::live::WIDE_AUDIENCE`).
fn wide(events: u64, seed: u64) -> Vec<Event> {
    let config = GenerateConfig {
        seed,
        events,
        people: 2_000,
        influencers: 12,
        brands: 8,
        ..GenerateConfig::default()
    };
    let mut out = Vec::new();
    write_ndjson(&config, &mut out).unwrap();
    let values = fusion::ingest::parse_ndjson(&out).unwrap();
    let checked = fusion::ingest::validate_all(&values, &model().currency);
    assert!(checked.rejected.is_empty());
    checked.good.into_iter().map(|(_, e)| e).collect()
}

#[test]
fn a_wide_audience_defers_its_spill_within_the_bound_of_the_batch() {
    for seed in [3, 8] {
        let events = wide(20_000, seed);
        // Folded in event time, caught up after each chunk of 1,999 events
        // (not a multiple of the checkpoint's 128, so each check reads a
        // build plus a tail of events applied one by one).
        let mut sorted = events;
        sorted.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let mut log = MemoryLog::new(model());
        let mut deferred_checks = 0;
        let mut deferred_before = 0;
        for chunk in sorted.chunks(1_999) {
            log.append(chunk.to_vec());
            assert!(log.state.sync_live(|| false));
            let latest = chunk.last().unwrap().time;
            let deferred = log.state.live().stats().deferred;
            for at in [latest, latest + Duration::days(3)] {
                check(
                    &log.state,
                    at,
                    &format!("seed {seed} at {at}, deferred {deferred}"),
                );
            }
            deferred_checks += usize::from(deferred > deferred_before);
            deferred_before = deferred;
        }
        let stats = log.state.live().stats();
        eprintln!("seed {seed}: {stats:?}");
        assert!(stats.deferred > 0, "seed {seed}: nothing was deferred");
        assert!(
            deferred_checks > 0,
            "seed {seed}: no check with spill pending"
        );
    }
}

#[test]
fn deferred_spill_is_the_same_bits_in_any_arrival_order() {
    // 155 checkpoints of 128 and 120 events after the last.
    let mut events = wide(20_000, 3);
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    events.truncate(19_960);
    let latest = events.last().unwrap().time;
    let at = latest + Duration::hours(1);
    let mut whole = ScoreState::build(model(), Vec::new(), events.clone());
    assert!(whole.sync_live(|| false));
    assert!(whole.live().stats().deferred > 0);
    let expected = format!("{:?}", whole.live_components_at(at).unwrap());
    // The tail one event at a time, each caught up in slices of one or two
    // events: deferrals and followers who start to spread fall at the same
    // canonical positions.
    let mut log = MemoryLog::new(model());
    log.append(events[..19_000].to_vec());
    for e in &events[19_000..] {
        log.append(vec![e.clone()]);
        let mut n = 0;
        while !log.state.sync_live(|| {
            n += 1;
            n % 2 == 0
        }) {}
    }
    assert_eq!(
        format!("{:?}", log.state.live_components_at(at).unwrap()),
        expected
    );
    // Shuffled arrival in batches (late events build the state again).
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    events.shuffle(&mut rng);
    let mut log = MemoryLog::new(model());
    for chunk in events.chunks(2_500) {
        log.append(chunk.to_vec());
    }
    assert!(log.state.sync_live(|| false));
    assert_eq!(
        format!("{:?}", log.state.live_components_at(at).unwrap()),
        expected
    );
}

#[test]
fn the_feeds_moves_carry_the_deferred_first_hop_of_each_event() {
    // Every relationship an event moves as read (the pending first hop
    // included) is in that event's movement, with the values read before
    // and after it; events inside one checkpoint block (no build).
    let mut events = wide(20_000, 3);
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    let start = 155 * CHECKPOINT_EVENTS + 1;
    let end = 156 * CHECKPOINT_EVENTS - 4;
    let log: Vec<Logged> = events[..end]
        .iter()
        .enumerate()
        .map(|(i, e)| Logged {
            position: i as u64,
            event: e.clone(),
        })
        .collect();
    let mut state = ScoreState::from_log(model(), Vec::new(), log[..start].to_vec());
    assert!(state.sync_live(|| false));
    state.record_movements(true);
    state.take_movements();
    let deferred = state.live().stats().deferred;
    let zero = [0.0; 6];
    let close = |a: &Components, b: &Components| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + x.abs()))
    };
    let mut checked = 0;
    for logged in &log[start..] {
        let t = logged.event.time;
        let read = |s: &ScoreState| -> BTreeMap<(EntityId, EntityId), Components> {
            s.live_components_at(t)
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let before = read(&state);
        assert!(state.apply(vec![logged.clone()]));
        assert!(state.sync_live(|| false));
        let after = read(&state);
        let table = state.table().clone();
        let mut recorded = BTreeMap::new();
        for m in state.take_movements() {
            assert!(
                matches!(m.cause, MoveCause::Event { position, .. } if position == logged.position)
            );
            for moved in m.moved {
                let key = (
                    table.name(moved.person).clone(),
                    table.name(moved.brand).clone(),
                );
                recorded.insert(key, (moved.before, moved.after));
            }
        }
        for (key, (b, a)) in &recorded {
            assert!(close(b, before.get(key).unwrap_or(&zero)), "{key:?} before");
            assert!(close(a, after.get(key).unwrap_or(&zero)), "{key:?} after");
            checked += 1;
        }
        for (key, a) in &after {
            if !close(a, before.get(key).unwrap_or(&zero)) {
                assert!(recorded.contains_key(key), "{key:?} moved, not recorded");
            }
        }
    }
    assert!(state.live().stats().deferred > deferred, "nothing deferred");
    assert!(checked > 1_000, "{checked}");
}
