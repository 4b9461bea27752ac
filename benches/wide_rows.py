"""A hostile stream for the live series' rows (red team h58,
benches/wide_rows.sh): one person whose rows of `s` and `r` are WIDTH
brands wide, then TAIL events that push into them. Mode `assoc`: a
"whale" endorses WIDTH brands (and buys each once), followed by 40
people; the tail is its purchases of those brands and, every fourth, a
new endorsement strength (an association change touches the whole row).
Mode `follow`: a hub buys WIDTH brands and 40 people follow it (their
rows as wide); the tail is the hub's purchases. All of it after the
generated stream BASE (if given), in time order, ids `h0, h1, ..`.
Deterministic (seeded). Writes NDJSON on stdout.

Usage: wide_rows.py MODE WIDTH TAIL [BASE]"""

import datetime
import json
import random
import sys


def main():
    mode, width, tail = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    out = sys.stdout
    if len(sys.argv) > 4:
        with open(sys.argv[4]) as base:
            for line in base:
                out.write(line)
    rnd = random.Random(7)
    start = datetime.datetime(2026, 4, 2, tzinfo=datetime.timezone.utc)
    count = 0
    clock = 0

    def event(kind, seconds, **fields):
        nonlocal count, clock
        clock += seconds
        time = (start + datetime.timedelta(seconds=clock)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.write(json.dumps({"id": f"h{count}", "type": kind, "time": time, **fields},
                             separators=(",", ":")) + "\n")
        count += 1

    strength = lambda: round(0.5 + 0.4 * rnd.random(), 3)
    amount = lambda: 10 + rnd.randrange(90)
    if mode == "assoc":
        for j in range(40):
            event("follow", 1, person=f"wf{j}", target="whale")
        for b in range(width):
            event("endorsement", 1, person="whale", brand=f"x{b}", strength=strength())
            event("purchase", 1, person="whale", brand=f"x{b}", amount=amount())
        for k in range(tail):
            b = f"x{rnd.randrange(width)}"
            if k % 4 == 0:
                event("endorsement", 60, person="whale", brand=b, strength=strength())
            else:
                event("purchase", 60, person="whale", brand=b, amount=amount())
    elif mode == "follow":
        for b in range(width):
            event("purchase", 1, person="hub", brand=f"x{b}", amount=amount())
        for j in range(40):
            event("follow", 1, person=f"hf{j}", target="hub")
        for _ in range(tail):
            event("purchase", 60, person="hub", brand=f"x{rnd.randrange(width)}", amount=amount())
    else:
        sys.exit(f"unknown mode {mode}: assoc or follow")


main()
