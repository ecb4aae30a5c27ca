#!/usr/bin/env bash
# Cache hits from the disk tier against hits from the memory tier (and nginx proxy_cache), with
# ../shared/bench/http.sh (wrk; alternating servers; the same run).
#
#   bench/cache-disk.sh [http.sh options...]      e.g. bench/cache-disk.sh --rounds 5
#
# Starts two Parapet nodes in front of the benchmark's origin: "memory" (the default memory tier,
# no disk tier) on 127.0.0.2:18000 and "disk" (no memory tier: every hit is read from its file,
# which the page cache holds) on 127.0.0.3:18000; runs scenarios a and b (hits of 1 KiB and
# 100 KiB, HTTP/1.1); prints the table and the ratio disk / memory per mode and scenario.
# Needs the anchors: sudo ../shared/bench/install-anchors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}
cargo build --release --quiet
W=$(mktemp -d /tmp/parapet-diskbench.XXXXXX)
TOKEN=bench-$RANDOM$RANDOM
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$W"' EXIT

start() { # name ip config
  mkdir -p "$W/$1"
  printf '%s\n' "$3" >"$W/$1/parapet.toml"
  PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn target/release/parapet serve --data-dir "$W/$1/data" \
    --config "$W/$1/parapet.toml" --api-listen 127.0.0.1:0 --http-listen "$2:18000" \
    --activation auto >"$W/$1/out" 2>"$W/$1/err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q 'api listening' "$W/$1/out" 2>/dev/null && break; sleep 0.1; done
  local api
  api=$(sed -n 's/^parapet: api listening on //p' "$W/$1/out")/client/v4
  [ "$api" != /client/v4 ] || { cat "$W/$1/err"; exit 1; }
  local zone
  zone=$(curl -sf "$api/zones" -H "Authorization: Bearer $TOKEN" -d '{"name":"bench.test"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
  curl -sf "$api/zones/$zone/dns_records" -H "Authorization: Bearer $TOKEN" \
    -d '{"type":"A","name":"bench.test","content":"127.0.0.1","proxied":true}' >/dev/null
}
start memory 127.0.0.2 'cache_disk_bytes = 0'
start disk 127.0.0.3 'cache_memory_bytes = 0
cache_disk_bytes = 10737418240'
sleep 1
"$SHARED/http.sh" --target memory=127.0.0.2:18000 --target disk=127.0.0.3:18000 \
  --scenarios "a b" --no-h2 "$@" | tee "$W/table"
echo
echo "disk tier / memory tier (median requests/s):"
awk '$5 == "memory" { m[$1" "$3" "$4] = $6 } $5 == "disk" { d[$1" "$3" "$4] = $6 }
  END { for (k in m) if (k in d && m[k] > 0) printf "  %-20s %.2f\n", k, d[k] / m[k] }' "$W/table"
