"""Seeds the bench schema through the API: 20 majors and ROWS students, bulk POSTs of 1000.

Usage: python3 bench/seed.py BASE_URL ROWS
"""
import json
import sys
import urllib.request

base, rows = sys.argv[1], int(sys.argv[2])


def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()


post("/majors", [{"name": f"Major {i}"} for i in range(1, 21)])
for start in range(0, rows, 1000):
    post("/students", [{"name": f"Student {i}", "email": f"s{i}@bench.example.edu",
                        "is_undergraduate": i % 3 != 0, "major_id": i % 20 + 1}
                       for i in range(start, min(rows, start + 1000))])
