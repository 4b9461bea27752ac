#!/usr/bin/env bash
# Bench of the propagation core against networkit and igraph on one
# generated power-law graph (1,000,000 nodes, 10,000,000 edges, fixed seed).
# Owns no logic of its own: the graph and the peers run through
# benches/propagate_peers.py, Fusion through `fusion propagate`.
#
# Usage: benches/propagate_vs_peers.sh [DIR]   (DIR caches the graph;
# default /tmp/fusion-bench). Needs: pip install numpy networkit igraph; GNU
# time (apt-get install time). Reports key=value lines and ratios.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
dir="${1:-/tmp/fusion-bench}"
helper="$here/propagate_peers.py"
threads="${THREADS:-2}"
tol="${TOL:-1e-6}"
incremental_ops="${INCREMENTAL_OPS:-20000}"
# Impulse sizes, in units of ‖seeds‖₁/n (one average node's share).
incremental_scales="${INCREMENTAL_SCALES:-1 0.1}"

[ -x /usr/bin/time ] || { echo "install GNU time: apt-get install time" >&2; exit 1; }
python3 -c 'import numpy, networkit, igraph' 2>/dev/null \
  || { echo "pip install numpy networkit igraph" >&2; exit 1; }

(cd "$root" && cargo build --release --quiet)
fusion="$root/target/release/fusion"

if [ ! -f "$dir/graph.npz" ]; then
  echo "# generating the graph in $dir"
  python3 "$helper" gen "$dir"
fi

# Runs a command under GNU time; prints its key=value lines and peak RSS.
measure() {
  local name="$1"; shift
  local out="$dir/$name.out" err="$dir/$name.err"
  /usr/bin/time -v "$@" >"$out" 2>"$err"
  grep -E '^[a-z0-9_]+=' "$out" "$err" -h | sed "s/^/${name}_/"
  local kb
  kb=$(grep 'Maximum resident set size' "$err" | awk '{print $NF}')
  echo "${name}_peak_rss_mb=$((kb / 1024))"
  # Whole-process CPU and wall time (including loading): CPU time is the
  # steadier figure when other jobs share the cores.
  awk -F': ' -v n="$name" '/User time/ {u=$2} /System time/ {s=$2} /Elapsed/ {e=$2}
    END {printf "%s_process_cpu_s=%.2f\n%s_process_wall=%s\n", n, u+s, n, e}' "$err"
}

echo "# machine: $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg); threads=$threads tol=$tol (seed mass 1)"
{
  measure fusion "$fusion" propagate --edges "$dir/edges.tsv" --seeds "$dir/seeds.tsv" \
    --tol "$tol" --threads "$threads" --timings
  measure networkit python3 "$helper" networkit "$dir" --threads "$threads" --tol "$tol"
  measure igraph python3 "$helper" igraph "$dir" --out "$dir/igraph.npy"
  python3 "$helper" compare "$dir" "$dir/fusion.out" "$dir/igraph.npy"
  for scale in $incremental_scales; do
    echo "# incremental: state from the batch result, then $incremental_ops impulses of"
    echo "# $scale·‖x‖₁/n, $incremental_ops unit-weight edge inserts, half as many removals"
    measure "incremental_x${scale/./_}" "$fusion" propagate --edges "$dir/edges.tsv" \
      --seeds "$dir/seeds.tsv" --tol "$tol" --threads "$threads" \
      --bench-incremental "$incremental_ops" --bench-impulse-scale "$scale"
  done
} | tee "$dir/report.txt"

get() { grep -E "^$1=" "$dir/report.txt" | head -1 | cut -d= -f2; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}')" "$1" "$2"; }
echo "# ratios (peer / fusion; > 1 means fusion is faster or smaller)"
echo "networkit_over_fusion_ms_per_iteration=$(ratio "$(get networkit_ms_per_iteration)" "$(get fusion_ms_per_iteration)")"
echo "# networkit runs plain PageRank with its own stopping rule (fewer iterations);"
echo "# the per-iteration ratio is the like-for-like one, kernel_s the end-to-end one"
echo "networkit_over_fusion_kernel_s=$(ratio "$(get networkit_kernel_s)" "$(get fusion_kernel_s)")"
echo "igraph_over_fusion_kernel_s=$(ratio "$(get igraph_kernel_s)" "$(get fusion_kernel_s)")"
echo "networkit_over_fusion_peak_rss=$(ratio "$(get networkit_peak_rss_mb)" "$(get fusion_peak_rss_mb)")"
echo "igraph_over_fusion_peak_rss=$(ratio "$(get igraph_peak_rss_mb)" "$(get fusion_peak_rss_mb)")"
