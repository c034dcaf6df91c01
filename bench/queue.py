#!/usr/bin/env python3
"""Helpers of bench/queue.sh, standard library only, 127.0.0.1 only.

    queue.py seed BASE FIRST LAST MAJOR    students FIRST..LAST in MAJOR (bulk POSTs of 1000);
                                           MAJOR A-B: in majors A..B in turn (student i in A + i % (B-A+1))
    queue.py fill BASE FIRST LAST THREADS  members FIRST..LAST join (THREADS keep-alive clients)
    queue.py ids BASE MAJOR FILE           every waiting entry id of the line, in order, to FILE
    queue.py leave BASE FILE N SEED        N random entries of FILE leave
    queue.py positions BASE FILE N SEED    N sequential GETs of random entries: p50/p99 ms
"""
import http.client
import json
import random
import sys
import time
import urllib.parse


def connect(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def call(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def seed(base, first, last, major):
    low, _, high = str(major).partition("-")
    low, high = int(low), int(high or low)
    conn = connect(base)
    for start in range(first, last + 1, 1000):
        rows = [{"email": f"s{i}@bench.example.edu", "major_id": low + i % (high - low + 1)}
                for i in range(start, min(start + 1000, last + 1))]
        status, data = call(conn, "POST", "/students", rows)
        if status != 201:
            sys.exit(f"seeding failed: {status} {data[:200]!r}")


def fill(base, first, last, threads):
    import threading
    members = list(range(first, last + 1))
    chunks = [members[i::threads] for i in range(threads)]
    failures = []

    def run(chunk):
        conn = connect(base)
        for m in chunk:
            status, data = call(conn, "POST", "/queues/advising/entries", {"member_id": m, "topic": "bench"})
            if status != 201:
                failures.append((status, data[:200]))
                return

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    if failures:
        sys.exit(f"joins failed: {failures[:3]}")
    print(f"filled: {len(members)} joins by {threads} clients in {elapsed:.1f} s ({len(members) / elapsed:.0f} joins/s)")


def ids(base, major, path):
    conn = connect(base)
    out, after = [], None
    while True:
        q = f"/queues/advising/entries?major_id={major}&limit=1000"
        if after is not None:
            q += f"&after={after}"
        status, data = call(conn, "GET", q)
        page = json.loads(data)
        out.extend(e["id"] for e in page["items"])
        after = page["next_after"]
        if after is None:
            break
    with open(path, "w") as f:
        f.write("\n".join(out))
    print(f"{len(out)} entries waiting in line {major}")


def leave(base, path, n, seed_):
    entries = open(path).read().split()
    rng = random.Random(seed_)
    conn = connect(base)
    for entry in rng.sample(entries, n):
        status, data = call(conn, "DELETE", f"/queues/advising/entries/{entry}")
        if status != 200:
            sys.exit(f"leave failed: {status} {data[:200]!r}")


def positions(base, path, n, seed_):
    entries = open(path).read().split()
    rng = random.Random(seed_)
    conn = connect(base)
    times, waiting = [], 0
    for entry in (rng.choice(entries) for _ in range(n)):
        t = time.perf_counter()
        status, data = call(conn, "GET", f"/queues/advising/entries/{entry}")
        times.append((time.perf_counter() - t) * 1000)
        if status != 200:
            sys.exit(f"lookup failed: {status} {data[:200]!r}")
        if json.loads(data)["position"] is not None:
            waiting += 1
    times.sort()
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    print(f"position lookups: {n} sequential GETs on one connection, {waiting} of waiting entries: "
          f"p50 {pct(0.50):.2f} ms, p99 {pct(0.99):.2f} ms, max {times[-1]:.2f} ms")


if __name__ == "__main__":
    cmd, base = sys.argv[1], sys.argv[2]
    if cmd == "seed":
        seed(base, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif cmd == "fill":
        fill(base, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "ids":
        ids(base, int(sys.argv[3]), sys.argv[4])
    elif cmd == "leave":
        leave(base, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif cmd == "positions":
        positions(base, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
