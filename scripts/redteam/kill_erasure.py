#!/usr/bin/env python3
"""Red team: SIGKILL `serve` during an erasure (embedded store). After the
restart the store opens, the erased person's events are all there or all
gone (never a part), an erasure that was answered 200 stays done, and the
other people's events are untouched.

Usage: kill_erasure.py BINARY ROUNDS [PORT]
"""
import json, random, signal, subprocess, sys, threading, time
import requests

BIN, ROUNDS = sys.argv[1], int(sys.argv[2])
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 18494
BASE = f"http://127.0.0.1:{PORT}"
DIR = f"/tmp/h8-kerase-{PORT}"
rng = random.Random(9)
fails = []


def start():
    p = subprocess.Popen([BIN, "serve", "--data-dir", DIR, "--bind", f"127.0.0.1:{PORT}"],
                         stdout=open(DIR + ".log", "a"), stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            if requests.get(BASE + "/readyz", timeout=2).status_code == 200:
                return p
        except requests.RequestException:
            pass
        time.sleep(0.1)
    fails.append("not ready after restart")
    return p


def count(person):
    r = requests.get(f"{BASE}/v1/entities/{person}", timeout=60)
    return r.json().get("event_count", 0) if r.status_code == 200 else 0


subprocess.run(["rm", "-rf", DIR, DIR + ".log"])
p = start()
PER = 5000
outcomes = {"answered": 0, "killed_before_answer": 0}
for rnd in range(ROUNDS):
    victim = f"victim{rnd}"
    lines = "".join(json.dumps({"id": f"{victim}-{i}", "type": "purchase", "time": "2026-10-01T00:00:00Z",
                                "person": victim if i % 2 else f"bystander{rnd}", "brand": "b", "amount": 1}) + "\n"
                    for i in range(2 * PER))
    requests.post(BASE + "/v1/events", data=lines, headers={"Content-Type": "application/x-ndjson"}, timeout=120)
    answer = {}

    def erase():
        try:
            answer["status"] = requests.delete(f"{BASE}/v1/entities/{victim}", timeout=60).status_code
        except requests.RequestException:
            pass  # killed before it answered
    t = threading.Thread(target=erase)
    t.start()
    time.sleep(rng.uniform(0, 0.3))
    p.send_signal(signal.SIGKILL)
    p.wait()
    t.join()
    p = start()
    left, bystander = count(victim), count(f"bystander{rnd}")
    if answer.get("status") == 200:
        outcomes["answered"] += 1
        if left:
            fails.append(f"round {rnd}: erasure answered 200 but {left} events remain")
    else:
        outcomes["killed_before_answer"] += 1
    if left not in (0, PER):
        fails.append(f"round {rnd}: {left} of {PER} events remain: a partial erasure")
    if bystander != PER:
        fails.append(f"round {rnd}: bystander has {bystander} of {PER} events")
p.send_signal(signal.SIGTERM)
p.wait()
for f in fails:
    print("FAIL", f)
print(f"rounds={ROUNDS} {outcomes} failures={len(fails)}")
sys.exit(1 if fails else 0)
