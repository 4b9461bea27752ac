"""The load of benches/pipelines.sh against a running Fusion server.

    python3 pipelines_bench.py PHASE BASE_URL EVENTS REJECTED

Runs one phase (the script starts a fresh server for each: the cost of a
request grows with the events the state holds, so phases that shared one
server would be measured on different states). Prints `name=value` lines:
- segment_*: EVENTS purchases ("Order Completed", one brand each) through
  Segment's Python library (segment-analytics-python 2.x: its own batching,
  gzip, its consumer thread), timed from the first `track` to the end of
  `flush`;
- native_ndjson_*: the same purchases (other ids) posted as NDJSON to
  /v1/events, in requests of 5,000 lines, and in requests of the library's
  batch size (100), with one requests.Session;
- dead_letter_*: REJECTED messages the mapping does not know, in /v1/batch
  requests of 100, each kept as a dead letter, beside the same number of
  accepted messages sent the same way (the difference is the cost of a
  letter).
"""

import gzip
import json
import sys
import time
from datetime import datetime, timedelta, timezone

import requests
import segment.analytics as analytics

PHASE, BASE, EVENTS, REJECTED = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
BRANDS = ["b%02d" % i for i in range(20)]


def purchase(i):
    person = "p%05d" % (i % 5000)
    brand = BRANDS[i % len(BRANDS)]
    when = START + timedelta(seconds=37 * i)
    return person, brand, when, 10 + i % 90


def segment_library():
    errors = []
    client = analytics.Client(
        write_key="bench",
        host=BASE,
        gzip=True,
        upload_size=100,
        max_queue_size=EVENTS + 1,
        on_error=lambda e, batch: errors.append(str(e)),
    )
    t0 = time.perf_counter()
    for i in range(EVENTS):
        person, brand, when, amount = purchase(i)
        client.track(
            person,
            "Order Completed",
            {"brand": brand, "revenue": amount, "currency": "USD"},
            timestamp=when,
            message_id="bench-%d" % i,
        )
    client.flush()
    elapsed = time.perf_counter() - t0
    client.join()
    if errors:
        sys.exit("the Segment library reported errors: %s" % errors[:3])
    return elapsed


def native(lines_per_request, prefix):
    session = requests.Session()
    t0 = time.perf_counter()
    for start in range(0, EVENTS, lines_per_request):
        body = []
        for i in range(start, min(EVENTS, start + lines_per_request)):
            person, brand, when, amount = purchase(i)
            body.append(
                json.dumps(
                    {
                        "id": "%s-%d" % (prefix, i),
                        "type": "purchase",
                        "time": when.isoformat().replace("+00:00", "Z"),
                        "person": person,
                        "brand": brand,
                        "amount": amount,
                        "currency": "USD",
                    }
                )
            )
        r = session.post(
            BASE + "/v1/events",
            data=gzip.compress(("\n".join(body) + "\n").encode()),
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )
        if r.status_code != 200 or r.json()["rejected_count"]:
            sys.exit("native ingest failed: %s %s" % (r.status_code, r.text[:500]))
    return time.perf_counter() - t0


def batches(event, prefix, n):
    """n Segment messages in /v1/batch requests of 100; answers seconds."""
    session = requests.Session()
    t0 = time.perf_counter()
    for start in range(0, n, 100):
        batch = []
        for i in range(start, min(n, start + 100)):
            person, brand, when, amount = purchase(i)
            batch.append(
                {
                    "type": "track",
                    "messageId": "%s-%d" % (prefix, i),
                    "userId": person,
                    "event": event,
                    "timestamp": when.isoformat(),
                    "properties": {"brand": brand, "revenue": amount, "currency": "USD"},
                }
            )
        r = session.post(BASE + "/v1/batch", json={"batch": batch}, auth=("bench", ""))
        if r.status_code != 200:
            sys.exit("batch failed: %s %s" % (r.status_code, r.text[:500]))
    return time.perf_counter() - t0


def main():
    if PHASE == "segment":
        seg = segment_library()
        print("segment_events=%d" % EVENTS)
        print("segment_s=%.3f" % seg)
        print("segment_events_per_s=%.0f" % (EVENTS / seg))
    elif PHASE == "native":
        nat = native(5000, "nd")
        print("native_ndjson_s=%.3f" % nat)
        print("native_ndjson_events_per_s=%.0f" % (EVENTS / nat))
    elif PHASE == "native100":
        nat100 = native(100, "nd100")
        print("native_ndjson_batch100_s=%.3f" % nat100)
        print("native_ndjson_batch100_events_per_s=%.0f" % (EVENTS / nat100))
    elif PHASE == "accepted":
        accepted = batches("Order Completed", "acc", REJECTED)
        print("batch_accepted_us_per_message=%.1f" % (accepted / REJECTED * 1e6))
    elif PHASE == "rejected":
        rejected = batches("Unmapped Bench Event", "rej", REJECTED)
        print("dead_letter_events=%d" % REJECTED)
        print("batch_dead_lettered_us_per_message=%.1f" % (rejected / REJECTED * 1e6))
    else:
        sys.exit("unknown phase " + PHASE)


if __name__ == "__main__":
    main()
