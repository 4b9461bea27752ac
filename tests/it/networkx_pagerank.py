"""Reference for tests/it/propagate.rs: networkx personalised PageRank.

Reads the same TSV files as `fusion propagate` (edges `src dst weight`, seeds
`node value`) and prints `node value` for every node, sorted by id, with the
values normalised to sum 1. Exits 3 with an install hint if networkx (or the
scipy it uses for pagerank) is missing.
"""

import sys

try:
    import networkx as nx
    import scipy  # noqa: F401  networkx's pagerank runs on scipy
except ImportError as err:
    print(f"cannot import networkx/scipy ({err}): pip install networkx scipy", file=sys.stderr)
    sys.exit(3)


def main():
    edges_path, seeds_path, alpha = sys.argv[1], sys.argv[2], float(sys.argv[3])
    g = nx.DiGraph()
    with open(edges_path) as f:
        for line in f:
            src, dst, w = line.split()
            g.add_edge(int(src), int(dst), weight=float(w))
    seeds = {}
    with open(seeds_path) as f:
        for line in f:
            node, value = line.split()
            g.add_node(int(node))
            seeds[int(node)] = seeds.get(int(node), 0.0) + float(value)
    pr = nx.pagerank(
        g, alpha=alpha, personalization=seeds, tol=1e-12, max_iter=100000, weight="weight"
    )
    total = sum(pr.values())
    for node in sorted(pr):
        print(f"{node}\t{pr[node] / total:.17g}")


main()
