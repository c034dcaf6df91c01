#!/usr/bin/env bash
# Hostile connections against the release binary on 127.0.0.1, bounded in time:
# 1,000 idle connections and 1,000 slowloris ones (a header line every 9 s),
# reopened whenever the server closes them, while /health latency and the
# server's RSS are measured before, during and after (bench/hostile.py).
# Usage: bench/hostile.sh [seconds] [idle] [slowloris]
#   BIN=path/to/anteroom   measure another build (default: target/release/anteroom, built here)
#   extra serve flags in SERVE_ARGS, e.g. SERVE_ARGS="--max-clients 500"
#   FD_LIMIT=1024          start the server under `ulimit -n 1024` (soft and hard)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_HELD=${1:-45}
IDLE=${2:-1000}
SLOW=${3:-1000}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=./target/release/anteroom
fi
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores; $(uname -srm); the attacker, the prober and the server share it"
echo "anteroom $("$BIN" --version | cut -d' ' -f2) ($BIN), SQLite, ${SERVE_ARGS:-default limits}, fd limit ${FD_LIMIT:-$(ulimit -n)}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# `exec` keeps the pid: $pid is the server itself.
# shellcheck disable=SC2086
ANTEROOM_LOG=warn sh -c '[ -z "$0" ] || ulimit -n "$0" || exit 1; exec "$@"' "${FD_LIMIT:-}" \
  "$BIN" serve bench/schema.toml --database-url "sqlite://$work/bench.db" \
  --port "$port" ${SERVE_ARGS:-} 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done
python3 bench/hostile.py "$port" "$pid" --idle "$IDLE" --slow "$SLOW" --seconds "$SECONDS_HELD"
echo "server log: $(wc -l <"$work/log") lines, of which $(grep -c 'accept error' "$work/log" || true) accept errors"
sed -n '1,5p' "$work/log" | cut -c1-200
