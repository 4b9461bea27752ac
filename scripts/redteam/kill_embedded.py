#!/usr/bin/env python3
"""Red team: SIGKILL `fusion serve` (embedded store) mid-stream, many times.

Usage: kill_embedded.py BINARY ROUNDS [PORT]
       STORE="--database-url URL" kill_embedded.py ...   (PostgreSQL; the
       database must be empty: the script cannot wipe it)

Each round starts `serve` on the same data dir, posts batches of events
from several threads (mixed types, times out of order so late events refold,
some re-sends), SIGKILLs the server at a random moment, restarts it and
checks: the store opens and becomes ready; every acknowledged event is in
its person's timeline with the content sent; no event appears that was
never sent. At the end: scores over HTTP at a fixed time equal `fusion
score` on the same store and `fusion rescore` reports its drift.
Prints a `name=value` summary and FAIL lines; exit 1 on any failure.
"""
import json, os, random, shlex, signal, subprocess, sys, threading, time, urllib.parse
import requests

BIN = sys.argv[1]
ROUNDS = int(sys.argv[2])
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 18490
BASE = f"http://127.0.0.1:{PORT}"
DIR = f"/tmp/h8-kill-{PORT}"
STORE = shlex.split(os.environ.get("STORE", "")) or ["--data-dir", DIR]
THREADS = 4
BRANDS = [f"b{i}" for i in range(4)]
AT = "2026-12-01T00:00:00Z"
rng = random.Random(int(os.environ.get("SEED", "7")))
fails = []
acked = {}  # id -> event
sent_ids = set()
lock = threading.Lock()


def fail(msg):
    print("FAIL", msg, flush=True)
    fails.append(msg)


def start():
    log = open(f"{DIR}.log", "a")
    p = subprocess.Popen([BIN, "serve", *STORE, "--bind", f"127.0.0.1:{PORT}"],
                         stdout=log, stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline:
        if p.poll() is not None:
            fail(f"serve exited with {p.returncode} at start (see {DIR}.log)")
            return None
        try:
            r = requests.get(BASE + "/readyz", timeout=2)
            if r.status_code == 200:
                return p
        except requests.RequestException:
            pass
        time.sleep(0.1)
    fail("serve not ready within 120 s after restart")
    return p


def event(t, rnd, n, j, r):
    eid = f"r{rnd}-t{t}-{n}-{j}"
    person = f"p{t}"
    day = r.randrange(0, 300)
    tm = f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T{r.randrange(24):02d}:{r.randrange(60):02d}:00Z"
    brand = r.choice(BRANDS)
    k = r.randrange(5)
    if k == 0:
        return {"id": eid, "type": "purchase", "time": tm, "person": person, "brand": brand,
                "amount": round(r.uniform(1, 500), 2)}
    if k == 1:
        return {"id": eid, "type": "post", "time": tm, "person": person, "brand": brand,
                "sentiment": round(r.uniform(-1, 1), 3)}
    if k == 2:
        return {"id": eid, "type": "follow", "time": tm, "person": person, "target": f"p{(t + 1) % THREADS}"}
    if k == 3:
        return {"id": eid, "type": "review", "time": tm, "person": person, "brand": brand,
                "rating": r.randrange(1, 6)}
    return {"id": eid, "type": "service", "time": tm, "person": person, "brand": brand,
            "csat": r.randrange(1, 6)}


def writer(t, rnd, stop, seed):
    r = random.Random(seed)
    s = requests.Session()
    n = 0
    while not stop.is_set():
        batch = [event(t, rnd, n, j, r) for j in range(r.choice([1, 5, 50, 300]))]
        # re-send an acknowledged event now and then (a duplicate)
        with lock:
            mine = [e for e in list(acked.values())[-200:] if e["person"] == f"p{t}"]
            for e in batch:
                sent_ids.add(e["id"])
        if mine and r.random() < 0.3:
            batch.append(r.choice(mine))
        n += 1
        try:
            resp = s.post(BASE + "/v1/events", data=json.dumps(batch),
                          headers={"Content-Type": "application/json"}, timeout=30)
        except requests.RequestException:
            return
        if resp.status_code == 200:
            body = resp.json()
            if body.get("rejected"):
                fail(f"rejected {body['rejected'][:1]}")
            bad = {x["id"] for x in body.get("rejected", [])}
            with lock:
                for e in batch:
                    if e["id"] not in bad:
                        acked[e["id"]] = e
        elif resp.status_code >= 500 and resp.status_code != 503:
            fail(f"POST {resp.status_code} {resp.text[:200]}")


def timeline(person):
    out = {}
    cursor = None
    while True:
        q = {"limit": 1000}
        if cursor:
            q["cursor"] = cursor
        r = requests.get(f"{BASE}/v1/entities/{person}/events", params=q, timeout=60)
        if r.status_code != 200:
            fail(f"timeline {person} {r.status_code} {r.text[:200]}")
            return out
        body = r.json()
        for e in body["items"]:
            out[e["id"]] = e
        cursor = body.get("next_cursor")
        if not cursor:
            return out


def check():
    stored = {}
    for t in range(THREADS):
        stored.update(timeline(f"p{t}"))
    lost = [i for i in acked if i not in stored]
    if lost:
        fail(f"{len(lost)} acknowledged events lost, e.g. {lost[:3]}")
    ghosts = [i for i in stored if i not in sent_ids]
    if ghosts:
        fail(f"{len(ghosts)} events never sent are stored, e.g. {ghosts[:3]}")
    for i, e in acked.items():
        s = stored.get(i)
        if s is None:
            continue
        for k in ("type", "person", "brand", "amount", "sentiment", "rating", "csat", "target"):
            if k in e and e[k] != s.get(k):
                fail(f"event {i} field {k}: sent {e[k]!r}, stored {s.get(k)!r}")
                break
    return len(stored)


def main():
    subprocess.run(["rm", "-rf", DIR, f"{DIR}.log"])
    kills = 0
    for rnd in range(ROUNDS):
        p = start()
        if p is None or p.poll() is not None:
            break
        if rnd:
            n = check()
        stop = threading.Event()
        ths = [threading.Thread(target=writer, args=(t, rnd, stop, rng.random())) for t in range(THREADS)]
        for th in ths:
            th.start()
        time.sleep(rng.uniform(0.05, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        stop.set()
        for th in ths:
            th.join()
    p = start()
    stored = check() if p else 0
    # scores over HTTP vs the CLI on the same store
    rels = [(f"p{t}", b) for t in range(THREADS) for b in BRANDS]
    http = {}
    for pe, b in rels:
        r = requests.get(f"{BASE}/v1/relationships/{pe}/{b}", params={"at": AT}, timeout=60)
        http[(pe, b)] = r.json().get("score") if r.status_code == 200 else r.status_code
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    worst = 0.0
    for pe, b in rels:
        c = subprocess.run([BIN, "score", pe, b, "--at", AT, "--json", *STORE],
                           capture_output=True, text=True)
        cli = json.loads(c.stdout).get("score") if c.returncode == 0 else c.returncode
        if isinstance(cli, float) and isinstance(http[(pe, b)], float):
            worst = max(worst, abs(cli - http[(pe, b)]))
        elif cli != http[(pe, b)]:
            fail(f"score {pe} {b}: http {http[(pe, b)]} cli {cli}")
    if worst > 1e-6:
        fail(f"http score after restarts differs from fusion score by {worst}")
    rs = subprocess.run([BIN, "rescore", *STORE], capture_output=True, text=True)
    print(rs.stdout.strip(), rs.stderr.strip())
    print(f"kills={kills} acked={len(acked)} stored={stored} sent={len(sent_ids)} "
          f"http_vs_cli_max_diff={worst:.3e} failures={len(fails)}")
    sys.exit(1 if fails else 0)


main()
