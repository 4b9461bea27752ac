"""benches/feed_bench.py: the change feed's figures, driven by benches/feed.sh.

Against a running `fusion serve` at BASE (argv[1]) with pid PID (argv[2]):

1. Latency from acknowledgement to SSE delivery under a modest stream: one
   thread posts, one after the other, a background batch of BATCH purchases
   (each moves its relationship by about 4 points, so each is a change)
   and a single probe purchase, ROUNDS times; a subscriber records when
   each probe's change arrives; latency = arrival - the probe's answer.
   ACTIVE - 1 more subscribers read everything meanwhile (server CPU
   seconds over the stream are reported).
2. Memory with IDLE idle subscribers: the server's RSS before and after
   opening them (the feed's subscriber gauge confirms they are counted).

Prints name=value lines.
"""

import http.client
import json
import os
import socket
import sys
import threading
import time
from urllib.parse import urlparse

BASE = sys.argv[1]
PID = int(sys.argv[2])
ROUNDS = int(os.environ.get("ROUNDS", "300"))
BATCH = int(os.environ.get("BATCH", "50"))
ACTIVE = int(os.environ.get("ACTIVE", "100"))
IDLE = int(os.environ.get("IDLE", "1000"))
HOST = urlparse(BASE).hostname
PORT = urlparse(BASE).port


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds():
    with open(f"/proc/{PID}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscribe():
    conn = http.client.HTTPConnection(HOST, PORT, timeout=120)
    conn.request("GET", "/v1/stream", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    return conn, resp


def read_changes(resp, on_change, stop):
    try:
        read_until(resp, on_change, stop)
    except (OSError, ValueError, AttributeError):
        pass  # closed by the bench when it is done


def read_until(resp, on_change, stop):
    data = []
    while not stop.is_set():
        line = resp.readline()
        if not line:
            return
        line = line.decode().rstrip("\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            on_change(json.loads("".join(data)), time.monotonic())
            data = []


def post(conn, events):
    body = "".join(json.dumps(e) + "\n" for e in events)
    conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/x-ndjson"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status


def event(i, kind, t):
    return {
        "id": f"{kind}{i}",
        "type": "purchase",
        "time": t,
        "person": f"{kind}-person-{i}",
        "brand": f"brand-{i % 20}",
        "amount": 40.0,
    }


def stamp(n):
    # Event times one millisecond apart, in order (the fold appends in place).
    s, ms = divmod(n, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_700_000_000 + s)) + f".{ms:03d}Z"


def latency():
    arrived = {}
    stop = threading.Event()
    lock = threading.Lock()

    def probe_seen(change, at):
        # By person: a probe folded by a batched rebuild of the live series
        # (every 128 events) names a range of positions, not its event.
        person = change.get("person", "")
        if person.startswith("probe-person-"):
            with lock:
                arrived.setdefault("probe" + person[len("probe-person-"):], at)

    readers = []
    conns = []
    c, resp = subscribe()
    conns.append(c)
    readers.append(threading.Thread(target=read_changes, args=(resp, probe_seen, stop), daemon=True))
    counts = [0] * ACTIVE
    for k in range(ACTIVE - 1):
        c, r = subscribe()
        conns.append(c)

        def count(_c, _t, k=k):
            counts[k] += 1

        readers.append(threading.Thread(target=read_changes, args=(r, count, stop), daemon=True))
    for t in readers:
        t.start()
    conn = http.client.HTTPConnection(HOST, PORT, timeout=120)
    acked = {}
    n = 0
    cpu0, t0 = cpu_seconds(), time.monotonic()
    for i in range(ROUNDS):
        batch = []
        for j in range(BATCH):
            batch.append(event(i * BATCH + j, "bg", stamp(n)))
            n += 1
        post(conn, batch)
        post(conn, [event(i, "probe", stamp(n))])
        n += 1
        acked[f"probe{i}"] = time.monotonic()
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while len(arrived) < ROUNDS and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = cpu_seconds() - cpu0
    stop.set()
    for c in conns:
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    lat = sorted((arrived[k] - acked[k]) * 1000 for k in acked if k in arrived)
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"feed_events_per_second={n / elapsed:.0f}")
    print(f"feed_active_subscribers={ACTIVE}")
    print(f"feed_probes_delivered={len(lat)}/{ROUNDS}")
    print(f"feed_latency_ack_to_sse_p50_ms={pct(0.50):.2f}")
    print(f"feed_latency_ack_to_sse_p99_ms={pct(0.99):.2f}")
    print(f"feed_server_cpu_seconds_during_stream={cpu:.2f}")
    print(f"feed_stream_seconds={elapsed:.2f}")


def idle():
    before = rss_kib()
    socks = []
    for _ in range(IDLE):
        s = socket.create_connection((HOST, PORT))
        s.sendall(f"GET /v1/stream HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n\r\n".encode())
        socks.append(s)
    for s in socks:
        s.settimeout(30)
        assert s.recv(12).startswith(b"HTTP/1.1 200"), "a subscriber was refused"
    time.sleep(1)
    conn = http.client.HTTPConnection(HOST, PORT, timeout=60)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    gauge = [l for l in metrics.splitlines() if l.startswith("fusion_feed_subscribers")]
    after = rss_kib()
    # The gauge still counts the active subscribers the first part closed
    # until the server next writes to them (a heartbeat finds them gone).
    print(f"feed_idle_subscribers={IDLE}")
    print(f"feed_subscribers_gauge={gauge[0].split()[-1] if gauge else 'absent'}")
    print(f"feed_idle_rss_before_kib={before}")
    print(f"feed_idle_rss_after_kib={after}")
    print(f"feed_idle_bytes_per_subscriber={(after - before) * 1024 / IDLE:.0f}")
    for s in socks:
        s.close()


latency()
idle()
