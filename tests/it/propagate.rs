//! Tests of the propagation core (`kernel::csr`, `kernel`) and of
//! `fusion propagate`: agreement with networkx, incremental equals batch,
//! bit-identical results across thread counts and edge orders, and the exit
//! statuses of the command. Must not assert on timings (those are benches).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fusion::kernel::csr::{Edge, InWeights, PullCsr};
use fusion::kernel::{IncrementalPropagator, PropagationParams, max_abs_diff, propagate};
use proptest::prelude::*;

/// `n` nodes, each with 1..=max_out distinct out-neighbours (no dangling node,
/// no self-loop), weights in [0.1, 5).
fn random_graph(rng: &mut ChaCha8Rng, n: usize, max_out: usize) -> Vec<Edge> {
    let mut edges = Vec::new();
    for src in 0..n {
        let k = 1 + rng.random_range(0..max_out);
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < k.min(n - 1) {
            let dst = rng.random_range(0..n);
            if dst != src && seen.insert(dst) {
                edges.push(Edge {
                    src: src as u32,
                    dst: dst as u32,
                    weight: 0.1 + 4.9 * rng.random::<f64>(),
                });
            }
        }
    }
    edges
}

fn read_normalised(tsv: &str) -> BTreeMap<u64, f64> {
    let rows: Vec<(u64, f64)> = tsv
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').expect("node<TAB>value");
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let total: f64 = rows.iter().map(|r| r.1).sum();
    rows.into_iter().map(|(k, v)| (k, v / total)).collect()
}

fn write_inputs(dir: &Path, edges: &[Edge], ids: impl Fn(u32) -> u64, seeds: &[(u32, f64)]) {
    let mut e = String::new();
    for edge in edges {
        e += &format!(
            "{}\t{}\t{:.17}\n",
            ids(edge.src),
            ids(edge.dst),
            edge.weight
        );
    }
    std::fs::write(dir.join("edges.tsv"), e).unwrap();
    let mut s = String::new();
    for (node, value) in seeds {
        s += &format!("{}\t{value}\n", ids(*node));
    }
    std::fs::write(dir.join("seeds.tsv"), s).unwrap();
}

fn fusion_propagate(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fusion"))
        .arg("propagate")
        .arg("--edges")
        .arg(dir.join("edges.tsv"))
        .arg("--seeds")
        .arg(dir.join("seeds.tsv"))
        .args(extra)
        .output()
        .expect("run fusion")
}

#[test]
fn propagate_agrees_with_networkx_pagerank() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/networkx_pagerank.py");
    let mut rng = ChaCha8Rng::seed_from_u64(20240601);
    // (nodes, max out-degree, alpha, id mapping: sparse ids exercise the
    // compaction of arbitrary u32 ids, unit weights: the snapshot's
    // per-source form)
    type Case = (usize, usize, f64, fn(u32) -> u64, bool);
    let cases: [Case; 6] = [
        (30, 3, 0.85, |v| u64::from(v), false),
        (300, 6, 0.85, |v| u64::from(v) * 7919 + 3, false),
        (2000, 10, 0.5, |v| u64::from(v), false),
        (1500, 4, 0.95, |v| u64::from(v) * 2_000_003, false),
        (2000, 10, 0.85, |v| u64::from(v), true),
        (1500, 4, 0.95, |v| u64::from(v) * 2_000_003, true),
    ];
    for (n, max_out, alpha, ids, unit_weights) in cases {
        let mut edges = random_graph(&mut rng, n, max_out);
        if unit_weights {
            edges.iter_mut().for_each(|e| e.weight = 1.0);
        }
        let seeds: Vec<(u32, f64)> = (0..1 + n / 50)
            .map(|_| (rng.random_range(0..n) as u32, 0.5 + rng.random::<f64>()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write_inputs(dir.path(), &edges, ids, &seeds);

        let ours = fusion_propagate(
            dir.path(),
            &["--alpha", &alpha.to_string(), "--tol", "1e-13"],
        );
        assert!(
            ours.status.success(),
            "fusion failed: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let reference = Command::new("python3")
            .arg(&script)
            .arg(dir.path().join("edges.tsv"))
            .arg(dir.path().join("seeds.tsv"))
            .arg(alpha.to_string())
            .output()
            .expect("python3 must be on PATH to check against networkx");
        assert!(
            reference.status.success(),
            "the networkx reference failed (pip install networkx scipy): {}",
            String::from_utf8_lossy(&reference.stderr)
        );

        let ours = read_normalised(&String::from_utf8(ours.stdout).unwrap());
        let theirs = read_normalised(&String::from_utf8(reference.stdout).unwrap());
        assert_eq!(ours.len(), n);
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "same nodes"
        );
        let worst = ours
            .iter()
            .map(|(k, v)| (v - theirs[k]).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "n={n} alpha={alpha} unit_weights={unit_weights}: max per-node difference from networkx {worst:e}"
        );
        assert!(
            worst <= 1e-6,
            "n={n} alpha={alpha}: max per-node difference {worst:e}"
        );
    }
}

fn run_batch(n: usize, edges: &[Edge], seeds: &[f64], threads: usize) -> Vec<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let csr = PullCsr::from_edges(n, edges).unwrap();
        propagate(
            &csr,
            seeds,
            &PropagationParams {
                tol: 1e-14,
                ..Default::default()
            },
        )
        .unwrap()
        .scores
    })
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn propagate_is_bit_identical_across_thread_counts_and_edge_orders() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Several kernel chunks, so the parallel split matters.
    let n = 20_000;
    let mut edges = random_graph(&mut rng, n, 12);
    // Some dangling nodes and parallel edges as well.
    edges.retain(|e| e.src % 97 != 0);
    for i in 0..500 {
        let e = edges[i * 13];
        edges.push(Edge {
            weight: 0.25 + i as f64 * 1e-3,
            ..e
        });
    }
    let seeds: Vec<f64> = (0..n)
        .map(|v| {
            if v % 101 == 0 {
                1.0 + rng.random::<f64>()
            } else {
                0.0
            }
        })
        .collect();

    let one = run_batch(n, &edges, &seeds, 1);
    let two = run_batch(n, &edges, &seeds, 2);
    let three = run_batch(n, &edges, &seeds, 3);
    assert_eq!(bits(&one), bits(&two));
    assert_eq!(bits(&one), bits(&three));

    // Reverse, then a deterministic shuffle.
    let mut shuffled = edges.clone();
    shuffled.reverse();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.random_range(0..i + 1));
    }
    assert_eq!(bits(&one), bits(&run_batch(n, &shuffled, &seeds, 2)));
}

/// The per-source form of the snapshot (every row uniform) has its own
/// kernel loop: it must be as deterministic as the per-edge one, and agree
/// with it. A zero-weight edge changes no entry of `P` but makes its row
/// non-uniform, so it gives the same matrix in the per-edge form.
#[test]
fn propagate_uniform_rows_are_bit_identical_across_threads_and_match_per_edge() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let n = 20_000;
    let mut edges = random_graph(&mut rng, n, 12);
    edges.retain(|e| e.src % 97 != 0);
    edges.iter_mut().for_each(|e| e.weight = 2.5);
    let seeds: Vec<f64> = (0..n)
        .map(|v| {
            if v % 101 == 0 {
                1.0 + rng.random::<f64>()
            } else {
                0.0
            }
        })
        .collect();
    assert!(matches!(
        PullCsr::from_edges(n, &edges).unwrap().in_weights(),
        InWeights::PerSource(_)
    ));

    let one = run_batch(n, &edges, &seeds, 1);
    assert_eq!(bits(&one), bits(&run_batch(n, &edges, &seeds, 2)));
    assert_eq!(bits(&one), bits(&run_batch(n, &edges, &seeds, 3)));
    let mut shuffled = edges.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.random_range(0..i + 1));
    }
    assert_eq!(bits(&one), bits(&run_batch(n, &shuffled, &seeds, 2)));

    let e = edges[0];
    let extra = (0..n as u32).find(|d| *d != e.dst).unwrap();
    let mut per_edge = edges.clone();
    per_edge.push(Edge {
        src: e.src,
        dst: extra,
        weight: 0.0,
    });
    let per_edge_csr = PullCsr::from_edges(n, &per_edge).unwrap();
    assert!(matches!(per_edge_csr.in_weights(), InWeights::PerEdge(_)));
    // Both within the kernel's rounding budget (docs/propagation.md,
    // "Floating point") of the exact answer: 2α/(1-α)·2^-24·‖s‖₁ each.
    let budget = 4.0 * 0.85 / 0.15 * 2f64.powi(-24) * one.iter().sum::<f64>();
    let diff = max_abs_diff(&one, &run_batch(n, &per_edge, &seeds, 2));
    assert!(diff <= budget, "{diff:e} > {budget:e}");
}

#[test]
fn propagate_command_output_is_identical_at_one_and_two_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let edges = random_graph(&mut rng, 5000, 8);
    let seeds = [(1, 1.0), (4000, 2.5), (77, 0.125)];
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &edges, u64::from, &seeds);
    let one = fusion_propagate(dir.path(), &["--threads", "1"]);
    let two = fusion_propagate(dir.path(), &["--threads", "2"]);
    assert!(one.status.success() && two.status.success());
    assert_eq!(one.stdout, two.stdout);
}

#[test]
fn propagate_command_names_the_bad_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edges.tsv"), "0\t1\t1\n1\t2\n").unwrap();
    std::fs::write(dir.path().join("seeds.tsv"), "0\t1\n").unwrap();
    let out = fusion_propagate(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("weight"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    std::fs::write(dir.path().join("edges.tsv"), "0\t1\t-2\n").unwrap();
    let out = fusion_propagate(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

#[test]
fn propagate_command_rejects_bad_arguments_with_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edges.tsv"), "0\t1\t1\n").unwrap();
    std::fs::write(dir.path().join("seeds.tsv"), "0\t1\n").unwrap();
    for bad in [["--alpha", "1"], ["--tol", "0"], ["--threads", "0"]] {
        assert_eq!(
            fusion_propagate(dir.path(), &bad).status.code(),
            Some(2),
            "{bad:?}"
        );
    }
}

/// The incremental driver relabels nodes by in-degree inside; every method
/// must still speak the caller's ids.
#[test]
fn propagate_incremental_from_edges_speaks_the_callers_ids() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let n = 300;
    let edges = random_graph(&mut rng, n, 6);
    let tol = 1e-10;
    let mut inc = IncrementalPropagator::from_edges(n, &edges, 0.85, tol).unwrap();
    let mut x = vec![0.0; n];
    for v in [3u32, 150, 299] {
        inc.add_impulse(v, 1.0).unwrap();
        x[v as usize] += 1.0;
    }
    let e = edges[7];
    let mut out: Vec<u32> = inc.out_edges(e.src).map(|(dst, _)| dst).collect();
    out.sort_unstable();
    let mut expected: Vec<u32> = edges
        .iter()
        .filter(|f| f.src == e.src)
        .map(|f| f.dst)
        .collect();
    expected.sort_unstable();
    assert_eq!(out, expected);
    inc.remove_edge(e.src, e.dst).unwrap();
    let rest: Vec<Edge> = edges
        .iter()
        .copied()
        .filter(|f| (f.src, f.dst) != (e.src, e.dst))
        .collect();
    let csr = PullCsr::from_edges(n, &rest).unwrap();
    let batch = propagate(
        &csr,
        &x,
        &PropagationParams {
            tol: 1e-13,
            ..Default::default()
        },
    )
    .unwrap();
    let bound = inc.guaranteed_error_bound() + 1e-6 * 3.0 / 0.15;
    assert!(max_abs_diff(&inc.scores(), &batch.scores) <= bound);
    assert!((0..n as u32).all(|v| inc.residual(v).abs() <= inc.push_threshold(v)));
}

#[derive(Clone, Debug)]
enum Op {
    Impulse(u32, f64),
    Insert(u32, u32, f64),
    /// Removes the existing edge picked by this index (modulo their count).
    Remove(usize),
}

fn op(n: u32) -> impl Strategy<Value = Op> {
    let weight = prop_oneof![1 => Just(0.0), 6 => 0.01f64..3.0];
    prop_oneof![
        3 => (0..n, -5.0f64..5.0).prop_map(|(v, a)| Op::Impulse(v, a)),
        3 => (0..n, 0..n, weight).prop_map(|(s, d, w)| Op::Insert(s, d, w)),
        2 => any::<usize>().prop_map(Op::Remove),
    ]
}

fn case() -> impl Strategy<Value = (u32, f64, Vec<Op>)> {
    (2u32..25, prop_oneof![Just(0.5), Just(0.85), Just(0.95)])
        .prop_flat_map(|(n, alpha)| (Just(n), Just(alpha), prop::collection::vec(op(n), 1..300)))
}

/// `tol · max(1, d_v)` for each node, `d_v` its number of distinct
/// out-neighbours in `graph` (zero-weight edges count).
fn push_limits(n: u32, graph: &BTreeMap<(u32, u32), f64>, tol: f64) -> Vec<f64> {
    let mut degree = vec![0usize; n as usize];
    for &(src, _) in graph.keys() {
        degree[src as usize] += 1;
    }
    degree.iter().map(|d| tol * (*d).max(1) as f64).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Incremental equals batch: after any sequence of impulses, edge inserts
    /// and removals, every `|r_v| ≤ tol·max(1, d_v)` (`d_v` counted here from
    /// the edges the test made), and the incremental scores are within the
    /// resulting bound `tol·Σ_v max(1, d_v)/(1-α)` plus the batch's own error
    /// (f32 weights, truncation) of a fresh batch run on the final graph and
    /// impulses.
    #[test]
    fn propagate_incremental_equals_batch((n, alpha, ops) in case()) {
        let tol = 1e-6;
        let mut inc = IncrementalPropagator::new(n as usize, alpha, tol).unwrap();
        let mut graph: BTreeMap<(u32, u32), f64> = BTreeMap::new();
        let mut x = vec![0.0; n as usize];
        for op in ops {
            match op {
                Op::Impulse(v, a) => {
                    inc.add_impulse(v, a).unwrap();
                    x[v as usize] += a;
                }
                Op::Insert(s, d, w) => {
                    inc.insert_edge(s, d, w).unwrap();
                    *graph.entry((s, d)).or_insert(0.0) += w;
                }
                Op::Remove(i) => {
                    if graph.is_empty() {
                        continue;
                    }
                    let key = *graph.keys().nth(i % graph.len()).unwrap();
                    let (removed, _) = inc.remove_edge(key.0, key.1).unwrap();
                    let expected = graph.remove(&key).unwrap();
                    prop_assert!((removed - expected).abs() <= 1e-9 * expected.max(1.0));
                }
            }
            let limits = push_limits(n, &graph, tol);
            for (v, limit) in limits.iter().enumerate() {
                prop_assert!(inc.residual(v as u32).abs() <= *limit);
            }
        }
        let edges: Vec<Edge> = graph.iter().map(|(&(src, dst), &weight)| Edge { src, dst, weight }).collect();
        let csr = PullCsr::from_edges(n as usize, &edges).unwrap();
        let batch = propagate(&csr, &x, &PropagationParams { alpha, tol: 1e-13, ..Default::default() }).unwrap();

        let mass: f64 = x.iter().map(|v| v.abs()).sum::<f64>() / (1.0 - alpha);
        let limits: f64 = push_limits(n, &graph, tol).iter().sum();
        let bound = limits / (1.0 - alpha) + 1e-6 * mass + 1e-12 / (1.0 - alpha);
        let diff = max_abs_diff(&inc.scores(), &batch.scores);
        prop_assert!(diff <= bound, "diff {diff:e} > bound {bound:e}");
    }
}
