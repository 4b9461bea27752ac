//! Criterion benches of the propagation core on a generated power-law graph
//! (100k nodes, 1M edges; the 1M/10M figures come from
//! benches/propagate_vs_peers.sh). Owns the generator it uses; must not
//! assert anything (tests do that).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fusion::kernel::csr::{Edge, PullCsr};
use fusion::kernel::{BatchPropagator, IncrementalPropagator, PropagationParams, propagate};

const NODES: usize = 100_000;
const EDGES: usize = 1_000_000;
const ALPHA: f64 = 0.85;

/// Chung-Lu graph with power-law (exponent 2.2) out- and in-weights on two
/// independent shuffles of the nodes, plus one out-edge per node.
fn power_law_graph(rng: &mut ChaCha8Rng) -> Vec<Edge> {
    let expo = 1.0 / 1.2;
    let cumulative = |rng: &mut ChaCha8Rng| {
        let mut perm: Vec<usize> = (0..NODES).collect();
        for i in (1..NODES).rev() {
            perm.swap(i, rng.random_range(0..i + 1));
        }
        let mut acc = 0.0;
        perm.iter()
            .map(|&r| {
                acc += ((r + 1) as f64).powf(-expo);
                acc
            })
            .collect::<Vec<f64>>()
    };
    let (c_out, c_in) = (cumulative(rng), cumulative(rng));
    let draw = |c: &[f64], rng: &mut ChaCha8Rng| {
        let target = rng.random::<f64>() * c[c.len() - 1];
        c.partition_point(|x| *x < target).min(NODES - 1) as u32
    };
    let mut edges = Vec::with_capacity(EDGES);
    for src in 0..NODES as u32 {
        let dst = draw(&c_in, rng);
        edges.push(Edge {
            src,
            dst,
            weight: 1.0,
        });
    }
    while edges.len() < EDGES {
        let (src, dst) = (draw(&c_out, rng), draw(&c_in, rng));
        edges.push(Edge {
            src,
            dst,
            weight: 0.5 + 1.5 * rng.random::<f64>(),
        });
    }
    edges
}

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let edges = power_law_graph(&mut rng);
    let csr = PullCsr::from_edges(NODES, &edges).unwrap();
    let mut seeds = vec![0.0; NODES];
    for _ in 0..100 {
        seeds[rng.random_range(0..NODES)] += 0.01;
    }

    c.bench_function("propagate/csr_build_100k_1M", |b| {
        b.iter(|| PullCsr::from_edges(NODES, black_box(&edges)).unwrap())
    });
    c.bench_function("propagate/batch_iteration_100k_1M", |b| {
        b.iter_batched_ref(
            || BatchPropagator::new(&csr, &seeds, ALPHA).unwrap(),
            |batch| batch.step(),
            BatchSize::LargeInput,
        )
    });

    let params = PropagationParams {
        alpha: ALPHA,
        tol: 1e-6,
        ..Default::default()
    };
    let batch = propagate(&csr, &seeds, &params).unwrap();
    let tol = 1e-3 / NODES as f64;
    let (mut inc, _) =
        IncrementalPropagator::from_batch(NODES, &edges, ALPHA, tol, &batch).unwrap();
    c.bench_function("propagate/incremental_impulse_100k_1M", |b| {
        b.iter(|| {
            inc.add_impulse(rng.random_range(0..NODES) as u32, 1.0 / NODES as f64)
                .unwrap()
        })
    });
    c.bench_function("propagate/incremental_edge_insert_100k_1M", |b| {
        b.iter(|| {
            let (s, d) = (
                rng.random_range(0..NODES) as u32,
                rng.random_range(0..NODES) as u32,
            );
            inc.insert_edge(s, d, 1.0).unwrap()
        })
    });
}

criterion_group!(propagate_benches, benches);
criterion_main!(propagate_benches);
