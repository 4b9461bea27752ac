#!/usr/bin/env python3
"""BG/NBD (Fader, Hardie & Lee, "Counting your customers the easy way",
Marketing Science 2005), from PyPI's `lifetimes`, as a peer predictor for
`fusion backtest --peer bgnbd=FILE` (benches/backtest_peers.sh).

Reads Fusion events (NDJSON), keeps the purchases strictly before the cut
(the same events Fusion's score and the RFM baselines see), and for each
brand fits a BG/NBD model on its customers' repeat-purchase summaries
(frequency = repeat purchase days, recency and age in days, as
`lifetimes.utils.summary_data_from_transaction_data` defines them). Writes
TSV `person brand expected_purchases_in_horizon` on stdout, and
`bgnbd_fit_s=` and `bgnbd_customers=` on stderr.

    bgnbd_peer.py EVENTS.ndjson --cut 1997-10-01T00:00:00Z --horizon 273 > bgnbd.tsv
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events")
    parser.add_argument("--cut", required=True)
    parser.add_argument("--horizon", type=float, required=True, help="days")
    args = parser.parse_args()
    cut = parse_time(args.cut)

    # Purchase days per (person, brand), before the cut only.
    days = defaultdict(set)
    with open(args.events) as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            if e.get("type") != "purchase":
                continue
            t = parse_time(e["time"])
            if t < cut:
                days[(e["person"], e["brand"])].add(t.date())

    import numpy as np
    from lifetimes import BetaGeoFitter

    started = time.perf_counter()
    by_brand = defaultdict(list)
    for (person, brand), ds in days.items():
        first, last = min(ds), max(ds)
        by_brand[brand].append(
            (person, len(ds) - 1, (last - first).days, (cut.date() - first).days)
        )
    out = sys.stdout
    customers = 0
    for brand in sorted(by_brand):
        rows = sorted(by_brand[brand])
        freq = np.array([r[1] for r in rows], dtype=float)
        rec = np.array([r[2] for r in rows], dtype=float)
        age = np.array([r[3] for r in rows], dtype=float)
        # A brand whose customers never came back has nothing to fit.
        if len(rows) < 20 or max(freq) == 0:
            continue
        # A small penalty keeps the fit finite on small brands; lifetimes
        # documents it for that purpose.
        model = BetaGeoFitter(penalizer_coef=0.001)
        model.fit(freq, rec, age)
        expected = model.conditional_expected_number_of_purchases_up_to_time(
            args.horizon, freq, rec, age
        )
        for (person, *_), value in zip(rows, expected):
            out.write(f"{person}\t{brand}\t{float(value)!r}\n")
        customers += len(rows)
    print(f"bgnbd_fit_s={time.perf_counter() - started:.3f}", file=sys.stderr)
    print(f"bgnbd_customers={customers}", file=sys.stderr)


if __name__ == "__main__":
    main()
