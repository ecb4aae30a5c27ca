#!/usr/bin/env bash
# Many records at one name: for each N given, imports a zone file holding N TXT records at one
# name through the API, then polls dig until that name answers, then adds BATCH more records
# (default 10000) at that name in one batch request. Prints the import's time, the time until
# DNS serves the name, the batch's time, and Parapet's RSS. Needs target/release/parapet, jq,
# dig, bc.
#
#   bench/dns-one-name.sh 32000 200000 1000000
set -euo pipefail
[ $# -gt 0 ] || set -- 32000 200000 1000000
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/parapet}
W=$(mktemp -d /tmp/dns-one-name.XXXX)
PARAPET_API_TOKEN=tok PARAPET_LOG=warn "$BIN" serve --data-dir "$W/d" --api-listen 127.0.0.1:18381 --dns-listen 127.0.0.1:18354 --http-listen 127.0.0.2:0 --dns-rrl-rate 0 > "$W/out" 2> "$W/err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do grep -q 'api listening' "$W/out" 2>/dev/null && break; sleep 0.1; done
API=http://127.0.0.1:18381/client/v4
for n in "$@"; do
  Z=$(curl -s $API/zones -H "Authorization: Bearer tok" -d "{\"name\":\"n$n.bench\"}" | jq -r .result.id)
  { echo "\$ORIGIN n$n.bench."; echo '$TTL 300'; seq -f 'many TXT "v%.0f"' 1 "$n"; } > "$W/zone"
  t0=$(date +%s.%N)
  added=$(curl -s --max-time 900 "$API/zones/$Z/dns_records/import" -H "Authorization: Bearer tok" -F "file=@$W/zone" | jq -c '.result.recs_added // .errors')
  t1=$(date +%s.%N)
  for _ in $(seq 18000); do
    dig +ignore +norec +time=2 +tries=1 @127.0.0.1 -p 18354 "many.n$n.bench" TXT | grep -q 'status: NOERROR' && break
    sleep 0.05
  done
  t2=$(date +%s.%N)
  { printf '{"posts":['; seq -f '{"type":"TXT","name":"many","content":"b%.0f"}' 1 "${BATCH:-10000}" | paste -sd,; printf ']}'; } > "$W/batch"
  t3=$(date +%s.%N)
  posted=$(curl -s --max-time 900 "$API/zones/$Z/dns_records/batch" -H "Authorization: Bearer tok" --data-binary "@$W/batch" | jq -c '(.result.posts | length) // .errors')
  t4=$(date +%s.%N)
  printf '%8d records at one name: added %s, import %.2f s, served after %.2f s; batch of %s posts %.2f s; RSS %s MiB\n' \
    "$n" "$added" "$(echo "$t1 - $t0" | bc)" "$(echo "$t2 - $t0" | bc)" "$posted" "$(echo "$t4 - $t3" | bc)" \
    "$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$PID/status)"
done
