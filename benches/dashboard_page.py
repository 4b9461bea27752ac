#!/usr/bin/env python3
"""benches/dashboard_page.py: opens one dashboard page in a fresh (cold)
headless Chromium through chromedriver and prints what it cost.

Used by benches/dashboard.sh; plain WebDriver over HTTP (the standard
library only), the same Debian chromium and chromedriver as the browser
tests. Prints `<name>_render_ms=`, `<name>_transfer_bytes=` (the page and
every request it made: Resource Timing's transferSize, headers included),
`<name>_asset_bytes=`, `<name>_api_bytes=` and `<name>_requests=` lines.

Usage: dashboard_page.py DRIVER_URL PAGE_URL NAME [TIMEOUT_S]
"""
import json
import sys
import time
import urllib.request

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--window-size=1280,1000"]


def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)["value"]


def main():
    driver, page, name = sys.argv[1:4]
    patience = float(sys.argv[4]) if len(sys.argv) > 4 else 300
    caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": "/usr/bin/chromium", "args": ARGS}}}}
    # A new session is a new profile: an empty cache, so the page is cold.
    session = call("POST", f"{driver}/session", caps)["sessionId"]
    s = f"{driver}/session/{session}"
    try:
        call("POST", f"{s}/url", {"url": page})
        # app.js marks `rendered #/...` when a page is on screen; the mark's
        # time counts from the start of navigation.
        script = ("const m = performance.getEntriesByName('rendered ' + location.hash);"
                  "return m.length ? m[0].startTime : null;")
        deadline = time.monotonic() + patience
        rendered = None
        while rendered is None:
            if time.monotonic() > deadline:
                sys.exit(f"{page} did not render within {patience} s")
            rendered = call("POST", f"{s}/execute/sync", {"script": script, "args": []})
            if rendered is None:
                time.sleep(0.05)
        sizes = call("POST", f"{s}/execute/sync", {"script": """
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            const api = res.filter((r) => new URL(r.name).pathname.startsWith('/v1/'));
            const sum = (xs) => xs.reduce((n, r) => n + r.transferSize, 0);
            return {all: nav.transferSize + sum(res), api: sum(api),
                    requests: 1 + res.length};""", "args": []})
    finally:
        call("DELETE", s)
    print(f"{name}_render_ms={rendered:.0f}")
    print(f"{name}_transfer_bytes={sizes['all']}")
    print(f"{name}_asset_bytes={sizes['all'] - sizes['api']}")
    print(f"{name}_api_bytes={sizes['api']}")
    print(f"{name}_requests={sizes['requests']}")


if __name__ == "__main__":
    main()
