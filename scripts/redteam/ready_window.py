# Red team h28, item 2: requests sent at once the moment `serve` is ready
# while /readyz says "rankings": "building" (a 150,000-event store from
# `fusion generate --seed 3 --people 3000 --influencers 30 --brands 20
# --events 150000` and `fusion ingest --data-dir STORE`), then again once
# ready; prints which answers differ. Found none but the export (at now).
# Usage: python3 ready_window.py STORE (binds 127.0.0.1:18428).
import json, subprocess, sys, time, urllib.request, urllib.error, os
BIN=os.environ.get("FUSION_BIN", "target/debug/fusion")
AT="2026-12-01T00:00:00Z"
def req(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request("http://127.0.0.1:18428"+path, data=data, method=method,
        headers={"Content-Type":"application/json"} if data else {})
    try:
        with urllib.request.urlopen(r, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except Exception as e:
        return -1, str(e)
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in ("request_id",)}
    if isinstance(v, list): return [strip(x) for x in v]
    return v
reqs = [
  ("GET", f"/v1/brands/b3/relationships?limit=20&at={AT}", None),
  ("GET", f"/v1/brands/b3/relationships?limit=20", None),
  ("GET", "/v1/brands/b3", None),
  ("GET", "/v1/brands", None),
  ("GET", f"/v1/entities/p17", None),
  ("GET", f"/v1/entities/p17/export", None),
  ("GET", f"/v1/relationships/p17/b3?at={AT}", None),
  ("POST", "/v1/simulate", {"events":[{"id":"sim1","type":"purchase","time":"2026-11-01T00:00:00Z","person":"p17","brand":"b3","amount":50}], "at": AT}),
  ("POST", "/v1/simulate", {"brand":"b3","at":AT,"model":{"weights":{"sales":0.5}}}),
  ("GET", f"/v1/relationships/p17/b3/history?from=2026-01-01T00:00:00Z&to={AT}&step=30d", None),
  ("GET", f"/v1/brands/b5/relationships?limit=20&sort=trend7d&at={AT}", None),
]
p = subprocess.Popen([BIN,"serve","--data-dir",sys.argv[1],"--bind","127.0.0.1:18428","--staleness","0"], stdout=open("serve.log","w"), stderr=subprocess.STDOUT)
try:
    during = {}
    t0=time.time()
    while True:
        s, b = req("GET","/readyz")
        if s == 200: break
        if time.time()-t0 > 300: sys.exit("never ready")
    print("ready after", round(time.time()-t0,1), "rankings", b.get("rankings"))
    import threading
    def one(i,m,path,body):
        st = req("GET","/readyz")[1].get("rankings")
        s, b = req(m,path,body)
        during[i] = (st, s, strip(b))
    ts=[threading.Thread(target=one,args=(i,)+r) for i,r in enumerate(reqs)]
    for t in ts: t.start()
    for t in ts: t.join()
    for i in sorted(during): print(i, reqs[i][1][:50], during[i][:2])
    while req("GET","/readyz")[1].get("rankings") != "ready": pass
    time.sleep(2)
    for i,(m,path,body) in enumerate(reqs):
        s, b = req(m,path,body)
        d = during[i]
        same = (d[1], d[2]) == (s, strip(b))
        print(i, "after:", s, "same as during" if same else "DIFFERS", "(during was", d[0], d[1], ")")
        if not same:
            print("   during:", json.dumps(d[2])[:400]); print("   after: ", json.dumps(strip(b))[:400])
finally:
    p.kill(); p.wait()
