#!/usr/bin/env bash
# The waiting room under load, release binary on 127.0.0.1, bounded in time.
# Usage: bench/queue.sh [seconds-per-run] [connections]
#   BACKENDS="sqlite postgres mysql" (default: sqlite, plus postgres/mysql when their URLs are set)
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres   BENCH_MYSQL_URL=mysql://root@127.0.0.1:3306/test
#   WAITING=100000 entries in the measured line; LEAVERS=1000 of them leave before the lookups
#   LINES=20 lines the spread join+leave pairs run on
# For each backend: seeds WAITING + 40,000 students, fills line 1 with WAITING joins (16
# Python clients), has LEAVERS random entries leave, measures position lookups (2,000
# sequential GETs: p50/p99), then wrk runs joins on line 3 (joins/s), join+leave pairs
# on line 2 (pairs/s, errors), the same pairs spread over LINES lines (10,000 more
# students, consecutive ones in majors 10, 11, … in turn) and next on line 1
# (claims/s). Needs wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
WAITING=${WAITING:-100000}
LEAVERS=${LEAVERS:-1000}
PAIRS_MEMBERS=10000
JOIN_MEMBERS=30000
SPREAD_MEMBERS=10000
LINES=${LINES:-20}
export ANTEROOM_MAX_CONNECTIONS=${ANTEROOM_MAX_CONNECTIONS:-4}
default_backends="sqlite"
[ -n "${BENCH_POSTGRES_URL:-}" ] && default_backends="$default_backends postgres"
[ -n "${BENCH_MYSQL_URL:-}" ] && default_backends="$default_backends mysql"
BACKENDS=${BACKENDS:-$default_backends}
BIN=${BIN:-./target/release/anteroom}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
[ -n "${BIN_PREBUILT:-}" ] || cargo build --release --quiet
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

url_with_db() { python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/"+sys.argv[2])))' "$1" "$2"; }
rate() { grep -E 'Requests/sec|Latency |50%|99%|Non-2xx|Socket errors|requests in'; }

echo "machine: $(nproc) cores; $(uname -srm); wrk, the server and the database share it"
echo "anteroom $($BIN --version | cut -d' ' -f2), ${CONNECTIONS} connections, 2 wrk threads, pool ${ANTEROOM_MAX_CONNECTIONS}"

for backend in $BACKENDS; do
  case $backend in
    sqlite) url="sqlite://$work/queue.db" ;;
    postgres)
      psql "$BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS anteroom_queue_bench WITH (FORCE)" -c "CREATE DATABASE anteroom_queue_bench"
      url=$(url_with_db "$BENCH_POSTGRES_URL" anteroom_queue_bench) ;;
    mysql)
      python3 - "$BENCH_MYSQL_URL" <<'PY'
import subprocess, sys, urllib.parse as u
p = u.urlparse(sys.argv[1])
subprocess.run(["mariadb", "-h", p.hostname, "-P", str(p.port or 3306), "-u", p.username or "root",
                "-e", "DROP DATABASE IF EXISTS anteroom_queue_bench; CREATE DATABASE anteroom_queue_bench"], check=True)
PY
      url=$(url_with_db "$BENCH_MYSQL_URL" anteroom_queue_bench) ;;
    *) echo "unknown backend $backend"; exit 1 ;;
  esac
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ANTEROOM_LOG=warn $BIN serve bench/queue_schema.toml --database-url "$url" --port "$port" 2>"$work/log" &
  pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.05; done
  echo
  echo "######## $backend"
  python3 bench/queue.py seed "$base" 1 "$WAITING" 1
  python3 bench/queue.py seed "$base" $((WAITING + 1)) $((WAITING + PAIRS_MEMBERS)) 2
  python3 bench/queue.py seed "$base" $((WAITING + PAIRS_MEMBERS + 1)) $((WAITING + PAIRS_MEMBERS + JOIN_MEMBERS)) 3
  spread_first=$((WAITING + PAIRS_MEMBERS + JOIN_MEMBERS + 1))
  python3 bench/queue.py seed "$base" "$spread_first" $((spread_first + SPREAD_MEMBERS - 1)) "10-$((9 + LINES))"
  python3 bench/queue.py fill "$base" 1 "$WAITING" 16
  python3 bench/queue.py ids "$base" 1 "$work/ids"
  python3 bench/queue.py leave "$base" "$work/ids" "$LEAVERS" 1
  echo "$LEAVERS random entries left the line"
  python3 bench/queue.py positions "$base" "$work/ids" 2000 2
  echo "== $backend joins on line 3 (${DURATION}s, each a new member)"
  FIRST=$((WAITING + PAIRS_MEMBERS + 1)) LAST=$((WAITING + PAIRS_MEMBERS + JOIN_MEMBERS)) THREADS=2 \
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/queue_join.lua "$base" | rate
  echo "== $backend join+leave pairs on line 2 (${DURATION}s)"
  FIRST=$((WAITING + 1)) LAST=$((WAITING + PAIRS_MEMBERS)) THREADS=2 \
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/queue_pairs.lua "$base" | rate
  echo "== $backend join+leave pairs spread over $LINES lines (${DURATION}s)"
  FIRST=$spread_first LAST=$((spread_first + SPREAD_MEMBERS - 1)) THREADS=2 \
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/queue_pairs.lua "$base" | rate
  echo "== $backend next on line 1 (${DURATION}s)"
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/queue_next.lua "$base" | rate
  python3 bench/queue.py positions "$base" "$work/ids" 2000 3
  echo "server RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
