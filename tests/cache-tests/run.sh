#!/usr/bin/env bash
# The public HTTP cache test suite (http-cache-tests from npm, whose results cache-tests.fyi
# publishes) run against Parapet's edge cache, with the suite's own origin behind the edge, and
# compared with the reverse-proxy and CDN results the suite ships.
#
#   tests/cache-tests/run.sh [MAX_REQUIRED_FAILURES]   (default: the best published count)
#   CACHE_TESTS_ID=test-id tests/cache-tests/run.sh      (one test, with its exchanges)
#   CACHE_TESTS_KEEP=FILE                                 (keeps the results JSON)
#
# - installs the suite (pinned version) under target/cache-tests, reused while the version stands;
# - starts the suite's origin on 127.0.0.1 and $PARAPET_BIN (default target/debug/parapet) with
#   its edge on 127.0.0.2, a zone cachetests.test whose apex is proxied to the origin (an origin
#   rule gives the origin's port) and one cache rule, "cache everything, respect the origin's
#   headers" (the suite's URLs have no file extension, which Cloudflare's defaults never cache)
#   "and respect strong ETags" (the suite's client accepts gzip, and a compressed copy's ETag is
#   weak: the suite checks that the origin's ETag is stored and used as the origin sent it);
# - runs the suite's client with the test host resolved to the edge (tests/cache-tests/resolve.cjs),
#   prints the comparison (tests/cache-tests/summary.mjs) and fails if Parapet fails more required
#   tests than allowed. Every process started is stopped by PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PARAPET_BIN=${PARAPET_BIN:-$ROOT/target/debug/parapet}
SUITE_VERSION=0.4.5
HOST=cachetests.test
DIR=$ROOT/target/cache-tests
SUITE=$DIR/node_modules/http-cache-tests

installed=$(node -p "require('$SUITE/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$SUITE_VERSION" ]; then
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --no-audit --no-fund --install-strategy=nested \
    "http-cache-tests@$SUITE_VERSION" >/dev/null
fi

W=$(mktemp -d /tmp/parapet-cache-tests.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT=$(free_port)
EDGE_PORT=$(free_port)

(cd "$SUITE" && exec env npm_config_port="$ORIGIN_PORT" npm_config_protocol=http \
  npm_config_pidfile="$W/server.pid" node server/server.mjs) >"$W/origin.log" 2>&1 &
PIDS+=($!)
TOKEN=cache-tests-$RANDOM$RANDOM
PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn "$PARAPET_BIN" serve --data-dir "$W/data" \
  --api-listen 127.0.0.1:0 --http-listen "127.0.0.2:$EDGE_PORT" --activation auto \
  >"$W/parapet.out" 2>"${CACHE_TESTS_ERR:-$W/parapet.err}" &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'api listening' "$W/parapet.out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^parapet: api listening on //p' "$W/parapet.out")/client/v4
[ "$API" != /client/v4 ] || { cat "$W/parapet.err" >&2; exit 1; }
call() { # METHOD PATH [JSON]
  curl -sf -X "$1" "$API$2" -H "Authorization: Bearer $TOKEN" ${3:+-d "$3"}
}
ZONE=$(call POST /zones "{\"name\":\"$HOST\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
call POST "/zones/$ZONE/dns_records" \
  "{\"type\":\"A\",\"name\":\"$HOST\",\"content\":\"127.0.0.1\",\"proxied\":true}" >/dev/null
call PUT "/zones/$ZONE/rulesets/phases/http_request_origin/entrypoint" \
  "{\"rules\":[{\"expression\":\"true\",\"action\":\"route\",\"action_parameters\":{\"origin\":{\"port\":$ORIGIN_PORT}}}]}" >/dev/null
call PUT "/zones/$ZONE/rulesets/phases/http_request_cache_settings/entrypoint" \
  '{"rules":[{"expression":"true","action":"set_cache_settings","action_parameters":{"cache":true,"respect_strong_etags":true}}]}' >/dev/null
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --resolve "$HOST:$EDGE_PORT:127.0.0.2" \
    "http://$HOST:$EDGE_PORT/index.html" || true)
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || { echo "the edge does not reach the suite's origin ($code)" >&2; exit 1; }

client() {
  (cd "$SUITE" && CACHE_TESTS_HOST=$HOST CACHE_TESTS_ADDR=127.0.0.2 \
    npm_config_base="http://$HOST:$EDGE_PORT" npm_config_id="${CACHE_TESTS_ID:-}" \
    npm_package_config_id= timeout 600 node --no-warnings --require "$HERE/resolve.cjs" cli.mjs)
}
if [ -n "${CACHE_TESTS_ID:-}" ]; then
  # One test, with the requests and responses it saw.
  client
  exit 0
fi
client >"$W/results.json"
[ -z "${CACHE_TESTS_KEEP:-}" ] || cp "$W/results.json" "$CACHE_TESTS_KEEP"
node "$HERE/summary.mjs" "$SUITE" "$W/results.json" "$@"
