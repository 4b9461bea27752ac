//! Criterion bench of `ScoreState::batch` (the relationship-space driver)
//! against the sequential walk it replaced (`batch_reference`), on a
//! `fusion generate` stream of 200,000 events (default population: 10,000
//! people, 100 influencers, 50 brands), at the stream's end, and of the
//! driver alone at 1 and 2 threads. Must not assert anything (tests do that).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fusion::domain::Event;
use fusion::generate::{GenerateConfig, write_ndjson};
use fusion::score::RelSnapshot;
use fusion::score::{ScoreState, ScoringModel};

const EVENTS: u64 = 200_000;

fn events() -> Vec<Event> {
    let config = GenerateConfig {
        events: EVENTS,
        ..GenerateConfig::default()
    };
    let mut out = Vec::new();
    write_ndjson(&config, &mut out).expect("generate");
    let values = fusion::ingest::parse_ndjson(&out).expect("parse");
    let checked = fusion::ingest::validate_all(
        &values,
        &fusion::score::ScoringModel::default_model().currency,
    );
    checked.good.into_iter().map(|(_, e)| e).collect()
}

fn bench(c: &mut Criterion) {
    let events = events();
    let at = events.iter().map(|e| e.time).max().expect("events");
    let state = ScoreState::build(Arc::new(ScoringModel::default_model()), Vec::new(), events);
    let snapshot = RelSnapshot::build(&state, at);
    eprintln!(
        "relspace bench: {} events, {} people, {} brands, {} follows, {} impulse entries, {} relationships",
        state.event_count(),
        snapshot.people().len(),
        snapshot.brands().len(),
        snapshot.follow_count(),
        snapshot.impulses().count(),
        snapshot.propagate().len(),
    );

    let mut g = c.benchmark_group("relspace_200k");
    g.sample_size(10);
    g.bench_function("batch_reference (sequential walk)", |b| {
        b.iter(|| black_box(state.batch_reference(at)))
    });
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        g.bench_function(format!("batch (relspace), {threads} thread(s)"), |b| {
            b.iter(|| pool.install(|| black_box(state.batch(at))))
        });
        g.bench_function(format!("snapshot build, {threads} thread(s)"), |b| {
            b.iter(|| pool.install(|| black_box(RelSnapshot::build(&state, at))))
        });
        g.bench_function(format!("propagate only, {threads} thread(s)"), |b| {
            b.iter(|| pool.install(|| black_box(snapshot.propagate())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
