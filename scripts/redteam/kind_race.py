#!/usr/bin/env python3
"""Red team: two requests give one new id two kinds at once (a purchase
that names it as `person`, another as `brand`; or a `PUT` registering it as
a brand). The role check reads the state before either request is folded,
so both may pass and both be stored: the log then holds an entity of two
kinds. Checks, for each of many fresh ids: at most one of the two was
accepted; then a restart must be ready and `fusion rescore` must run.

Usage: kind_race.py BINARY [PORT] [IDS]
"""
import json, signal, subprocess, sys, threading, time
import requests

BIN = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 18496
N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
BASE = f"http://127.0.0.1:{PORT}"
DIR = f"/tmp/h8-kind-{PORT}"
J = {"Content-Type": "application/json"}


def start():
    p = subprocess.Popen([BIN, "serve", "--data-dir", DIR, "--bind", f"127.0.0.1:{PORT}"],
                         stdout=open(DIR + ".log", "a"), stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            r = requests.get(BASE + "/readyz", timeout=2)
            if r.status_code == 200:
                return p, "ready"
        except requests.RequestException:
            pass
        time.sleep(0.1)
    try:
        return p, "not ready: " + requests.get(BASE + "/readyz", timeout=2).text[:300]
    except requests.RequestException as e:
        return p, f"not answering: {e}"


subprocess.run(["rm", "-rf", DIR, DIR + ".log"])
p, _ = start()
both = []
for i in range(N):
    x = f"x{i}"
    res = {}
    def as_person():
        r = requests.post(BASE + "/v1/events", headers=J, data=json.dumps(
            {"id": f"{x}-p", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": x, "brand": "shop", "amount": 5}))
        res["person"] = r.json().get("accepted") == 1
    def as_brand():
        if i % 2:
            r = requests.put(f"{BASE}/v1/entities/{x}", headers=J, data=json.dumps({"kind": "brand", "name": x}))
            res["brand"] = r.status_code == 200
        else:
            r = requests.post(BASE + "/v1/events", headers=J, data=json.dumps(
                {"id": f"{x}-b", "type": "purchase", "time": "2026-10-01T00:00:00Z", "person": "buyer", "brand": x, "amount": 5}))
            res["brand"] = r.json().get("accepted") == 1
    ts = [threading.Thread(target=as_person), threading.Thread(target=as_brand)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if res.get("person") and res.get("brand"):
        both.append(x)
p.send_signal(signal.SIGTERM)
p.wait()
p, state = start()
rs = subprocess.Popen  # placeholder to keep names short
p.send_signal(signal.SIGTERM)
p.wait()
r = subprocess.run([BIN, "rescore", "--data-dir", DIR], capture_output=True, text=True)
print(f"ids={N} both_kinds_accepted={len(both)} e.g. {both[:5]}")
print("restart:", state)
print("rescore:", r.returncode, r.stdout.strip(), r.stderr.strip()[:300])
sys.exit(1 if both or state != "ready" or r.returncode else 0)
