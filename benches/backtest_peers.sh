#!/usr/bin/env bash
# `fusion backtest` on a real customer log, with BG/NBD (PyPI `lifetimes`)
# fitted on the same window as a further peer beside the RFM baselines.
# Prints name=value lines: <outcome>_auc_<predictor> and <outcome>_lift_<predictor>
# (each with _ci_lo and _ci_hi, the 95% bootstrap interval),
# amount_spearman[_purchasers]_<predictor>, bgnbd_fit_s, backtest_s.
#
#   benches/backtest_peers.sh [EVENTS.ndjson CUT HORIZON_DAYS [MODEL...]]
#
# Default: the CDNOW master log from `lifetimes` (scripts/cdnow_to_fusion.py),
# cut 1997-10-01, horizon 273 days (39 weeks, the holdout of the BG/NBD
# paper). Extra MODEL files are compared too (e.g. a calibrated model).
# Python packages go to a virtualenv in bench-out/ (ignored), with the
# system's numpy and scipy.
set -euo pipefail

cd "$(dirname "$0")/.."
out=bench-out/backtest_peers
mkdir -p "$out"
venv=bench-out/venv-lifetimes
if ! "$venv/bin/python" -c "import lifetimes" 2>/dev/null; then
    python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install --quiet lifetimes
fi
cargo build --release --quiet --bin fusion

if [ $# -ge 3 ]; then
    events=$1 cut=$2 horizon=$3
    shift 3
else
    events=$out/cdnow.ndjson cut=1997-10-01T00:00:00Z horizon=273
    "$venv/bin/python" scripts/cdnow_to_fusion.py >"$events"
fi
compare=()
for m in "$@"; do compare+=(--compare "$m"); done

if ! "$venv/bin/python" benches/bgnbd_peer.py "$events" --cut "$cut" --horizon "$horizon" \
    >"$out/bgnbd.tsv" 2>"$out/bgnbd.err"; then
    cat "$out/bgnbd.err" >&2
    exit 1
fi
cat "$out/bgnbd.err"
start=$EPOCHREALTIME
target/release/fusion backtest --events "$events" --cut "$cut" --horizon "$horizon" \
    --peer "bgnbd=$out/bgnbd.tsv" "${compare[@]}" --json >"$out/report.json"
end=$EPOCHREALTIME
awk -v a="$start" -v b="$end" 'BEGIN { printf "backtest_s=%.3f\n", b - a }'

python3 - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
name = lambda p: p.replace("fusion:", "fusion_").replace(":", "_")
print(f"relationships={r['relationships']}")
for o in r["outcomes"]:
    if not o["present"]:
        print(f"{o['outcome']}_present=false")
        continue
    print(f"{o['outcome']}_rate={o['rate']:.4f}")
    for m in o["metrics"]:
        for key in ("auc", "lift"):
            if m[key] is not None:
                stem = f"{o['outcome']}_{key}_{name(m['predictor'])}"
                print(f"{stem}={m[key]:.4f}")
                if m[key + "_ci"]:
                    lo, hi = m[key + "_ci"]
                    print(f"{stem}_ci_lo={lo:.4f}")
                    print(f"{stem}_ci_hi={hi:.4f}")
for m in r["amount"]["metrics"]:
    for key in ("spearman", "spearman_purchasers"):
        if m[key] is not None:
            print(f"amount_{key}_{name(m['predictor'])}={m[key]:.4f}")
for p in r["predictors"]:
    if p["missing"]:
        print(f"missing_{name(p['name'])}={p['missing']}")
PY
