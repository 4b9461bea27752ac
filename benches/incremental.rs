//! Criterion bench of the incremental relationship-space driver
//! (`score::incremental`): mean time per impulse and per follow insert on a
//! generated graph (100,000 people, 50 brands, about 10 power-law follows
//! per person, 5% of people associated with 1-3 brands), started from
//! 2,000 settled impulses, at tol = 1e-3 / people. Each iteration mutates
//! the same state (the state keeps growing). Must not assert anything.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fusion::score::IncrementalRelspace;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PEOPLE: u32 = 100_000;
const BRANDS: u32 = 50;
const ALPHA_F: f64 = 0.35;
const ALPHA_A: f64 = 0.12;

/// A followee drawn by a power law: low ids are the popular ones.
fn popular(rng: &mut ChaCha8Rng) -> u32 {
    let u: f64 = rng.random();
    ((PEOPLE as f64) * u.powf(3.0)) as u32 % PEOPLE
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut follows = Vec::new();
    for q in 0..PEOPLE {
        let k = rng.random_range(1..20u32);
        for _ in 0..k {
            let p = popular(&mut rng);
            if p != q {
                follows.push((q, p, rng.random_range(0.5..2.0)));
            }
        }
    }
    let mut assoc = Vec::new();
    for p in 0..PEOPLE {
        if rng.random::<f64>() < 0.05 {
            for _ in 0..rng.random_range(1..4u32) {
                assoc.push((p, rng.random_range(0..BRANDS), rng.random_range(0.1..1.0)));
            }
        }
    }
    let impulses: Vec<(u32, u32, f64)> = (0..2_000)
        .map(|_| {
            (
                rng.random_range(0..PEOPLE),
                rng.random_range(0..BRANDS),
                rng.random_range(-1.0..1.0),
            )
        })
        .collect();
    let tol = 1e-3 / f64::from(PEOPLE);
    let start = std::time::Instant::now();
    let (mut inc, stats) = IncrementalRelspace::from_inputs(
        PEOPLE as usize,
        BRANDS as usize,
        ALPHA_F,
        ALPHA_A,
        tol,
        &follows,
        &assoc,
        &impulses,
    )
    .expect("build");
    eprintln!(
        "incremental bench: {} people, {} brands, {} follows, {} associations, tol {tol:e}; \
         2,000 impulses settled in {:?} ({} pushes), {} score entries",
        PEOPLE,
        BRANDS,
        inc.follow_count(),
        assoc.len(),
        start.elapsed(),
        stats.pushes,
        inc.scores().len(),
    );

    let mut g = c.benchmark_group("incremental_100k");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(1));
    let mut pushes = (0usize, 0usize);
    g.bench_function("add_impulse", |b| {
        b.iter(|| {
            let p = rng.random_range(0..PEOPLE);
            let br = rng.random_range(0..BRANDS);
            let s = inc
                .add_impulse(p, br, rng.random_range(-1.0..1.0))
                .expect("impulse");
            pushes.0 += s.pushes;
            pushes.1 += 1;
            black_box(s)
        })
    });
    eprintln!(
        "add_impulse: {:.0} pushes per impulse on average",
        pushes.0 as f64 / pushes.1.max(1) as f64
    );
    let mut pushes = (0usize, 0usize);
    g.bench_function("set_follow (insert)", |b| {
        b.iter(|| {
            let q = rng.random_range(0..PEOPLE);
            let p = popular(&mut rng);
            let s = inc.set_follow(q, p, Some(1.0)).expect("follow");
            pushes.0 += s.pushes;
            pushes.1 += 1;
            black_box(s)
        })
    });
    eprintln!(
        "set_follow: {:.0} pushes per insert on average",
        pushes.0 as f64 / pushes.1.max(1) as f64
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
