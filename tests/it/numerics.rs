//! Numerics of decay for any span of event time and any model the loader
//! accepts (issue #9, item 1): the live series' forward decay with its moving
//! landmark, the batch and explanations beside it, and the model's bounds.
//!
//! Events here are built by validating an in-range copy and then setting
//! the time: the store may hold times the validator no longer accepts
//! (written by older code), and the fold must take them all the same.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use fusion::domain::{EntityId, Event};
use fusion::score::{MAX_HALF_LIFE_DAYS, MIN_HALF_LIFE_DAYS, ScoreState, ScoringModel};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::determinism::{fingerprint, random_events};

pub const ZERO_TIME_POISON: &str = include_str!("../../fixtures/field/01-zero-time-poison.ndjson");

fn id(s: &str) -> EntityId {
    EntityId::new(s).unwrap()
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A validated event with the time of its line, whatever that time is.
pub fn event_at_any_time(line: &Value) -> Event {
    let time = t(line["time"].as_str().unwrap());
    let mut inside = line.clone();
    inside["time"] = "2026-01-01T00:00:00Z".into();
    let checked = fusion::ingest::validate_all(
        &[inside],
        &fusion::score::ScoringModel::default_model().currency,
    );
    let (mut good, bad) = (checked.good, checked.rejected);
    assert!(bad.is_empty(), "{bad:?}");
    Event {
        time,
        ..good.remove(0).1
    }
}

/// The events of an NDJSON text, at their own times.
pub fn events_of(ndjson: &str) -> Vec<Event> {
    ndjson
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| event_at_any_time(&serde_json::from_str(l).unwrap()))
        .collect()
}

/// The default model with every half-life set to `days`.
fn model_with_half_lives(days: f64) -> Arc<ScoringModel> {
    let mut text = String::new();
    let mut in_half_lives = false;
    for line in fusion::score::DEFAULT_MODEL.lines() {
        if line.starts_with('[') {
            in_half_lives = line.trim() == "[half_life_days]";
        }
        match line.split_once('=') {
            Some((key, _)) if in_half_lives => {
                text.push_str(&format!("{} = {days:?}\n", key.trim()));
            }
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    Arc::new(ScoringModel::from_toml(&text).expect("a model within the bounds"))
}

/// Everything a state serves is finite and every score in [0, 100], at `at`.
fn assert_finite(state: &ScoreState, at: DateTime<Utc>) {
    for (k, s) in &state.batch(at).scores {
        assert!(
            s.score.is_finite() && (0.0..=100.0).contains(&s.score),
            "{k:?}: {s:?}"
        );
        assert!(s.components.iter().all(|c| c.is_finite()), "{k:?}: {s:?}");
    }
    let mut synced = state.clone();
    assert!(synced.sync_live(|| false));
    if let Some(live) = synced.live_components_at(at) {
        for (k, c) in live {
            assert!(c.iter().all(|x| x.is_finite()), "{k:?}: {c:?}");
        }
    }
}

/// Regression: a placeholder date (0001-01-01) beside a 2026 event was
/// acknowledged, then the fold thread panicked (forward decay
/// `2^((t - o)/h)` overflowed), and no server could start on the store.
#[test]
fn events_two_thousand_years_apart_fold_and_score() {
    let events = events_of(ZERO_TIME_POISON);
    let latest = events.iter().map(|e| e.time).max().unwrap();
    let state = ScoreState::build(
        Arc::new(ScoringModel::default_model()),
        Vec::new(),
        events.clone(),
    );
    assert!(state.live().stats().renormalisations >= 1);
    crate::live::check(&state, latest, "zero-time poison");
    assert_finite(&state, latest);
    let explain = |p: &str, b: &str, at| {
        crate::support::explain(&state, &events, &id(p), &id(b), at).unwrap()
    };
    let alice = explain("alice", "acme", latest);
    assert!(alice.score > 50.0 && alice.score < 100.0, "{alice:?}");
    let bob = explain("bob", "globex", t("0001-01-02T00:00:00Z"));
    assert!(bob.score > 50.0, "{bob:?}");
}

/// The span that overflows depends on the shortest half-life: with a
/// 7-day one, 20 years was enough.
#[test]
fn a_seven_day_half_life_scores_events_twenty_years_apart() {
    let model = model_with_half_lives(7.0);
    // Fewer than a checkpoint's worth of events: all applied one by one
    // from the first one's time.
    let mut events = random_events(1, 100);
    let old = t("2006-01-01T00:00:00Z");
    for e in events.iter_mut().step_by(3) {
        e.time = old + (e.time - t("2026-01-01T00:00:00Z"));
    }
    let latest = events.iter().map(|e| e.time).max().unwrap();
    let state = ScoreState::build(model, Vec::new(), events);
    assert!(state.live().stats().renormalisations >= 1);
    crate::live::check(&state, latest, "7-day half-lives");
    assert_finite(&state, latest);
}

/// `random_events` spread over `years` from `start`, in canonical order
/// of the original stream.
fn spread_over(events: Vec<Event>, start: DateTime<Utc>, years: i64) -> Vec<Event> {
    let first = t("2026-01-01T00:00:00Z");
    // random_events draws times within 200,000 minutes of `first`.
    let scale = (years * 365 * 24 * 60) as f64 / 200_000.0;
    events
        .into_iter()
        .map(|e| {
            let minutes = (e.time - first).num_minutes() as f64 * scale;
            Event {
                time: start + Duration::minutes(minutes as i64),
                ..e
            }
        })
        .collect()
}

/// The landmark moves at canonical positions only, so the bits of every
/// score stay a function of the event set across centuries too, with the
/// shortest half-life the loader accepts (many moves).
#[test]
fn arrival_order_does_not_matter_across_three_centuries() {
    let model = model_with_half_lives(MIN_HALF_LIFE_DAYS);
    let events = spread_over(random_events(9, 400), t("1900-01-01T00:00:00Z"), 299);
    let latest = events.iter().map(|e| e.time).max().unwrap();
    let times = [t("1950-06-01T00:00:00Z"), latest, t("2199-12-31T00:00:00Z")];
    let reference = ScoreState::build(Arc::clone(&model), Vec::new(), events.clone());
    assert!(reference.live().stats().renormalisations > 10);
    crate::live::check(&reference, latest, "one-hour half-lives over 300 years");
    let expected = fingerprint(&reference, &events, &times);
    for seed in 0..3 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut shuffled = events.clone();
        shuffled.shuffle(&mut rng);
        let mut log = crate::support::MemoryLog::new(Arc::clone(&model));
        for chunk in shuffled.chunks(37) {
            log.append(chunk.to_vec());
        }
        assert_eq!(
            fingerprint(&log.state, &log.events, &times),
            expected,
            "order {seed}"
        );
    }
}

#[test]
fn the_longest_half_life_scores_across_the_range_too() {
    let model = model_with_half_lives(MAX_HALF_LIFE_DAYS);
    let events = spread_over(random_events(4, 300), t("1900-01-01T00:00:00Z"), 299);
    let latest = events.iter().map(|e| e.time).max().unwrap();
    let state = ScoreState::build(model, Vec::new(), events);
    crate::live::check(&state, latest, "100-year half-lives");
    assert_finite(&state, latest);
    assert_finite(&state, t("2199-12-31T23:59:59Z"));
}

/// Every number of a model has a bound, and past it the loader says which.
#[test]
fn models_past_the_bounds_are_refused_naming_the_number() {
    let cases = [
        (
            "sentiment = 30.0",
            "sentiment = 0.01",
            "half_life_days.sentiment",
        ),
        ("sales = 60.0", "sales = 1e7", "half_life_days.sales"),
        ("service = 1.0", "service = 1e300", "weight.service"),
        ("spread = 4.0", "spread = 0.0", "spread"),
        ("tolerance = 1e-6", "tolerance = 1e-300", "tolerance"),
        (
            "live_tolerance = 1e-4",
            "live_tolerance = 0.0",
            "live_tolerance",
        ),
        ("max_hops = 644", "max_hops = 0", "max_hops"),
        ("purchase = 0.3", "purchase = 1e308", "impulse.purchase"),
        (
            "purchase_unit = 20.0",
            "purchase_unit = 1e-300",
            "purchase_unit",
        ),
        ("association = 0.35", "association = 0.9", "converge"),
        (
            "sales_window_days = 7.0",
            "sales_window_days = 1e30",
            "sales_window_days",
        ),
    ];
    for (from, to, named) in cases {
        assert!(fusion::score::DEFAULT_MODEL.contains(from), "{from}");
        let text = fusion::score::DEFAULT_MODEL.replacen(from, to, 1);
        let err = ScoringModel::from_toml(&text)
            .err()
            .unwrap_or_else(|| panic!("{to} was accepted"))
            .to_string();
        assert!(err.contains(named), "{to}: {err}");
    }
}

/// A model at the edges of every bound at once still folds a stream over
/// the whole time range into finite scores.
#[test]
fn a_model_at_its_bounds_folds_into_finite_scores() {
    let mut text = String::new();
    let mut table = String::new();
    for line in fusion::score::DEFAULT_MODEL.lines() {
        if line.starts_with('[') {
            table = line.trim().to_string();
            text.push_str(line);
            text.push('\n');
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            text.push_str(line);
            text.push('\n');
            continue;
        };
        let key = key.trim();
        let value = match (table.as_str(), key) {
            ("[half_life_days]", _) => format!("{MIN_HALF_LIFE_DAYS:?}"),
            ("[weight]", _) => "1000.0".into(),
            ("[propagation]", "audience") => "0.6".into(),
            ("[propagation]", "association") => "0.35".into(),
            ("[impulse]", "purchase_unit") => "0.001".into(),
            ("[impulse]", "sales_window_days") => "3650.0".into(),
            ("[impulse]", "sales_baseline_periods") => "1".into(),
            ("[impulse]", _) => "1000.0".into(),
            ("", "spread") => "0.001".into(),
            _ => {
                text.push_str(line);
                text.push('\n');
                continue;
            }
        };
        text.push_str(&format!("{key} = {value}\n"));
    }
    let model = Arc::new(ScoringModel::from_toml(&text).expect("a model at its bounds"));
    let events = spread_over(random_events(5, 150), t("1900-01-01T00:00:00Z"), 299);
    let latest = events.iter().map(|e| e.time).max().unwrap();
    let state = ScoreState::build(model, Vec::new(), events);
    assert_finite(&state, latest);
    assert_finite(&state, t("1901-01-01T00:00:00Z"));
}
