//! The live series' drift rebuild made off the locks (task h66, issue #11
//! items 1 and 3): the engine's live thread applies events under the fold
//! lock and the write lock, and a drift check past its limit rebuilt the
//! whole series there (a batch evaluation: seconds at 1,000,000 events,
//! which the fold thread and every acknowledgement waited out). Now the
//! series owes the rebuild (`ScoreState::apply_live_deferring`), applies
//! nothing meanwhile, and the thread plans it from a copy
//! (`ScoreState::live_planner`), builds it off the locks while the fold goes
//! on, and installs it. The series must be the one the rebuild made at once
//! makes, bit for bit.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::Event;

use crate::live_plan::logged;
use fusion::score::{ScoreState, ScoringModel};

/// A model whose drift check fires on [`fan_stream`]: a coarse tolerance
/// (1e-2: the limit is 10 raw) and a large association spill (ρ = 0.83),
/// as `live::an_endorser_of_many_brands_does_not_rebuild_the_live_series_at_every_check`.
pub(crate) fn drifting_model() -> Arc<ScoringModel> {
    let text = fusion::score::DEFAULT_MODEL
        .replacen("association = 0.35", "association = 0.83", 1)
        .replacen("live_tolerance = 1e-4", "live_tolerance = 1e-2", 1);
    Arc::new(ScoringModel::from_toml(&text).unwrap())
}

/// Events of the given bodies (JSON members after id and time), one a
/// second from a fixed start (no two at the same time), validated.
pub(crate) fn one_a_second(bodies: Vec<String>) -> Vec<Event> {
    let start = DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let lines: Vec<String> = bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let time = (start + Duration::seconds(i as i64)).format("%Y-%m-%dT%H:%M:%SZ");
            format!(r#"{{"id":"d{i}","time":"{time}",{body}}}"#)
        })
        .collect();
    let values = fusion::ingest::parse_ndjson(lines.join("\n").as_bytes()).unwrap();
    let checked = fusion::ingest::validate_all(&values, &ScoringModel::default_model().currency);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    checked.good.into_iter().map(|(_, e)| e).collect()
}

/// `stars` people who buy at `brands` brands each, one event a second (no
/// two at the same time); then a "fan" who endorses one brand follows them
/// one by one. Each follow spills a star's whole row into the fan's
/// residual, below the tolerance at each brand: the fan's few associations
/// gather a residual row of hundreds of brands within a checkpoint's
/// events, the case the drift check fires for (`score::live`, "Drift
/// control"). Deterministic.
pub(crate) fn fan_stream(stars: u32, brands: u32, amount: u32) -> Vec<Event> {
    let mut bodies = Vec::new();
    for s in 0..stars {
        for b in 0..brands {
            bodies.push(format!(
                r#""type":"purchase","person":"star{s}","brand":"x{b}","amount":{amount}"#
            ));
        }
    }
    bodies.push(r#""type":"endorsement","person":"fan","brand":"x0","strength":0.9"#.into());
    for s in 0..stars {
        bodies.push(format!(
            r#""type":"follow","person":"fan","target":"star{s}""#
        ));
    }
    one_a_second(bodies)
}

/// The live thread's catch-up (`engine::live::step`) on `state`, with
/// `meanwhile` folded between each build's copy and its install (the fold
/// thread folds while the live thread builds off the lock); answers the
/// drift rebuilds installed.
pub(crate) fn catch_up(state: &mut ScoreState, mut meanwhile: impl FnMut(&mut ScoreState)) -> u32 {
    let mut drift_builds = 0;
    loop {
        if state.live_synced() {
            return drift_builds;
        }
        if let Some(planner) = state.live_planner() {
            meanwhile(state);
            let built = planner.plan().run();
            if built.is_drift() {
                drift_builds += 1;
            }
            if state.live_awaits(&built) {
                drop(state.install_live(built));
            }
            continue;
        }
        // Slices of a few events each, an event's pushes cut at every ask.
        let mut left = 5;
        state.apply_live_deferring(
            |_| {
                left -= 1;
                left == 0
            },
            || true,
        );
    }
}

/// Regression test for task h66 (a drift rebuild built under the fold
/// lock and the write lock, inside a slice of the live thread): folded in
/// batches, the stream's series is caught up after each as the live thread
/// does it, the next batch folded whenever a build runs off the lock;
/// beside it, a copy folds the same batches and syncs at once (the rebuild
/// made where the check fires). Their series are the same, bit for bit,
/// after every catch-up, and the drift rebuild was made off the lock.
#[test]
fn a_drift_rebuild_made_off_the_lock_while_the_fold_goes_on_is_the_one_made_at_once() {
    let events = fan_stream(16, 600, 1);
    let (first, rest) = events.split_at(events.len() - 17);
    let mut state = ScoreState::build(drifting_model(), vec![], first.to_vec());
    let mut reference = state.clone();
    let batches: Vec<(usize, &[Event])> = rest
        .chunks(2)
        .enumerate()
        .map(|(i, b)| (first.len() + 2 * i, b))
        .collect();
    let next = std::cell::Cell::new(0);
    let mut folded = 0;
    let mut drift_builds = 0;
    while next.get() < batches.len() {
        let (from, batch) = batches[next.get()];
        next.set(next.get() + 1);
        assert!(state.apply(logged(batch, from)));
        drift_builds += catch_up(&mut state, |s| {
            if let Some(&(from, batch)) = batches.get(next.get()) {
                assert!(s.apply(logged(batch, from)));
                next.set(next.get() + 1);
            }
        });
        for &(from, batch) in &batches[folded..next.get()] {
            assert!(reference.apply(logged(batch, from)));
        }
        folded = next.get();
        assert!(reference.sync_live(|| false));
        let latest = state.latest_time().expect("events folded");
        assert_eq!(
            format!("{:?}", state.live_components_at(latest)),
            format!("{:?}", reference.live_components_at(latest)),
            "after the batch at {from}"
        );
        assert_eq!(
            state.live().stats().recomputes,
            reference.live().stats().recomputes
        );
    }
    let recomputes = reference.live().stats().recomputes;
    eprintln!("drift rebuilds {recomputes}, made off the lock {drift_builds}");
    assert!(drift_builds >= 1, "no drift rebuild off the lock");
    // And a fresh open of the whole log has the same series.
    let fresh = ScoreState::build(drifting_model(), vec![], events.clone());
    let latest = fresh.latest_time().unwrap();
    assert_eq!(
        format!("{:?}", fresh.live_components_at(latest)),
        format!("{:?}", state.live_components_at(latest))
    );
}

/// `followers` people who follow an "influencer" and endorse a brand each
/// (so each spreads further), then one purchase by the influencer: its
/// push reaches every follower, more than `WORK_PER_ASK` entries touched
/// in one event.
fn influencer_stream(followers: u32) -> Vec<Event> {
    let mut bodies = follower_bodies(followers);
    bodies.push(r#""type":"purchase","person":"star","brand":"x0","amount":90"#.into());
    one_a_second(bodies)
}

/// The bodies of [`influencer_stream`] before the purchase: `followers`
/// people who follow "star" and endorse one of 7 brands each.
pub(crate) fn follower_bodies(followers: u32) -> Vec<String> {
    let mut bodies = Vec::new();
    for f in 0..followers {
        bodies.push(format!(
            r#""type":"follow","person":"f{f}","target":"star""#
        ));
        bodies.push(format!(
            r#""type":"endorsement","person":"f{f}","brand":"y{}","strength":0.8"#,
            f % 7
        ));
    }
    bodies
}

/// Regression test for task h66 (one event's pushes, an influencer's
/// audience, held a slice of the live thread under both locks for as long
/// as they took): the live thread cuts an event's pushes at its deadline
/// and goes on in the next slice. Cut at every ask, the event stays
/// pending (the series is not synced, readers get a batch evaluation) and
/// the series is the one its pushes made at once, bit for bit.
#[test]
fn an_events_pushes_cut_across_slices_make_the_series_made_at_once() {
    let mut events = influencer_stream(3_000);
    let last = events.pop().expect("the purchase");
    let model = Arc::new(ScoringModel::default_model());
    let mut state = ScoreState::build(model, vec![], events.clone());
    let mut reference = state.clone();
    let at = events.len();
    assert!(state.apply(logged(std::slice::from_ref(&last), at)));
    assert!(reference.apply(logged(std::slice::from_ref(&last), at)));
    assert!(reference.sync_live(|| false));
    // Builds at checkpoints first, if one is due.
    while let Some(planner) = state.live_planner() {
        drop(state.install_live(planner.plan().run()));
    }
    let mut parts = 0;
    let mut pushes = 0;
    loop {
        let caught_up = state.apply_live_deferring(
            |step| {
                pushes += step.pushes;
                false
            },
            || true,
        );
        parts += 1;
        if caught_up {
            break;
        }
        assert!(!state.live_synced());
        assert!(state.live_components_at(last.time).is_none());
        assert!(parts < 10_000, "no progress");
    }
    eprintln!("{parts} parts, {pushes} pushes");
    assert!(parts > 2, "the event's pushes were cut: {parts} parts");
    let latest = state.latest_time().unwrap();
    assert_eq!(
        format!("{:?}", state.live_components_at(latest)),
        format!("{:?}", reference.live_components_at(latest))
    );
    assert_eq!(state.live().stats().pushes, reference.live().stats().pushes);
}

/// `n` purchases, one a second, by `n / 3` people at 5 brands.
fn purchases(n: usize) -> Vec<Event> {
    one_a_second(
        (0..n)
            .map(|i| {
                format!(
                    r#""type":"purchase","person":"p{}","brand":"b{}","amount":{}"#,
                    i % (n / 3).max(1),
                    i % 5,
                    10 + i % 7
                )
            })
            .collect(),
    )
}

/// Regression test (lead, session 30) for task h66's install rule: it
/// installed a checkpoint build only when the series still awaited that
/// very build, so under a stream, which moves the checkpoint every 128
/// events while a build takes seconds, every build was overtaken and
/// thrown away; the series took nothing and the change feed heard of no
/// event until the stream stopped. An overtaken build planned on the same
/// state moves the series up to its checkpoint (the events before it taken
/// whole, their movement recorded for the feed); a build older than the
/// one the series holds is refused (else the series would need a build
/// again before its next event); and the series caught up at the end is
/// the one a sync at once makes, bit for bit.
#[test]
fn a_build_the_stream_overtook_moves_the_series_to_its_checkpoint_and_an_older_one_is_refused() {
    let events = purchases(1_000);
    let (first, rest) = events.split_at(300);
    let model = Arc::new(ScoringModel::default_model());
    let mut state = ScoreState::build(model, vec![], first.to_vec());
    state.record_movements(true);
    let mut reference = state.clone();
    while let Some(planner) = state.live_planner() {
        drop(state.install_live(planner.plan().run()));
    }
    assert!(state.apply_live(|| false));
    assert!(state.live_synced());
    drop(state.take_movements());
    // The stream goes on past a checkpoint; a build of it is planned, and
    // two more checkpoints pass while it runs.
    assert!(state.apply(logged(&rest[..100], 300)));
    let planner = state
        .live_planner()
        .expect("a checkpoint passed: a build is due");
    assert!(state.apply(logged(&rest[100..400], 400)));
    let overtaken = planner.plan().run();
    let latest_build = state
        .live_planner()
        .expect("the checkpoint moved on")
        .plan()
        .run();
    assert!(!state.live_awaits(&overtaken), "the stream overtook it");
    assert!(state.live_advanced_by(&overtaken));
    let lag = state.live_lag();
    drop(state.install_live(overtaken));
    assert!(
        state.live_lag() < lag,
        "the events up to its checkpoint are taken: lag {} of {lag}",
        state.live_lag()
    );
    assert!(
        !state.take_movements().is_empty(),
        "the feed hears what the events it took moved"
    );
    assert!(!state.live_synced(), "the series needs the latest build");
    // The latest build, then one at the overtaken one's checkpoint again:
    // refused.
    assert!(state.live_advanced_by(&latest_build));
    drop(state.install_live(latest_build));
    let stale = {
        let mut copy = reference.clone();
        assert!(copy.apply(logged(&rest[..100], 300)));
        copy.live_planner().expect("a build is due").plan().run()
    };
    assert!(
        !state.live_advanced_by(&stale),
        "older than the series' build"
    );
    // Caught up, the series is the one a sync at once makes.
    assert!(state.apply(logged(&rest[400..], 700)));
    while let Some(planner) = state.live_planner() {
        drop(state.install_live(planner.plan().run()));
    }
    assert!(state.apply_live(|| false));
    assert!(reference.apply(logged(rest, 300)));
    assert!(reference.sync_live(|| false));
    let latest = state.latest_time().unwrap();
    assert_eq!(
        format!("{:?}", state.live_components_at(latest)),
        format!("{:?}", reference.live_components_at(latest))
    );
}

/// Session 31: under a stream every checkpoint build is overtaken, and a
/// ranking read the series as it stands instead of running a batch
/// evaluation of every relationship beside the series' own build
/// (`Engine::build_ranking`). As it stands, the series must answer for
/// the log up to the position it says it reflects, and for no event after
/// it: the relationships of the log's first `reflected` events exactly,
/// each within the live series' tolerance of that log's own series.
/// Never built, it answers nothing.
#[test]
fn a_series_the_stream_overtook_answers_for_the_log_up_to_the_position_it_reflects() {
    let events = purchases(1_000);
    let (first, rest) = events.split_at(300);
    let model = Arc::new(ScoringModel::default_model());
    let at = events.last().unwrap().time + Duration::hours(1);
    let empty = ScoreState::build(Arc::clone(&model), vec![], vec![]);
    assert_eq!(empty.live_reflected_position(), None, "never built");
    assert!(empty.live_lagging_at(at).is_none());
    let mut state = ScoreState::build(Arc::clone(&model), vec![], first.to_vec());
    assert!(state.sync_live(|| false));
    assert_eq!(state.live_reflected_position(), Some(state.position()));
    // The stream passes a checkpoint; its build is planned, and two more
    // checkpoints pass while it runs.
    assert!(state.apply(logged(&rest[..100], 300)));
    let planner = state.live_planner().expect("a checkpoint passed");
    assert!(state.apply(logged(&rest[100..400], 400)));
    assert_eq!(
        state.live_reflected_position(),
        Some(300),
        "the first event not applied"
    );
    drop(state.install_live(planner.plan().run()));
    let reflected = state.live_reflected_position().expect("a whole series");
    assert!(
        reflected > 300 && reflected < state.position(),
        "up to the overtaken build's checkpoint: {reflected} of {}",
        state.position()
    );
    let (rows, answered) = state.live_lagging_at(at).expect("as it stands");
    assert_eq!(answered, reflected);
    assert!(!state.live_synced(), "the series lags");
    let lagging = rows.finish(&model);
    let mut prefix = ScoreState::build(
        Arc::clone(&model),
        vec![],
        events[..reflected as usize].to_vec(),
    );
    assert!(prefix.sync_live(|| false));
    let expected = prefix.scores_at(at).finish(&model);
    assert_eq!(
        lagging.scores.keys().collect::<Vec<_>>(),
        expected.scores.keys().collect::<Vec<_>>(),
        "the relationships of the log up to the position, no later one"
    );
    let worst = lagging
        .scores
        .values()
        .zip(expected.scores.values())
        .map(|(a, b)| (a.score - b.score).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "{worst} points from that log's series");
}
