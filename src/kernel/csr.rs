//! A compact, immutable CSR snapshot of a weighted directed graph in the
//! incoming-edge ("pull") layout the propagation kernel reads.
//!
//! It owns the layout and its O(V + E) construction by counting sort; it must
//! not be edited in place (a changed graph is rebuilt, the incremental driver
//! keeps its own editable adjacency) and does no IO.
//!
//! Layout, for node ids `0..n` as `u32`:
//! - `in_offsets[v]..in_offsets[v + 1]` is the range of `v`'s incoming edges;
//! - `in_sources[e]` is the source of edge `e`, sorted ascending within `v`;
//! - the entries `P[src][v]` of the row-normalised matrix, in one of two
//!   forms ([`InWeights`]): when every source spreads its out-weight evenly
//!   over its out-edges (unweighted graphs, or equal weights per row after
//!   parallel edges are merged), `P[src][v] = 1 / outdeg(src)` for all of
//!   `src`'s edges and the snapshot keeps that one number per source instead
//!   of a weight per edge; otherwise `in_weights[e]` is the edge's weight
//!   already divided by the source's total outgoing weight, so one kernel
//!   step is a multiply-add per edge.
//!
//! Why the per-source form: the kernel then pre-scales each source's
//! increment once per step (GAP's "contributions") and pulls a plain sum of
//! `u32`-indexed values, streaming 4 bytes per edge instead of 8.
//!
//! Why `f32` weights: they halve the bytes the kernel streams per iteration.
//! Each normalised weight is computed in `f64` and rounded once, so it carries
//! a relative error of at most 2^-24; a row of `P` is then perturbed by at most
//! 2^-24 in the 1-norm, and the solution `s = (I - αPᵀ)^-1 x` moves by at most
//! `α/(1-α) · 2^-24 · ‖s‖₁` (≈ 3.4e-7 · ‖s‖₁ at α = 0.85), half of the
//! kernel's worst-case rounding budget (docs/propagation.md, "Floating
//! point"); the comparison with networkx asks for 1e-6 per node and sees about
//! 1e-9. The kernel accumulates in `f64`.
//!
//! Why relabelled: nodes are stored sorted by out-degree, descending (ties by
//! id), so the sources that almost every gather touches sit together at the
//! front of the kernel's vectors and stay in cache; on a power-law graph this
//! is most of the edges. The labelling depends only on the graph, so it keeps
//! the results independent of input order. Accessors that take or return node
//! ids use the caller's ids; the raw arrays use the internal labels, and
//! [`PullCsr::to_internal`] / [`PullCsr::to_external`] convert vectors.
//!
//! Why canonical order: parallel edges are merged (their weights add up) and
//! the incoming edges of each node are sorted by source, so the snapshot, and
//! therefore every floating-point sum the kernel does, is the same whatever
//! order the edges were given in.

use thiserror::Error;

/// The user's mistakes a snapshot refuses to be built from.
#[derive(Debug, Error, PartialEq)]
#[allow(missing_docs)] // each variant's message says what it is, with its fields
pub enum GraphError {
    #[error("edge {index} ({src} -> {dst}) names a node outside 0..{node_count}")]
    NodeOutOfRange {
        index: usize,
        src: u32,
        dst: u32,
        node_count: usize,
    },
    #[error("edge {index} ({src} -> {dst}) has weight {weight}; weights must be finite and >= 0")]
    BadWeight {
        index: usize,
        src: u32,
        dst: u32,
        weight: f64,
    },
    #[error("{node_count} nodes do not fit in u32 ids; split the graph")]
    TooManyNodes { node_count: usize },
    #[error("the edge lists have different lengths ({sources}, {targets}, {weights})")]
    LengthMismatch {
        sources: usize,
        targets: usize,
        weights: usize,
    },
}

/// One directed weighted edge: mass flows from `src` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edge {
    /// Where mass comes from.
    pub src: u32,
    /// Where it goes.
    pub dst: u32,
    /// Finite and >= 0; a source's weights are normalised over its out-edges.
    pub weight: f64,
}

/// The entries `P[src][dst]` of the incoming edges; see the module doc.
#[derive(Clone, Debug, PartialEq)]
pub enum InWeights {
    /// Every row of `P` is uniform: `P[src][dst] = per_source[src]`, which is
    /// `1 / outdeg(src)` in `f64` (0 for a dangling source), indexed by
    /// internal label.
    PerSource(Vec<f64>),
    /// `P[src][dst]` of each incoming edge as `f32`, parallel to
    /// [`PullCsr::in_sources`].
    PerEdge(Vec<f32>),
}

/// Incoming-edge CSR with row-normalised weights; see the module doc.
#[derive(Clone, Debug, PartialEq)]
pub struct PullCsr {
    node_count: usize,
    in_offsets: Vec<usize>,
    in_sources: Vec<u32>,
    in_weights: InWeights,
    /// `order[internal] = external id`.
    order: Vec<u32>,
    /// `rank[external id] = internal label`.
    rank: Vec<u32>,
    dangling: usize,
}

impl PullCsr {
    /// Builds the snapshot from parallel arrays (`sources[i] -> targets[i]`
    /// with `weights[i]`), in O(n + E) time: a counting sort by source, then a
    /// stable counting sort by destination, which leaves each destination's
    /// incoming edges sorted by source (an LSD radix sort on (dst, src)).
    pub fn from_arrays(
        node_count: usize,
        sources: &[u32],
        targets: &[u32],
        weights: &[f64],
    ) -> Result<Self, GraphError> {
        if sources.len() != targets.len() || sources.len() != weights.len() {
            return Err(GraphError::LengthMismatch {
                sources: sources.len(),
                targets: targets.len(),
                weights: weights.len(),
            });
        }
        if node_count > u32::MAX as usize {
            return Err(GraphError::TooManyNodes { node_count });
        }
        let n = node_count;
        let m = sources.len();

        // Validate and count out-degrees in one pass.
        let mut out_offsets = vec![0usize; n + 1];
        for i in 0..m {
            let (src, dst, weight) = (sources[i], targets[i], weights[i]);
            if src as usize >= n || dst as usize >= n {
                return Err(GraphError::NodeOutOfRange {
                    index: i,
                    src,
                    dst,
                    node_count: n,
                });
            }
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(GraphError::BadWeight {
                    index: i,
                    src,
                    dst,
                    weight,
                });
            }
            out_offsets[src as usize + 1] += 1;
        }

        // Relabel by out-degree, descending, ties by id: a counting sort on
        // the degrees, visiting ids in ascending order (stable).
        let max_degree = out_offsets.iter().copied().max().unwrap_or(0);
        let mut by_degree = vec![0usize; max_degree + 2];
        for d in &out_offsets[1..] {
            by_degree[max_degree - d + 1] += 1;
        }
        prefix_sum(&mut by_degree);
        let mut order = vec![0u32; n];
        let mut rank = vec![0u32; n];
        for (v, d) in out_offsets[1..].iter().enumerate() {
            let slot = &mut by_degree[max_degree - d];
            order[*slot] = v as u32;
            rank[v] = *slot as u32;
            *slot += 1;
        }
        drop(by_degree);
        // From here on, everything is in internal labels.
        let mut relabelled = vec![0usize; n + 1];
        for (internal, &v) in order.iter().enumerate() {
            relabelled[internal + 1] = out_offsets[v as usize + 1];
        }
        let mut out_offsets = relabelled;
        prefix_sum(&mut out_offsets);

        // Pass 1: scatter by source (stable), keeping (dst, weight).
        let mut by_src_dst = vec![0u32; m];
        let mut by_src_w = vec![0f64; m];
        {
            let mut cursor = out_offsets[..n].to_vec();
            for i in 0..m {
                let c = &mut cursor[rank[sources[i] as usize] as usize];
                by_src_dst[*c] = rank[targets[i] as usize];
                by_src_w[*c] = weights[i];
                *c += 1;
            }
        }

        // Pass 2: scatter by destination (stable), visiting sources in
        // ascending order, so each destination's run is sorted by source.
        let mut in_offsets = vec![0usize; n + 1];
        for &dst in &by_src_dst {
            in_offsets[dst as usize + 1] += 1;
        }
        prefix_sum(&mut in_offsets);
        let mut in_sources = vec![0u32; m];
        let mut raw_weights = vec![0f64; m];
        {
            let mut cursor = in_offsets[..n].to_vec();
            for src in 0..n {
                for e in out_offsets[src]..out_offsets[src + 1] {
                    let c = &mut cursor[by_src_dst[e] as usize];
                    in_sources[*c] = src as u32;
                    raw_weights[*c] = by_src_w[e];
                    *c += 1;
                }
            }
        }
        drop(by_src_dst);
        drop(by_src_w);
        drop(out_offsets);

        // Merge parallel edges (adjacent after the sort). Their weights are
        // added in ascending order so the sum does not depend on input order.
        let mut write = 0usize;
        let mut run_weights: Vec<f64> = Vec::new();
        for v in 0..n {
            let (start, end) = (in_offsets[v], in_offsets[v + 1]);
            in_offsets[v] = write;
            let mut e = start;
            while e < end {
                let src = in_sources[e];
                let mut run_end = e + 1;
                while run_end < end && in_sources[run_end] == src {
                    run_end += 1;
                }
                let weight = if run_end - e == 1 {
                    raw_weights[e]
                } else {
                    run_weights.clear();
                    run_weights.extend_from_slice(&raw_weights[e..run_end]);
                    run_weights.sort_by(f64::total_cmp);
                    run_weights.iter().sum()
                };
                in_sources[write] = src;
                raw_weights[write] = weight;
                write += 1;
                e = run_end;
            }
        }
        in_offsets[n] = write;
        in_sources.truncate(write);
        in_sources.shrink_to_fit();
        raw_weights.truncate(write);

        // Out-weight sums: scanning destinations in order visits each source's
        // edges in ascending destination order, a canonical summation order.
        let mut out_weight = vec![0f64; n];
        for (src, w) in in_sources.iter().zip(&raw_weights) {
            out_weight[*src as usize] += w;
        }
        let dangling = out_weight.iter().filter(|w| **w == 0.0).count();
        let in_weights = match uniform_rows(n, &in_sources, &raw_weights) {
            Some(out_degree) => InWeights::PerSource(
                out_degree
                    .iter()
                    .zip(&out_weight)
                    .map(|(d, total)| {
                        if *total > 0.0 {
                            1.0 / f64::from(*d)
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
            None => InWeights::PerEdge(
                in_sources
                    .iter()
                    .zip(&raw_weights)
                    .map(|(src, w)| {
                        let total = out_weight[*src as usize];
                        // A source whose out-weights are all zero is
                        // dangling: its zero-weight edges carry nothing.
                        if total > 0.0 { (w / total) as f32 } else { 0.0 }
                    })
                    .collect(),
            ),
        };

        Ok(Self {
            node_count: n,
            in_offsets,
            in_sources,
            in_weights,
            order,
            rank,
            dangling,
        })
    }

    /// Builds the snapshot from a list of edges; see [`PullCsr::from_arrays`].
    pub fn from_edges(node_count: usize, edges: &[Edge]) -> Result<Self, GraphError> {
        let sources: Vec<u32> = edges.iter().map(|e| e.src).collect();
        let targets: Vec<u32> = edges.iter().map(|e| e.dst).collect();
        let weights: Vec<f64> = edges.iter().map(|e| e.weight).collect();
        Self::from_arrays(node_count, &sources, &targets, &weights)
    }

    /// Nodes numbered `0..node_count()`.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Number of edges after parallel edges were merged.
    pub fn edge_count(&self) -> usize {
        self.in_sources.len()
    }

    /// Nodes whose outgoing weight is zero: what reaches them stays there.
    pub fn dangling_count(&self) -> usize {
        self.dangling
    }

    /// A vector indexed by external id, reordered by internal label.
    pub fn to_internal<T: Copy>(&self, external: &[T]) -> Vec<T> {
        self.order.iter().map(|&v| external[v as usize]).collect()
    }

    /// A vector indexed by internal label, reordered by external id.
    pub fn to_external<T: Copy>(&self, internal: &[T]) -> Vec<T> {
        self.rank.iter().map(|&i| internal[i as usize]).collect()
    }

    /// Internal label of external node `v`.
    pub fn internal(&self, v: u32) -> u32 {
        self.rank[v as usize]
    }

    /// External id of internal label `i`.
    pub fn external(&self, i: u32) -> u32 {
        self.order[i as usize]
    }

    /// Internal labels: `in_offsets[i]..in_offsets[i + 1]` indexes the
    /// incoming edges of internal node `i`.
    pub fn in_offsets(&self) -> &[usize] {
        &self.in_offsets
    }

    /// Internal label of each incoming edge's source, ascending within a
    /// destination.
    pub fn in_sources(&self) -> &[u32] {
        &self.in_sources
    }

    /// `P[src][dst]` of the incoming edges: weight / source's out-weight,
    /// per source when every row is uniform, else per edge.
    pub fn in_weights(&self) -> &InWeights {
        &self.in_weights
    }

    /// Incoming edges of external node `v` as (external source id,
    /// normalised weight), in internal order.
    pub fn incoming(&self, v: u32) -> impl Iterator<Item = (u32, f32)> + '_ {
        let i = self.rank[v as usize] as usize;
        let range = self.in_offsets[i]..self.in_offsets[i + 1];
        self.in_sources[range.clone()]
            .iter()
            .zip(range)
            .map(move |(s, e)| {
                let p = match &self.in_weights {
                    InWeights::PerSource(p) => p[*s as usize] as f32,
                    InWeights::PerEdge(p) => p[e],
                };
                (self.order[*s as usize], p)
            })
    }

    /// Heap bytes held by the snapshot (what the kernel reads).
    pub fn heap_bytes(&self) -> usize {
        self.in_offsets.capacity() * std::mem::size_of::<usize>()
            + self.in_sources.capacity() * std::mem::size_of::<u32>()
            + match &self.in_weights {
                InWeights::PerSource(p) => p.capacity() * std::mem::size_of::<f64>(),
                InWeights::PerEdge(p) => p.capacity() * std::mem::size_of::<f32>(),
            }
            + (self.order.capacity() + self.rank.capacity()) * std::mem::size_of::<u32>()
    }
}

/// The out-degree of every source if each source's (merged) edges all have
/// the same weight, else `None`. Exact comparison: a row is uniform only if
/// its weights are equal as `f64`.
fn uniform_rows(n: usize, in_sources: &[u32], weights: &[f64]) -> Option<Vec<u32>> {
    let mut row_weight = vec![f64::NAN; n];
    let mut out_degree = vec![0u32; n];
    for (src, w) in in_sources.iter().zip(weights) {
        let s = *src as usize;
        if out_degree[s] == 0 {
            row_weight[s] = *w;
        } else if row_weight[s] != *w {
            return None;
        }
        out_degree[s] += 1;
    }
    Some(out_degree)
}

/// Turns per-slot counts stored at `[i + 1]` into start offsets.
fn prefix_sum(offsets: &mut [usize]) {
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_parallel_edges_and_sorts_by_source() {
        let csr =
            PullCsr::from_arrays(3, &[2, 0, 0, 1], &[1, 1, 1, 2], &[1.0, 1.0, 2.0, 4.0]).unwrap();
        assert_eq!(csr.edge_count(), 3);
        let mut into_1: Vec<_> = csr.incoming(1).collect();
        into_1.sort_by_key(|e| e.0);
        assert_eq!(into_1, vec![(0, 1.0), (2, 1.0)]);
        assert_eq!(csr.incoming(2).collect::<Vec<_>>(), vec![(1, 1.0)]);
        assert_eq!(csr.dangling_count(), 0);
    }

    #[test]
    fn keeps_one_weight_per_source_only_when_every_row_is_uniform() {
        // Rows 0 (two edges of 2.0) and 1 (one edge) are uniform; 2 has none.
        let uniform = PullCsr::from_arrays(3, &[0, 0, 1], &[1, 2, 2], &[2.0, 2.0, 0.5]).unwrap();
        assert!(matches!(uniform.in_weights(), InWeights::PerSource(_)));
        assert_eq!(
            uniform.incoming(2).collect::<Vec<_>>(),
            vec![(0, 0.5), (1, 1.0)]
        );
        assert_eq!(uniform.dangling_count(), 1);
        // A parallel edge makes row 0 weigh 2.0 and 4.0: per edge again.
        let merged =
            PullCsr::from_arrays(3, &[0, 0, 1, 0], &[1, 2, 2, 2], &[2.0, 2.0, 0.5, 2.0]).unwrap();
        assert!(matches!(merged.in_weights(), InWeights::PerEdge(_)));
        let mut into_2: Vec<_> = merged.incoming(2).collect();
        into_2.sort_by_key(|e| e.0);
        assert_eq!(into_2, vec![(0, 4.0 / 6.0), (1, 1.0)]);
    }

    #[test]
    fn rejects_negative_weights_and_unknown_nodes() {
        assert!(matches!(
            PullCsr::from_arrays(2, &[0], &[1], &[-1.0]),
            Err(GraphError::BadWeight { .. })
        ));
        assert!(matches!(
            PullCsr::from_arrays(2, &[0], &[2], &[1.0]),
            Err(GraphError::NodeOutOfRange { .. })
        ));
    }
}
