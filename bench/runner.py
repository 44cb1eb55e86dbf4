#!/usr/bin/env python3
"""Embedded runner throughput (issue 22): runs per minute of a 10-step flow against a local page,
with 1 and 2 embedded workers, and where each run's time goes (browser start, steps,
screenshots, upload of results, browser close), from the `timings` line the executor logs per run.

usage: runner.py --bin BIN --work DIR --out FILE.md [--runs N] [--quick]

Each configuration gets a fresh data dir and server (`serve` with
FLOWGUARD_RUNNER__EMBEDDED_WORKERS=W), one warm-up run, then N runs queued at once; the clock runs
from the first queue request to the last run's end. Chromium comes from the system (PATH).
"""
from __future__ import annotations

import argparse
import http.server
import os
import re
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import appliance  # noqa: E402  (same directory: Server, jreq, read_creds, log)

PAGE = b"""<!doctype html><html><head><title>Bench</title></head><body>
<h1 id="title">Checkout</h1><input id="name"><input id="email">
<select id="plan"><option value="a">A</option><option value="b">B</option></select>
<button id="go" onclick="document.getElementById('done').textContent='ok'">Go</button>
<p id="done"></p></body></html>"""

STEPS = [
    {"type": "navigate", "url": "/"},
    {"type": "fill", "selector": "#name", "value": "Ada"},
    {"type": "fill", "selector": "#email", "value": "ada@example.com"},
    {"type": "select", "selector": "#plan", "value": "b"},
    {"type": "assert", "selector": "#title", "assertion": "text_equals", "expected": "Checkout"},
    {"type": "click", "selector": "#go"},
    {"type": "wait", "for": "selector", "selector": "#done", "timeout_ms": 5000},
    {"type": "assert", "selector": "#done", "assertion": "text_equals", "expected": "ok"},
    {"type": "assert", "selector": "#plan", "assertion": "exists"},
    {"type": "screenshot"},
]

TIMINGS = re.compile(r"run (\S+): timings launch_ms=(\d+) steps_ms=(\d+) screenshots_ms=(\d+) upload_ms=(\d+) close_ms=(\d+)")


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *a):
        pass


def serve_page():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def session(srv):
    creds = appliance.read_creds(srv.data)
    return appliance.owner_session(srv.addr, creds["tenant_id"], creds["owner_password"])


def drain(srv, sh, app, ids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        lst, _ = appliance.jreq(srv.addr, "GET", f"/api/v1/applications/{app}/runs?limit=200", None, sh)
        by = {r["id"]: r for r in lst["items"]}
        done = [by[i] for i in ids if i in by and by[i]["status"] not in ("queued", "running")]
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(done)}/{len(ids)} runs finished within {timeout}s")
        time.sleep(0.1)


def measure(binary, work, workers, runs, page_url):
    data = os.path.join(work, f"w{workers}", "data")
    logf = os.path.join(work, f"w{workers}", "server.log")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    srv = appliance.Server(binary, data, logf, embedded_workers=workers)
    try:
        sh = session(srv)
        app, _ = appliance.jreq(srv.addr, "POST", "/api/v1/applications",
                                {"name": "bench", "base_url": page_url}, sh, 201)
        flow, _ = appliance.jreq(srv.addr, "POST", f"/api/v1/applications/{app['id']}/flows",
                                 {"name": "ten steps", "steps": STEPS}, sh, 201)
        q = lambda: appliance.jreq(srv.addr, "POST", f"/api/v1/flows/{flow['id']}/runs", None, sh, 201)[0]["id"]  # noqa: E731
        warm = q()
        drain(srv, sh, app["id"], [warm], 120)
        t0 = time.monotonic()
        ids = [q() for _ in range(runs)]
        ended = drain(srv, sh, app["id"], ids, 60 + 30 * runs)
        secs = time.monotonic() - t0
    finally:
        srv.stop()
    passed = sum(1 for r in ended if r["status"] == "passed")
    with open(logf, errors="replace") as f:
        rows = [m.groups() for m in TIMINGS.finditer(f.read()) if m.group(1) in set(ids)]
    cols = ["launch", "steps", "screenshots", "upload", "close"]
    med = {c: statistics.median(int(r[i + 1]) for r in rows) if rows else None for i, c in enumerate(cols)}
    return {"workers": workers, "runs": runs, "passed": passed, "secs": secs,
            "per_min": runs / secs * 60, "median_ms": med}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    runs = 2 if a.quick else a.runs
    page, url = serve_page()
    results = []
    try:
        for w in (1, 2):
            appliance.log(f"runner: {w} embedded worker(s), {runs} runs of a 10-step flow")
            results.append(measure(a.bin, a.work, w, runs, url))
    finally:
        page.shutdown()
    lines = ["", "## Embedded runner (issue 22)", "",
             f"`bench/runner.py`: {runs} runs of a 10-step flow (navigate, fill ×2, select, click, wait, "
             "assert ×3, screenshot) against a page on 127.0.0.1, queued at once after one warm-up run; "
             "Chromium from the system. Per-run medians from the executor's `timings` log line.", "",
             "| workers | runs | passed | wall s | runs/min | browser start ms | steps ms | screenshots ms | upload ms | close ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["median_ms"]
        f = lambda v: "–" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(f"| {r['workers']} | {r['runs']} | {r['passed']} | {r['secs']:.1f} | {r['per_min']:.1f} | "
                     f"{f(m['launch'])} | {f(m['steps'])} | {f(m['screenshots'])} | {f(m['upload'])} | {f(m['close'])} |")
    with open(a.out, "w") as fo:
        fo.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
