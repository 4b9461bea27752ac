//! Red team h70: the live thread's protocol of task h66 (an event's pushes
//! cut across slices, a drift rebuild owed and built off the locks) and
//! the per-person sums extended by appended impulses of task h67, met by
//! everything else that changes or reads the state. Each test drives the
//! protocol step by step on a `ScoreState` (as `engine::live::step` does:
//! no thread, no clock, so the interleavings are the test's) or through an
//! engine, and compares with a series or an engine made at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::Event;
use fusion::feed::Tracker;
use fusion::score::{ScoreState, ScoringModel};

use crate::live_drift::{catch_up, drifting_model, fan_stream};
use crate::live_plan::logged;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Validated events of (id, time, JSON members after id and time).
fn events_of(specs: &[(String, DateTime<Utc>, String)]) -> Vec<Event> {
    let lines: Vec<String> = specs
        .iter()
        .map(|(id, time, body)| {
            let time = time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            format!(r#"{{"id":"{id}","time":"{time}",{body}}}"#)
        })
        .collect();
    let values = fusion::ingest::parse_ndjson(lines.join("\n").as_bytes()).unwrap();
    let checked = fusion::ingest::validate_all(&values, &ScoringModel::default_model().currency);
    assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
    checked.good.into_iter().map(|(_, e)| e).collect()
}

/// The series' components at the latest event, as text (every bit).
fn series_text(state: &ScoreState) -> String {
    let latest = state.latest_time().expect("events folded");
    format!("{:?}", state.live_components_at(latest))
}

/// Folds `events` (log positions from `from`) one at a time into `state`,
/// catching the series up after each as the live thread does (checkpoint
/// builds installed, events applied deferring, pushes not cut) until a
/// drift check passes its limit: answers the index of the event after
/// which the rebuild is owed (`None`: the stream never drifted).
fn fold_until_a_drift_is_owed(
    state: &mut ScoreState,
    events: &[Event],
    from: usize,
) -> Option<usize> {
    for (i, e) in events.iter().enumerate() {
        assert!(state.apply(logged(std::slice::from_ref(e), from + i)));
        loop {
            if state.live_synced() {
                break;
            }
            if state.live_plan_needed() {
                let built = state.live_planner().expect("a build").plan().run();
                assert!(state.live_awaits(&built));
                drop(state.install_live(built));
                continue;
            }
            let mut drifted = false;
            state.apply_live_deferring(
                |step| {
                    drifted |= step.drifted;
                    false
                },
                || false,
            );
            if drifted {
                assert!(!state.live_synced(), "a drift rebuild owed is not synced");
                return Some(i);
            }
        }
    }
    None
}

/// Finding h70-2 (latent wrong answer): a drift rebuild the live thread
/// left owed, overtaken by an event of the drifting event's time (the
/// check is not one a series of the whole log makes), stayed owed through
/// an inline catch-up (`sync_live`, what `Derived::rebuild_live` and an
/// open use): `sync_live` answered `true` and the series was not synced;
/// the next deferring catch-up found it "due" again (the event of its
/// time applied, nothing pending) and installed a rebuild at the old
/// event's time over the events applied since (the later events' pushes
/// lost until the next checkpoint). Now an inline catch-up drops a
/// rebuild it no longer owes, as the deferring one does.
#[test]
fn an_owed_drift_rebuild_overtaken_by_an_event_of_its_time_is_not_made_after_an_inline_sync() {
    let model = drifting_model();
    let events = fan_stream(16, 600, 1);
    let (first, rest) = events.split_at(events.len() - 17);
    let mut state = ScoreState::build(Arc::clone(&model), vec![], first.to_vec());
    let mut log: Vec<Event> = first.to_vec();
    let owed =
        fold_until_a_drift_is_owed(&mut state, rest, log.len()).expect("the fan stream drifts");
    log.extend_from_slice(&rest[..=owed]);
    let at = rest[owed].time;
    // An event of the same time (a later id: appended, not late), then
    // one later, folded while the rebuild is owed.
    let same = events_of(&[(
        "zz-same-time".into(),
        at,
        r#""type":"purchase","person":"other","brand":"x1","amount":3"#.into(),
    )]);
    let later = events_of(&[(
        "zz-later".into(),
        at + Duration::milliseconds(500),
        r#""type":"purchase","person":"star3","brand":"x2","amount":40"#.into(),
    )]);
    for batch in [&same, &later] {
        assert!(state.apply(logged(batch, log.len())));
        log.extend_from_slice(batch);
    }
    assert!(state.sync_live(|| false));
    assert!(
        state.live_synced(),
        "caught up inline, the series still owes an overtaken drift rebuild (lag {})",
        state.live_lag()
    );
    // The rest of the stream, caught up as the live thread does.
    let tail = &rest[owed + 1..];
    assert!(state.apply(logged(tail, log.len())));
    log.extend_from_slice(tail);
    catch_up(&mut state, |_| {});
    let fresh = ScoreState::build(model, vec![], log);
    assert_eq!(series_text(&state), series_text(&fresh));
}

/// Finding h70-3 (crash, debug builds): a drift rebuild installed twice.
/// The live thread plans the rebuild it owes, lets the fold lock go and
/// builds; an admin rescore (`Derived::rebuild_live`) takes the fold lock,
/// plans the same rebuild and builds it; the live thread installs its own
/// (under the write lock alone: it fits); the rescore installs its own
/// without asking whether it still fits, and `LiveSeries::install`'s
/// `debug_assert` panicked (the state marked broken, rebuilt from the
/// log). A rebuild no longer owed is now refused by the install itself,
/// and the series is the one installed once.
#[test]
fn a_drift_rebuild_installed_twice_leaves_the_series_of_one_install() {
    let model = drifting_model();
    let events = fan_stream(16, 600, 1);
    let (first, rest) = events.split_at(events.len() - 17);
    let mut state = ScoreState::build(Arc::clone(&model), vec![], first.to_vec());
    let owed =
        fold_until_a_drift_is_owed(&mut state, rest, first.len()).expect("the fan stream drifts");
    let live_thread = state.live_planner().expect("the rebuild owed");
    let rescore = state
        .live_plan()
        .expect("the rebuild owed, planned under the lock");
    let mut once = state.clone();
    let (a, b) = (live_thread.plan().run(), rescore.run());
    assert!(a.is_drift() && b.is_drift());
    assert!(state.live_awaits(&a));
    drop(state.install_live(a));
    assert!(!state.live_awaits(&b), "installed already");
    drop(state.install_live(b));
    let built = once.live_planner().expect("owed").plan().run();
    drop(once.install_live(built));
    assert!(state.live_synced() && once.live_synced());
    assert_eq!(series_text(&state), series_text(&once));
    // And on to the end of the stream, the same as a fresh open.
    let mut log: Vec<Event> = first.to_vec();
    log.extend_from_slice(&rest[..=owed]);
    let tail = &rest[owed + 1..];
    assert!(state.apply(logged(tail, log.len())));
    log.extend_from_slice(tail);
    catch_up(&mut state, |_| {});
    let fresh = ScoreState::build(model, vec![], log);
    assert_eq!(series_text(&state), series_text(&fresh));
}

/// `followers` people following "star", each endorsing a brand (so each
/// spreads further), one a second from `t0`; then "star" buys at x0 for
/// `amount`: a push to every follower, thousands of pushes in one event.
fn audience(followers: u32, amount: u32) -> (Vec<Event>, Event) {
    let mut specs = Vec::new();
    let mut second = 0;
    let mut next = || {
        second += 1;
        t0() + Duration::seconds(second)
    };
    for f in 0..followers {
        specs.push((
            format!("f{f:05}"),
            next(),
            format!(r#""type":"follow","person":"f{f}","target":"star""#),
        ));
        specs.push((
            format!("e{f:05}"),
            next(),
            format!(
                r#""type":"endorsement","person":"f{f}","brand":"y{}","strength":0.8"#,
                f % 7
            ),
        ));
    }
    let mut events = events_of(&specs);
    let purchase = events_of(&[(
        "purchase".into(),
        next(),
        format!(r#""type":"purchase","person":"star","brand":"x0","amount":{amount}"#),
    )])
    .remove(0);
    events.shrink_to_fit();
    (events, purchase)
}

/// `n` unrelated events after `after`, one a second: enough of them pass
/// a checkpoint (every 128 events).
fn fillers(n: usize, after: DateTime<Utc>) -> Vec<Event> {
    let specs: Vec<_> = (0..n)
        .map(|i| {
            (
                format!("filler{i:04}"),
                after + Duration::seconds(i as i64 + 1),
                format!(
                    r#""type":"purchase","person":"shopper{i}","brand":"z{}","amount":5"#,
                    i % 3
                ),
            )
        })
        .collect();
    events_of(&specs)
}

/// The live thread's catch-up with a change feed: builds planned off a
/// copy and installed when they fit, events applied deferring, `cut`
/// answering whether to stop within an event's pushes. Answers what the
/// feed published: each relationship's last published score.
fn catch_up_publishing(
    state: &mut ScoreState,
    tracker: &mut Tracker,
    mut cut: impl FnMut() -> bool,
    published: &mut BTreeMap<(String, String), f64>,
) {
    let mut publish = |state: &mut ScoreState, tracker: &mut Tracker| {
        let movements = state.take_movements();
        for c in tracker.observe(movements, state.fold().table()) {
            published.insert((c.person.to_string(), c.brand.to_string()), c.score);
        }
    };
    for _ in 0..100_000 {
        if state.live_synced() {
            publish(state, tracker);
            return;
        }
        if let Some(planner) = state.live_planner() {
            let built = planner.plan().run();
            if state.live_awaits(&built) {
                drop(state.install_live(built));
            }
        } else {
            state.apply_live_deferring(|_| false, &mut cut);
        }
        publish(state, tracker);
    }
    panic!("no progress");
}

/// Finding h70-1 (wrong answer of the change feed): an influencer's event
/// whose pushes the live thread cut at a slice's end, then a checkpoint
/// passed (128 more events folded) before the next slice. The checkpoint
/// build takes the event (it is before the checkpoint), so its pushes are
/// never finished and its movement never recorded; the build's movement
/// compares the build with the series' rows as they stood, the event's
/// first pushes in them (`LiveSeries::movement_basis`). The followers
/// those pushes had reached were already (within the tolerance) at the
/// build's values: not moved, so never published, while a series that
/// applied the event whole (or not at all) before the build publishes
/// each. The basis now takes the rows the unsettled event touched at
/// their values before it.
#[test]
fn a_checkpoint_build_over_an_event_cut_mid_pushes_publishes_what_the_event_moved() {
    let model = Arc::new(ScoringModel::default_model());
    let (events, purchase) = audience(3_000, 20_000);
    let mut state = ScoreState::build(Arc::clone(&model), vec![], events.clone());
    assert!(state.sync_live(|| false));
    state.record_movements(true);
    let floor = state.fold().max_position();
    let mut reference = state.clone();
    let later = fillers(130, purchase.time);
    let at = events.len();

    // Cut: two asks' worth of the purchase's pushes, then the fillers.
    let mut cut_tracker = Tracker::new(Arc::clone(&model), floor);
    let mut cut_published = BTreeMap::new();
    assert!(state.apply(logged(std::slice::from_ref(&purchase), at)));
    let mut asks = 0;
    let caught_up = state.apply_live_deferring(
        |_| false,
        || {
            asks += 1;
            asks >= 2
        },
    );
    assert!(!caught_up, "the purchase's pushes were cut");
    assert!(state.apply(logged(&later, at + 1)));
    catch_up_publishing(&mut state, &mut cut_tracker, || false, &mut cut_published);

    // At once: the purchase applied whole, then the fillers.
    let mut once_tracker = Tracker::new(Arc::clone(&model), floor);
    let mut once_published = BTreeMap::new();
    assert!(reference.apply(logged(std::slice::from_ref(&purchase), at)));
    catch_up_publishing(
        &mut reference,
        &mut once_tracker,
        || false,
        &mut once_published,
    );
    assert!(reference.apply(logged(&later, at + 1)));
    catch_up_publishing(
        &mut reference,
        &mut once_tracker,
        || false,
        &mut once_published,
    );

    assert_eq!(series_text(&state), series_text(&reference));
    let followers = once_published
        .keys()
        .filter(|(p, _)| p.starts_with('f'))
        .count();
    assert!(
        followers > 100,
        "the purchase moved {followers} followers' scores"
    );
    let missing: Vec<_> = once_published
        .keys()
        .filter(|k| !cut_published.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} relationships published at once were never published when the event was cut: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (k, want) in &once_published {
        let got = cut_published[k];
        assert!(
            (got - want).abs() < 0.5,
            "{k:?}: {got} published, {want} at once"
        );
    }
}
