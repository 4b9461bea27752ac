//! The live series per event: folds all but the last `K` events of an NDJSON
//! file (a checkpoint build), then appends the last `K` one at a time, each
//! followed by the live series' catch-up, and prints the catch-up time per
//! event (mean, p50, p99, max; and the mean of the events applied alone,
//! without a checkpoint build) and the pushes per event, as `name=value`
//! lines. Used by `benches/live.sh`.
//!
//! Usage: cargo run --release --example live_events -- FILE [K]

use std::sync::Arc;
use std::time::Instant;

use fusion::domain::Logged;
use fusion::score::{ScoreState, ScoringModel};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: live_events FILE [K]");
    let k: usize = args.next().map_or(Ok(200), |s| s.parse())?;
    let bytes = std::fs::read(&path)?;
    let values = fusion::ingest::parse_ndjson(&bytes)?;
    let model = Arc::new(ScoringModel::default_model());
    let checked = fusion::ingest::validate_all(&values, &model.currency);
    anyhow::ensure!(
        checked.rejected.is_empty(),
        "{} invalid events",
        checked.rejected.len()
    );
    let mut events: Vec<_> = checked.good.into_iter().map(|(_, e)| e).collect();
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    let tail = events.split_off(events.len().saturating_sub(k));

    let started = Instant::now();
    let held = events.len() as u64;
    let mut state = ScoreState::build(model, Vec::new(), events);
    let open_s = started.elapsed().as_secs_f64();
    let before = state.live().stats();
    let mut per_event = Vec::with_capacity(tail.len());
    // Events whose catch-up applied the event alone (no checkpoint build).
    let mut incremental = Vec::with_capacity(tail.len());
    for (i, event) in tail.into_iter().enumerate() {
        // Later than everything before: appended in place.
        let position = held + i as u64;
        assert!(state.apply(vec![Logged { position, event }]));
        let builds = state.live().stats().builds;
        let t = Instant::now();
        state.sync_live(|| false);
        let us = t.elapsed().as_secs_f64() * 1e6;
        per_event.push(us);
        if state.live().stats().builds == builds {
            incremental.push(us);
        }
    }
    let after = state.live().stats();
    per_event.sort_by(f64::total_cmp);
    let n = per_event.len().max(1);
    let at = |q: f64| per_event[((n as f64 - 1.0) * q).round() as usize];
    println!("events={}", state.event_count());
    println!("open_s={open_s:.3}");
    println!("appended={}", per_event.len());
    println!(
        "live_us_mean={:.0}",
        per_event.iter().sum::<f64>() / n as f64
    );
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
    Ok(())
}
