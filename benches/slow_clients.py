#!/usr/bin/env python3
"""benches/slow_clients.py: what slow clients do to `fusion serve` (issue 9,
item 6: 1,100 connections sending a byte a second made it unreachable).

Usage: benches/slow_clients.py BASE_URL [CONNECTIONS] [SECONDS]

Opens CONNECTIONS (1100) connections that each send a POST /v1/events head
announcing a 1 MB body, then one body byte per second. Meanwhile, every
0.5 s, a probe asks GET /healthz and posts one small event on a new
connection, each with a 3 s timeout. Runs for SECONDS (90). Prints
`name=value` lines: how many slow connections were opened, answered (and
with which status) or left hanging, and the probes' success rate and
latencies.
"""

import asyncio
import sys
import time
from urllib.parse import urlparse


async def slow_client(host, port, stats, stop):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        stats["connect_failed"] += 1
        return
    stats["opened"] += 1
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n"
    )
    try:
        writer.write(head.encode())
        await writer.drain()
        read = asyncio.ensure_future(reader.read(200))
        while not stop.is_set():
            done, _ = await asyncio.wait({read}, timeout=1.0)
            if done:
                line = read.result().split(b"\r\n", 1)[0].decode(errors="replace")
                status = line.split(" ")[1] if line.count(" ") >= 1 else "closed"
                stats["answered"][status] = stats["answered"].get(status, 0) + 1
                stats["answer_times"].append(time.monotonic() - stats["t0"])
                return
            writer.write(b" ")
            await writer.drain()
        read.cancel()
    except (OSError, asyncio.IncompleteReadError):
        stats["answered"]["reset"] = stats["answered"].get("reset", 0) + 1
    finally:
        writer.close()


async def request(host, port, raw):
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
        writer.write(raw)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 3)
        writer.close()
        status = line.split(b" ")[1].decode() if line else "closed"
        return status, time.monotonic() - start
    except (OSError, asyncio.TimeoutError, IndexError):
        return "timeout", time.monotonic() - start


async def probes(host, port, results, stop):
    n = 0
    while not stop.is_set():
        get = f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        body = ('{"id":"probe-%d","type":"purchase","time":"2026-11-01T10:00:00Z",'
                '"person":"p","brand":"b","amount":1}' % n).encode()
        post = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for kind, raw in (("get", get), ("post", post)):
            status, secs = await request(host, port, raw)
            results.append((kind, status, secs))
        n += 1
        await asyncio.sleep(0.5)


async def main():
    base = urlparse(sys.argv[1])
    host, port = base.hostname, base.port
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 1100
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 90
    stats = {"opened": 0, "connect_failed": 0, "answered": {}, "answer_times": [],
             "t0": time.monotonic()}
    stop = asyncio.Event()
    results = []
    slow = [asyncio.ensure_future(slow_client(host, port, stats, stop)) for _ in range(connections)]
    probe = asyncio.ensure_future(probes(host, port, results, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*slow, probe, return_exceptions=True)
    print(f"slow_connections={connections}")
    print(f"slow_opened={stats['opened']}")
    print(f"slow_connect_failed={stats['connect_failed']}")
    for status, count in sorted(stats["answered"].items()):
        print(f"slow_answered_{status}={count}")
    hanging = stats["opened"] - sum(stats["answered"].values())
    print(f"slow_still_open_at_end={hanging}")
    if stats["answer_times"]:
        print(f"slow_first_answer_s={min(stats['answer_times']):.1f}")
        print(f"slow_last_answer_s={max(stats['answer_times']):.1f}")
    for kind in ("get", "post"):
        mine = [r for r in results if r[0] == kind]
        ok = [r for r in mine if r[1].startswith("2")]
        print(f"probe_{kind}_tries={len(mine)}")
        print(f"probe_{kind}_ok={len(ok)}")
        if ok:
            lat = sorted(r[2] for r in ok)
            print(f"probe_{kind}_p50_ms={lat[len(lat) // 2] * 1000:.1f}")
            print(f"probe_{kind}_max_ms={lat[-1] * 1000:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
