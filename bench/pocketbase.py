#!/usr/bin/env python3
"""Sets up PocketBase with the data of bench/schema.toml, for bench/compare.sh.

Usage: bench/pocketbase.py POCKETBASE_BIN DATA_DIR PORT ROWS
Starts `pocketbase serve` on 127.0.0.1:PORT (its pid on stdout's first line), creates a
superuser, the `majors` and `students` collections (a unique index on email, a relation
to majors, an index on major + is_undergraduate, public list/view/create rules, as
Anteroom's bench schema), and seeds 20 majors and ROWS students through the batch API.
Student i has the id `s` + i (14 digits, zero-padded): bench/pb_*.lua address them so.
The server keeps running; the caller stops it.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

binary, data, port, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
base = f"http://127.0.0.1:{port}"
EMAIL, PASSWORD = "bench@example.com", "bench-password-123"

subprocess.run([binary, "superuser", "upsert", EMAIL, PASSWORD, "--dir", data],
               check=True, capture_output=True)
server = subprocess.Popen([binary, "serve", "--http", f"127.0.0.1:{port}", "--dir", data],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(server.pid, flush=True)


def call(method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = token
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read()[:500]!r}")


for _ in range(200):
    try:
        urllib.request.urlopen(base + "/api/health", timeout=1).read()
        break
    except OSError:
        time.sleep(0.05)
token = call("POST", "/api/collections/_superusers/auth-with-password",
             {"identity": EMAIL, "password": PASSWORD})["token"]
call("PATCH", "/api/settings", {"batch": {"enabled": True, "maxRequests": 1000, "timeout": 30}}, token)
majors = call("POST", "/api/collections", {
    "name": "majors", "type": "base",
    "listRule": "", "viewRule": "", "createRule": "",
    "fields": [{"name": "name", "type": "text", "required": True}],
}, token)
call("POST", "/api/collections", {
    "name": "students", "type": "base",
    "listRule": "", "viewRule": "", "createRule": "",
    "fields": [
        {"name": "name", "type": "text", "max": 255},
        {"name": "email", "type": "email", "required": True},
        {"name": "is_undergraduate", "type": "bool"},
        {"name": "major_id", "type": "relation", "collectionId": majors["id"], "maxSelect": 1},
        {"name": "created", "type": "autodate", "onCreate": True},
        {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
    ],
    "indexes": [
        "CREATE UNIQUE INDEX idx_students_email ON students (email)",
        "CREATE INDEX idx_students_major_level ON students (major_id, is_undergraduate)",
    ],
}, token)


def batch(requests):
    call("POST", "/api/batch", {"requests": requests}, token)


batch([{"method": "POST", "url": "/api/collections/majors/records",
        "body": {"id": f"m{i:014d}", "name": f"Major {i}"}} for i in range(1, 21)])
for start in range(0, rows, 1000):
    batch([{"method": "POST", "url": "/api/collections/students/records",
            "body": {"id": f"s{i + 1:014d}", "name": f"Student {i}",
                     "email": f"s{i}@bench.example.edu", "is_undergraduate": i % 3 != 0,
                     "major_id": f"m{i % 20 + 1:014d}"}}
           for i in range(start, min(rows, start + 1000))])
check = call("GET", f"/api/collections/students/records?perPage=1&filter=(major_id='m{1:014d}')")
print(f"pocketbase: {check['totalItems']} students of major 1", file=sys.stderr)
