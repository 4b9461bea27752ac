//! The generic propagation core: `s = Σ_k (αPᵀ)^k x` on a weighted directed
//! graph, where `P` is the row-normalised weight matrix (mass flows from
//! source to destination; a node without outgoing weight keeps what reaches
//! it). See docs/propagation.md for the formulation and the proofs.
//!
//! It owns two drivers of the same sum: a batch driver (parallel pull over a
//! [`PullCsr`] snapshot, bit-identical at any thread count) and an
//! [`IncrementalPropagator`] (local push on a residual, with its own editable
//! adjacency). It must not do IO, read the clock, or know what the nodes mean:
//! mapping relationship space onto node ids is the engine's job.

use std::collections::VecDeque;

use rayon::prelude::*;
use thiserror::Error;

pub mod csr;

use csr::{Edge, GraphError, InWeights, PullCsr};

/// Destinations per parallel task. Fixed (not derived from the thread count)
/// so the partial L1 sums, and their sequential reduction, are the same on
/// any number of threads; small enough that work stealing evens out hubs.
const CHUNK: usize = 1024;

/// Errors of the propagation core: bad parameters or inputs from the caller,
/// or a run that did not converge within its iteration budget.
#[derive(Debug, Error, PartialEq)]
#[allow(missing_docs)] // each variant's message says what it is, with its fields
pub enum KernelError {
    #[error("alpha must be in [0, 1) for the sum to converge, got {0}")]
    BadAlpha(f64),
    #[error("the tolerance must be finite and > 0, got {0}")]
    BadTolerance(f64),
    #[error("expected {expected} seed values (one per node), got {got}")]
    SeedCount { expected: usize, got: usize },
    #[error("seed of node {node} is {value}; seeds must be finite")]
    BadSeed { node: usize, value: f64 },
    #[error("impulse of {amount} at node {node}; impulses must be finite")]
    BadImpulse { node: u32, amount: f64 },
    #[error("node {node} is outside 0..{node_count}")]
    NodeOutOfRange { node: u32, node_count: usize },
    #[error("edge {src} -> {dst} has weight {weight}; weights must be finite and >= 0")]
    BadWeight { src: u32, dst: u32, weight: f64 },
    #[error("there is no edge {src} -> {dst} to remove")]
    NoSuchEdge { src: u32, dst: u32 },
    #[error(
        "no convergence after {iterations} iterations (last increment {last_l1:e}); raise the tolerance or lower alpha"
    )]
    NotConverged { iterations: usize, last_l1: f64 },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// Parameters of a batch run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PropagationParams {
    /// Damping per hop, in [0, 1).
    pub alpha: f64,
    /// Stop once the L1 norm of the latest increment `r_k` is below this
    /// (absolute, in the units of the seeds).
    pub tol: f64,
    /// Safety net against alpha close to 1; hitting it is an error.
    pub max_iterations: usize,
}

impl Default for PropagationParams {
    fn default() -> Self {
        Self {
            alpha: 0.85,
            tol: 1e-9,
            max_iterations: 10_000,
        }
    }
}

impl PropagationParams {
    fn validate(&self) -> Result<(), KernelError> {
        validate_alpha_tol(self.alpha, self.tol)
    }
}

fn validate_alpha_tol(alpha: f64, tol: f64) -> Result<(), KernelError> {
    if !(0.0..1.0).contains(&alpha) {
        return Err(KernelError::BadAlpha(alpha));
    }
    if !(tol.is_finite() && tol > 0.0) {
        return Err(KernelError::BadTolerance(tol));
    }
    Ok(())
}

/// Result of a batch run.
#[derive(Clone, Debug, PartialEq)]
pub struct Propagation {
    /// `s = Σ_{j=0..=k} r_j` with `r_0 = x`, `r_{j+1} = αPᵀ r_j`.
    pub scores: Vec<f64>,
    /// `r_k`, the last increment added, rounded to f32 (what the per-edge
    /// kernel propagates; with uniform rows it propagates `r_k / outdeg`
    /// rounded instead, within 2^-24 relative of this). Up to that rounding, the exact answer is
    /// `(scores - last_increment) + Σ_j (αPᵀ)^j last_increment`, which is how
    /// an [`IncrementalPropagator`] can start from a batch result.
    pub last_increment: Vec<f64>,
    /// Number of matrix-vector steps `k`.
    pub iterations: usize,
    /// `‖r_k‖₁`, below the tolerance unless `k = 0` was already below it.
    pub last_increment_l1: f64,
}

/// The batch driver with its buffers allocated once, so that iterations
/// allocate nothing; [`propagate`] is the one-call form.
pub struct BatchPropagator<'g> {
    csr: &'g PullCsr,
    alpha: f64,
    scores: Vec<f64>,
    /// The increments `r_k`, `r_{k+1}`, stored as f32 (in internal labels):
    /// the kernel gathers `r[src]` at random, and half the bytes keeps more
    /// of it in cache (measured: about 30% less CPU per iteration on the
    /// 1M-node bench graph). Each is computed in f64, added to the f64
    /// `scores` unrounded, and rounded once for the next step; the error this
    /// adds is bounded in docs/propagation.md ("Floating point").
    current: Vec<f32>,
    next: Vec<f32>,
    /// When every row of `P` is uniform ([`InWeights::PerSource`]): each
    /// node's share per out-edge, `r_k[u] / outdeg(u)`, computed in f64 from
    /// the unrounded increment and rounded once to f32 (GAP's
    /// "contributions"), so a destination pulls a plain sum and no weight is
    /// read per edge. Empty for [`InWeights::PerEdge`].
    contrib: Vec<f32>,
    next_contrib: Vec<f32>,
    partial_l1: Vec<f64>,
    iterations: usize,
    last_l1: f64,
}

impl<'g> BatchPropagator<'g> {
    /// A run over `csr` from `seeds` (one per node) with damping `alpha`.
    /// Errors: `alpha` outside [0, 1), a seed count other than the node
    /// count, a seed that is not finite.
    pub fn new(csr: &'g PullCsr, seeds: &[f64], alpha: f64) -> Result<Self, KernelError> {
        validate_alpha_tol(alpha, 1.0)?;
        let n = csr.node_count();
        if seeds.len() != n {
            return Err(KernelError::SeedCount {
                expected: n,
                got: seeds.len(),
            });
        }
        if let Some((node, &value)) = seeds.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KernelError::BadSeed { node, value });
        }
        let partial_l1: Vec<f64> = seeds
            .chunks(CHUNK)
            .map(|c| c.iter().map(|v| v.abs()).sum())
            .collect();
        let scores = csr.to_internal(seeds);
        let (contrib, next_contrib) = match csr.in_weights() {
            InWeights::PerSource(share) => (
                scores
                    .iter()
                    .zip(share)
                    .map(|(x, p)| (x * p) as f32)
                    .collect(),
                vec![0.0f32; n],
            ),
            InWeights::PerEdge(_) => (Vec::new(), Vec::new()),
        };
        Ok(Self {
            csr,
            alpha,
            current: scores.iter().map(|v| *v as f32).collect(),
            scores,
            next: vec![0.0f32; n],
            contrib,
            next_contrib,
            last_l1: partial_l1.iter().sum(),
            partial_l1,
            iterations: 0,
        })
    }

    /// One step: `r ← αPᵀ r`, `s += r`; returns `‖r‖₁` of the new increment.
    ///
    /// Each destination pulls along its incoming edges in the snapshot's
    /// fixed (source-ascending) order, accumulating in f64, and each chunk's
    /// L1 is summed in node order and the chunks in chunk order: no atomics,
    /// and the same floating-point operations in the same order whatever the
    /// number of threads.
    pub fn step(&mut self) -> f64 {
        let offsets = self.csr.in_offsets();
        let sources = self.csr.in_sources();
        let alpha = self.alpha;
        match self.csr.in_weights() {
            InWeights::PerEdge(weights) => {
                let current = &self.current;
                self.next
                    .par_chunks_mut(CHUNK)
                    .zip(self.scores.par_chunks_mut(CHUNK))
                    .zip(self.partial_l1.par_iter_mut())
                    .enumerate()
                    .for_each(|(chunk, ((next, scores), l1))| {
                        let base = chunk * CHUNK;
                        let mut sum = 0.0f64;
                        for (i, (nx, sc)) in next.iter_mut().zip(scores.iter_mut()).enumerate() {
                            let v = base + i;
                            let range = offsets[v]..offsets[v + 1];
                            let inc =
                                alpha * pull(current, &sources[range.clone()], &weights[range]);
                            *nx = inc as f32;
                            *sc += inc;
                            sum += inc.abs();
                        }
                        *l1 = sum;
                    });
            }
            InWeights::PerSource(share) => {
                let contrib = &self.contrib;
                self.next
                    .par_chunks_mut(CHUNK)
                    .zip(self.next_contrib.par_chunks_mut(CHUNK))
                    .zip(self.scores.par_chunks_mut(CHUNK))
                    .zip(self.partial_l1.par_iter_mut())
                    .enumerate()
                    .for_each(|(chunk, (((next, next_contrib), scores), l1))| {
                        let base = chunk * CHUNK;
                        let mut sum = 0.0f64;
                        let slots = next.iter_mut().zip(next_contrib).zip(scores.iter_mut());
                        for (i, ((nx, nc), sc)) in slots.enumerate() {
                            let v = base + i;
                            let inc =
                                alpha * pull_sum(contrib, &sources[offsets[v]..offsets[v + 1]]);
                            *nx = inc as f32;
                            *nc = (inc * share[v]) as f32;
                            *sc += inc;
                            sum += inc.abs();
                        }
                        *l1 = sum;
                    });
                std::mem::swap(&mut self.contrib, &mut self.next_contrib);
            }
        }
        std::mem::swap(&mut self.current, &mut self.next);
        self.iterations += 1;
        self.last_l1 = self.partial_l1.iter().sum();
        self.last_l1
    }

    /// Steps until `‖r_k‖₁ < tol`; `k = 0` (the seeds) counts, so all-zero
    /// seeds take no step.
    pub fn run(&mut self, tol: f64, max_iterations: usize) -> Result<(), KernelError> {
        validate_alpha_tol(self.alpha, tol)?;
        while self.last_l1 >= tol {
            if self.iterations >= max_iterations {
                return Err(KernelError::NotConverged {
                    iterations: self.iterations,
                    last_l1: self.last_l1,
                });
            }
            self.step();
        }
        Ok(())
    }

    /// Steps taken so far.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// The scores so far, by external node id.
    pub fn scores(&self) -> Vec<f64> {
        self.csr.to_external(&self.scores)
    }

    /// Heap bytes of the per-run vectors (scores and two increments).
    pub fn heap_bytes(&self) -> usize {
        (self.scores.capacity() + self.partial_l1.capacity()) * std::mem::size_of::<f64>()
            + (self.current.capacity()
                + self.next.capacity()
                + self.contrib.capacity()
                + self.next_contrib.capacity())
                * std::mem::size_of::<f32>()
    }

    /// The scores (caller's node ids) with the run's figures.
    pub fn into_result(self) -> Propagation {
        Propagation {
            scores: self.csr.to_external(&self.scores),
            last_increment: self
                .csr
                .to_external(&self.current)
                .iter()
                .map(|v| f64::from(*v))
                .collect(),
            iterations: self.iterations,
            last_increment_l1: self.last_l1,
        }
    }
}

/// `Σ_e current[sources[e]] · weights[e]` in f64, in edge order but over
/// two interleaved accumulators (even and odd positions, added at the end):
/// a fixed order, so still deterministic, with two independent add chains
/// so the random gathers of `current` can overlap.
#[inline]
fn pull(current: &[f32], sources: &[u32], weights: &[f32]) -> f64 {
    let n = current.len();
    let (mut even, mut odd) = (0.0f64, 0.0f64);
    let mut pairs_s = sources.chunks_exact(2);
    let mut pairs_w = weights.chunks_exact(2);
    for (s, w) in (&mut pairs_s).zip(&mut pairs_w) {
        let (a, b) = (s[0] as usize, s[1] as usize);
        assert!(a < n && b < n);
        even += f64::from(current[a]) * f64::from(w[0]);
        odd += f64::from(current[b]) * f64::from(w[1]);
    }
    if let (Some(s), Some(w)) = (pairs_s.remainder().first(), pairs_w.remainder().first()) {
        even += f64::from(current[*s as usize]) * f64::from(*w);
    }
    even + odd
}

/// `Σ_e contrib[sources[e]]` in f64, in the same fixed order as [`pull`]
/// (two interleaved accumulators): the uniform-rows form, no weights read.
#[inline]
fn pull_sum(contrib: &[f32], sources: &[u32]) -> f64 {
    let (mut even, mut odd) = (0.0f64, 0.0f64);
    let mut pairs = sources.chunks_exact(2);
    for s in &mut pairs {
        even += f64::from(contrib[s[0] as usize]);
        odd += f64::from(contrib[s[1] as usize]);
    }
    if let Some(s) = pairs.remainder().first() {
        even += f64::from(contrib[*s as usize]);
    }
    even + odd
}

/// Batch propagation of `seeds` over `csr`: `s = Σ_k (αPᵀ)^k x`, truncated
/// after the first increment whose L1 norm is below `params.tol`. Runs on the
/// current rayon pool (use `ThreadPool::install` to choose one).
pub fn propagate(
    csr: &PullCsr,
    seeds: &[f64],
    params: &PropagationParams,
) -> Result<Propagation, KernelError> {
    params.validate()?;
    let mut batch = BatchPropagator::new(csr, seeds, params.alpha)?;
    batch.run(params.tol, params.max_iterations)?;
    Ok(batch.into_result())
}

/// Largest per-node absolute difference; `f64::INFINITY` if the lengths
/// differ (the vectors do not describe the same nodes).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Work done to settle one update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Nodes pushed.
    pub pushes: usize,
    /// Edges the pushes visited.
    pub edge_visits: usize,
}

/// Incremental driver: scores `s` and a residual `r` such that
///
/// `exact = s + Σ_k (αPᵀ)^k r`
///
/// holds after every operation, and once an operation returns every
/// `|r_v| ≤ tol · max(1, d_v)`, with `d_v` the number of out-edges of `v`
/// (distinct destinations, zero weights included). So
/// `‖exact - s‖₁ ≤ ‖r‖₁ / (1 - α) ≤ tol · Σ_v max(1, d_v) / (1 - α)`,
/// which is `tol · (E + z) / (1 - α)` for `E` edges and `z` nodes without
/// out-edges ([`IncrementalPropagator::guaranteed_error_bound`]).
///
/// Each operation changes `r` (and for edge edits one entry of `s`) so that
/// the invariant holds for the new inputs, then pushes (Andersen, Chung and
/// Lang's degree-scaled rule, signed, FIFO) only at nodes whose `|r_v|`
/// exceeds `tol · max(1, d_v)`: a push then moves at least `tol` of mass per
/// edge it visits, so settling `‖r‖₁ = a` visits at most `a / ((1-α)·tol)`
/// edges whatever the degrees.
///
/// Internally nodes are relabelled by in-degree, descending (ties by id), as
/// of construction from edges: most edge visits land on high in-degree
/// nodes, and keeping their residuals together keeps them in cache
/// (measured on the 1M-node bench graph: about 10% less time per impulse).
/// Every method takes and returns the caller's ids.
#[derive(Clone, Debug)]
pub struct IncrementalPropagator {
    alpha: f64,
    tol: f64,
    /// `label[id]`: the internal label of node `id`; all the vectors below
    /// are indexed by label, and the adjacency holds labels.
    label: Vec<u32>,
    /// `id[label]`: the caller's id of an internal label.
    id: Vec<u32>,
    /// Out-edges `(dst, weight)` of each node; parallel edges are merged.
    out_edges: Vec<Vec<(u32, f64)>>,
    /// Σ of each node's out-weights, maintained with the edits.
    out_weight: Vec<f64>,
    scores: Vec<f64>,
    pending: Vec<Pending>,
    queue: VecDeque<u32>,
    queued: Vec<bool>,
}

/// What every edge visit of a push reads and writes at the destination,
/// side by side so that a visit touches one cache line.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pending {
    residual: f64,
    /// `tol · max(1, d_v)`: `v` is pushed only while `|residual|` exceeds it.
    limit: f64,
}

impl IncrementalPropagator {
    /// No edges, no impulses: everything is zero.
    pub fn new(node_count: usize, alpha: f64, tol: f64) -> Result<Self, KernelError> {
        validate_alpha_tol(alpha, tol)?;
        if node_count > u32::MAX as usize {
            return Err(GraphError::TooManyNodes { node_count }.into());
        }
        Ok(Self {
            alpha,
            tol,
            label: (0..node_count as u32).collect(),
            id: (0..node_count as u32).collect(),
            out_edges: vec![Vec::new(); node_count],
            out_weight: vec![0.0; node_count],
            scores: vec![0.0; node_count],
            pending: vec![
                Pending {
                    residual: 0.0,
                    limit: tol,
                };
                node_count
            ],
            queue: VecDeque::new(),
            queued: vec![false; node_count],
        })
    }

    /// The graph of `edges`, no impulses yet. Parallel edges are merged, as
    /// in [`PullCsr`]; O(E log d) for the per-node sort.
    pub fn from_edges(
        node_count: usize,
        edges: &[Edge],
        alpha: f64,
        tol: f64,
    ) -> Result<Self, KernelError> {
        let mut this = Self::new(node_count, alpha, tol)?;
        let mut in_degree = vec![0usize; node_count];
        for e in edges {
            this.check_edge(e.src, e.dst, e.weight)?;
            in_degree[e.dst as usize] += 1;
        }
        // By in-degree descending, ties by id: a function of the graph only.
        let mut keyed: Vec<(std::cmp::Reverse<usize>, u32)> = in_degree
            .iter()
            .zip(0u32..)
            .map(|(d, v)| (std::cmp::Reverse(*d), v))
            .collect();
        keyed.sort_unstable();
        this.id = keyed.into_iter().map(|(_, v)| v).collect();
        for (label, v) in this.id.iter().enumerate() {
            this.label[*v as usize] = label as u32;
        }
        let mut degree = vec![0usize; node_count];
        for e in edges {
            degree[this.label[e.src as usize] as usize] += 1;
        }
        for (list, d) in this.out_edges.iter_mut().zip(degree) {
            list.reserve_exact(d);
        }
        for e in edges {
            let (src, dst) = (this.label[e.src as usize], this.label[e.dst as usize]);
            this.out_edges[src as usize].push((dst, e.weight));
        }
        for (list, total) in this.out_edges.iter_mut().zip(this.out_weight.iter_mut()) {
            list.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            list.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    kept.1 += later.1;
                    true
                } else {
                    false
                }
            });
            list.shrink_to_fit();
            *total = list.iter().map(|(_, w)| w).sum();
        }
        for v in 0..node_count {
            this.update_limit(v);
        }
        Ok(this)
    }

    /// Starts from a batch result on the same graph: `s = scores - r_k`,
    /// `r = r_k` satisfies the invariant exactly (see [`Propagation`]), then
    /// settles whatever is above the tolerance.
    pub fn from_batch(
        node_count: usize,
        edges: &[Edge],
        alpha: f64,
        tol: f64,
        batch: &Propagation,
    ) -> Result<(Self, PushStats), KernelError> {
        let mut this = Self::from_edges(node_count, edges, alpha, tol)?;
        if batch.scores.len() != node_count || batch.last_increment.len() != node_count {
            return Err(KernelError::SeedCount {
                expected: node_count,
                got: batch.scores.len(),
            });
        }
        for v in 0..node_count {
            let l = this.label[v];
            this.scores[l as usize] = batch.scores[v] - batch.last_increment[v];
            this.pending[l as usize].residual = batch.last_increment[v];
            this.enqueue_if_above(l);
        }
        let stats = this.settle();
        Ok((this, stats))
    }

    /// Nodes numbered `0..node_count()`.
    pub fn node_count(&self) -> usize {
        self.scores.len()
    }

    /// Adds `count` isolated nodes at the end of the id range.
    pub fn add_nodes(&mut self, count: usize) -> Result<(), KernelError> {
        let node_count = self.node_count() + count;
        if node_count > u32::MAX as usize {
            return Err(GraphError::TooManyNodes { node_count }.into());
        }
        // New nodes are labelled after the existing ones, in id order.
        self.label
            .extend(self.node_count() as u32..node_count as u32);
        self.id.extend(self.node_count() as u32..node_count as u32);
        self.out_edges.resize_with(node_count, Vec::new);
        self.out_weight.resize(node_count, 0.0);
        self.scores.resize(node_count, 0.0);
        self.pending.resize(
            node_count,
            Pending {
                residual: 0.0,
                limit: self.tol,
            },
        );
        self.queued.resize(node_count, false);
        Ok(())
    }

    /// The scores `s`, by node id.
    pub fn scores(&self) -> Vec<f64> {
        self.label
            .iter()
            .map(|l| self.scores[*l as usize])
            .collect()
    }

    /// The residual `r_v`.
    pub fn residual(&self, node: u32) -> f64 {
        self.pending[self.label[node as usize] as usize].residual
    }

    /// `tol · max(1, d_v)`: the largest `|r_v|` left when an operation
    /// returns.
    pub fn push_threshold(&self, node: u32) -> f64 {
        self.pending[self.label[node as usize] as usize].limit
    }

    /// The push threshold (absolute, seed units).
    pub fn tolerance(&self) -> f64 {
        self.tol
    }

    /// Bound on `‖exact - s‖₁` from the current residual: `‖r‖₁ / (1 - α)`,
    /// since `‖Σ_k (αPᵀ)^k‖₁ ≤ Σ_k α^k`.
    pub fn error_bound(&self) -> f64 {
        self.pending.iter().map(|p| p.residual.abs()).sum::<f64>() / (1.0 - self.alpha)
    }

    /// The bound that holds after any operation, whatever the residual:
    /// `tol · Σ_v max(1, d_v) / (1 - α)`.
    pub fn guaranteed_error_bound(&self) -> f64 {
        self.pending.iter().map(|p| p.limit).sum::<f64>() / (1.0 - self.alpha)
    }

    /// Out-edges of `node` as `(dst, weight)`, in no particular order.
    pub fn out_edges(&self, node: u32) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.out_edges[self.label[node as usize] as usize]
            .iter()
            .map(|(dst, w)| (self.id[*dst as usize], *w))
    }

    /// Heap bytes of the adjacency and the vectors.
    pub fn heap_bytes(&self) -> usize {
        let lists: usize = self
            .out_edges
            .iter()
            .map(|l| l.capacity() * std::mem::size_of::<(u32, f64)>())
            .sum();
        lists
            + self.out_edges.capacity() * std::mem::size_of::<Vec<(u32, f64)>>()
            + (self.out_weight.capacity() + self.scores.capacity()) * std::mem::size_of::<f64>()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
            + self.queued.capacity()
            + (self.label.capacity() + self.id.capacity()) * std::mem::size_of::<u32>()
            + self.queue.capacity() * std::mem::size_of::<u32>()
    }

    /// A new impulse `x_node += amount`: the exact answer gains
    /// `Σ_k (αPᵀ)^k amount·e_node`, which is exactly `r_node += amount`.
    pub fn add_impulse(&mut self, node: u32, amount: f64) -> Result<PushStats, KernelError> {
        self.check_node(node)?;
        if !amount.is_finite() {
            return Err(KernelError::BadImpulse { node, amount });
        }
        let node = self.label[node as usize];
        self.pending[node as usize].residual += amount;
        self.enqueue_if_above(node);
        Ok(self.settle())
    }

    /// Adds `weight` to the edge `src -> dst` (creating it if absent).
    pub fn insert_edge(
        &mut self,
        src: u32,
        dst: u32,
        weight: f64,
    ) -> Result<PushStats, KernelError> {
        self.check_edge(src, dst, weight)?;
        let (src, dst) = (self.label[src as usize], self.label[dst as usize]);
        let list = &mut self.out_edges[src as usize];
        match list.iter_mut().find(|(d, _)| *d == dst) {
            Some((_, w)) => *w += weight,
            None => {
                list.push((dst, weight));
                self.update_limit(src as usize);
            }
        }
        let total = self.out_weight[src as usize] + weight;
        self.reweight_row(src, dst, weight, total);
        Ok(self.settle())
    }

    /// Removes the edge `src -> dst` (all its weight); returns that weight.
    pub fn remove_edge(&mut self, src: u32, dst: u32) -> Result<(f64, PushStats), KernelError> {
        self.check_node(src)?;
        self.check_node(dst)?;
        let (l_src, l_dst) = (self.label[src as usize], self.label[dst as usize]);
        let list = &mut self.out_edges[l_src as usize];
        let Some(pos) = list.iter().position(|(d, _)| *d == l_dst) else {
            return Err(KernelError::NoSuchEdge { src, dst });
        };
        let (src, dst) = (l_src, l_dst);
        let (_, weight) = list.swap_remove(pos);
        // Recomputed, not decremented: a running sum that cancels down to a
        // rounding residue (say 4e-16 over zero-weight edges) would make the
        // row look non-dangling and blow up the `s_u δ / o` of the next edit.
        let total = list.iter().map(|(_, w)| w).sum();
        self.update_limit(src as usize);
        self.reweight_row(src, dst, -weight, total);
        Ok((weight, self.settle()))
    }

    /// Row `u` of `P` changes because the weight of `u -> w` changed by
    /// `delta`; the adjacency already holds the new weight and `new_total`
    /// is its out-weight. With `o` the old out-weight of `u`, restores the invariant by
    /// touching only `u` and `w` (derivation in docs/propagation.md,
    /// "Edge updates"; the weighted form of Zhang, Lofgren and Goel, KDD 2016):
    ///
    /// - `o = 0` (u was dangling): `r_w += α s_u`, if the new row is `e_w`;
    /// - `o > 0`: with `c = s_u δ / o`: `s_u += c`, `r_u -= c`, `r_w += α c`.
    fn reweight_row(&mut self, u: u32, w: u32, delta: f64, new_total: f64) {
        let (ui, wi) = (u as usize, w as usize);
        let old = self.out_weight[ui];
        let new = new_total;
        let s_u = self.scores[ui];
        if old > 0.0 {
            let c = s_u * delta / old;
            self.scores[ui] += c;
            self.pending[ui].residual -= c;
            self.pending[wi].residual += self.alpha * c;
        } else if new > 0.0 {
            // Before, the row was zero; now all positive weight is on `w`.
            self.pending[wi].residual += self.alpha * s_u;
        }
        self.out_weight[ui] = new;
        self.enqueue_if_above(u);
        self.enqueue_if_above(w);
    }

    /// Sets `v`'s push threshold from its current out-degree.
    fn update_limit(&mut self, v: usize) {
        self.pending[v].limit = self.tol * self.out_edges[v].len().max(1) as f64;
    }

    fn enqueue_if_above(&mut self, v: u32) {
        let vi = v as usize;
        let p = self.pending[vi];
        if p.residual.abs() > p.limit && !self.queued[vi] {
            self.queued[vi] = true;
            self.queue.push_back(v);
        }
    }

    /// Pushes until every `|r_v| ≤ tol · max(1, d_v)`. A push at `u` moves
    /// `r_u` into `s_u` and `α r_u P[u][·]` into the residuals of its
    /// out-neighbours, which keeps the invariant because
    /// `Σ_k (αPᵀ)^k e_u = e_u + Σ_k (αPᵀ)^k αPᵀ e_u`. Each push lowers
    /// `‖r‖₁` by at least `(1 - α)|r_u| > (1 - α)·tol·max(1, d_u)`, so this
    /// terminates, after at most `‖r‖₁ / ((1 - α)·tol)` edge visits.
    fn settle(&mut self) -> PushStats {
        let mut stats = PushStats::default();
        // Split borrows: the adjacency is read while the vectors are written.
        let Self {
            alpha,
            out_edges,
            out_weight,
            scores,
            pending,
            queue,
            queued,
            ..
        } = self;
        let alpha = *alpha;
        while let Some(u) = queue.pop_front() {
            let ui = u as usize;
            queued[ui] = false;
            let Pending { residual: r, limit } = pending[ui];
            if r.abs() <= limit {
                continue;
            }
            pending[ui].residual = 0.0;
            scores[ui] += r;
            stats.pushes += 1;
            let total = out_weight[ui];
            if total <= 0.0 {
                continue; // dangling: the mass stays at u
            }
            let c = alpha * r / total;
            let list = &out_edges[ui];
            stats.edge_visits += list.len();
            for &(v, weight) in list {
                let vi = v as usize;
                let p = &mut pending[vi];
                p.residual += c * weight;
                if p.residual.abs() > p.limit && !queued[vi] {
                    queued[vi] = true;
                    queue.push_back(v);
                }
            }
        }
        stats
    }

    fn check_node(&self, node: u32) -> Result<(), KernelError> {
        if node as usize >= self.node_count() {
            return Err(KernelError::NodeOutOfRange {
                node,
                node_count: self.node_count(),
            });
        }
        Ok(())
    }

    fn check_edge(&self, src: u32, dst: u32, weight: f64) -> Result<(), KernelError> {
        self.check_node(src)?;
        self.check_node(dst)?;
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(KernelError::BadWeight { src, dst, weight });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Vec<Edge> {
        vec![
            Edge {
                src: 0,
                dst: 1,
                weight: 1.0,
            },
            Edge {
                src: 1,
                dst: 2,
                weight: 1.0,
            },
        ]
    }

    #[test]
    fn a_chain_damps_by_alpha_per_hop_and_the_sink_keeps_its_mass() {
        let csr = PullCsr::from_edges(3, &chain()).unwrap();
        let params = PropagationParams {
            alpha: 0.5,
            tol: 1e-12,
            ..Default::default()
        };
        let out = propagate(&csr, &[1.0, 0.0, 0.0], &params).unwrap();
        assert_eq!(out.scores, vec![1.0, 0.5, 0.25]);
        assert_eq!(out.iterations, 3);
    }

    #[test]
    fn incremental_matches_the_chain() {
        let mut inc = IncrementalPropagator::from_edges(3, &chain(), 0.5, 1e-12).unwrap();
        inc.add_impulse(0, 1.0).unwrap();
        assert_eq!(inc.scores(), [1.0, 0.5, 0.25]);
        inc.remove_edge(1, 2).unwrap();
        assert!(max_abs_diff(&inc.scores(), &[1.0, 0.5, 0.0]) < 1e-12);
        inc.insert_edge(1, 0, 2.0).unwrap();
        // 0 -> 1 -> 0 cycle: s_0 = 1/(1 - 0.25), s_1 = 0.5 s_0.
        assert!(max_abs_diff(&inc.scores(), &[4.0 / 3.0, 2.0 / 3.0, 0.0]) < 1e-11);
    }
}
