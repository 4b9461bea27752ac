//! One checkpoint build of the live series, timed outside the server (task
//! h72): folds all but the last `K` events of an NDJSON file (the series
//! built and recording its movements, as under a change feed), appends the
//! last `K` at once, and times the checkpoint build the series then needs,
//! `R` times over, in the live thread's steps: the draft and the copy of
//! the fold's state (`ScoreState::live_planner`, under the locks in the
//! server), the plan (`LivePlanner::plan`: the inputs' read, a
//! `RelSnapshot`, and the "before" rows sorted), and the run
//! (`BuildPlan::run`: the batch evaluation, the push driver seeded from
//! its parts, the rows after it and their differences). Beside them, the
//! batch parts alone at the build's time: the snapshot
//! (`RelSnapshot::build`) and the series and residual (`RelSnapshot::seed`).
//! Prints `name=value` lines (seconds: the median of the `R` runs, and
//! the smallest), then a digest of what the last build installs (the
//! movement it records and the series' rows after it, every bit), so two
//! binaries can be compared for the same bits. Measures and asserts
//! nothing else.
//!
//! Usage: cargo run --release --example live_build -- FILE [K] [R]

#[path = "support/checked_events.rs"]
mod checked_events;

use std::sync::Arc;
use std::time::Instant;

use fusion::domain::Logged;
use fusion::score::{MoveCause, RelSnapshot, ScoreState, ScoringModel};

/// FNV-1a over 64-bit words.
struct Digest(u64);

impl Digest {
    fn word(&mut self, w: u64) {
        for byte in w.to_le_bytes() {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }

    fn text(&mut self, s: &str) {
        for byte in s.bytes() {
            self.word(u64::from(byte));
        }
        self.word(u64::MAX);
    }
}

/// The median and the smallest of `runs`.
fn summary(name: &str, runs: &mut [f64]) {
    runs.sort_by(f64::total_cmp);
    println!("{name}_s={:.3}", runs[runs.len() / 2]);
    println!("{name}_min_s={:.3}", runs[0]);
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: live_build FILE [K] [R]");
    let k: usize = args.next().map_or(Ok(2_000), |s| s.parse())?;
    let runs: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    let model = Arc::new(ScoringModel::default_model());
    let (_, good) = checked_events::read_checked(&path, &model)?;
    let mut events: Vec<_> = good.into_iter().map(|(_, e)| e).collect();
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    let tail = events.split_off(events.len().saturating_sub(k));
    let held = events.len() as u64;

    let started = Instant::now();
    let mut state = ScoreState::build(model, Vec::new(), events);
    println!("open_s={:.3}", started.elapsed().as_secs_f64());
    state.record_movements(true);
    let tail: Vec<Logged> = tail
        .into_iter()
        .enumerate()
        .map(|(i, event)| Logged {
            position: held + i as u64,
            event,
        })
        .collect();
    assert!(state.apply(tail), "the tail is later than the rest");
    println!("events={}", state.event_count());

    let (mut draft, mut plan, mut run, mut whole) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        let planner = state.live_planner().expect("a build is needed");
        let t1 = Instant::now();
        let planned = planner.plan();
        let t2 = Instant::now();
        let built = planned.run();
        let t3 = Instant::now();
        draft.push((t1 - t0).as_secs_f64());
        plan.push((t2 - t1).as_secs_f64());
        run.push((t3 - t2).as_secs_f64());
        whole.push((t3 - t0).as_secs_f64());
        last = Some(built);
    }
    let built = last.expect("runs > 0");
    let as_of = built.inputs_at().expect("a log");
    summary("live_build_draft", &mut draft);
    summary("live_build_plan", &mut plan);
    summary("live_build_run", &mut run);
    summary("live_build", &mut whole);

    let (mut snap, mut seed) = (vec![], vec![]);
    let mut relationships = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let snapshot = RelSnapshot::build(state.fold(), as_of);
        let t1 = Instant::now();
        let (s, r) = snapshot.seed();
        let t2 = Instant::now();
        relationships = s.len() + r.len();
        snap.push((t1 - t0).as_secs_f64());
        seed.push((t2 - t1).as_secs_f64());
    }
    summary("batch_snapshot", &mut snap);
    summary("batch_seed", &mut seed);
    println!("seed_rows={relationships}");

    // What the last build installs, every bit.
    drop(state.install_live(built));
    let table = state.fold().table().clone();
    let mut digest = Digest(0xcbf2_9ce4_8422_2325);
    let mut moved = 0;
    for movement in state.take_movements() {
        match movement.cause {
            MoveCause::Rebuild { first, last } => {
                digest.word(first);
                digest.word(last);
            }
            MoveCause::Event { position, .. } => digest.word(position),
        }
        digest.text(&movement.time.to_rfc3339());
        for m in &movement.moved {
            moved += 1;
            digest.text(table.name(m.person).as_str());
            digest.text(table.name(m.brand).as_str());
            for v in m.before.iter().chain(&m.after) {
                digest.word(v.to_bits());
            }
        }
    }
    println!("moved={moved}");
    println!("movement_digest={:016x}", digest.0);
    let mut digest = Digest(0xcbf2_9ce4_8422_2325);
    let rows = state
        .live()
        .components_at(as_of, &table)
        .expect("the series at its checkpoint");
    for ((p, b), v) in &rows {
        digest.text(table.name(*p).as_str());
        digest.text(table.name(*b).as_str());
        for x in v {
            digest.word(x.to_bits());
        }
    }
    println!("live_rows={}", rows.len());
    println!("live_digest={:016x}", digest.0);
    Ok(())
}
