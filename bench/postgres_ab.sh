#!/usr/bin/env bash
# PostgreSQL reads, two builds side by side, alternating rounds, with
# `pgbench -S -M prepared` at the same client concurrency in every round.
# Usage: BASELINE=path/to/other/anteroom bench/postgres_ab.sh [seconds] [connections] [rounds]
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres (a server; databases are created)
#   ANTEROOM_MAX_CONNECTIONS pool size of both builds (default 4, the CLI default)
# Needs wrk and pgbench. Hits only the URL's server and 127.0.0.1; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-5}
CONNECTIONS=${2:-32}
ROUNDS=${3:-3}
: "${BASELINE:?set BASELINE to the build to compare against}"
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export ANTEROOM_MAX_CONNECTIONS=${ANTEROOM_MAX_CONNECTIONS:-4}
cargo build --release --quiet
url_with_db() { python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/"+sys.argv[2], query="sslmode=disable")))' "$1" "$2"; }
declare -A BIN=([current]=./target/release/anteroom [baseline]=$BASELINE) PID PORT
cleanup() {
  for k in "${!PID[@]}"; do kill "${PID[$k]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in ab_current ab_baseline ab_pgbench; do psql "$PG" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true; done
}
trap cleanup EXIT
for k in current baseline; do
  psql "$PG" -qc "DROP DATABASE IF EXISTS ab_$k WITH (FORCE)" -c "CREATE DATABASE ab_$k" 2>/dev/null
  PORT[$k]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ANTEROOM_LOG=warn "${BIN[$k]}" serve bench/schema.toml --database-url "$(url_with_db "$PG" "ab_$k")" --port "${PORT[$k]}" 2>/dev/null &
  PID[$k]=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:${PORT[$k]}/health" >/dev/null 2>&1 && break; sleep 0.05; done
  python3 bench/seed.py "http://127.0.0.1:${PORT[$k]}" 10000 >/dev/null
done
psql "$PG" -qc "DROP DATABASE IF EXISTS ab_pgbench WITH (FORCE)" -c "CREATE DATABASE ab_pgbench" 2>/dev/null
pgbench -q -i -s 1 "$(url_with_db "$PG" ab_pgbench)" >/dev/null 2>&1
echo "machine: $(nproc) cores; ${DURATION}s runs, ${CONNECTIONS} clients, pool ${ANTEROOM_MAX_CONNECTIONS}, ${ROUNDS} rounds"
for round in $(seq 1 "$ROUNDS"); do
  for k in current baseline; do
    for scenario in get_by_id list_filtered; do
      out=$(ROWS=10000 wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "bench/$scenario.lua" "http://127.0.0.1:${PORT[$k]}")
      echo "round $round $k $scenario $(echo "$out" | grep -Eo 'Requests/sec: +[0-9.]+' | awk '{print $2}') req/s p99 $(echo "$out" | grep -E '^ +99%' | awk '{print $2}') $(echo "$out" | grep -E 'Non-2xx|Socket' | tr '\n' ' ')"
    done
  done
  echo "round $round pgbench $(pgbench -S -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" "$(url_with_db "$PG" ab_pgbench)" 2>/dev/null | grep -Eo 'tps = [0-9.]+' | head -1)"
done
for k in current baseline; do
  echo "$k: rss $(ps -o rss= -p "${PID[$k]}" | tr -d ' ') KiB, $(psql "$PG" -tAc "SELECT count(*) FROM pg_stat_activity WHERE datname = 'ab_$k'") connections open"
done
