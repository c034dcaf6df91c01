#!/usr/bin/env python3
"""Cold start of the release binary, in Lambda mode and as a server.

Usage: bench/lambda.py [rounds]   (needs target/release/anteroom and cargo-lambda:
       pip install cargo-lambda, or CARGO_LAMBDA=path; bench/README.md has figures)

Lambda mode: `cargo lambda watch --only-lambda-apis` on 127.0.0.1 serves the Runtime
API; each round spawns the binary as Lambda spawns `bootstrap` (no arguments, a clean
environment, the schema in LAMBDA_TASK_ROOT, a migrated SQLite file) and at once sends
an HTTP API event through the emulator's invoke endpoint. Measured: spawn to the reply
of that first invocation (what a caller waits for on a cold start, minus AWS's own
sandbox set-up), the binary's own `init_ms` log field (process start to ready, what
lambda-perf calls init), and RSS after the invocation. Server mode: spawn
`anteroom serve` to the first `GET /health` 200. Plus the stripped binary's size.
Everything stays on 127.0.0.1 and stops by itself.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from proc import free_port, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", os.path.join(ROOT, "target/release/anteroom"))
SCHEMA = os.path.join(ROOT, "crates/anteroom/tests/fixtures/lambda/anteroom.toml")
EVENT = os.path.join(ROOT, "crates/anteroom/tests/fixtures/lambda/function-url-list-iam.json")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def wait_port(port, deadline=20):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


def median(xs):
    return statistics.median(xs)


def lambda_rounds(tool, work):
    port = free_port()
    emulator = subprocess.Popen(
        [tool, "lambda", "watch", "--only-lambda-apis", "--disable-cors",
         "--invoke-address", "127.0.0.1", "--invoke-port", str(port)],
        cwd=os.path.join(ROOT, "crates/anteroom"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        event = open(EVENT, "rb").read()
        first, init, rss = [], [], []
        for i in range(ROUNDS):
            db = os.path.join(work, f"l{i}.db")
            subprocess.run([BIN, "migrate", SCHEMA, "--database-url", f"sqlite://{db}"],
                           check=True, capture_output=True)
            shutil.copy(SCHEMA, os.path.join(work, "anteroom.toml"))
            env = {
                "PATH": os.environ.get("PATH", ""),
                "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{port}/.rt",
                "AWS_LAMBDA_FUNCTION_NAME": "_",
                "AWS_LAMBDA_FUNCTION_VERSION": "1",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
                "LAMBDA_TASK_ROOT": work,
                "DATABASE_URL": f"sqlite://{db}",
            }
            log = open(os.path.join(work, f"fn{i}.log"), "w+")
            started = time.monotonic()
            fn = subprocess.Popen([BIN], env=env, stdout=subprocess.DEVNULL, stderr=log)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations",
                data=event, method="POST")
            reply = json.load(urllib.request.urlopen(request, timeout=20))
            first.append((time.monotonic() - started) * 1000)
            assert reply["statusCode"] == 200, reply
            time.sleep(0.2)
            rss.append(rss_kib(fn.pid))
            fn.terminate()
            fn.wait()
            log.seek(0)
            for line in log:
                if "ready for Lambda invocations" in line:
                    init.append(json.loads(line)["fields"]["init_ms"])
        return first, init, rss
    finally:
        emulator.terminate()
        emulator.wait()


def server_rounds(work):
    first, rss = [], []
    for i in range(ROUNDS):
        port = free_port()
        db = os.path.join(work, f"s{i}.db")
        subprocess.run([BIN, "migrate", SCHEMA, "--database-url", f"sqlite://{db}"],
                       check=True, capture_output=True)
        started = time.monotonic()
        server = subprocess.Popen(
            [BIN, "serve", SCHEMA, "--port", str(port), "--database-url", f"sqlite://{db}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.001)
            if time.monotonic() - started > 20:
                raise SystemExit("the server did not answer")
        first.append((time.monotonic() - started) * 1000)
        time.sleep(0.2)
        rss.append(rss_kib(server.pid))
        server.terminate()
        server.wait()
    return first, rss


def main():
    tool = os.environ.get("CARGO_LAMBDA") or shutil.which("cargo-lambda")
    if not tool:
        raise SystemExit("cargo-lambda is not installed (pip install cargo-lambda, or CARGO_LAMBDA=path)")
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release")
    with tempfile.TemporaryDirectory() as work:
        stripped = os.path.join(work, "bootstrap")
        subprocess.run(["strip", "-o", stripped, BIN], check=True)
        size = os.path.getsize(stripped)
        first, init, lrss = lambda_rounds(tool, work)
        sfirst, srss = server_rounds(work)
    print(f"rounds: {ROUNDS}; binary {os.path.getsize(BIN) / 1e6:.1f} MB, stripped {size / 1e6:.1f} MB")
    print("| | median | min | max |")
    print("|---|---|---|---|")
    print(f"| Lambda: spawn to first invocation's reply | {median(first):.1f} ms | {min(first):.1f} | {max(first):.1f} |")
    print(f"| Lambda: init (process start to ready, `init_ms`) | {median(init):.0f} ms | {min(init)} | {max(init)} |")
    print(f"| Lambda: RSS after the first invocation | {median(lrss) / 1024:.1f} MB | {min(lrss) / 1024:.1f} | {max(lrss) / 1024:.1f} |")
    print(f"| server: spawn to first /health 200 | {median(sfirst):.1f} ms | {min(sfirst):.1f} | {max(sfirst):.1f} |")
    print(f"| server: idle RSS | {median(srss) / 1024:.1f} MB | {min(srss) / 1024:.1f} | {max(srss) / 1024:.1f} |")


if __name__ == "__main__":
    main()
