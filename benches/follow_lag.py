"""The second server's lag behind the first under a stream, for
benches/stream.sh (FOLLOWER=1, PostgreSQL): both servers of one database
are asked for their log position (`Fusion-Position` on any answer; a path
no route serves, so nothing else is done) every INTERVAL seconds until the
file STOP exists and B has reached A's last position (or GRACE seconds
after STOP). A takes the stream. Prints name=value lines:

- `follower_lag_positions_p50/p99/max`: A's position minus B's, each
  sample (B is asked right after A, so this is at most B's real lag);
- `follower_lag_ms_p50/p99/max`: for each sample of A, the time until B
  answered a position at least as far (to the sampling interval);
- `follower_catch_up_s`: from STOP until B reached A's last position.

Usage: follow_lag.py A_URL B_URL STOP [INTERVAL] [GRACE]"""

import http.client
import os
import sys
import time
import urllib.parse


def connect(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def position(conn):
    conn.request("GET", "/lag-probe")
    r = conn.getresponse()
    r.read()
    return int(r.getheader("fusion-position"))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    a_base, b_base, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
    grace = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    a, b = connect(a_base), connect(b_base)
    a_samples, b_samples, gaps = [], [], []
    stopped = None
    while True:
        pa = position(a)
        ta = time.perf_counter()
        pb = position(b)
        tb = time.perf_counter()
        a_samples.append((ta, pa))
        b_samples.append((tb, pb))
        if stopped is None:
            gaps.append(max(0, pa - pb))
            if os.path.exists(stop):
                stopped = tb
        elif pb >= pa or tb - stopped > grace:
            break
        time.sleep(interval)
    # For each sample of A (while streaming), the first B sample that
    # reached its position.
    lags = []
    j = 0
    for ta, pa in a_samples:
        if ta >= stopped:
            break
        # Both advance: A's position never goes back, nor B's.
        while j < len(b_samples) and (b_samples[j][0] < ta or b_samples[j][1] < pa):
            j += 1
        if j == len(b_samples):
            break
        lags.append((b_samples[j][0] - ta) * 1000.0)
    last_a, last_b = a_samples[-1][1], b_samples[-1][1]
    print(f"follower_samples={len(gaps)}")
    for q in ("50", "99"):
        print(f"follower_lag_positions_p{q}={pct(gaps, int(q) / 100):.0f}")
        print(f"follower_lag_ms_p{q}={pct(lags, int(q) / 100):.0f}")
    print(f"follower_lag_positions_max={max(gaps) if gaps else 0}")
    print(f"follower_lag_ms_max={max(lags) if lags else float('nan'):.0f}")
    caught = last_b >= last_a
    print(f"follower_catch_up_s={(b_samples[-1][0] - stopped):.1f}" if caught else "follower_catch_up_s=never")


if __name__ == "__main__":
    main()
