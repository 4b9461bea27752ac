#!/usr/bin/env python3
"""Red team: SIGKILL `serve` and `fusion keys` at random moments while keys
are used, created and revoked; after each kill, `fusion keys list --json`
must open `keys.redb` and hold every key whose creation or revocation the
command reported done, and the server must come back refusing revoked keys.

Usage: kill_keys.py BINARY ROUNDS [PORT]
"""
import json, random, signal, subprocess, sys, time
import requests

BIN, ROUNDS = sys.argv[1], int(sys.argv[2])
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 18497
BASE = f"http://127.0.0.1:{PORT}"
DIR = f"/tmp/h8-keys-{PORT}"
rng = random.Random(3)
fails = []


def keys(*args, timeout=60):
    return subprocess.run([BIN, "keys", *args, "--data-dir", DIR], capture_output=True, text=True, timeout=timeout)


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
    fails.append("serve not ready")
    return p


subprocess.run(["rm", "-rf", DIR, DIR + ".log"])
created = {}   # id -> secret
revoked = set()
c = keys("create", "--role", "admin")
k = c.stdout.split()[0]
created[k.split("_")[1]] = k
p = start()
for rnd in range(ROUNDS):
    # a keys command killed part way, while the server reads keys.redb and uses keys
    cmd = subprocess.Popen([BIN, "keys", "create", "--role", "read", "--data-dir", DIR],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(rng.randrange(1, 20)):
        requests.get(BASE + "/v1/brands/x", headers={"Authorization": "Bearer " + k}, timeout=10)
    if rng.random() < 0.5:
        cmd.send_signal(signal.SIGKILL)
    out, _ = cmd.communicate()
    if cmd.returncode == 0:
        key = out.split()[0]
        created[key.split("_")[1]] = key
    if len(created) > 2 and rng.random() < 0.5:
        victim = rng.choice([i for i in created if created[i] != k and i not in revoked] or [None])
        if victim:
            r = keys("revoke", victim)
            if r.returncode == 0:
                revoked.add(victim)
    time.sleep(rng.uniform(0, 2.5))  # a moment inside the 2 s re-read and the last-used write-back
    p.send_signal(signal.SIGKILL)
    p.wait()
    lst = keys("list", "--json")
    if lst.returncode != 0:
        fails.append(f"round {rnd}: keys list failed: {lst.stderr.strip()}")
        break
    rows = [json.loads(l) for l in lst.stdout.splitlines() if l.strip()]
    ids = {r.get("id"): r for r in rows}
    for i in created:
        if i not in ids:
            fails.append(f"round {rnd}: key {i} lost")
    for i in revoked:
        if i in ids and ids[i].get("state", ids[i].get("revoked")) in ("active", None):
            fails.append(f"round {rnd}: revoked key {i} active again: {ids[i]}")
    p = start()
    for i in revoked:
        st = requests.get(BASE + "/v1/brands/x", headers={"Authorization": "Bearer " + created[i]}, timeout=10).status_code
        if st != 401:
            fails.append(f"round {rnd}: revoked key {i} answered {st}")
p.send_signal(signal.SIGTERM)
p.wait()
for f in fails:
    print("FAIL", f)
print(f"rounds={ROUNDS} keys={len(created)} revoked={len(revoked)} failures={len(fails)}")
sys.exit(1 if fails else 0)
