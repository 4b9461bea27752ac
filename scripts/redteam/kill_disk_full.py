#!/usr/bin/env python3
"""Red team: fill a small filesystem under `serve` (embedded store) until
writes answer 507, SIGKILL it at random moments around the recovery, free
space, restart; every acknowledged event must be there, the store must open,
and `fusion rescore` must run.

Usage: kill_disk_full.py BINARY MOUNTPOINT ROUNDS [PORT]
(MOUNTPOINT: a small tmpfs, e.g. `mount -t tmpfs -o size=24m tmpfs /tmp/x`)
"""
import json, os, random, signal, subprocess, sys, time
import requests

BIN, MNT, ROUNDS = sys.argv[1], sys.argv[2], int(sys.argv[3])
PORT = int(sys.argv[4]) if len(sys.argv) > 4 else 18498
BASE = f"http://127.0.0.1:{PORT}"
DIR = os.path.join(MNT, "d")
FILLER = os.path.join(MNT, "filler")
rng = random.Random(5)
fails, acked, statuses = {}, {}, {}


def start():
    p = subprocess.Popen([BIN, "serve", "--data-dir", DIR, "--bind", f"127.0.0.1:{PORT}"],
                         stdout=open("/tmp/h8-diskfull.log", "a"), stderr=subprocess.STDOUT)
    for _ in range(600):
        if p.poll() is not None:
            fails[f"serve exited {p.returncode} at start"] = 1
            return None
        try:
            if requests.get(BASE + "/readyz", timeout=2).status_code == 200:
                return p
        except requests.RequestException:
            pass
        time.sleep(0.1)
    fails["not ready after restart"] = 1
    return p


def post(batch):
    try:
        r = requests.post(BASE + "/v1/events", data=json.dumps(batch),
                          headers={"Content-Type": "application/json"}, timeout=30)
    except requests.RequestException as e:
        return "exc"
    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    if r.status_code == 200:
        for e in batch:
            acked[e["id"]] = e
    elif r.status_code >= 500 and r.status_code not in (503, 507):
        fails[f"POST {r.status_code} {r.text[:150]}"] = 1
    return r.status_code


subprocess.run(["rm", "-rf", DIR, FILLER])
n = 0
for rnd in range(ROUNDS):
    p = start()
    if p is None:
        break
    # fill: the filler takes most of the space, events take the rest
    free = os.statvfs(MNT).f_bavail * os.statvfs(MNT).f_frsize
    with open(FILLER, "wb") as f:
        try:
            f.write(b"\0" * max(0, free - rng.randrange(200_000, 2_000_000)))
        except OSError:
            pass
    full_seen = False
    for _ in range(400):
        batch = [{"id": f"r{rnd}-{n}-{j}", "type": "post", "time": "2026-10-01T00:00:00Z", "person": f"p{n % 50}",
                  "brand": "b", "sentiment": 0.5, "attributes": {"pad": "x" * 2000}} for j in range(20)]
        n += 1
        st = post(batch)
        if st == 507:
            full_seen = True
            break
    # free the space and kill at a random moment around the probe writes
    os.remove(FILLER)
    time.sleep(rng.uniform(0, 3))
    if rng.random() < 0.5:
        post([{"id": f"after-{rnd}-{n}", "type": "post", "time": "2026-10-01T00:00:00Z", "person": "q", "brand": "b", "sentiment": 0.1}])
    p.send_signal(signal.SIGKILL)
    p.wait()
    p = start()
    if p is None:
        break
    # every acknowledged event is there
    missing = 0
    for i in list(acked)[-2000:]:
        pass
    people = {e["person"] for e in acked.values()}
    stored = set()
    for person in people:
        cursor = None
        while True:
            q = {"limit": 1000}
            if cursor:
                q["cursor"] = cursor
            r = requests.get(f"{BASE}/v1/entities/{person}/events", params=q, timeout=60)
            if r.status_code != 200:
                fails[f"timeline {person} {r.status_code}"] = 1
                break
            b = r.json()
            stored.update(e["id"] for e in b["items"])
            cursor = b.get("next_cursor")
            if not cursor:
                break
    lost = [i for i in acked if i not in stored]
    if lost:
        fails[f"round {rnd}: {len(lost)} acknowledged events lost, e.g. {lost[:3]}"] = 1
    p.send_signal(signal.SIGKILL)
    p.wait()
    subprocess.run(["rm", "-rf", DIR])  # next round starts small again
    acked.clear()
    print(f"round {rnd}: full_seen={full_seen} statuses={statuses}", flush=True)
rs = subprocess.run([BIN, "rescore", "--data-dir", DIR], capture_output=True, text=True)
for f in fails:
    print("FAIL", f)
print(f"rounds={ROUNDS} statuses={statuses} failures={len(fails)}")
sys.exit(1 if fails else 0)
