//! Where a relationship read's time goes (issue #11): builds the state of
//! an NDJSON file in memory, takes the first `PAIRS` distinct (person,
//! brand) pairs its events name (as `benches/http_read.sh` does), and times
//! per read, as `name=value` lines (microseconds, mean over the pairs):
//! - `explain_us`: one fresh explanation (a walk with routes, the shares at
//!   `at`, the deltas, the reasons' paths); the first read of each person
//!   also builds their sums (`fold::sums`, task h35), which later reads
//!   keep;
//! - `score_at_us`: one fresh past score (a walk, the shares);
//! - `four_walks_us`: the read as it was before issue #11, the explanation
//!   and three past scores each with its own walk (on today's walk and
//!   shares, which are faster than they were: see ARCHITECTURE.md);
//! - `read_cold_us`: `FoldState::read` with no kept walk (one walk serves
//!   the four times when the graph did not change between them);
//! - `read_warm_us`: the same read with the walks kept by the cold one (the
//!   engine's cache): the shares alone;
//! - `walk_us`: cold minus warm;
//! - `finish_json_us`: the draft finished with its events and serialised;
//! - `store_fetch_us`: with a store directory, the reasons' events read
//!   from it (`EventStore::events_at`);
//! - `people_per_walk`, `events_per_read`: the sizes behind them;
//! - `read_appended_us`: a read under a stream (task h67): the state of
//!   all but the last `TAIL` events (canonical order), every pair read
//!   once, then the tail folded 40 events at a time (2,000 events/s
//!   against 50 reads/s, `benches/stream.sh`'s shape) with one read (no
//!   kept walk) after each, rotating over the pairs: the people the
//!   appended events reached have their sums extended (before task h67,
//!   built again);
//!   `appended_reads`: how many it timed.
//!
//! Usage: cargo run --release --example read_split -- FILE [PAIRS] [STORE_DIR]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::Duration;
use fusion::domain::{EntityId, Event};
use fusion::score::{ScoreState, ScoringModel};
use fusion::store::EventStore;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: read_split FILE [PAIRS] [STORE_DIR]");
    let pairs_wanted: usize = args.next().map_or(Ok(2000), |s| s.parse())?;
    let store_dir = args.next();
    let bytes = std::fs::read(&path)?;
    let values = fusion::ingest::parse_ndjson(&bytes)?;
    let model = Arc::new(ScoringModel::default_model());
    let checked = fusion::ingest::validate_all(&values, &model.currency);
    let events: Vec<Event> = checked.good.into_iter().map(|(_, e)| e).collect();
    let mut seen = HashSet::new();
    let mut pairs: Vec<(EntityId, EntityId)> = Vec::new();
    for v in &values {
        if let (Some(p), Some(b)) = (v.get("person"), v.get("brand"))
            && let (Some(p), Some(b)) = (p.as_str(), b.as_str())
            && seen.insert((p.to_string(), b.to_string()))
        {
            pairs.push((EntityId::new(p)?, EntityId::new(b)?));
            if pairs.len() >= pairs_wanted {
                break;
            }
        }
    }
    let at = events.iter().map(|e| e.time).max().expect("events") + Duration::days(3);
    let past = [1, 7, 30].map(|d| at - Duration::days(d));
    let state = ScoreState::build(model, Vec::new(), events.clone());
    let n = pairs.len() as f64;
    let per_read = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / n;

    let started = Instant::now();
    for (p, b) in &pairs {
        std::hint::black_box(state.explain(p, b, at));
    }
    let explain_us = per_read(started);
    let started = Instant::now();
    for (p, b) in &pairs {
        std::hint::black_box(state.score_at(p, b, past[0]));
    }
    let score_at_us = per_read(started);

    let started = Instant::now();
    let cold: Vec<_> = pairs
        .iter()
        .map(|(p, b)| state.read(p, b, at, &past, |_| None))
        .collect();
    let read_cold_us = per_read(started);
    let started = Instant::now();
    for ((p, b), c) in pairs.iter().zip(&cold) {
        std::hint::black_box(state.read(p, b, at, &past, |t| {
            c.as_ref()?
                .walks
                .iter()
                .find(|w| w.span().covers(t))
                .cloned()
        }));
    }
    let read_warm_us = per_read(started);

    let people: usize = cold.iter().flatten().map(|r| r.walks[0].people()).sum();
    let events_named: usize = cold.iter().flatten().map(|r| r.draft.events().len()).sum();
    let drafts: Vec<_> = cold.into_iter().flatten().map(|r| r.draft).collect();
    let refs: Vec<Vec<u64>> = drafts.iter().map(|d| d.events()).collect();
    let started = Instant::now();
    for d in drafts {
        let e = d.finish(|pos| events.get(pos as usize));
        std::hint::black_box(serde_json::to_vec(&e)?);
    }
    let finish_json_us = per_read(started);

    println!("pairs={}", pairs.len());
    println!("explain_us={explain_us:.1}");
    println!("score_at_us={score_at_us:.1}");
    println!("four_walks_us={:.1}", explain_us + 3.0 * score_at_us);
    println!("read_cold_us={read_cold_us:.1}");
    println!("read_warm_us={read_warm_us:.1}");
    println!("walk_us={:.1}", read_cold_us - read_warm_us);
    println!("finish_json_us={finish_json_us:.1}");
    println!("people_per_walk={:.1}", people as f64 / n);
    println!("reasons_events_per_read={:.1}", events_named as f64 / n);

    // Reads after appends (task h67).
    const TAIL: usize = 4_000;
    const STEP: usize = 40;
    let mut sorted = events.clone();
    sorted.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    let tail: Vec<Event> = sorted.split_off(sorted.len().saturating_sub(TAIL));
    let head = sorted.len();
    let mut state = ScoreState::build(Arc::new(ScoringModel::default_model()), Vec::new(), sorted);
    for (p, b) in &pairs {
        std::hint::black_box(state.read(p, b, at, &past, |_| None));
    }
    let mut spent = std::time::Duration::ZERO;
    let mut reads = 0;
    for (k, step) in tail.chunks(STEP).enumerate() {
        let logged = step
            .iter()
            .enumerate()
            .map(|(i, event)| fusion::domain::Logged {
                position: (head + k * STEP + i) as u64,
                event: event.clone(),
            })
            .collect();
        assert!(state.apply(logged), "the tail is later than the head");
        let (p, b) = &pairs[k % pairs.len()];
        let started = Instant::now();
        std::hint::black_box(state.read(p, b, at, &past, |_| None));
        spent += started.elapsed();
        reads += 1;
    }
    println!(
        "read_appended_us={:.1}",
        spent.as_secs_f64() * 1e6 / f64::from(reads.max(1))
    );
    println!("appended_reads={reads}");

    if let Some(dir) = store_dir {
        let store = fusion::store::embedded::EmbeddedStore::open(std::path::Path::new(&dir))?;
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        let started = Instant::now();
        runtime.block_on(async {
            for r in &refs {
                std::hint::black_box(store.events_at(r.clone()).await?);
            }
            anyhow::Ok(())
        })?;
        println!("store_fetch_us={:.1}", per_read(started));
    }
    Ok(())
}
