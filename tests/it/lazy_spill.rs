//! The lazy audience spill of the live series (`propagate::push`, "Lazy
//! audience spill"; issue #11, item 3): on generated streams where people
//! have wide audiences, the series defers their spill, stays within its
//! bound of the batch, and its bits are the same whatever the order of
//! arrival, the batching and where the catch-up stops.

use std::sync::Arc;

use chrono::Duration;
use fusion::domain::Event;
use fusion::generate::{GenerateConfig, write_ndjson};
use fusion::score::{ScoreState, ScoringModel};
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
        for chunk in sorted.chunks(1_999) {
            log.append(chunk.to_vec());
            assert!(log.state.sync_live(|| false));
            let latest = chunk.last().unwrap().time;
            let pending = log.state.live().deferred_bound();
            for at in [latest, latest + Duration::days(3)] {
                check(
                    &log.state,
                    at,
                    &format!("seed {seed} at {at}, pending {pending:e}"),
                );
            }
            deferred_checks += usize::from(pending > 0.0);
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
fn deferred_spill_and_its_flushes_are_the_same_bits_in_any_arrival_order() {
    // 155 checkpoints of 128 and 120 events after the last.
    let mut events = wide(20_000, 3);
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    events.truncate(19_960);
    let latest = events.last().unwrap().time;
    let at = latest + Duration::hours(1);
    let mut whole = ScoreState::build(model(), Vec::new(), events.clone());
    assert!(whole.sync_live(|| false));
    assert!(whole.live().stats().deferred > 0);
    assert!(whole.live().deferred_bound() > 0.0);
    let expected = format!("{:?}", whole.live_components_at(at).unwrap());
    // The tail one event at a time, each caught up in slices of one or two
    // events: deferrals and flushes fall at the same canonical positions.
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
