#!/usr/bin/env python3
"""Red team: erasure racing ingest of events that mention the erased entity.

Usage: erase_race.py BINARY [PORT] [ROUNDS]

Several threads post events about person `victim` (and other people) while
another erases `victim` again and again. When the storm stops, the scores
the running server answers must be what the store holds: after a clean
restart (which folds the log afresh) every relationship must answer the
same score, and `victim` must exist in the live state exactly when the log
still holds events about it. Prints differences; exit 1 on any.
"""
import json, random, signal, subprocess, sys, threading, time
import requests

BIN = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 18495
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
BASE = f"http://127.0.0.1:{PORT}"
DIR = f"/tmp/h8-erase-{PORT}"
AT = "2026-11-01T00:00:00Z"
PEOPLE = ["victim", "other"]
BRANDS = ["b0", "b1"]


def start():
    log = open(DIR + ".log", "a")
    p = subprocess.Popen([BIN, "serve", "--data-dir", DIR, "--bind", f"127.0.0.1:{PORT}"], stdout=log, stderr=log)
    for _ in range(600):
        try:
            if requests.get(BASE + "/readyz", timeout=2).status_code == 200:
                return p
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("not ready")


def snapshot():
    out = {}
    for pe in PEOPLE:
        for b in BRANDS:
            r = requests.get(f"{BASE}/v1/relationships/{pe}/{b}", params={"at": AT}, timeout=30)
            out[(pe, b)] = round(r.json()["score"], 9) if r.status_code == 200 else r.status_code
    r = requests.get(f"{BASE}/v1/entities/victim/events", params={"limit": 1000}, timeout=30)
    out["victim_timeline"] = len(r.json()["items"]) if r.status_code == 200 else r.status_code
    return out


def main():
    subprocess.run(["rm", "-rf", DIR, DIR + ".log"])
    p = start()
    seq = [0]
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"posts": 0, "erases": 0}

    def poster(t):
        s = requests.Session()
        r = random.Random(t)
        while not stop.is_set():
            with lock:
                seq[0] += 1
                n = seq[0]
            batch = [{"id": f"e{n}-{j}", "type": "purchase", "time": f"2026-10-{1 + r.randrange(28):02d}T12:00:00Z",
                      "person": r.choice(PEOPLE), "brand": r.choice(BRANDS), "amount": 10 + j} for j in range(20)]
            s.post(BASE + "/v1/events", data=json.dumps(batch), headers={"Content-Type": "application/json"}, timeout=30)
            counts["posts"] += 1

    def eraser():
        s = requests.Session()
        while not stop.is_set():
            s.delete(BASE + "/v1/entities/victim", timeout=30)
            counts["erases"] += 1

    diffs = 0
    for rnd in range(ROUNDS):
        stop.clear()
        ths = [threading.Thread(target=poster, args=(t,)) for t in range(3)] + [threading.Thread(target=eraser)]
        for th in ths:
            th.start()
        time.sleep(3)
        stop.set()
        for th in ths:
            th.join()
        live = snapshot()
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        p = start()
        fresh = snapshot()
        for k in live:
            if live[k] != fresh[k]:
                diffs += 1
                print(f"FAIL round {rnd} {k}: live {live[k]} after restart {fresh[k]}", flush=True)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    print(f"rounds={ROUNDS} posts={counts['posts']} erases={counts['erases']} differences={diffs}")
    sys.exit(1 if diffs else 0)


main()
