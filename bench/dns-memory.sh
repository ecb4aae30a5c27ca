#!/usr/bin/env bash
# DNS memory and load time with one large zone: generates the shared bench zone
# (`../shared/bench/dns.sh --records N --gen-only`), imports it through the API, waits until
# DNS answers from it, adds one record, and prints Parapet's RSS at each step.
# Response rate limiting is off, so that polling with dig is never slowed by it.
# Needs target/release/parapet, curl, jq, dig, bc.
#
#   bench/dns-memory.sh [RECORDS]     (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-1000000}
BIN=${BIN:-target/release/parapet}
W=$(mktemp -d /tmp/dns-memory.XXXX)
../shared/bench/dns.sh --records "$RECORDS" --gen-only "$W/gen" >/dev/null
PARAPET_API_TOKEN=tok PARAPET_LOG=warn "$BIN" serve --data-dir "$W/d" --api-listen 127.0.0.1:18390 \
  --dns-listen 127.0.0.1:18393 --activation auto --dns-rrl-rate 0 > "$W/out" 2> "$W/err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18390/ && break; sleep 0.1; done
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$PID/status; }
hwm() { awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$PID/status; }
API=http://127.0.0.1:18390/client/v4
AUTH="Authorization: Bearer tok"
Z=$(curl -s $API/zones -H "$AUTH" -d '{"name":"bench.test"}' | jq -r .result.id)
echo "records in file: $(grep -c '' "$W/gen/bench.test.zone"), idle: $(rss)"
t0=$(date +%s.%N)
curl -s --max-time 600 "$API/zones/$Z/dns_records/import" -H "$AUTH" -F "file=@$W/gen/bench.test.zone" | jq -c '.result // .errors'
t1=$(date +%s.%N)
echo "imported in $(echo "$t1 - $t0" | bc) s: $(rss) (peak $(hwm))"
for i in $(seq 600); do dig +short @127.0.0.1 -p 18393 h$((RECORDS - 1)).bench.test | grep -q . && break; sleep 0.5; done
t2=$(date +%s.%N)
echo "served after $(echo "$t2 - $t0" | bc) s: $(rss)"
sleep 10
echo "served, 10 s later: $(rss) (peak $(hwm))"
t0=$(date +%s.%N)
API_TIME=$(curl -s -o /dev/null -w "%{time_total}" "$API/zones/$Z/dns_records" -H "$AUTH" -d '{"type":"A","name":"new1","content":"192.0.2.1"}')
for i in $(seq 6000); do dig +short @127.0.0.1 -p 18393 new1.bench.test A | grep -q . && break; sleep 0.01; done
t1=$(date +%s.%N)
echo "a change visible in DNS after $(echo "$t1 - $t0" | bc) s (the API answered in $API_TIME s): $(rss)"
sleep 10
echo "10 s later: $(rss) (peak $(hwm))"
