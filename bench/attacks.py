#!/usr/bin/env python3
"""Replays the attacks of issue 7 against the release binary and prints what
each one does now: status, time, and the server's RSS where memory is the point.

Usage: bench/attacks.py [sqlite|postgres|mysql ...]   (default: sqlite)
  postgres needs BENCH_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres),
  mysql needs BENCH_MYSQL_URL (e.g. mysql://root@127.0.0.1:3306/test).
Builds nothing: run `cargo build --release` first. Only 127.0.0.1 is contacted;
every attack is bounded in time. The connection floods (idle, slowloris) are in
bench/hostile.sh.
"""

import base64
import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "anteroom")
SECRET = "attacks-accounts-secret-0123456789abcdef"

SCHEMA = """
[app]
name = "attacks"

[auth.accounts]
secret_env = "ATTACKS_SECRET"

[resources.users]
rules = { list = "authenticated", read = "authenticated", create = "none", update = "role:admin", delete = "role:admin" }

[resources.things]
id = { type = "integer" }
fields.d  = { type = "date" }
fields.ts = { type = "timestamp" }
fields.j  = { type = "json" }
fields.s  = { type = "string" }
fields.t  = { type = "text" }
rules = { list = "public", read = "public", create = "public", update = "public", delete = "public" }

[resources.keys]
id = { type = "string", name = "key" }
fields.v = { type = "string" }
rules = { list = "public", read = "public", create = "public", update = "public", delete = "public" }
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def database(backend, work):
    if backend == "sqlite":
        return f"sqlite://{work}/attacks.db", None
    name = f"anteroom_attacks_{os.getpid()}"
    if backend == "postgres":
        admin = os.environ["BENCH_POSTGRES_URL"]
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=True)
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
        url = urllib.parse.urlparse(admin)._replace(path="/" + name).geturl()
        return url, lambda: subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])
    admin = urllib.parse.urlparse(os.environ["BENCH_MYSQL_URL"])
    mysql = ["mariadb", "-h", admin.hostname, "-P", str(admin.port or 3306), "-u", admin.username or "root"]
    subprocess.run(mysql + ["-e", f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"], check=True)
    url = admin._replace(path="/" + name).geturl()
    return url, lambda: subprocess.run(mysql + ["-e", f"DROP DATABASE IF EXISTS {name}"])


class Server:
    def __init__(self, backend, work, extra=()):
        self.port = free_port()
        path = os.path.join(work, "anteroom.toml")
        with open(path, "w") as f:
            f.write(SCHEMA)
        self.url, self.drop = database(backend, work)
        env = dict(os.environ, ATTACKS_SECRET=SECRET, ANTEROOM_LOG="warn")
        self.log = open(os.path.join(work, "server.log"), "w")
        self.proc = subprocess.Popen(
            [BINARY, "serve", path, "--port", str(self.port), "--database-url", self.url, *extra],
            env=env, stderr=self.log, stdout=subprocess.DEVNULL)
        for _ in range(200):
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the server did not start")

    def request(self, method, path, body=None, headers=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("content-type", "application/json")
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, payload, dict(response.getheaders())

    def rss_mib(self):
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()[0] if value.split() else "0"
        return int(fields["VmRSS"]) / 1024, int(fields["VmHWM"]) / 1024

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if self.drop:
            self.drop()


def show(label, status, payload, seconds=None, extra=""):
    text = payload.decode("utf-8", "replace")
    try:
        body = json.loads(text)
        text = body.get("code") or body.get("detail") or text
        if isinstance(body, dict) and "code" in body:
            text = f'{body["code"]}: {body.get("detail", "")}'
    except (ValueError, AttributeError):
        pass
    timing = f" in {seconds * 1000:.0f} ms" if seconds is not None else ""
    print(f"  {label}: {status}{timing} {text[:150]}{extra}")


def timed(server, method, path, body=None, headers=None):
    started = time.monotonic()
    status, payload, response_headers = server.request(method, path, body, headers)
    return status, payload, time.monotonic() - started, response_headers


def value_domain(server):
    print("2. value domain")
    deep = json.loads("[" * 40 + "]" * 40)
    for label, body in [
        ('d "+10000-01-01"', {"d": "+10000-01-01"}),
        ('ts "2016-12-31T23:59:60Z"', {"ts": "2016-12-31T23:59:60Z"}),
        ('ts "9999-12-31T23:59:59-05:00"', {"ts": "9999-12-31T23:59:59-05:00"}),
        ('d "-0001-01-01"', {"d": "-0001-01-01"}),
        ("json nested 40 deep", {"j": deep}),
    ]:
        status, payload, seconds, _ = timed(server, "POST", "/things", body)
        show(label, status, payload, seconds)
    status, payload, _ = server.request("GET", "/things?count=true&limit=1")
    print(f"  rows stored: {json.loads(payload)['total']}")


def like_bombs(server, backend):
    print("3. like/ilike")
    rows = [{"s": "ab" * 100, "t": "ab" * 500} for _ in range(1000)]
    for i in range(0, 1000, 500):
        server.request("POST", "/things", rows[i:i + 500])
    bomb = "%" + "a_" * 950 + "c%"
    quoted = urllib.parse.quote(bomb)
    status, payload, seconds, _ = timed(server, "GET", f"/things?t[ilike]={quoted}")
    show("t[ilike]=%(a_)x950c% over 1,000 rows", status, payload, seconds)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        bombs = [pool.submit(timed, server, "GET", f"/things?t[ilike]={quoted}") for _ in range(4)]
        health = pool.submit(timed, server, "GET", "/health")
        statuses = [b.result()[0] for b in bombs]
        h = health.result()
    print(f"  four in parallel: {statuses}; /health meanwhile {h[0]} in {h[2] * 1000:.0f} ms")
    status, payload, seconds, _ = timed(server, "GET", "/things?s[ilike]=" + "_" * 20000)
    show("s[ilike]= 20 KB of _", status, payload, seconds)
    status, payload, seconds, _ = timed(server, "GET", "/things?t[like]=" + "x" * 50001)
    show("t[like]= 50,001 characters", status, payload, seconds)
    for i in range(4):
        server.request("POST", "/things", [{"s": "slow", "t": "a" * 4000}] * 250)
    slow = urllib.parse.quote("%a" * 14 + "%" + "a" * 150 + "b")
    status, payload, seconds, _ = timed(server, "GET", f"/things?s=slow&t[like]={slow}&count=true")
    show("the costliest pattern within the bounds, over 1,000 rows of 4,000 a's", status, payload, seconds)


def query_limits(server):
    print("also: query values that reached database limits")
    for label, path in [
        ("NUL in a filter value", "/things?s=a%00b"),
        ("NUL in a like pattern", "/things?s[like]=%25%00"),
        ("NUL in a cursor", "/things?sort=s&cursor=" + base64.urlsafe_b64encode(
            json.dumps({"s": "s,id", "v": ["a\u0000", 1]}).encode()).decode().rstrip("=")),
        ("33 [in] lists of 40 values", "/things?" + "&".join(["s[in]=" + ",".join(["x"] * 40)] * 33)),
        ("1,001 [in] values", "/things?s[in]=" + ",".join(["x"] * 1001)),
    ]:
        status, payload, seconds, _ = timed(server, "GET", path)
        show(label, status, payload, seconds)


def big_pages(server):
    print("also: pages bounded in bytes (100 rows of 1 MB text)")
    for i in range(100):
        server.request("POST", "/things", {"s": "big", "t": "x" * 1_000_000})
    before = server.rss_mib()
    status, payload, seconds, _ = timed(server, "GET", "/things?limit=1000&s=big")
    page = json.loads(payload)
    after = server.rss_mib()
    print(f"  GET ?limit=1000: {status} in {seconds * 1000:.0f} ms, {len(page['items'])} rows, "
          f"{len(payload) / 1e6:.1f} MB, next_cursor {'set' if page['next_cursor'] else 'null'}; "
          f"RSS {before[0]:.0f} → {after[0]:.0f} MiB, peak {after[1]:.0f} MiB")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: timed(server, "GET", "/things?limit=1000&s=big"), range(4)))
    time.sleep(1)
    settled = server.rss_mib()
    print(f"  four concurrent: {[r[0] for r in replies]}, slowest {max(r[2] for r in replies) * 1000:.0f} ms; "
          f"peak RSS {settled[1]:.0f} MiB, RSS a second later {settled[0]:.0f} MiB")


def signup(server, name):
    status, payload, _ = server.request("POST", "/auth/signup", {
        "username": name, "email": f"{name}@example.com", "password": "attack-password-1"})
    body = json.loads(payload)
    return body["user"]["id"], body["token"]


def login(server, name):
    _, payload, _ = server.request("POST", "/auth/login", {"username": name, "password": "attack-password-1"})
    return json.loads(payload)["token"]


def accounts(server, backend):
    print("also: account writes and tokens")
    signup(server, "alice")
    bob, _ = signup(server, "bob")
    auth = lambda t: {"authorization": f"Bearer {t}"}
    root, _ = signup(server, "root")
    boss, _ = signup(server, "boss")
    victim, victim_token = signup(server, "victim")
    quote = {"mysql": "`"}.get(backend, '"')
    sql = f"UPDATE {quote}users{quote} SET role = 'admin' WHERE username IN ('root', 'boss')"
    if backend == "sqlite":
        import sqlite3
        db = sqlite3.connect(server.url.removeprefix("sqlite://"))
        db.execute(sql)
        db.commit()
        db.close()
    elif backend == "postgres":
        subprocess.run(["psql", server.url, "-qc", sql], check=True)
    else:
        u = urllib.parse.urlparse(server.url)
        subprocess.run(["mariadb", "-h", u.hostname, "-P", str(u.port or 3306), "-u", u.username or "root",
                        u.path.lstrip("/"), "-e", sql], check=True)
    root_token, boss_token = login(server, "root"), login(server, "boss")
    for method in ["PATCH", "PUT"]:
        status, payload, seconds, _ = timed(server, method, f"/users/{bob}",
                                            {"username": "Alice", "email": "bob@example.com"}, auth(root_token))
        show(f'{method} /users/bob {{"username":"Alice"}} while alice exists', status, payload, seconds)
    status, payload, seconds, _ = timed(server, "PATCH", f"/users/{boss}", {"role": "user"}, auth(root_token))
    show("root demotes boss", status, payload, seconds)
    status, payload, seconds, _ = timed(server, "DELETE", f"/users/{victim}", headers=auth(boss_token))
    show("demoted admin's old token: DELETE /users/{victim}", status, payload, seconds)
    server.request("DELETE", f"/users/{victim}", headers=auth(root_token))
    status, payload, seconds, _ = timed(server, "GET", "/users", headers=auth(victim_token))
    show("deleted account's token: GET /users (authenticated)", status, payload, seconds)


def create_only_put(server):
    print("also: If-None-Match: * on PUT")
    server.request("PUT", "/keys/k1", {"v": "original"})
    status, payload, seconds, _ = timed(server, "PUT", "/keys/k1", {"v": "overwrite"}, {"if-none-match": "*"})
    show("PUT existing key with If-None-Match: *", status, payload, seconds)
    _, payload, _ = server.request("GET", "/keys/k1")
    print(f"  stored value: {json.loads(payload)['v']}")


def request_ids(server):
    print("also: X-Request-Id")
    for label, value in [("10 KB", "a" * 10_000), ("forged log line", "x\r\nINFO forged"), ("tab", "a\tb"),
                         ("well formed", "client-id.42")]:
        try:
            status, _, headers = server.request("GET", "/health", headers={"x-request-id": value})
            echoed = headers.get("x-request-id", "")
            print(f"  {label}: {status}, echoed id {echoed[:60]!r} ({'kept' if echoed == value else 'replaced'})")
        except (ValueError, http.client.HTTPException) as e:
            print(f"  {label}: the client library refuses to send it ({e.__class__.__name__})")


def check_schemas():
    print("also: check and migrate on colliding names (see tests/migrations.rs for every backend)")
    for label, text in [
        ("a.b_c + a_b.c unique", "[resources.a]\nfields.b_c={type='string',unique=true}\n[resources.a_b]\nfields.c={type='string',unique=true}\n"),
        ("p.q_r_id + p_q.r_id refs", "[resources.r]\nfields.n={type='string'}\n[resources.q_r]\nfields.n={type='string'}\n[resources.p]\nfields.q_r_id={type='ref',to='q_r'}\n[resources.q]\nfields.n={type='string'}\n[resources.p_q]\nfields.r_id={type='ref',to='r'}\n"),
        ("mutual refs a.b_id, b.a_id", "[resources.a]\nfields.b_id={type='ref',to='b'}\n[resources.b]\nfields.a_id={type='ref',to='a'}\n"),
    ]:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "anteroom.toml")
            with open(path, "w") as f:
                f.write("[app]\nname='c'\n" + text)
            out = subprocess.run([BINARY, "check", path], capture_output=True, text=True)
            print(f"  {label}: check exit {out.returncode}: {(out.stdout + out.stderr).strip()[:150]}")


def main():
    backends = sys.argv[1:] or ["sqlite"]
    print(f"anteroom attacks, release binary, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    check_schemas()
    for backend in backends:
        print(f"\n=== {backend}")
        with tempfile.TemporaryDirectory() as work:
            server = Server(backend, work, ["--body-limit", "2000000"])
            try:
                value_domain(server)
                like_bombs(server, backend)
                query_limits(server)
                big_pages(server)
                accounts(server, backend)
                create_only_put(server)
                request_ids(server)
            finally:
                server.stop()


if __name__ == "__main__":
    main()
