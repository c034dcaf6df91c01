#!/usr/bin/env bash
# Load test of the release binary on 127.0.0.1, bounded in time.
# Usage: bench/run.sh [seconds-per-run] [connections]
# Needs wrk (Debian: apt-get install wrk). Prints one block per scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
ROWS=${ROWS:-10000}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ANTEROOM_LOG=warn ./target/release/anteroom serve bench/schema.toml \
  --database-url "sqlite://$work/bench.db" --port "$port" 2>"$work/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.05; done

# Seed: 20 majors, ROWS students, in bulk requests of 1000.
python3 - "$base" "$ROWS" <<'PY'
import json, sys, urllib.request
base, rows = sys.argv[1], int(sys.argv[2])
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
post("/majors", [{"name": f"Major {i}"} for i in range(1, 21)])
for start in range(0, rows, 1000):
    post("/students", [{"name": f"Student {i}", "email": f"s{i}@bench.example.edu", "is_undergraduate": i % 3 != 0, "major_id": i % 20 + 1} for i in range(start, min(rows, start + 1000))])
print(f"seeded {rows} students")
PY

echo "machine: $(nproc) cores; $(uname -srm); wrk and the server share the machine"
echo "anteroom $(./target/release/anteroom --version | cut -d' ' -f2), SQLite, ${DURATION}s per run, ${CONNECTIONS} connections, 2 wrk threads"
for scenario in get_by_id list_filtered post; do
  echo
  echo "== $scenario"
  ROWS=$ROWS wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "bench/$scenario.lua" "$base" \
    | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx|Socket errors'
done
echo
echo "rss after load: $(ps -o rss= -p $pid | tr -d ' ') KiB"
