#!/usr/bin/env bash
# Fuzz every example against its own OpenAPI document: validate the document
# (openapi-spec-validator), then run schemathesis with every check but
# positive_data_acceptance, a fixed seed and a bounded number of examples per
# operation, with valid credentials where the example has auth (schemathesis
# also sends its own unauthenticated requests, which must get the documented
# 401/403). Any finding fails. Needs target/release/anteroom; 127.0.0.1 only.
# Usage: ci/fuzz.sh [example …]   FUZZ_EXAMPLES=10 FUZZ_SEED=1
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/anteroom
VENV=${FUZZ_VENV:-target/fuzz-venv}
EXAMPLES=${FUZZ_EXAMPLES:-10}
SEED=${FUZZ_SEED:-1}
[ -x "$BIN" ] || { echo "build the release binary first: cargo build --release"; exit 1; }
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r ci/requirements.txt
fi
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

export ACCOUNTS_SECRET=fuzz-accounts-secret-0123456789abcdefghij
# office-hours: the student app's API key and the advisors' JWT secret.
export APP_TOKEN=fuzz-student-app-token-0123456789abcdef
export ADVISOR_JWT_SECRET=fuzz-advisor-jwt-secret-0123456789abcdef
export RECORDS_JWT_SECRET=fuzz-records-secret-0123456789abcdefghijk

# A bearer token for an example, or nothing for those without auth.
token_for() {
  case $1 in
    accounts | accounts-second)
      curl -fsS "$2/auth/signup" -H 'content-type: application/json' \
        -d "{\"username\":\"$1\",\"email\":\"$1@example.com\",\"password\":\"fuzzer-password-1\"}" |
        "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])' ;;
    courses)
      "$VENV/bin/python" - <<'PY'
import time, jwt
key = open("examples/courses/keys/demo_private.pem").read()
print(jwt.encode({"sub": "fuzzer", "roles": ["author"], "iss": "https://auth.example.com",
                  "aud": "courses", "exp": int(time.time()) + 3600}, key, algorithm="RS256"))
PY
      ;;
    office-hours-advisor)
      ADVISOR_JWT_SECRET=$ADVISOR_JWT_SECRET "$VENV/bin/python" examples/office-hours/advisor-token.py fuzzer advisor ;;
    records)
      "$VENV/bin/python" -c 'import os,time,jwt; print(jwt.encode({"sub":"fuzzer","iss":"records-demo","exp":int(time.time())+3600}, os.environ["RECORDS_JWT_SECRET"], algorithm="HS256"))' ;;
    *) ;;
  esac
}

# fuzz NAME BASE [schemathesis options…]
fuzz() {
  local name=$1 base=$2
  shift 2
  if ! "$VENV/bin/schemathesis" --config-file ci/schemathesis.toml run "$base/openapi.json" \
      --checks all --exclude-checks positive_data_acceptance \
      --max-examples "$EXAMPLES" --seed "$SEED" --workers 1 --no-color \
      "$@" >"$work/$name.out" 2>&1; then
    status=1
    # The failures, without schemathesis' own long tracebacks.
    cut -c1-400 "$work/$name.out" | sed -n '/FAILURES\|ERRORS/,$p'
  fi
  echo "$name: $(grep -E '[0-9]+ generated' "$work/$name.out" | tail -1 | sed 's/^ *//')"
}

status=0
for example in ${@:-office-hours users accounts courses records}; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  seed=()
  [ -f "examples/$example/seed.json" ] && seed=(--seed "examples/$example/seed.json")
  ANTEROOM_LOG=warn "$BIN" serve "examples/$example/anteroom.toml" "${seed[@]}" \
    --database-url "sqlite://$work/$example.db" --port "$port" 2>"$work/$example.log" &
  pid=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do curl -fsS "$base/health" >/dev/null 2>&1 && break; sleep 0.05; done
  echo "== $example"
  curl -fsS "$base/openapi.json" -o "$work/$example.json"
  "$VENV/bin/openapi-spec-validator" "$work/$example.json"
  headers=()
  token=$(token_for "$example" "$base")
  [ -n "$token" ] && headers=(--header "Authorization: Bearer $token")
  # The student app's key: everything but serving and managing the queue.
  [ "$example" = office-hours ] && headers=(--header "x-api-key: $APP_TOKEN")
  started=$(date +%s)
  # Routes that revoke the caller's own token are fuzzed on their own, last,
  # with a token of their own: otherwise the fuzzer logs itself out.
  revoking=(--exclude-path /auth/logout-all --exclude-path /auth/password)
  # Event streams (text/event-stream) stay open until something changes or
  # for 30 minutes: a fuzzer reading whole bodies would wait on each one.
  # tests/queue_streams.rs covers them, failure modes included.
  streams=(--exclude-path-regex '/events$')
  fuzz "$example" "$base" "${revoking[@]}" "${streams[@]}" "${headers[@]}"
  if [ "$example" = office-hours ]; then
    # An advisor's token: the queue's serving and managing routes.
    fuzz "$example-advisor" "$base" --include-path-regex '^/queues/' "${streams[@]}" \
      --header "Authorization: Bearer $(token_for office-hours-advisor "$base")"
  fi
  if [ "$example" = accounts ]; then
    fuzz "$example-revoking" "$base" --include-path /auth/logout-all --include-path /auth/password \
      --phases examples,coverage,fuzzing \
      --header "Authorization: Bearer $(token_for accounts-second "$base")"
  fi
  echo "$example: $(( $(date +%s) - started )) s"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
exit $status
