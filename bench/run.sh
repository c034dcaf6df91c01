#!/usr/bin/env bash
# Load test of the release binary on 127.0.0.1, bounded in time.
# Usage: bench/run.sh [seconds-per-run] [connections]
#   BACKENDS="sqlite postgres mysql" (default: sqlite, plus postgres/mysql when their URLs are set)
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres  (a server; databases are created)
#   BENCH_MYSQL_URL=mysql://root@127.0.0.1:3306/test
#   ROWS=10000 students; ANTEROOM_MAX_CONNECTIONS pool size (default 4, the CLI default)
# Needs wrk (Debian: apt-get install wrk); PostgreSQL runs also need pgbench.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
ROWS=${ROWS:-10000}
export ANTEROOM_MAX_CONNECTIONS=${ANTEROOM_MAX_CONNECTIONS:-4}
default_backends="sqlite"
[ -n "${BENCH_POSTGRES_URL:-}" ] && default_backends="$default_backends postgres"
[ -n "${BENCH_MYSQL_URL:-}" ] && default_backends="$default_backends mysql"
BACKENDS=${BACKENDS:-$default_backends}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

url_with_db() { python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path="/"+sys.argv[2])))' "$1" "$2"; }

echo "machine: $(nproc) cores; $(uname -srm); wrk and the server share the machine"
echo "anteroom $(./target/release/anteroom --version | cut -d' ' -f2), ${DURATION}s per run, ${CONNECTIONS} connections, 2 wrk threads, pool ${ANTEROOM_MAX_CONNECTIONS}"

for backend in $BACKENDS; do
  case $backend in
    sqlite) url="sqlite://$work/bench.db" ;;
    postgres)
      psql "$BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS anteroom_bench WITH (FORCE)" -c "CREATE DATABASE anteroom_bench"
      url=$(url_with_db "$BENCH_POSTGRES_URL" anteroom_bench) ;;
    mysql)
      python3 - "$BENCH_MYSQL_URL" <<'PY'
import subprocess, sys, urllib.parse as u
p = u.urlparse(sys.argv[1])
subprocess.run(["mariadb", "-h", p.hostname, "-P", str(p.port or 3306), "-u", p.username or "root",
                "-e", "DROP DATABASE IF EXISTS anteroom_bench; CREATE DATABASE anteroom_bench"], check=True)
PY
      url=$(url_with_db "$BENCH_MYSQL_URL" anteroom_bench) ;;
    *) echo "unknown backend $backend"; exit 1 ;;
  esac
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  ANTEROOM_LOG=warn ./target/release/anteroom serve bench/schema.toml --database-url "$url" --port "$port" 2>"$work/log" &
  pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.05; done
  python3 bench/seed.py "$base" "$ROWS"
  echo
  echo "######## $backend: $ROWS students"
  for scenario in get_by_id list_filtered post; do
    echo "== $backend $scenario"
    ROWS=$ROWS wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "bench/$scenario.lua" "$base" \
      | grep -E 'Requests/sec|Latency|50%|99%|Non-2xx|Socket errors' | tee "$work/$scenario.out"
    [ "$scenario" = get_by_id ] && cp "$work/$scenario.out" "$work/get_$backend.out"
  done
  echo "rss after load: $(ps -o rss= -p $pid | tr -d ' ') KiB"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

  if [ "$backend" = postgres ] && command -v pgbench >/dev/null; then
    # The physical limit of one indexed row on this machine: pgbench select-only, same concurrency.
    psql "$BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS anteroom_pgbench WITH (FORCE)" -c "CREATE DATABASE anteroom_pgbench"
    pgurl=$(url_with_db "$BENCH_POSTGRES_URL" anteroom_pgbench)
    pgbench -q -i -s 1 "$pgurl" >/dev/null 2>&1
    echo "== pgbench -S -c $CONNECTIONS -j 2 -T $DURATION (prepared statements)"
    pgbench -S -M prepared -c "$CONNECTIONS" -j 2 -T "$DURATION" "$pgurl" 2>/dev/null | grep -E "^tps|latency average" | tee "$work/pgbench.out"
    tps=$(grep -Eo 'tps = [0-9.]+' "$work/pgbench.out" | head -1 | cut -d' ' -f3)
    rps=$(grep -Eo 'Requests/sec: +[0-9.]+' "$work/get_postgres.out" | awk '{print $2}')
    python3 -c "import sys; r,t=float(sys.argv[1]),float(sys.argv[2]); print(f'GET by id = {r:.0f} req/s = {100*r/t:.1f}% of pgbench -S {t:.0f} tps (target >= 35%)')" "$rps" "$tps"
    psql "$BENCH_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS anteroom_pgbench WITH (FORCE)"
  fi
done
