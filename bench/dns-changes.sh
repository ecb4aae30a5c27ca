#!/usr/bin/env bash
# How long a change takes to reach DNS with many records: imports 100 zones of 10,000 A records
# (1 million) through the API, then adds a record three times and polls dig until it answers.
# Prints the time of each change and Parapet's RSS. Needs target/release/parapet, jq, dig, bc.
#
#   bench/dns-changes.sh
set -euo pipefail
ZONES=$(mktemp -d /tmp/dns-changes-zones.XXXX)
python3 - "$ZONES" <<'PY'
import sys
for z in range(100):
    with open(f"{sys.argv[1]}/z{z:02}.zone", "w") as f:
        f.write(f"$ORIGIN z{z:02}.bench.\n$TTL 3600\n")
        for i in range(10000):
            f.write(f"h{i} A 198.18.{i // 256 % 256}.{i % 256}\n")
PY
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/parapet}
W=$(mktemp -d /tmp/multitest.XXXX)
PARAPET_API_TOKEN=tok PARAPET_LOG=warn "$BIN" serve --data-dir "$W/d" --api-listen 127.0.0.1:18380 --dns-listen 127.0.0.1:18353 --activation auto --dns-rrl-rate 0 > "$W/out" 2> "$W/err" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W" "$ZONES"' EXIT
sleep 1
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$PID/status; }
API=http://127.0.0.1:18380/client/v4
t0=$(date +%s.%N)
for z in $(seq -w 0 99); do
  Z=$(curl -s $API/zones -H "Authorization: Bearer tok" -d "{\"name\":\"z$z.bench\"}" | jq -r .result.id)
  curl -s --max-time 300 "$API/zones/$Z/dns_records/import" -H "Authorization: Bearer tok" -F "file=@$ZONES/z$z.zone" >/dev/null
done
t1=$(date +%s.%N)
echo "100 zones x 10000 records imported in $(echo "$t1 - $t0" | bc) s, $(rss)"
for i in $(seq 120); do dig +short @127.0.0.1 -p 18353 h9999.z99.bench A | grep -q . && break; sleep 1; done
echo "served: $(rss)"
for n in 1 2 3; do
  t0=$(date +%s.%N)
  curl -s "$API/zones/$Z/dns_records" -H "Authorization: Bearer tok" -d "{\"type\":\"A\",\"name\":\"new$n\",\"content\":\"192.0.2.1\"}" >/dev/null
  for i in $(seq 2000); do dig +short @127.0.0.1 -p 18353 new$n.z99.bench A | grep -q . && break; sleep 0.01; done
  t1=$(date +%s.%N)
  echo "change $n visible in DNS after $(echo "$t1 - $t0" | bc) s, $(rss)"
done
