"""The client of benches/converge.sh: posts one event at a time to server A,
then reads the relationship on A (the reference) and on B with
`min_position` = A's `Fusion-Position`, timing each read from A's
acknowledgement. Prints name=value lines."""

import http.client
import json
import sys
import time
import urllib.parse


def connect(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def call(conn, method, path, body=None):
    headers = {"Content-Type": "application/x-ndjson"} if body else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
    return r


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    a_base, b_base, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a, a_read, b = connect(a_base), connect(a_base), connect(b_base)
    remote, local = [], []
    for n in range(samples):
        person = f"lag{n % 50}"
        event = {"id": f"lag-{n}", "type": "purchase",
                 "time": f"2026-11-01T{10 + n // 3600 % 10:02}:{n // 60 % 60:02}:{n % 60:02}Z",
                 "person": person, "brand": "acme", "amount": 10.0, "currency": "USD"}
        r = call(a, "POST", "/v1/events", (json.dumps(event) + "\n").encode())
        acked = time.perf_counter()
        position = int(r.getheader("fusion-position"))
        query = f"/v1/relationships/{person}/acme?at=2026-11-30T00:00:00Z&min_position={position}&wait=30"
        # One sample per event: B's answer on even events, A's on odd ones
        # (the other read would include the first's time).
        conn, into = (b, remote) if n % 2 == 0 else (a_read, local)
        call(conn, "GET", query)
        into.append((time.perf_counter() - acked) * 1000.0)
    print(f"samples={len(remote)}+{len(local)}")
    for name, xs in (("remote", remote), ("local", local)):
        print(f"{name}_lag_ms_p50={pct(xs, 0.50):.2f}")
        print(f"{name}_lag_ms_p99={pct(xs, 0.99):.2f}")
    print(f"remote_to_local_p50_ratio={pct(remote, 0.5) / pct(local, 0.5):.2f}")


if __name__ == "__main__":
    main()
