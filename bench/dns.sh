#!/usr/bin/env bash
# Side-by-side DNS benchmark: Parapet against Knot and NSD on the same zone and queries, using
# ../shared/bench/dns.sh (dnsperf; alternating servers; pinned and unpinned modes).
#
#   bench/dns.sh [dns.sh options...]      e.g. bench/dns.sh --rounds 3 --duration 10
#
# Builds the release binary, generates the benchmark zone, starts Parapet on 127.0.0.1:35353
# with that zone imported through the API and response rate limiting off (as the anchors run),
# runs the shared script with the anchors loading the zone as Parapet exports it (so that
# `bench/dns.sh --check` compares the same SOA and apex NS records), and stops Parapet.
# Needs the anchors: sudo ../shared/bench/install-anchors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
PORT=${PARAPET_DNS_PORT:-35353}
cargo build --release --quiet
W=$(mktemp -d /tmp/parapet-dnsbench.XXXXXX)
"$SHARED/dns.sh" --gen-only "$W/gen" >/dev/null
TOKEN=bench-$RANDOM$RANDOM
PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn target/release/parapet serve --data-dir "$W/data" \
  --api-listen 127.0.0.1:0 --dns-listen 127.0.0.1:$PORT --activation auto --dns-rrl-rate 0 >"$W/out" 2>"$W/err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do grep -q 'api listening' "$W/out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^parapet: api listening on //p' "$W/out")/client/v4
[ -n "$API" ] || { cat "$W/err"; exit 1; }
ZONE=$(curl -sf "$API/zones" -H "Authorization: Bearer $TOKEN" -d '{"name":"bench.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
curl -sf "$API/zones/$ZONE/dns_records/import" -H "Authorization: Bearer $TOKEN" -F "file=@$W/gen/bench.test.zone" >/dev/null
# The anchors load the zone as Parapet serves it: its records, and the SOA and apex NS records
# Parapet manages itself (an import keeps the records and leaves those out, as Cloudflare's does).
curl -sf "$API/zones/$ZONE/dns_records/export" -H "Authorization: Bearer $TOKEN" >"$W/gen/served.zone"
sleep 1
ZONE_FILE="$W/gen/served.zone" QUERY_FILE="$W/gen/queries.txt" "$SHARED/dns.sh" --target parapet=127.0.0.1:$PORT "$@"
