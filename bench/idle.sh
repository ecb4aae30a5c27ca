#!/usr/bin/env bash
# Resident memory with many idle keep-alive visitor connections: Parapet's edge against nginx
# as a reverse proxy, same origin, same run.
#
#   bench/idle.sh [CONNECTIONS]        (default 10000)
#
# Each client connection makes one request (so it is a kept-alive connection, not a bare TCP
# handshake), waits for the answer, and then stays idle while the next one is opened. Reports, per proxy, the resident memory of all its processes
# before and with the connections open, and the cost per connection.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
want=$((N * 2 + 1000)); hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] || want=$hard
ulimit -n "$want"
cargo build --release --quiet
W=$(mktemp -d /tmp/parapet-idle.XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/www"
echo ok >"$W/www/index.html"
cat >"$W/origin.conf" <<EOF
pid $W/origin.pid; error_log $W/origin.err warn; worker_processes 1;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18300; root $W/www; } }
EOF
WORKERS=$(nproc)
cat >"$W/nginx.conf" <<EOF
pid $W/nginx.pid; error_log $W/nginx.err warn; worker_processes $WORKERS;
worker_rlimit_nofile $want;
events { worker_connections $((N + 1000)); }
http { access_log off; keepalive_timeout 120s;
  upstream origin { server 127.0.0.1:18300; keepalive 64; }
  server { listen 127.0.0.1:18301;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
nginx -c "$W/origin.conf" -g 'daemon off;' & PIDS+=($!)
nginx -c "$W/nginx.conf" -g 'daemon off;' & NGINX=$!; PIDS+=($NGINX)
TOKEN=idle-$RANDOM$RANDOM
# Every benchmark connection comes from 127.0.0.1: lift the per-client limit.
echo 'edge_max_connections_per_ip = 0' >"$W/parapet.toml"
PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn target/release/parapet serve --config "$W/parapet.toml" --data-dir "$W/data" \
  --api-listen 127.0.0.1:0 --http-listen 127.0.0.2:18300 --activation auto >"$W/out" 2>"$W/err" &
PARAPET=$!; PIDS+=($PARAPET)
for _ in $(seq 100); do grep -q 'api listening' "$W/out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^parapet: api listening on //p' "$W/out")/client/v4
ZONE=$(curl -sf "$API/zones" -H "Authorization: Bearer $TOKEN" -d '{"name":"idle.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
curl -sf "$API/zones/$ZONE/dns_records" -H "Authorization: Bearer $TOKEN" \
  -d '{"type":"A","name":"idle.test","content":"127.0.0.1","proxied":true}' >/dev/null
sleep 1
rss() { # total resident KiB of a process and its children
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $total
}
measure() { # name pid port
  local before after
  for _ in $(seq 50); do curl -sf -o /dev/null -H "Host: idle.test" "http://$3/" && break; sleep 0.1; done
  before=$(rss "$2")
  python3 - "$3" "$N" "$W/$1.ready" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, ready = int(sys.argv[2]), sys.argv[3]
conns = []
req = b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n"
for _ in range(n):
    s = socket.create_connection((host, int(port)))
    s.settimeout(10)
    s.sendall(req)
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 200"), data[:40]
    conns.append(s)
open(ready, "w").close()
time.sleep(30)
PY
  local client=$!
  for _ in $(seq 600); do [ -f "$W/$1.ready" ] && break; sleep 0.1; done
  sleep 1
  after=$(rss "$2")
  kill $client 2>/dev/null || true; wait $client 2>/dev/null || true
  printf '%-8s %6d connections  RSS before %7d KiB  with them %7d KiB  per connection %5.1f KiB\n' \
    "$1" "$N" "$before" "$after" "$(echo "($after - $before) / $N" | bc -l)"
}
measure nginx "$NGINX" 127.0.0.1:18301
measure parapet "$PARAPET" 127.0.0.2:18300
