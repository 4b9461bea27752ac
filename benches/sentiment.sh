#!/usr/bin/env bash
# Throughput of `fusion sentiment` against the reference Python package
# (vaderSentiment 3.3.2) on the same input in the same run: the golden
# sentences repeated to LINES lines (default 100000). Prints sentences/s for
# both (wall clock and CPU time), the ratios, and whether the two outputs are
# identical.
#
#   benches/sentiment.sh [LINES]
#
# Builds the release binary first. Scratch files go to bench-out/ (ignored).
set -euo pipefail

cd "$(dirname "$0")/.."
lines=${1:-100000}
out=bench-out/sentiment
mkdir -p "$out"

cargo build --release --quiet --bin fusion
python3 - <<'EOF'
import importlib.metadata, subprocess, sys
try:
    ok = importlib.metadata.version("vaderSentiment") == "3.3.2"
except importlib.metadata.PackageNotFoundError:
    ok = False
if not ok:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "vaderSentiment==3.3.2"])
EOF

# The sentences are the text column of the golden file (after its header).
tail -n +2 fixtures/sentiment/golden.tsv | cut -f5- >"$out/sentences.txt"
: >"$out/input.txt"
while [ "$(wc -l <"$out/input.txt")" -lt "$lines" ]; do
    cat "$out/sentences.txt" >>"$out/input.txt"
done
head -n "$lines" "$out/input.txt" >"$out/input.tmp" && mv "$out/input.tmp" "$out/input.txt"
n=$(wc -l <"$out/input.txt")

# Same contract as `fusion sentiment`: lines split on \n only, one TSV line
# each, numbers as Python prints them.
cat >"$out/reference.py" <<'EOF'
import sys
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

sia = SentimentIntensityAnalyzer()
out = []
for line in sys.stdin.buffer.read().decode("utf-8", "replace").split("\n")[:-1]:
    s = sia.polarity_scores(line)
    out.append(f"{s['compound']!r}\t{s['pos']!r}\t{s['neu']!r}\t{s['neg']!r}\n")
sys.stdout.write("".join(out))
EOF

# Wall and CPU (user + system) seconds of a command, "wall cpu"; CPU time is
# the steadier figure on a shared machine.
seconds() {
    local TIMEFORMAT='%R %U %S'
    { time "$@" >/dev/null; } 2>&1 | awk '{ print $1, $2 + $3 }'
}

read -r rust_wall rust_cpu < <(seconds sh -c "target/release/fusion sentiment <'$out/input.txt' >'$out/rust.tsv'")
read -r python_wall python_cpu < <(seconds sh -c "python3 '$out/reference.py' <'$out/input.txt' >'$out/python.tsv'")

if cmp -s "$out/rust.tsv" "$out/python.tsv"; then same=yes; else same=NO; fi
awk -v n="$n" -v rw="$rust_wall" -v rc="$rust_cpu" -v pw="$python_wall" -v pc="$python_cpu" \
    -v same="$same" 'BEGIN {
    printf "lines: %d\n", n
    printf "%-28s %8s %14s %8s %14s\n", "", "wall s", "sentences/s", "cpu s", "sentences/s"
    printf "%-28s %8.3f %14.0f %8.3f %14.0f\n", "fusion sentiment (release)", rw, n / rw, rc, n / rc
    printf "%-28s %8.3f %14.0f %8.3f %14.0f\n", "vaderSentiment 3.3.2", pw, n / pw, pc, n / pc
    printf "ratio (python / fusion): %.1fx wall, %.1fx cpu\n", pw / rw, pc / rc
    printf "outputs identical: %s\n", same
}'
