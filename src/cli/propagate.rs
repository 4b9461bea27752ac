//! `fusion propagate`: runs the propagation core on any weighted directed
//! graph given as TSV files, so it can be checked against other graph tools.
//!
//! This module owns the file formats, the mapping of arbitrary `u32` node ids
//! onto dense indices, and the timings; it must not contain scoring logic
//! (that is `kernel`) or graph layout (that is `kernel::csr`).
//!
//! Formats: `--edges` lines are `src dst weight`, `--seeds` lines are
//! `node value`; fields are separated by tabs or spaces; blank lines and lines
//! starting with `#` are skipped. Node ids are any `u32`; the nodes are those
//! named in either file; the output has one `node value` line per node,
//! sorted by id. Parallel edges add their weights; repeated seeds add up.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use rayon::prelude::*;

use crate::kernel::csr::{Edge, PullCsr};
use crate::kernel::{
    BatchPropagator, IncrementalPropagator, PropagationParams, PushStats, max_abs_diff, propagate,
};

#[derive(clap::Args, Debug)]
pub struct PropagateArgs {
    /// TSV file of edges `src dst weight` (weights finite and >= 0)
    #[arg(long)]
    pub edges: PathBuf,
    /// TSV file of seeds `node value`
    #[arg(long)]
    pub seeds: PathBuf,
    /// Damping per hop, in [0, 1)
    #[arg(long, default_value_t = 0.85, value_parser = parse_alpha)]
    pub alpha: f64,
    /// Stop when the L1 norm of the latest increment is below this (absolute,
    /// in seed units); the neglected tail is then below tol·alpha/(1-alpha)
    #[arg(long, default_value_t = 1e-9, value_parser = parse_tol)]
    pub tol: f64,
    /// Worker threads (default: one per core)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Print load_s=, build_s=, kernel_s=, iterations= (and sizes) on stderr
    #[arg(long)]
    pub timings: bool,
    /// Bench the incremental driver with N impulses and N edge inserts after
    /// the batch run (tolerance 1e-3·‖seeds‖₁/n); figures go to stderr
    #[arg(long, hide = true, value_name = "N")]
    pub bench_incremental: Option<usize>,
    /// Impulse size of --bench-incremental, as a fraction of ‖seeds‖₁/n
    #[arg(long, hide = true, default_value_t = 1.0, value_name = "F")]
    pub bench_impulse_scale: f64,
}

fn parse_alpha(s: &str) -> Result<f64, String> {
    let a: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..1.0).contains(&a) {
        Ok(a)
    } else {
        Err("alpha must be in [0, 1)".into())
    }
}

fn parse_tol(s: &str) -> Result<f64, String> {
    let t: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if t.is_finite() && t > 0.0 {
        Ok(t)
    } else {
        Err("the tolerance must be finite and > 0".into())
    }
}

pub fn run(args: PropagateArgs) -> anyhow::Result<()> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = args.threads {
        builder = builder.num_threads(n as usize);
    }
    let pool = builder
        .build()
        .context("failed to start the worker threads")?;
    pool.install(|| run_in_pool(&args))
}

fn run_in_pool(args: &PropagateArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut edges = read_table(&args.edges, 3)?;
    let seeds = read_table(&args.seeds, 2)?;
    let ids = NodeIds::new(&[&edges.src, &edges.dst, &seeds.src]);
    ids.remap(&mut edges.src);
    ids.remap(&mut edges.dst);
    let n = ids.len();
    let mut x = vec![0.0f64; n];
    for (node, value) in seeds.src.iter().zip(&seeds.value) {
        x[ids.index_of(*node)] += value;
    }
    let load_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let csr = PullCsr::from_arrays(n, &edges.src, &edges.dst, &edges.value)
        .with_context(|| format!("bad graph in {}", args.edges.display()))?;
    let build_s = t1.elapsed().as_secs_f64();

    let params = PropagationParams {
        alpha: args.alpha,
        tol: args.tol,
        ..Default::default()
    };
    let t2 = Instant::now();
    let cpu2 = process_cpu_s();
    let result = propagate(&csr, &x, &params)?;
    let kernel_s = t2.elapsed().as_secs_f64();
    let kernel_cpu_s = process_cpu_s().zip(cpu2).map(|(b, a)| b - a);

    let mut out = std::io::BufWriter::with_capacity(1 << 20, super::stdout());
    for (i, value) in result.scores.iter().enumerate() {
        let v = *value;
        if v == 0.0 || (1e-4..1e15).contains(&v.abs()) {
            writeln!(out, "{}\t{}", ids.id_of(i), v)?;
        } else {
            writeln!(out, "{}\t{:e}", ids.id_of(i), v)?;
        }
    }
    out.flush().context("failed to write the scores")?;

    if args.timings {
        let m = csr.edge_count().max(1) as f64;
        let run_bytes = BatchPropagator::new(&csr, &x, args.alpha)?.heap_bytes();
        eprintln!("load_s={load_s:.3}");
        eprintln!("build_s={build_s:.3}");
        eprintln!("kernel_s={kernel_s:.3}");
        eprintln!("iterations={}", result.iterations);
        eprintln!(
            "ms_per_iteration={:.2}",
            1e3 * kernel_s / result.iterations.max(1) as f64
        );
        if let Some(cpu) = kernel_cpu_s {
            // CPU time of all threads: robust to other load on a shared
            // machine, where wall time is not.
            eprintln!("kernel_cpu_s={cpu:.3}");
            eprintln!(
                "cpu_ms_per_iteration={:.2}",
                1e3 * cpu / result.iterations.max(1) as f64
            );
        }
        eprintln!("nodes={n}");
        eprintln!("edges={}", csr.edge_count());
        eprintln!("dangling={}", csr.dangling_count());
        eprintln!("last_increment_l1={:e}", result.last_increment_l1);
        eprintln!("csr_bytes_per_edge={:.2}", csr.heap_bytes() as f64 / m);
        eprintln!(
            "kernel_bytes_per_edge={:.2}",
            (csr.heap_bytes() + run_bytes) as f64 / m
        );
    }

    if let Some(count) = args.bench_incremental {
        drop(csr);
        let edge_list: Vec<Edge> = (0..edges.src.len())
            .map(|i| Edge {
                src: edges.src[i],
                dst: edges.dst[i],
                weight: edges.value[i],
            })
            .collect();
        drop(edges);
        bench_incremental(n, edge_list, &x, &result, args, count)?;
    }
    Ok(())
}

/// The honest incremental figures: a state equal to the batch answer, then
/// `count` impulses of `scale` times one average node's share of the seed
/// mass (`‖x‖₁/n`) at uniform
/// random nodes, then `count` inserts of unit-weight edges between uniform
/// random nodes, each settled to `tol = 1e-3·‖x‖₁/n`; finally the state is
/// compared with a fresh batch run on the edited graph.
fn bench_incremental(
    n: usize,
    mut edges: Vec<Edge>,
    x: &[f64],
    batch: &crate::kernel::Propagation,
    args: &PropagateArgs,
    count: usize,
) -> anyhow::Result<()> {
    let mass: f64 = x.iter().map(|v| v.abs()).sum();
    let tol = 1e-3 * mass / n as f64;
    let amount = args.bench_impulse_scale * mass / n as f64;
    let t = Instant::now();
    let (mut inc, init) = IncrementalPropagator::from_batch(n, &edges, args.alpha, tol, batch)?;
    eprintln!("inc_init_s={:.3}", t.elapsed().as_secs_f64());
    eprintln!("inc_init_pushes={}", init.pushes);
    eprintln!("inc_tol={tol:e}");
    eprintln!("inc_impulse_amount={amount:e}");
    eprintln!(
        "inc_bytes_per_edge={:.2}",
        inc.heap_bytes() as f64 / edges.len().max(1) as f64
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0x005e_edf0_510a);
    let mut x_now = x.to_vec();

    let mut times = Vec::with_capacity(count);
    let mut work = PushStats::default();
    for _ in 0..count {
        let node = rng.random_range(0..n) as u32;
        let t = Instant::now();
        let stats = inc.add_impulse(node, amount)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        work.pushes += stats.pushes;
        work.edge_visits += stats.edge_visits;
        x_now[node as usize] += amount;
    }
    report("inc_impulse", &mut times, work, count);

    times.clear();
    work = PushStats::default();
    for _ in 0..count {
        let (src, dst) = (rng.random_range(0..n) as u32, rng.random_range(0..n) as u32);
        let t = Instant::now();
        let stats = inc.insert_edge(src, dst, 1.0)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        work.pushes += stats.pushes;
        work.edge_visits += stats.edge_visits;
        edges.push(Edge {
            src,
            dst,
            weight: 1.0,
        });
    }
    report("inc_insert", &mut times, work, count);

    times.clear();
    work = PushStats::default();
    let start = edges.len() - count;
    let mut removed = Vec::with_capacity(count / 2);
    for i in 0..count / 2 {
        let e = edges[start + i];
        let t = Instant::now();
        let (_, stats) = inc.remove_edge(e.src, e.dst)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        work.pushes += stats.pushes;
        work.edge_visits += stats.edge_visits;
        removed.push((e.src, e.dst));
    }
    report("inc_remove", &mut times, work, count / 2);
    // The whole merged edge went: drop every copy from the list.
    removed.sort_unstable();
    edges.retain(|f| removed.binary_search(&(f.src, f.dst)).is_err());

    let csr = PullCsr::from_edges(n, &edges)?;
    let params = PropagationParams {
        alpha: args.alpha,
        tol: 1e-12 * mass,
        ..Default::default()
    };
    let fresh = propagate(&csr, &x_now, &params)?;
    eprintln!(
        "inc_vs_batch_max_abs={:e}",
        max_abs_diff(&inc.scores(), &fresh.scores)
    );
    eprintln!("inc_error_bound_l1={:e}", inc.error_bound());
    eprintln!(
        "inc_guaranteed_error_bound_l1={:e}",
        inc.guaranteed_error_bound()
    );
    Ok(())
}

fn report(name: &str, times_us: &mut [f64], work: PushStats, count: usize) {
    if times_us.is_empty() {
        return;
    }
    let mean = times_us.iter().sum::<f64>() / times_us.len() as f64;
    times_us.sort_by(f64::total_cmp);
    let p99 = times_us[((times_us.len() as f64 * 0.99) as usize).min(times_us.len() - 1)];
    eprintln!("{name}_mean_us={mean:.1}");
    eprintln!("{name}_p99_us={p99:.1}");
    eprintln!("{name}_max_us={:.1}", times_us[times_us.len() - 1]);
    let per_op = |x: usize| x as f64 / count.max(1) as f64;
    eprintln!("{name}_pushes_mean={:.1}", per_op(work.pushes));
    eprintln!("{name}_edge_visits_mean={:.1}", per_op(work.edge_visits));
}

/// User + system CPU seconds of this process (all threads), from
/// /proc/self/stat; `None` where that file does not exist. Assumes the usual
/// 100 clock ticks per second.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parens.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Rows of `id id value` (3 fields) or `id value` (2 fields), column-wise.
#[derive(Default)]
struct Table {
    src: Vec<u32>,
    dst: Vec<u32>,
    value: Vec<f64>,
}

/// Reads the whole file and parses it in parallel pieces cut at line ends;
/// on error, the line number is recovered by counting newlines before it.
fn read_table(path: &Path, fields: usize) -> anyhow::Result<Table> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let pieces = split_at_lines(&bytes, 1 << 22);
    let parsed: Vec<Result<Table, (usize, String)>> = pieces
        .par_iter()
        .map(|&(start, end)| parse_piece(&bytes[start..end], start, fields))
        .collect();
    let mut table = Table::default();
    for piece in parsed {
        match piece {
            Ok(t) => {
                table.src.extend_from_slice(&t.src);
                table.dst.extend_from_slice(&t.dst);
                table.value.extend_from_slice(&t.value);
            }
            Err((offset, reason)) => {
                let line = 1 + bytes[..offset].iter().filter(|b| **b == b'\n').count();
                bail!("{} line {line}: {reason}", path.display());
            }
        }
    }
    Ok(table)
}

fn split_at_lines(bytes: &[u8], piece: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let mut end = (start + piece).min(bytes.len());
        while end < bytes.len() && bytes[end - 1] != b'\n' {
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    out
}

fn parse_piece(piece: &[u8], base: usize, fields: usize) -> Result<Table, (usize, String)> {
    let mut t = Table::default();
    let estimate = piece.len() / if fields == 3 { 16 } else { 10 };
    t.src.reserve(estimate);
    t.value.reserve(estimate);
    if fields == 3 {
        t.dst.reserve(estimate);
    }
    let mut offset = 0;
    for line in piece.split(|b| *b == b'\n') {
        let line_start = base + offset;
        offset += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line
            .split(|b| *b == b'\t' || *b == b' ')
            .filter(|f| !f.is_empty());
        let Some(first) = parts.next() else { continue };
        if first[0] == b'#' {
            continue;
        }
        let err = |reason: String| (line_start, reason);
        let expected = if fields == 3 {
            "`src dst weight`"
        } else {
            "`node value`"
        };
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| err(format!("missing {what}; expected {expected}")))
        };
        let src = parse_id(first).map_err(&err)?;
        if fields == 3 {
            let dst = parse_id(next("dst")?).map_err(&err)?;
            let w = parse_value(next("weight")?).map_err(&err)?;
            if w < 0.0 {
                return Err(err(format!("negative weight {w}; weights must be >= 0")));
            }
            t.dst.push(dst);
            t.value.push(w);
        } else {
            t.value.push(parse_value(next("value")?).map_err(&err)?);
        }
        if parts.next().is_some() {
            return Err(err(format!("too many fields; expected {expected}")));
        }
        t.src.push(src);
    }
    Ok(t)
}

fn parse_id(field: &[u8]) -> Result<u32, String> {
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() || field.len() > 10 {
            return Err(format!(
                "node id `{}` is not an integer in 0..=4294967295",
                String::from_utf8_lossy(field)
            ));
        }
        v = v * 10 + u64::from(b - b'0');
    }
    u32::try_from(v).map_err(|_| format!("node id {v} does not fit in u32"))
}

fn parse_value(field: &[u8]) -> Result<f64, String> {
    let v: f64 = std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("`{}` is not a number", String::from_utf8_lossy(field)))?;
    if !v.is_finite() {
        return Err(format!("{v} is not finite"));
    }
    Ok(v)
}

/// The sorted distinct node ids and the map from id to dense index. A direct
/// table when the id range is not much larger than the input, else a sorted
/// list searched by bisection; either way index order is id order, so the
/// numbering (and every sum downstream) does not depend on input order.
enum NodeIds {
    Dense { index: Vec<u32>, ids: Vec<u32> },
    Sparse { ids: Vec<u32> },
}

impl NodeIds {
    fn new(columns: &[&[u32]]) -> Self {
        let total: usize = columns.iter().map(|c| c.len()).sum();
        let max = columns
            .iter()
            .flat_map(|c| c.par_iter().copied().max())
            .max();
        let Some(max) = max else {
            return NodeIds::Sparse { ids: Vec::new() };
        };
        let range = max as usize + 1;
        if range <= (1 << 24).max(4 * total) {
            let mut index = vec![u32::MAX; range];
            for c in columns {
                for &id in *c {
                    index[id as usize] = 0;
                }
            }
            let mut ids = Vec::new();
            for (id, slot) in index.iter_mut().enumerate() {
                if *slot == 0 {
                    *slot = ids.len() as u32;
                    ids.push(id as u32);
                }
            }
            NodeIds::Dense { index, ids }
        } else {
            let mut ids: Vec<u32> = columns.iter().flat_map(|c| c.iter().copied()).collect();
            ids.par_sort_unstable();
            ids.dedup();
            NodeIds::Sparse { ids }
        }
    }

    fn len(&self) -> usize {
        match self {
            NodeIds::Dense { ids, .. } | NodeIds::Sparse { ids } => ids.len(),
        }
    }

    fn index_of(&self, id: u32) -> usize {
        match self {
            NodeIds::Dense { index, .. } => index[id as usize] as usize,
            NodeIds::Sparse { ids } => ids.binary_search(&id).expect("every id was collected"),
        }
    }

    fn id_of(&self, index: usize) -> u32 {
        match self {
            NodeIds::Dense { ids, .. } | NodeIds::Sparse { ids } => ids[index],
        }
    }

    fn remap(&self, column: &mut [u32]) {
        column
            .par_iter_mut()
            .for_each(|id| *id = self.index_of(*id) as u32);
    }
}
