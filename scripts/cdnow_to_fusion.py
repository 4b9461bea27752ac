#!/usr/bin/env python3
"""Convert the CDNOW purchase logs shipped in PyPI's `lifetimes` package into
Fusion events (NDJSON on stdout), for `fusion backtest` on real data
(docs/validity.md, "Real data").

CDNOW is the customer log of an online CD retailer: every purchase of the
23,570 customers acquired in the first quarter of 1997, up to June 1998
(Fader, Hardie & Lee, "Counting your customers the easy way", Marketing
Science 2005). `lifetimes` ships it as `datasets/CDNOW_master.txt` (69,659
lines: customer, date, CDs, dollars) and a 1/10 sample,
`datasets/CDNOW_sample.txt` (6,919 lines, with an extra column).

Each line becomes one purchase of person `c<customer>` from brand `cdnow`, at
noon UTC of its day (the log has dates only), amount in USD. The number of
CDs is dropped: Fusion does not score it, and without it the converted sample
stays under 1 MB (`fixtures/cdnow_sample.ndjson`).

    pip install lifetimes        # or: pip download lifetimes --no-deps; unzip
    python3 scripts/cdnow_to_fusion.py [--sample] [--source FILE] > cdnow.ndjson
"""

import argparse
import json
import os
import sys


def default_source(sample: bool) -> str:
    try:
        import lifetimes  # noqa: F401  (only to find its data files)
    except ImportError:
        sys.exit(
            "cdnow_to_fusion: the lifetimes package is not installed; "
            "pip install lifetimes, or give --source FILE"
        )
    name = "CDNOW_sample.txt" if sample else "CDNOW_master.txt"
    return os.path.join(os.path.dirname(lifetimes.__file__), "datasets", name)


def convert(lines, out) -> int:
    written = 0
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue  # the header
        customer = fields[0].lstrip("0") or "0"
        date, dollars = fields[-3], fields[-1]
        event = {
            "id": f"cdnow-{number}",
            "type": "purchase",
            "time": f"{date[:4]}-{date[4:6]}-{date[6:8]}T12:00:00Z",
            "person": f"c{customer}",
            "brand": "cdnow",
            "amount": round(float(dollars), 2),
            "currency": "USD",
        }
        out.write(json.dumps(event, separators=(",", ":")) + "\n")
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", action="store_true", help="the 1/10 sample")
    parser.add_argument("--source", help="a CDNOW_*.txt file (default: lifetimes's)")
    args = parser.parse_args()
    source = args.source or default_source(args.sample)
    with open(source) as f:
        written = convert(f, sys.stdout)
    print(f"cdnow_to_fusion: {written} purchases from {source}", file=sys.stderr)


if __name__ == "__main__":
    main()
