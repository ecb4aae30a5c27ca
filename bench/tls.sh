#!/usr/bin/env bash
# Side-by-side TLS benchmark: Parapet's edge against nginx, with the same ECDSA P-256 certificate,
# the same origin and the same clients, alternating servers in the same run (as
# ../shared/bench/http.sh), several rounds, median ratio parapet/nginx per metric.
#
#   bench/tls.sh [--rounds N (3)] [--duration S (5)] [--port P (18443)] [--keep]
#
# Needs target/release/parapet (cargo build --release; this script does not build), nginx, wrk,
# h2load and openssl. Addresses (loopback only; the edge reaches the origin on the port the
# visitor used, ssl = flexible: plain HTTP):
#   origin  nginx, plain HTTP   127.0.0.1:P   /bench.css, 1 KiB, Cache-Control: max-age=3600
#                               (stub_status on 127.0.0.1:P+1 counts origin requests)
#   parapet --https-listen      127.0.0.2:P   zone bench.test, proxied A bench.test -> 127.0.0.1,
#                               the certificate uploaded as a custom certificate through the API
#   nginx   listen ssl          127.0.0.3:P   proxy_cache to the origin; worker_processes auto,
#                               ssl_session_cache shared + tickets on (the defaults an operator keeps)
#           twin, logging       127.0.0.3:P+1 same server with an access log of $ssl_session_reused,
#                               used only by the checks below, never measured
# Metrics (each connection sends SNI bench.test and asks for the cached /bench.css, HTTP/1.1):
#   full     full TLS 1.3 handshakes/s: h2load --h1 -t2 -c 256 -n 256 in back-to-back batches
#            for S seconds; each h2load client makes one connection with one request, and a new
#            client has no session, so every handshake is a full one. (wrk -H 'Connection: close'
#            does NOT do this: it keeps the session across reconnects and resumes, and so does
#            h2load when a client reconnects.) The rate is connections / the time h2load reports
#            (its start-up between batches excluded).
#   resumed  resumed TLS 1.3 handshakes/s (PSK + ECDHE with a session ticket): h2load --h1 -t2
#            -c 64 -n 3200 -H 'Connection: close', batches for S seconds; each client reconnects
#            after each answer offering its last ticket: 98% resumed (a batch's first 64 are full).
#            (openssl s_time -new/-reuse cannot be used: OpenSSL 3.0's s_time sends no SNI, and
#            Parapet, like Cloudflare, refuses a handshake without one.)
#   hit      cache-hit throughput: wrk -t1 -c16 over HTTPS keep-alive, 16 handshakes in all.
#            wrk connects to the server's address through a Lua resolve hook, so the URL's host
#            bench.test stays the SNI and the Host.
# The checks before measuring print, per server: TLS version, cipher, key exchange, certificate
# fingerprint (must be the same), whether a saved session is resumed ("Reused"), the cache status
# of two requests (must end in HIT), and the loopback bytes per connection of a 'full' and a
# 'resumed' batch (a resumed handshake carries no certificate chain: about its size less); and,
# from the twin's log, how many handshakes each client mode really resumed.
# Per run: rate, server CPU (user+sys of all the server's processes, origin excluded) as % of one
# core and in us per connection/request, errors, origin requests.
# Clients and servers share the machine's cores. An OpenSSL 3.0 client handshake (h2load) costs
# more CPU than a server one, so the clients are often the limit and the rates converge; the
# server CPU per handshake is then the number that separates the two.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 DURATION=5 PORT=18443 KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift;; --duration) DURATION=$2; shift;; --port) PORT=$2; shift;;
    --keep) KEEP=1;; -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $DURATION =~ ^[1-9][0-9]*$ && $PORT =~ ^[0-9]+$ ]] || { echo "bad option value" >&2; exit 2; }
export PATH=$PATH:/usr/sbin
BIN=${PARAPET_BIN:-target/release/parapet}
for tool in nginx wrk h2load openssl curl python3 bc; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
"$BIN" serve --help 2>/dev/null | grep -q -- --https-listen || { echo "$BIN missing or without --https-listen: cargo build --release" >&2; exit 1; }

ORIGIN=127.0.0.1 PARAPET_IP=127.0.0.2 NGINX_IP=127.0.0.3 STATUS_PORT=$((PORT + 1)) TWIN_PORT=$((PORT + 1))
FULL_BATCH=256 RESUME_CLIENTS=64 RESUME_PER_CLIENT=50 H2LOAD_THREADS=2 HIT_WRK="-t1 -c16"
W=$(mktemp -d /tmp/parapet-tlsbench.XXXXXX); chmod 755 "$W"
PIDS=()
cleanup() {
  set +e
  local p c kids=()
  for p in "${PIDS[@]}"; do for c in $(pgrep -P "$p"); do kids+=("$c"); done; done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done  # nginx masters stop their workers
  for p in "${PIDS[@]}" "${kids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ "$KEEP" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT; trap 'exit 130' INT TERM

busy() { # % of all CPUs in use over one second
  local a b tot=0 i; read -ra a </proc/stat; sleep 1; read -ra b </proc/stat
  for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo $((100 - 100 * (b[4] - a[4]) / (tot > 0 ? tot : 1)))
}
pre=$(busy); echo "machine busy before start: ${pre}% (load $(cut -d' ' -f1-3 /proc/loadavg)), $(nproc) CPUs"
[ "$pre" -lt 10 ] || echo "WARNING: ${pre}% CPU already in use by other processes: results will be noisy" >&2

# ---- one certificate for both: a CA and an ECDSA P-256 leaf for bench.test ----
mkdir -p "$W/www" "$W/ncache" "$W/logs"
(
  cd "$W"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
  openssl req -x509 -new -key ca.key -subj "/CN=Parapet TLS bench CA" -days 2 -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key 2>/dev/null
  openssl req -new -key leaf.key -subj "/CN=bench.test" -out leaf.csr
  printf '%s\n' subjectAltName=DNS:bench.test basicConstraints=critical,CA:FALSE \
    keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile leaf.ext -out leaf.pem 2>/dev/null
  cat leaf.pem ca.pem >chain.pem   # both servers send leaf + CA
)
CHAIN_BYTES=$(( $(openssl x509 -in "$W/leaf.pem" -outform DER | wc -c) + $(openssl x509 -in "$W/ca.pem" -outform DER | wc -c) ))

# ---- origin and nginx ----
head -c 1024 /dev/urandom | base64 -w 64 | head -c 1024 >"$W/www/bench.css"   # 1 KiB of text
cat >"$W/origin.conf" <<EOF
pid $W/origin.pid; error_log $W/logs/origin.err warn; worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; keepalive_requests 1000000;
  server { listen $ORIGIN:$PORT; root $W/www; add_header Cache-Control "max-age=3600"; }
  server { listen $ORIGIN:$STATUS_PORT; location = /status { stub_status; } }
}
EOF
LOCATION='location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_set_header Host $host; proxy_cache bench; add_header X-Cache $upstream_cache_status; }'
# nginx 1.22's default ssl_protocols lacks TLSv1.3 (1.23.4 added it): an operator sets it.
cat >"$W/nginx.conf" <<EOF
pid $W/nginx.pid; error_log $W/logs/nginx.err warn; worker_processes auto;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; keepalive_requests 1000000;
  ssl_certificate $W/chain.pem; ssl_certificate_key $W/leaf.key;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
  proxy_cache_path $W/ncache levels=1:2 keys_zone=bench:16m inactive=1h use_temp_path=off;
  upstream origin { server $ORIGIN:$PORT; keepalive 32; }
  log_format tls '\$ssl_session_reused \$ssl_protocol \$connection_requests \$upstream_cache_status';
  server { listen $NGINX_IP:$PORT ssl http2; server_name bench.test; $LOCATION }
  server { listen $NGINX_IP:$TWIN_PORT ssl http2; server_name bench.test; access_log $W/logs/twin.log tls; $LOCATION }
}
EOF
nginx -t -q -c "$W/origin.conf"; nginx -t -q -c "$W/nginx.conf"
nginx -c "$W/origin.conf" -g 'daemon off;' >"$W/logs/origin.out" 2>&1 & PIDS+=($!)
nginx -c "$W/nginx.conf" -g 'daemon off;' >"$W/logs/nginx.out" 2>&1 & NGINX=$!; PIDS+=($NGINX)

# ---- Parapet ----
TOKEN=tls-$RANDOM$RANDOM
echo 'edge_max_connections_per_ip = 0' >"$W/parapet.toml"   # every client is 127.0.0.1
PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn "$BIN" serve --config "$W/parapet.toml" --data-dir "$W/data" \
  --api-listen 127.0.0.1:0 --https-listen $PARAPET_IP:$PORT --activation auto >"$W/logs/parapet.out" 2>"$W/logs/parapet.err" &
PARAPET=$!; PIDS+=($PARAPET)
for _ in $(seq 100); do grep -q 'api listening' "$W/logs/parapet.out" 2>/dev/null && break; sleep 0.1; done
API=$(sed -n 's/^parapet: api listening on //p' "$W/logs/parapet.out")
[ -n "$API" ] || { echo "parapet did not start" >&2; cat "$W/logs/parapet.err" >&2; exit 1; }
api() { curl -sS -f -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$API/client/v4$1" --data-binary "$2"; }
ZONE=$(api /zones '{"name":"bench.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
api "/zones/$ZONE/dns_records" '{"type":"A","name":"bench.test","content":"127.0.0.1","proxied":true}' >/dev/null
api "/zones/$ZONE/custom_certificates" "$(python3 -c 'import json,sys; print(json.dumps({"certificate": open(sys.argv[1]).read(), "private_key": open(sys.argv[2]).read()}))' "$W/chain.pem" "$W/leaf.key")" >/dev/null

# ---- helpers ----
SERVERS=(parapet nginx)
ip_of() { if [ "$1" = parapet ]; then echo $PARAPET_IP; else echo $NGINX_IP; fi; }
pid_of() { if [ "$1" = parapet ]; then echo $PARAPET; else echo $NGINX; fi; }
URL=https://bench.test:$PORT/bench.css
get() { # get IP [PORT] -> headers of GET /bench.css, verified against the CA
  curl -sS -o /dev/null -D - --max-time 5 --cacert "$W/ca.pem" --resolve "bench.test:${2:-$PORT}:$1" "https://bench.test:${2:-$PORT}/bench.css"
}
rss() { # resident KiB of a process and its children
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $total
}
cpu_ticks() { # user+sys clock ticks of a process and its children (nginx: master + workers)
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo $total
}
lo_bytes() { cat /sys/class/net/lo/statistics/tx_bytes; }
origin_reqs() { curl -s --max-time 5 "http://$ORIGIN:$STATUS_PORT/status" | awk 'NR == 3 {print $3}'; }
cat >"$W/resolve.lua" <<'EOF'
-- wrk: connect to $WRK_CONNECT instead of resolving the URL's host (which stays the SNI and Host)
local target = os.getenv("WRK_CONNECT")
function wrk.resolve(host, service) wrk.addrs = wrk.lookup(target, service) end
EOF
h2load_batches() { # IP PORT OUT CLIENTS REQUESTS [h2load args] -> "conns seconds errors"; DURATION s (0: 1 batch)
  local ip=$1 port=$2 out=$3 c=$4 n=$5; shift 5
  local start=${EPOCHREALTIME/./} done=0 us=0 errs=0 b t ok bad
  for b in $(seq 10000); do
    timeout $((DURATION + 60)) h2load --h1 -t$H2LOAD_THREADS -c "$c" -n "$n" --connect-to="$ip:$port" "$@" \
      "https://bench.test:$port/bench.css" >"$out.$b" 2>&1 || true
    t=$(awk '/^finished in/ {v = $3; sub(/,$/, "", v); m = 1e6
          if (v ~ /ms$/) m = 1e3; else if (v ~ /us$/) m = 1; sub(/[a-z]+$/, "", v); printf "%d", v * m}' "$out.$b")
    read -r ok bad < <(awk '/^requests:/ {ok = $8; e = $10 + $12 + $14} /^status codes:/ {ok -= $5 + $7 + $9; e += $5 + $7 + $9}
          END {print ok + 0, e + 0}' "$out.$b")
    [ -n "$t" ] && [ "$ok" -gt 0 ] || { echo "h2load failed against $ip:$port:" >&2; tail -n 5 "$out.$b" >&2; errs=$((errs + n)); break; }
    done=$((done + ok)) us=$((us + t)) errs=$((errs + bad))
    [ $(( ${EPOCHREALTIME/./} - start )) -lt $((DURATION * 1000000)) ] || break
  done
  echo "$done $(echo "$us / 1000000" | bc -l) $errs"
}

# ---- checks: same certificate, TLS 1.3, resumption, cache hits ----
for s in "${SERVERS[@]}"; do
  ok=0; for _ in $(seq 100); do get "$(ip_of "$s")" >/dev/null 2>&1 && { ok=1; break; }; sleep 0.1; done
  [ $ok = 1 ] || { echo "$s does not answer on $(ip_of "$s"):$PORT" >&2; get "$(ip_of "$s")" >&2 || true; tail -n 5 "$W"/logs/*.err >&2; exit 1; }
done
echo "checks:"
req() { printf 'GET /bench.css HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n'; }
for s in "${SERVERS[@]}"; do
  ip=$(ip_of "$s")
  hs=$(req | timeout 10 openssl s_client -connect "$ip:$PORT" -servername bench.test -CAfile "$W/ca.pem" \
         -sess_out "$W/$s.sess" -ign_eof 2>/dev/null || true)
  proto=$(awk '/^New, / {gsub(/,/, ""); print $2, $5}' <<<"$hs")
  kx=$(awk -F': ' '/^Server Temp Key/ {print $2}' <<<"$hs" | cut -d, -f1)
  verify=$(awk -F': ' '/Verify return code/ {print $2; exit}' <<<"$hs")
  fp=$(openssl x509 -noout -fingerprint -sha256 <<<"$hs" 2>/dev/null | cut -d= -f2 | tr -d : | cut -c1-16)
  again=$(req | timeout 10 openssl s_client -connect "$ip:$PORT" -servername bench.test -sess_in "$W/$s.sess" \
            -ign_eof 2>/dev/null | awk '/^(New|Reused), / {print $1}' | tr -d , || true)
  h1=$(get "$ip" | tr -d '\r' | awk 'tolower($1) ~ /^(cf-cache-status|x-cache):$/ {print $2}')
  h2=$(get "$ip" | tr -d '\r' | awk 'tolower($1) ~ /^(cf-cache-status|x-cache):$/ {print $2}')
  hdr=$(curl -s -o /dev/null -w '%{size_header}' --http1.1 --max-time 5 --cacert "$W/ca.pem" --resolve "bench.test:$PORT:$ip" "$URL")
  printf '  %-8s %s, %s, cert sha256 %s..., verify: %s; saved session: %s; cache: %s then %s; HTTP/1.1 header %s bytes\n' \
    "$s" "${proto:-no TLS}" "${kx:-?}" "${fp:-?}" "${verify:-?}" "${again:-failed}" "${h1:-?}" "${h2:-?}" "${hdr:-?}"
  a=$(lo_bytes); read -r n _ < <(DURATION=0 h2load_batches "$ip" "$PORT" "$W/check.$s.full" $FULL_BATCH $FULL_BATCH)
  b=$(lo_bytes); full=$(( (b - a) / (n + (n == 0)) ))
  read -r n _ < <(DURATION=0 h2load_batches "$ip" "$PORT" "$W/check.$s.resumed" 16 320 -H 'Connection: close')
  resumed=$(( ($(lo_bytes) - b) / (n + (n == 0)) ))
  printf '  %-8s loopback bytes per connection: full %d, resumed %d (%+d; certificate chain %d bytes)\n' \
    "$s" "$full" "$resumed" $((resumed - full)) "$CHAIN_BYTES"
  [ $((full - resumed)) -gt $((CHAIN_BYTES / 2)) ] || echo "WARNING: $s: 'resumed' connections seem to carry the certificate: not resumed?" >&2
  [ "$h2" = HIT ] || { echo "ERROR: $s does not answer /bench.css from its cache" >&2; exit 1; }
  [[ $proto == TLSv1.3* ]] || { echo "ERROR: $s did not negotiate TLS 1.3" >&2; exit 1; }
done
# What each client mode really does, from the twin's log of $ssl_session_reused and $connection_requests.
tally() { awk -v from="$1" 'NR > from { n++; if ($1 == "r") r++; if ($2 != "TLSv1.3") v++; if ($3 == 1) c++ }
  END { printf "%d requests on %d connections, %d resumed, %d not TLSv1.3", n, c, r, v }' "$W/logs/twin.log"; }
lines() { wc -l <"$W/logs/twin.log" 2>/dev/null || echo 0; }
L=$(lines); (DURATION=0 h2load_batches $NGINX_IP $TWIN_PORT "$W/check.full" $FULL_BATCH $FULL_BATCH >/dev/null)
echo "  client 'full'    (h2load, one batch):    $(tally "$L")"
L=$(lines); (DURATION=0 h2load_batches $NGINX_IP $TWIN_PORT "$W/check.resumed" $RESUME_CLIENTS $((RESUME_CLIENTS * 10)) -H 'Connection: close' >/dev/null)
echo "  client 'resumed' (h2load, 10 per client): $(tally "$L")"
L=$(lines); WRK_CONNECT=$NGINX_IP timeout 30 wrk -t1 -c4 -d1s -s "$W/resolve.lua" "https://bench.test:$TWIN_PORT/bench.css" >/dev/null
echo "  client 'hit'     (wrk -c4, 1 s):         $(tally "$L")"

# ---- measurements ----
RES=$W/results.tsv; : >"$RES"; HZ=$(getconf CLK_TCK)
printf 'RSS after setup: parapet %d KiB, nginx %d KiB (master + workers)\n' "$(rss $PARAPET)" "$(rss $NGINX)"
run_one() { # ROUND METRIC SERVER
  local r=$1 m=$2 s=$3 ip pid out c0 o0 n secs errs cpu origin unit
  ip=$(ip_of "$s") pid=$(pid_of "$s") out=$W/logs/$m.$s.$r
  o0=$(origin_reqs) c0=$(cpu_ticks "$pid")
  case $m in
    full) read -r n secs errs < <(h2load_batches "$ip" "$PORT" "$out" $FULL_BATCH $FULL_BATCH); unit=conn/s;;
    resumed) read -r n secs errs < <(h2load_batches "$ip" "$PORT" "$out" $RESUME_CLIENTS $((RESUME_CLIENTS * RESUME_PER_CLIENT)) \
               -H 'Connection: close'); unit=conn/s;;
    hit) # shellcheck disable=SC2086
      WRK_CONNECT=$ip timeout $((DURATION + 60)) wrk $HIT_WRK -d "${DURATION}s" -s "$W/resolve.lua" "$URL" >"$out" 2>&1 || true
      n=$(awk '/requests in/ {print $1}' "$out"); secs=$(awk '/requests in/ {v = $4; sub(/s,$/, "", v); print v}' "$out")
      errs=$(awk '/Non-2xx/ {e += $NF} /Socket errors/ {gsub(/,/, ""); e += $4 + $6 + $8 + $10} END {print e + 0}' "$out")
      [ -n "$n" ] && [ -n "$secs" ] || { echo "wrk failed against $s:" >&2; cat "$out" >&2; n=0 secs=1 errs=-1; }
      unit=req/s;;
  esac
  cpu=$(echo "($(cpu_ticks "$pid") - $c0) / $HZ" | bc -l)
  origin=$(( $(origin_reqs) - o0 - 1 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$m" "$s" "$n" "$secs" "$cpu" "$errs" "$origin" >>"$RES"
  printf '  r%s %-7s %-8s %8.0f %s  (%7d in %5.2f s)  server CPU %4.0f%%  %6.1f us each  errors %s  origin requests %s\n' \
    "$r" "$m" "$s" "$(echo "$n / $secs" | bc -l)" "$unit" "$n" "$secs" "$(echo "100 * $cpu / $secs" | bc -l)" \
    "$(echo "1000000 * $cpu / ($n + ($n == 0))" | bc -l)" "$errs" "$origin"
}
echo "measuring: $ROUNDS rounds x ${DURATION}s per metric and server (server order swaps every round)"
for r in $(seq "$ROUNDS"); do
  order=(parapet nginx); [ $((r % 2)) = 1 ] || order=(nginx parapet)
  for m in full resumed hit; do for s in "${order[@]}"; do run_one "$r" "$m" "$s"; done; done
done
printf 'RSS after the run: parapet %d KiB, nginx %d KiB (master + workers)\n' "$(rss $PARAPET)" "$(rss $NGINX)"

echo
echo "TLS 1.3, ECDSA P-256, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), ${DURATION}s x $ROUNDS rounds"
python3 - "$RES" <<'EOF'
import sys, statistics as st, collections
runs = collections.defaultdict(dict)   # (metric, round) -> server -> (rate, us per op)
for line in open(sys.argv[1]):
    r, m, s, n, secs, cpu, errs, origin = line.rstrip("\n").split("\t")
    n, secs, cpu = int(n), float(secs), float(cpu)
    runs[(m, r)][s] = (n / secs if secs else 0.0, 1e6 * cpu / n if n else float("nan"))
names = {"full": "full handshakes/s", "resumed": "resumed handshakes/s", "hit": "cache hit req/s (keep-alive)"}
print(f"{'metric':34} {'parapet':>10} {'nginx':>10} {'parapet/nginx':>14}  {'per-round ratios'}")
for m in ("full", "resumed", "hit"):
    rounds = [v for (mm, _), v in sorted(runs.items()) if mm == m and len(v) == 2]
    for i, label in ((0, names[m]), (1, "  server CPU us per " + ("request" if m == "hit" else "connection"))):
        p = [v["parapet"][i] for v in rounds]; g = [v["nginx"][i] for v in rounds]
        ratios = [a / b for a, b in zip(p, g) if b]
        print(f"{label:34} {st.median(p):10.1f} {st.median(g):10.1f} {st.median(ratios):14.2f}  "
              + " ".join(f"{x:.2f}" for x in ratios))
print("medians over rounds; the ratio is the median of the per-round ratios (each round runs both servers")
print("back to back). Rates: higher is better. Server CPU per connection/request: lower is better.")
EOF
