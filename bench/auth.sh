#!/usr/bin/env bash
# The cost of authentication: GET by id on SQLite without auth, with a
# verified RS256 token, and with a built-in account's token (whose account and
# token version are read on every request), in one run, same data, same machine.
# Usage: bench/auth.sh [seconds] [connections]   (needs wrk and openssl)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}
ROWS=${ROWS:-10000}
cargo build --release --quiet
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# An RS256 token signed with the test fixture key (exp in one hour).
b64() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64)
payload=$(printf '{"sub":"bench","aud":"bench","exp":%s}' $(( $(date +%s) + 3600 )) | b64)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign crates/anteroom/tests/fixtures/rsa_private.pem | b64)
export TOKEN="$header.$payload.$signature"

export BENCH_ACCOUNTS_SECRET=bench-accounts-secret-0123456789abcdefghij
run() { # schema, label, script
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -f "$work"/bench.db*
  ANTEROOM_LOG=warn ./target/release/anteroom serve "$1" --database-url "sqlite://$work/bench.db" --port "$port" 2>"$work/log" &
  pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.05; done
  python3 bench/seed.py "$base" "$ROWS"
  if [ "${4:-}" = account ]; then
    TOKEN=$(curl -fsS "$base/auth/signup" -H 'content-type: application/json' \
      -d '{"username":"bench","email":"bench@example.com","password":"bench-password-1"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  fi
  echo "== $2"
  ROWS=$ROWS TOKEN=$TOKEN wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$3" "$base" | grep -E 'Requests/sec|50%|99%|Non-2xx'
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
echo "machine: $(nproc) cores; SQLite; ${DURATION}s per run, ${CONNECTIONS} connections"
run bench/schema.toml "GET by id, no auth" bench/get_by_id.lua
run bench/auth_schema.toml "GET by id, RS256 bearer token (signature verified once per token, then cached until exp)" bench/get_by_id_auth.lua
run bench/accounts_schema.toml "GET by id, built-in account token (HS256 + the account's token version read per request)" bench/get_by_id_auth.lua account
