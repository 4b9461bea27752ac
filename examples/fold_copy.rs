//! What the fold thread's per-round costs are at a store's size (task h48,
//! issue #11 item 3): the state of a generated log but its last TAIL
//! events is built (no live series), then timed: the fold checkpoint's
//! copy of the fold's state (`ScoreState::fold_checkpoint`, every 0.5 s
//! under a stream), a refold of the TAIL events from that checkpoint
//! (`FoldCheckpoint::refold`, a late round), and the fold of 500-event
//! rounds in place after a checkpoint was taken (the copy-on-write
//! columns' first writes). Prints `name=value` lines; medians of REPS.
//!
//! Usage: `fold_copy FILE [TAIL] [REPS]` (FILE: `fusion generate`'s NDJSON).
//! Must not: be a test (speed lives in benchmarks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fusion::domain::Logged;
use fusion::score::{ScoreState, ScoringModel};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: fold_copy FILE [TAIL] [REPS]");
    let tail_len: usize = args.next().map_or(Ok(16_000), |s| s.parse())?;
    let reps: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let bytes = std::fs::read(&path)?;
    let values = fusion::ingest::parse_ndjson(&bytes)?;
    let model = Arc::new(ScoringModel::default_model());
    let checked = fusion::ingest::validate_all(&values, &model.currency);
    anyhow::ensure!(checked.rejected.is_empty(), "invalid events");
    let mut log: Vec<Logged> = checked
        .good
        .into_iter()
        .enumerate()
        .map(|(i, (_, event))| Logged {
            position: i as u64,
            event,
        })
        .collect();
    log.sort_by(|a, b| (a.event.time, &a.event.id).cmp(&(b.event.time, &b.event.id)));
    let tail = log.split_off(log.len().saturating_sub(tail_len));
    println!("store_events={}", log.len());
    println!("tail_events={}", tail.len());

    let started = Instant::now();
    let mut kinds = ScoreState::builder(Arc::clone(&model), Vec::new());
    kinds.see(log.clone());
    let mut pass = kinds.fold_pass();
    pass.fold(log);
    let mut state = pass.finish();
    println!("build_s={:.2}", started.elapsed().as_secs_f64());

    let mut copies = Vec::new();
    let mut refolds = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let checkpoint = state.fold_checkpoint();
        copies.push(t.elapsed());
        let t = Instant::now();
        let made = checkpoint.refold(tail.clone(), |_| false);
        refolds.push(t.elapsed());
        anyhow::ensure!(made.is_some(), "the refold declined");
        drop(made);
    }
    println!("checkpoint_copy_ms={:.2}", median(copies));
    println!("refold_ms={:.2}", median(refolds));

    // Rounds of 500 in place: the first half of the tail with no copy
    // held, the second with a checkpoint taken before each (as the fold
    // thread holds six): the copy-on-write columns' first writes.
    let (first, second) = tail.split_at(tail.len() / 2);
    let mut rounds = Vec::new();
    for chunk in first.chunks(500) {
        let t = Instant::now();
        anyhow::ensure!(state.apply(chunk.to_vec()), "out of order");
        rounds.push(t.elapsed());
    }
    println!("round_500_alone_ms={:.2}", median(rounds));
    let mut rounds = Vec::new();
    let mut held = Vec::new();
    for chunk in second.chunks(500) {
        held.push(state.fold_checkpoint());
        let t = Instant::now();
        anyhow::ensure!(state.apply(chunk.to_vec()), "out of order");
        rounds.push(t.elapsed());
        if held.len() > 6 {
            held.remove(0);
        }
    }
    println!("round_500_after_checkpoint_ms={:.2}", median(rounds));
    Ok(())
}
