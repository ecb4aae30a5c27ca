#!/usr/bin/env bash
# Side-by-side HTTP proxy benchmark: Parapet's edge against nginx, haproxy and varnish, using
# ../shared/bench/http.sh (wrk; alternating servers; pinned and unpinned modes).
#
#   bench/http.sh [http.sh options...]      e.g. bench/http.sh --scenarios c --no-h2
#
# Builds the release binary, starts Parapet with its edge on 127.0.0.2:18002 and a proxied record
# for bench.test pointing at the benchmark's origin (127.0.0.1:18000, through an origin rule that
# sets the port), runs the shared script, and stops Parapet. The edge has a port of its own so
# that the shared script, which counts the CPU of every process listening on the target's port,
# counts Parapet's alone (on port 18000 it would add the origin's).
# Needs the anchors: sudo ../shared/bench/install-anchors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
cargo build --release --quiet
W=$(mktemp -d /tmp/parapet-httpbench.XXXXXX)
TOKEN=bench-$RANDOM$RANDOM
PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn target/release/parapet serve --data-dir "$W/data" \
  --api-listen 127.0.0.1:0 --http-listen 127.0.0.2:18002 --activation auto >"$W/out" 2>"$W/err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do grep -q 'api listening' "$W/out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^parapet: api listening on //p' "$W/out")/client/v4
[ -n "$API" ] || { cat "$W/err"; exit 1; }
ZONE=$(curl -sf "$API/zones" -H "Authorization: Bearer $TOKEN" -d '{"name":"bench.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
curl -sf "$API/zones/$ZONE/dns_records" -H "Authorization: Bearer $TOKEN" \
  -d '{"type":"A","name":"bench.test","content":"127.0.0.1","proxied":true}' >/dev/null
curl -sf -X PUT "$API/zones/$ZONE/rulesets/phases/http_request_origin/entrypoint" \
  -H "Authorization: Bearer $TOKEN" \
  -d '{"rules":[{"expression":"http.host eq \"bench.test\"","action":"route","action_parameters":{"origin":{"port":18000}}}]}' >/dev/null
sleep 1
"$SHARED/http.sh" --target parapet=127.0.0.2:18002 --h2-target parapet=127.0.0.2:18002 "$@"
