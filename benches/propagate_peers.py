"""Helper of benches/propagate_vs_peers.sh: generates the bench graph and runs
the peer tools on it. Owns no Fusion logic; timings cover the computation only
(loading is reported apart).

  gen DIR --nodes N --edges M --seeds K --seed S
      power-law directed graph (Chung-Lu, exponent 2.2 for in- and
      out-degrees, independent), plus one out-edge per node so no node is
      dangling (then every tool computes the same vector), no self-loops or
      parallel edges, weights uniform in [0.5, 2) with 3 decimals; K seeds
      with values summing to 1. Writes edges.tsv, seeds.tsv and graph.npz.
  networkit DIR --threads T --tol TOL
      networkit PageRank (it has no personalisation: uniform teleport; the
      per-iteration work is the same), weighted, T threads.
  igraph DIR
      igraph personalized_pagerank (PRPACK), weighted, with the seeds as reset.
  compare DIR FUSION_OUT IGRAPH_OUT
      max per-node difference of the normalised vectors.
Each tool prints key=value lines.
"""

import argparse
import os
import sys
import time

import numpy as np


def gen(a):
    os.makedirs(a.dir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    n, m = a.nodes, a.edges
    expo = 1.0 / (2.2 - 1.0)
    w = (np.arange(n, dtype=np.float64) + 1.0) ** -expo
    p_out = w[rng.permutation(n)]
    p_out /= p_out.sum()
    p_in = w[rng.permutation(n)]
    p_in /= p_in.sum()
    c_out, c_in = np.cumsum(p_out), np.cumsum(p_in)

    def draw(cum, k):
        return np.minimum(np.searchsorted(cum, rng.random(k) * cum[-1]), n - 1).astype(np.int64)

    # One out-edge per node first: no dangling nodes.
    src = np.arange(n, dtype=np.int64)
    dst = draw(c_in, n)
    keys = np.unique(src * n + dst)
    keys = keys[keys // n != keys % n]
    while keys.size < m:
        k = int((m - keys.size) * 1.15) + 1000
        s, d = draw(c_out, k), draw(c_in, k)
        keep = s != d
        keys = np.unique(np.concatenate([keys, s[keep] * n + d[keep]]))
    # Keep every node's first edge, then a random subset of the rest.
    first = np.unique(np.arange(n, dtype=np.int64) * n + dst)
    first = first[first // n != first % n]
    rest = np.setdiff1d(keys, first, assume_unique=True)
    rest = rng.choice(rest, m - first.size, replace=False)
    keys = np.sort(np.concatenate([first, rest]))
    src, dst = (keys // n).astype(np.uint32), (keys % n).astype(np.uint32)
    weight = np.round(0.5 + 1.5 * rng.random(m), 3)
    weight[weight == 0] = 0.001
    # Nodes whose only edge was a self-loop got none: give them one to n-1-v.
    has_out = np.zeros(n, bool)
    has_out[src] = True
    lonely = np.flatnonzero(~has_out).astype(np.uint32)
    if lonely.size:
        src = np.concatenate([src, lonely])
        dst = np.concatenate([dst, (n - 1 - lonely.astype(np.int64)).astype(np.uint32)])
        weight = np.concatenate([weight, np.ones(lonely.size)])
    seed_nodes = rng.choice(n, a.seeds, replace=False).astype(np.uint32)
    seed_vals = rng.random(a.seeds) + 0.5
    seed_vals /= seed_vals.sum()
    np.savez(os.path.join(a.dir, "graph.npz"), n=n, src=src, dst=dst, weight=weight,
             seed_nodes=seed_nodes, seed_vals=seed_vals)
    t = time.perf_counter()
    with open(os.path.join(a.dir, "edges.tsv"), "w") as f:
        step = 1_000_000
        for i in range(0, src.size, step):
            s, d, ww = src[i:i + step], dst[i:i + step], weight[i:i + step]
            f.write("\n".join(f"{x}\t{y}\t{z:.3f}" for x, y, z in zip(s.tolist(), d.tolist(), ww.tolist())))
            f.write("\n")
    with open(os.path.join(a.dir, "seeds.tsv"), "w") as f:
        for x, v in zip(seed_nodes.tolist(), seed_vals.tolist()):
            f.write(f"{x}\t{v!r}\n")
    outdeg = np.bincount(src, minlength=n)
    indeg = np.bincount(dst, minlength=n)
    print(f"nodes={n}\nedges={src.size}\nmax_out_degree={outdeg.max()}\nmax_in_degree={indeg.max()}"
          f"\ndangling={(outdeg == 0).sum()}\nwrite_s={time.perf_counter() - t:.1f}")


def load(d):
    t = time.perf_counter()
    g = np.load(os.path.join(d, "graph.npz"))
    out = {k: g[k] for k in g.files}
    return out, time.perf_counter() - t


def run_networkit(a):
    import networkit as nk
    nk.setNumberOfThreads(a.threads)
    g, _ = load(a.dir)
    t = time.perf_counter()
    n = int(g["n"])
    G = nk.Graph(n, weighted=True, directed=True)
    G.addEdges((g["weight"].astype(np.float64), (g["src"].astype(np.uint64), g["dst"].astype(np.uint64))))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    pr = nk.centrality.PageRank(G, damp=0.85, tol=a.tol)
    pr.run()
    kernel_s = time.perf_counter() - t
    it = pr.numberOfIterations()
    print(f"load_s={load_s:.3f}\nkernel_s={kernel_s:.3f}\niterations={it}\nms_per_iteration={1e3 * kernel_s / max(it, 1):.2f}")


def run_igraph(a):
    import igraph as ig
    g, _ = load(a.dir)
    t = time.perf_counter()
    n = int(g["n"])
    G = ig.Graph(n=n, edges=np.column_stack([g["src"], g["dst"]]).astype(np.int64), directed=True)
    G.es["weight"] = g["weight"]
    reset = np.zeros(n)
    reset[g["seed_nodes"]] = g["seed_vals"]
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    pr = G.personalized_pagerank(directed=True, damping=0.85, reset=reset.tolist(), weights="weight",
                                 implementation="prpack")
    kernel_s = time.perf_counter() - t
    print(f"load_s={load_s:.3f}\nkernel_s={kernel_s:.3f}\niterations=n/a (PRPACK)")
    if a.out:
        np.save(a.out, np.asarray(pr))


def compare(a):
    ours = np.loadtxt(a.fusion_out, dtype=np.float64)[:, 1]
    theirs = np.load(a.igraph_out)
    ours, theirs = ours / ours.sum(), theirs / theirs.sum()
    print(f"fusion_vs_igraph_max_abs={np.abs(ours - theirs).max():e}")
    print(f"fusion_vs_igraph_l1={np.abs(ours - theirs).sum():e}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--nodes", type=int, default=1_000_000)
    g.add_argument("--edges", type=int, default=10_000_000)
    g.add_argument("--seeds", type=int, default=1000)
    g.add_argument("--seed", type=int, default=20240601)
    k = sub.add_parser("networkit")
    k.add_argument("dir")
    k.add_argument("--threads", type=int, default=2)
    k.add_argument("--tol", type=float, default=1e-6)
    i = sub.add_parser("igraph")
    i.add_argument("dir")
    i.add_argument("--out")
    c = sub.add_parser("compare")
    c.add_argument("dir")
    c.add_argument("fusion_out")
    c.add_argument("igraph_out")
    a = p.parse_args()
    {"gen": gen, "networkit": run_networkit, "igraph": run_igraph, "compare": compare}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
