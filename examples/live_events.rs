//! The live series per event: folds all but the last `K` events of an NDJSON
//! file (a checkpoint build), then appends the last `K` one at a time, each
//! followed by the live series' catch-up, and prints the catch-up time per
//! event (mean, p50, p99, max; and the mean of the events applied alone,
//! without a checkpoint build) and the pushes per event, as `name=value`
//! lines. Used by `benches/live.sh`.
//!
//! Where the cost is (issue #11, item 3), also as `name=value` lines:
//! - per event type and author audience (the author's follower count in
//!   the series before the event, bucketed `0`, `1-15`, `16-255`, `256+`),
//!   the events, pushes, visits and microseconds of the events applied
//!   alone (`class.<type>.<bucket>.*`);
//! - the share of visits that are the audience fan-out of people with a
//!   wide audience (`fanout_visit_share`, `score::live::WIDE_AUDIENCE`);
//! - time per push and per visit over the events applied alone;
//! - the share of the mean that checkpoint builds weigh (`build_share`);
//! - the live series' bound at the end (`live_error_bound`), the row sums'
//!   bound alone (`live_row_sum_bound`), and the rebuilds its drift check
//!   forced among the checkpoints (`drift_rebuilds`);
//! - the series as first built: its rows of `s` and `r` and the bytes they
//!   hold (`live_rows`, `live_residual_rows`, `live_row_bytes`; the memory
//!   figures of docs/scale.md); and the most the series kept, after any
//!   event, to go back to its build at the checkpoint (rows saved as they
//!   were before the events since changed them: `undo_rows_max`,
//!   `undo_bytes_max`; what a refold needs instead of a second copy).
//!
//! Usage: cargo run --release --example live_events -- FILE [K]

#[path = "support/checked_events.rs"]
mod checked_events;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fusion::domain::{EntityId, Logged};
use fusion::score::{ScoreState, ScoringModel};

/// The author audience bucket of a follower count.
fn bucket(followers: usize) -> &'static str {
    match followers {
        0 => "0",
        1..=15 => "1-15",
        16..=255 => "16-255",
        _ => "256+",
    }
}

/// Per class: events, pushes, visits, fan-out visits, microseconds.
#[derive(Default)]
struct Class {
    events: u64,
    pushes: u64,
    visits: u64,
    fanout: u64,
    us: f64,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: live_events FILE [K]");
    let k: usize = args.next().map_or(Ok(200), |s| s.parse())?;
    let model = Arc::new(ScoringModel::default_model());
    let (values, good) = checked_events::read_checked(&path, &model)?;
    // The author of each event: its `person` field, when it has one.
    let mut events: Vec<_> = good
        .into_iter()
        .map(|(i, e)| {
            let author = values[i]
                .get("person")
                .and_then(|v| v.as_str())
                .and_then(|s| EntityId::new(s).ok());
            (e, author)
        })
        .collect();
    events.sort_by(|a, b| (a.0.time, &a.0.id).cmp(&(b.0.time, &b.0.id)));
    let tail = events.split_off(events.len().saturating_sub(k));
    let events: Vec<_> = events.into_iter().map(|(e, _)| e).collect();

    let started = Instant::now();
    let held = events.len() as u64;
    let mut state = ScoreState::build(model, Vec::new(), events);
    let open_s = started.elapsed().as_secs_f64();
    // The series as built: its rows of `s` and `r` (docs/scale.md).
    let rows = state.live().row_footprint();
    let before = state.live().stats();
    let mut per_event = Vec::with_capacity(tail.len());
    // Events whose catch-up applied the event alone (no checkpoint build).
    let mut incremental = Vec::with_capacity(tail.len());
    let mut build_us = 0.0;
    let mut undo_max = (0, 0);
    let mut classes: BTreeMap<(String, &'static str), Class> = BTreeMap::new();
    for (i, (event, author)) in tail.into_iter().enumerate() {
        let kind = event.kind.event_type().as_str().to_string();
        let audience = author
            .and_then(|a| state.fold().table().get(&a))
            .map_or(0, |h| state.live().audience(&h));
        // Later than everything before: appended in place.
        let position = held + i as u64;
        assert!(state.apply(vec![Logged { position, event }]));
        let was = state.live().stats();
        let t = Instant::now();
        state.sync_live(|| false);
        let us = t.elapsed().as_secs_f64() * 1e6;
        let now = state.live().stats();
        let undo = state.live().undo_footprint();
        undo_max.0 = undo_max.0.max(undo.rows);
        undo_max.1 = undo_max.1.max(undo.bytes);
        per_event.push(us);
        if now.builds == was.builds {
            incremental.push(us);
            let class = classes.entry((kind, bucket(audience))).or_default();
            class.events += 1;
            class.pushes += now.pushes - was.pushes;
            class.visits += now.visits - was.visits;
            class.fanout += now.fanout_visits - was.fanout_visits;
            class.us += us;
        } else {
            build_us += us;
        }
    }
    let after = state.live().stats();
    let total_us: f64 = per_event.iter().sum();
    per_event.sort_by(f64::total_cmp);
    let n = per_event.len().max(1);
    let at = |q: f64| per_event[((n as f64 - 1.0) * q).round() as usize];
    println!("events={}", state.event_count());
    println!("open_s={open_s:.3}");
    println!("live_rows={}", rows.scores);
    println!("live_residual_rows={}", rows.residual);
    println!("live_row_bytes={}", rows.bytes);
    println!(
        "live_row_bytes_per_relationship={:.1}",
        rows.bytes as f64 / rows.scores.max(1) as f64
    );
    println!("undo_rows_max={}", undo_max.0);
    println!("undo_bytes_max={}", undo_max.1);
    println!("appended={}", per_event.len());
    println!("live_us_mean={:.0}", total_us / n as f64);
    println!("live_us_p50={:.0}", at(0.5));
    println!("live_us_p99={:.0}", at(0.99));
    println!("live_us_max={:.0}", at(1.0));
    println!("checkpoints={}", after.builds - before.builds);
    let m = incremental.len().max(1) as f64;
    println!("incremental_events={}", incremental.len());
    println!(
        "incremental_us_mean={:.0}",
        incremental.iter().sum::<f64>() / m
    );
    println!(
        "pushes_per_event={:.0}",
        (after.pushes - before.pushes) as f64 / n as f64
    );
    println!("live_error_bound={:e}", state.live().error_bound());
    // The row sums' bound alone (what the bound was before task h62) and
    // the rebuilds the drift check forced.
    println!("live_row_sum_bound={:e}", state.live().row_sum_bound());
    println!("drift_rebuilds={}", after.recomputes - before.recomputes);
    println!(
        "deferred_per_event={:.1}",
        (after.deferred - before.deferred) as f64 / n as f64
    );
    println!(
        "build_share={:.3}",
        if total_us > 0.0 {
            build_us / total_us
        } else {
            0.0
        }
    );
    let sum = |f: fn(&Class) -> f64| classes.values().map(f).sum::<f64>();
    let (pushes, visits) = (sum(|c| c.pushes as f64), sum(|c| c.visits as f64));
    let (fanout, us) = (sum(|c| c.fanout as f64), sum(|c| c.us));
    println!(
        "incremental_pushes_per_event={:.0}",
        pushes / incremental.len().max(1) as f64
    );
    println!(
        "incremental_visits_per_event={:.0}",
        visits / incremental.len().max(1) as f64
    );
    println!("fanout_visit_share={:.3}", fanout / visits.max(1.0));
    println!("us_per_push={:.3}", us / pushes.max(1.0));
    println!("us_per_visit={:.4}", us / visits.max(1.0));
    for ((kind, bucket), c) in &classes {
        let e = c.events as f64;
        let name = format!("class.{kind}.{bucket}");
        println!("{name}.events={}", c.events);
        println!("{name}.pushes_mean={:.0}", c.pushes as f64 / e);
        println!("{name}.visits_mean={:.0}", c.visits as f64 / e);
        println!(
            "{name}.fanout_share={:.3}",
            c.fanout as f64 / (c.visits as f64).max(1.0)
        );
        println!("{name}.us_mean={:.0}", c.us / e);
        println!("{name}.us_share={:.3}", c.us / us.max(1.0));
    }
    Ok(())
}
