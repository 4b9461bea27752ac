//! The live series' checkpoint build planned off the fold lock (task h60,
//! issue #11 items 1, 2 and 5): the live thread takes under the lock only a
//! copy of what the plan reads (`ScoreState::live_planner`), lets go, and
//! plans and builds while the fold thread folds on. The build, and what it
//! tells a change feed it moved, must be those of the plan made under the
//! lock (`ScoreState::live_plan`), bit for bit, whatever is folded
//! between the copy and the install.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::{Event, Logged};
use fusion::score::{MoveCause, ScoreState, ScoringModel};

use crate::determinism::random_events;

fn model() -> Arc<ScoringModel> {
    Arc::new(ScoringModel::default_model())
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// `n` events of every type over a few people and brands, their times
/// folded onto 40 minutes (runs of equal times straddle checkpoints), in
/// canonical order (so batches of them in turn append).
pub fn events_within_40_minutes(seed: u64, n: usize) -> Vec<Event> {
    let start = t("2026-01-01T00:00:00Z");
    let mut events: Vec<Event> = random_events(seed, n)
        .into_iter()
        .map(|mut e| {
            let minutes = (e.time - start).num_minutes().rem_euclid(40);
            e.time = start + Duration::minutes(minutes);
            e
        })
        .collect();
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    events
}

pub(crate) fn logged(events: &[Event], from: usize) -> Vec<Logged> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| Logged {
            position: (from + i) as u64,
            event: event.clone(),
        })
        .collect()
}

/// A stream folded in batches with a change feed attached; whenever the
/// series needs a checkpoint build, the plan is taken from a copy
/// (`live_planner`), the next batch is folded into the state before the
/// plan is made and run (as the fold thread folds while the live thread
/// plans off the lock), and the build is installed. Beside it, a copy of
/// the state takes the plan as the live thread did before task h60 (under
/// the lock, before the batch). Their builds, the movements the feed is
/// told (the build's, with its "before" rows, and each event's after it)
/// and the series are the same, bit for bit. Before, the whole plan was
/// read under the fold lock, 1 to 3 s at 1,000,000 events.
#[test]
fn a_live_plan_made_off_the_lock_while_the_fold_goes_on_is_the_plan_made_under_it() {
    let (mut builds, mut moved_by_builds) = (0, 0);
    for seed in 0..3u64 {
        let events = events_within_40_minutes(seed + 60, 700);
        let (first, rest) = events.split_at(200);
        let mut state = ScoreState::build(model(), vec![], first.to_vec());
        state.record_movements(true);
        let batches: Vec<(usize, &[Event])> = rest
            .chunks(9)
            .enumerate()
            .map(|(i, b)| (first.len() + 9 * i, b))
            .collect();
        let mut i = 0;
        while i < batches.len() {
            let (from, batch) = batches[i];
            assert!(state.apply(logged(batch, from)));
            i += 1;
            if !state.live_plan_needed() {
                // The live thread's slices: caught up to this batch.
                assert!(state.apply_live(|| false));
                continue;
            }
            builds += 1;
            // Before task h60: planned under the lock, then built and
            // installed (after the next batch, folded meanwhile).
            let mut reference = state.clone();
            let plan = reference.live_plan().expect("a build is needed");
            // Now: a copy taken under the lock, planned off it.
            let planner = state.live_planner().expect("a build is needed");
            if let Some(&(from, batch)) = batches.get(i) {
                assert!(state.apply(logged(batch, from)));
                assert!(reference.apply(logged(batch, from)));
                i += 1;
            }
            reference.install_live(plan.run());
            state.install_live(planner.plan().run());
            let (ours, theirs) = (state.take_movements(), reference.take_movements());
            moved_by_builds += ours
                .iter()
                .filter(|m| matches!(m.cause, MoveCause::Rebuild { .. }) && !m.moved.is_empty())
                .count();
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "seed {seed}");
            assert!(state.apply_live(|| false));
            assert!(reference.apply_live(|| false));
            assert_eq!(
                format!("{:?}", state.take_movements()),
                format!("{:?}", reference.take_movements()),
                "seed {seed}"
            );
            let latest = state.latest_time().expect("events folded");
            assert_eq!(
                format!("{:?}", state.live_components_at(latest)),
                format!("{:?}", reference.live_components_at(latest)),
                "seed {seed}"
            );
        }
        // And the stream's series is a fresh open's of the same log.
        let whole = ScoreState::build(model(), vec![], events.clone());
        let latest = whole.latest_time().expect("events folded");
        assert_eq!(
            format!("{:?}", state.live_components_at(latest)),
            format!("{:?}", whole.live_components_at(latest)),
            "seed {seed}"
        );
    }
    assert!(builds >= 6, "{builds} builds");
    assert!(moved_by_builds > 0, "no build moved a relationship");
}
