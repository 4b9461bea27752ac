#!/usr/bin/env python3
"""scripts/bench-webhooks.py: webhook deliveries per second to a local
receiver (issue 13, item 2, figures).

Starts `fusion serve` on a fresh embedded store with private webhooks
allowed, loads N mentions of one brand by N people (N relationships),
starts a receiver (Python's threading HTTP server, answering 204), then
creates one rule that every relationship crosses at once (score below 100)
and times from the rule's creation to the N-th request at the receiver:
evaluation, the outbox commit, and N signed deliveries each written back.

Prints `name=value` lines. Settings (environment): FUSION_BIN (default
target/debug/fusion), N (2000).
"""
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

N = int(os.environ.get("N", "2000"))
BIN = os.environ.get("FUSION_BIN", "target/debug/fusion")

got = 0
got_lock = threading.Lock()
done = threading.Event()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global got
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()
        with got_lock:
            got += 1
            if got >= N:
                done.set()

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # The default backlog (5) drops the connections of a batch of tries:
    # their SYNs are retried a second later, and that was the measure.
    request_queue_size = 1024
    daemon_threads = True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, ctype="application/json"):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.read()


def main():
    receiver = Server(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [BIN, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", data,
             "--allow-private-webhooks", "--alert-sweep", "3600"],
            env={**os.environ, "RUST_LOG": "warn"},
        )
        try:
            for _ in range(600):
                try:
                    if call(base, "GET", "/readyz")[0] == 200:
                        break
                except Exception:
                    time.sleep(0.1)
            start = datetime.now(timezone.utc) - timedelta(hours=1)
            lines = []
            for i in range(N):
                t = (start + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                lines.append(json.dumps({"id": f"m{i}", "type": "mention", "time": t,
                                         "person": f"p{i}", "brand": "b", "sentiment": 0.5}))
            call(base, "POST", "/v1/events", "\n".join(lines) + "\n", "application/x-ndjson")
            rule = {"brand": "b", "metric": "score", "direction": "below", "threshold": 100,
                    "rearm": 100, "webhook_url": hook}
            t0 = time.monotonic()
            call(base, "POST", "/v1/alerts", json.dumps(rule))
            if not done.wait(600):
                sys.exit(f"only {got} of {N} deliveries arrived")
            elapsed = time.monotonic() - t0
            print(f"webhook_deliveries={N}")
            print(f"webhook_seconds={elapsed:.3f}")
            print(f"webhook_deliveries_per_second={N / elapsed:.0f}")
        finally:
            server.terminate()
            server.wait()
            receiver.shutdown()


if __name__ == "__main__":
    main()
