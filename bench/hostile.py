#!/usr/bin/env python3
"""Hostile-connection run against a server already listening on 127.0.0.1.

    hostile.py PORT SERVER_PID [--idle 1000] [--slow 1000] [--every 9] [--seconds 45] [--probes 200]

Opens IDLE connections that never send a byte and SLOW ones that send a
request line and then one header line every EVERY seconds (slowloris); each
one that the server closes is opened again, so the number of hostile
connections stays at IDLE + SLOW for SECONDS. Meanwhile it measures /health
(a new connection per request, sequential) and the server's RSS (VmRSS of
/proc/PID/status) before, during and after. Only 127.0.0.1; stops by itself.
"""

import argparse
import asyncio
import json
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time

from proc import rss_kib

HOST = "127.0.0.1"


def health(port, timeout=5.0):
    """One GET /health on a new connection: (status or error, milliseconds)."""
    start = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            status = data.split(b" ", 2)[1].decode() if data else "closed"
    except OSError as e:
        status = type(e).__name__
    return status, (time.perf_counter() - start) * 1000


def probe(port, n, gap, until=None):
    results = []
    for _ in range(n):
        if until is not None and time.monotonic() >= until:
            break
        results.append(health(port))
        time.sleep(gap)
    return results


def summary(results):
    if not results:
        return "no probe"
    ms = sorted(t for _, t in results)
    statuses = {}
    for s, _ in results:
        statuses[s] = statuses.get(s, 0) + 1
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"n={len(ms)} statuses={statuses} median={statistics.median(ms):.2f} ms "
        f"p99={p99:.2f} ms max={ms[-1]:.2f} ms"
    )


# ---------------------------------------------------------------------------
# The attacker: a separate process, so its event loop does not delay probes.
# ---------------------------------------------------------------------------


async def attack(port, idle, slow, every, seconds):
    stats = {"opened": 0, "closed_by_server": 0, "got_408": 0, "other_replies": 0,
             "connect_errors": 0}
    end = time.monotonic() + seconds
    first_open = asyncio.Semaphore(0)

    async def connect():
        while time.monotonic() < end:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(HOST, port),
                                              max(0.1, end - time.monotonic()))
                stats["opened"] += 1
                return r, w
            except (OSError, asyncio.TimeoutError):
                stats["connect_errors"] += 1
                await asyncio.sleep(0.1)
        return None

    async def until_end(coro):
        remaining = end - time.monotonic()
        if remaining <= 0:
            coro.close()
            raise asyncio.TimeoutError
        return await asyncio.wait_for(coro, remaining)

    async def idle_one():
        first = True
        while time.monotonic() < end:
            conn = await connect()
            if conn is None:
                if first:
                    first_open.release()
                return
            r, w = conn
            if first:
                first_open.release()
                first = False
            try:
                data = await until_end(r.read(4096))
                while data:  # the server should not send anything; drain it
                    stats["other_replies"] += 1
                    data = await until_end(r.read(4096))
                stats["closed_by_server"] += 1
            except asyncio.TimeoutError:
                pass
            except OSError:
                stats["closed_by_server"] += 1
            w.close()

    async def slow_one(i):
        first = True
        while time.monotonic() < end:
            conn = await connect()
            if conn is None:
                if first:
                    first_open.release()
                return
            r, w = conn
            if first:
                first_open.release()
                first = False
            try:
                w.write(b"GET /health HTTP/1.1\r\nHost: bench\r\n")
                n = 0
                while time.monotonic() < end:
                    try:
                        data = await asyncio.wait_for(r.read(4096), min(every, max(0.01, end - time.monotonic())))
                    except asyncio.TimeoutError:
                        w.write(f"X-Slow-{n}: {i}\r\n".encode())
                        n += 1
                        continue
                    if not data:
                        stats["closed_by_server"] += 1
                        break
                    if data.startswith(b"HTTP/1.1 408"):
                        stats["got_408"] += 1
                    else:
                        stats["other_replies"] += 1
            except OSError:
                stats["closed_by_server"] += 1
            w.close()

    tasks = []
    for k in range(idle + slow):
        tasks.append(asyncio.create_task(idle_one() if k < idle else slow_one(k)))
        if k % 100 == 99:
            await asyncio.sleep(0.05)  # stay under the listen backlog
    for _ in range(idle + slow):
        await first_open.acquire()
    print("ready", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(stats), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("pid", type=int)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--every", type=float, default=9.0)
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.attacker:
        asyncio.run(attack(a.port, a.idle, a.slow, a.every, a.seconds))
        return

    print(f"RSS before: {rss_kib(a.pid) / 1024:.1f} MB")
    print(f"/health before: {summary(probe(a.port, 50, 0.01))}")
    attacker = subprocess.Popen(
        [sys.executable, __file__, str(a.port), str(a.pid), "--attacker", "--idle", str(a.idle),
         "--slow", str(a.slow), "--every", str(a.every), "--seconds", str(a.seconds)],
        stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    attack_end = started + a.seconds
    if select.select([attacker.stdout], [], [], 10)[0]:
        assert attacker.stdout.readline().strip() == "ready"
        ramp = time.monotonic() - started
        print(f"{a.idle} idle + {a.slow} slowloris connections open after {ramp:.1f} s; "
              f"held (reopened when closed) for {a.seconds:.0f} s")
    else:
        ramp = 10.0
        print(f"not all {a.idle + a.slow} connections could connect within 10 s; "
              f"measuring anyway while the attack goes on for {a.seconds:.0f} s")
    peak = [0]
    series = []
    sampling = [True]

    def sample():
        t0 = time.monotonic()
        while sampling[0]:
            rss = rss_kib(a.pid)
            peak[0] = max(peak[0], rss)
            if not series or time.monotonic() - t0 >= 5 * len(series):
                series.append(f"{time.monotonic() - t0:.0f}s:{rss / 1024:.1f}")
            time.sleep(0.25)

    sampler = threading.Thread(target=sample)
    sampler.start()
    window = max(1.0, a.seconds - ramp - 3)
    during = probe(a.port, a.probes, window / a.probes, until=attack_end - 1)
    print(f"/health during: {summary(during)}")
    stats = [json.loads(l) for l in attacker.stdout.read().splitlines() if l.startswith("{")]
    attacker.wait()
    sampling[0] = False
    sampler.join()
    print(f"RSS during: peak {peak[0] / 1024:.1f} MB; every 5 s (MB): {' '.join(series)}")
    print(f"attacker: {stats[0] if stats else 'no report'}")
    time.sleep(2)
    print(f"RSS after (2 s after the attack): {rss_kib(a.pid) / 1024:.1f} MB")
    print(f"/health after: {summary(probe(a.port, 50, 0.01))}")


if __name__ == "__main__":
    main()
