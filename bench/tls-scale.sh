#!/usr/bin/env bash
# Parapet's edge with many host names' certificates loaded: how long N custom certificates take
# to upload and to be served, the memory they cost, the time of the first handshake after a
# change (the SNI table is rebuilt then), and the full-handshake rate with SNI spread over every
# name against SNI always naming one.
#
#   bench/tls-scale.sh [--names N (10000)] [--zones Z (100)] [--rounds R (3)] [--conns C (4000)]
#                      [--port P (18543)] [--nginx] [--keep]
#
# Needs target/release/parapet (cargo build --release; this script does not build), nginx,
# h2load, openssl, curl, python3 (with the `cryptography` package if it is installed: certificates
# are then made in-process, in seconds; else with one openssl command per name) and bc.
# Addresses (loopback only; the edge reaches the origin on the port the visitor used, ssl =
# flexible: plain HTTP):
#   origin  nginx, plain HTTP   127.0.0.1:P   /t.css, 64 bytes, Cache-Control: max-age=3600
#   parapet --https-listen      127.0.0.2:P   --acme-directory "" (no automatic certificates)
#   nginx   (--nginx only)      127.0.0.3:P   N server blocks, one certificate each, for reference
# Names: Z zones zNN.scale.test (Z = 1: the one zone scale.test), N/Z names each, h00000.<zone>
# ... h<N-1>.<zone> in order, each a proxied A record -> 127.0.0.1 (created with
# POST /zones/{id}/dns_records/batch, 1000 "posts" at most per call), each with its own custom
# certificate: its own ECDSA P-256 key, a leaf naming it alone, signed by one bench CA; the leaf
# and key are uploaded alone (no chain: clients trust the CA) with
# POST /zones/{id}/custom_certificates, one at a time on one keep-alive connection.
# The default is 100 zones because the API accepts at most 100 custom certificates per zone
# (MAX_PER_ZONE in crates/api/src/certificates.rs): with --zones 1 the 101st upload fails with
# error 1228 "a zone holds at most 100 custom certificates".
# Reported:
#   - the time to make the certificates, to upload them (with the API's latency per upload, first
#     and last tenth), and from the last upload's answer until a handshake naming the last name
#     succeeds (curl --resolve polling every 50 ms, verified against the CA), with the time of the
#     first attempt and the time_appconnect of the good one: the first handshake after a change
#     rebuilds the SNI table, parsing the certificates it does not hold yet;
#   - the snapshot compiles during the upload (count, mean, slowest), from Parapet's debug log of
#     parapet_snapshot (PARAPET_LOG=warn,parapet_snapshot=debug; everything else at warn);
#   - Parapet's resident memory (VmRSS; also Pss) at start, with the zones and records and no
#     certificate, with every certificate loaded (after that one handshake), after one handshake
#     to each of 100 random names (curl, whose time_appconnect is reported), after one handshake to
#     each of the N names (python client below, handshake only, no request), after a restart on
#     the same data directory (no garbage left from the upload) and a handshake to each name again,
#     after one request per name (which also fills the edge cache with N entries), and at the end;
#   - time_appconnect of a handshake with nothing changed, and of the first and second handshakes
#     after an unrelated DNS record is added and after one certificate's priority is changed
#     (each new snapshot makes the next handshake rebuild the table; a changed certificate is
#     parsed again, the others are reused);
#   - after the restart: when the API answers, and when (at which attempt) the last name is
#     served, with the time_appconnect of that handshake, which builds the table from nothing;
#   - the full-handshake rate, SNI spread over the N names (round robin) against SNI naming
#     h00000 only, with the same client: 2 python3 asyncio processes, each 32 connections at a
#     time, each connection new (no session offered: every handshake is a full TLS 1.3 one,
#     certificate verified against the CA), one GET /t.css (an edge cache hit) with
#     Connection: close; C connections per run, the two modes alternating (the first in each
#     round swaps), R rounds, medians, and the median of the per-round ratios. Parapet's CPU
#     (user+sys) per connection is reported too: the clients share the 2 cores and are the limit.
#     For reference, h2load --h1 -t2 -c 256 -n 256 batches (bench/tls.sh's "full": each h2load
#     client one connection, one request) on the one name: h2load takes one URL, so one SNI;
#   - with --nginx: nginx with N server blocks (server_name, ssl_certificate, root), its start-up
#     time until the last name's handshake succeeds and its memory (RSS of master + workers, which
#     counts pages the workers share with the master once per process; Pss shares them out)
#     after start and after one handshake to each name.
set -euo pipefail
cd "$(dirname "$0")/.."

NAMES=10000 ZONES=100 ROUNDS=3 CONNS=4000 PORT=18543 NGINX_TOO=0 KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --names) NAMES=$2; shift;; --zones) ZONES=$2; shift;; --rounds) ROUNDS=$2; shift;;
    --conns) CONNS=$2; shift;; --port) PORT=$2; shift;; --nginx) NGINX_TOO=1;; --keep) KEEP=1;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d'; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac; shift
done
for v in "$NAMES" "$ZONES" "$ROUNDS" "$CONNS" "$PORT"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bad option value $v" >&2; exit 2; }
done
[ $((NAMES % ZONES)) = 0 ] && [ "$NAMES" -le 100000 ] || { echo "--names must be a multiple of --zones, at most 100000" >&2; exit 2; }
[ "$NAMES" -ge 100 ] || { echo "--names must be at least 100" >&2; exit 2; }
export PATH=$PATH:/usr/sbin
BIN=${PARAPET_BIN:-target/release/parapet}
for tool in nginx h2load openssl curl python3 bc shuf; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
"$BIN" serve --help 2>/dev/null | grep -q -- --https-listen || { echo "$BIN missing or without --https-listen: cargo build --release" >&2; exit 1; }
hard=$(ulimit -Hn); want=$((NAMES + 4096))
[ "$hard" = unlimited ] || [ "$hard" -ge "$want" ] || want=$hard
ulimit -n "$want"

ORIGIN=127.0.0.1 PARAPET_IP=127.0.0.2 NGINX_IP=127.0.0.3
CLIENT_PROCS=2 CLIENT_CONCURRENCY=32 H2LOAD_BATCH=256
W=$(mktemp -d /tmp/parapet-tlsscale.XXXXXX); chmod 755 "$W"
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

# ---- python helpers: API setup, certificates, uploads, TLS clients ----
cat >"$W/tool.py" <<'PY'
import asyncio, datetime, http.client, json, os, ssl, statistics, sys, time

def api_conn(api):
    host = api.split("://", 1)[-1].split("/", 1)[0]
    return http.client.HTTPConnection(host, timeout=60)

def call(conn, token, method, path, body=None):
    conn.request(method, "/client/v4" + path, body=None if body is None else json.dumps(body),
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    resp = conn.getresponse(); data = resp.read()
    try: out = json.loads(data)
    except ValueError: out = {"success": False, "errors": [{"message": data[:200].decode(errors="replace")}]}
    if resp.status != 200 or not out.get("success"):
        raise SystemExit(f"{method} {path}: HTTP {resp.status}: {json.dumps(out.get('errors'))}")
    return out["result"]

def zone_names(n_zones):
    if n_zones == 1: return ["scale.test"]
    width = max(2, len(str(n_zones - 1)))
    return [f"z{z:0{width}d}.scale.test" for z in range(n_zones)]

def setup(api, token, n, n_zones, out):
    """Zones and their proxied A records; writes 'index name zone_id' lines."""
    conn = api_conn(api); per = n // n_zones; width = max(5, len(str(n - 1)))
    t0 = time.monotonic(); batches = 0
    with open(out, "w") as f:
        for z, zname in enumerate(zone_names(n_zones)):
            zid = call(conn, token, "POST", "/zones", {"name": zname})["id"]
            names = [(i, f"h{i:0{width}d}.{zname}") for i in range(z * per, (z + 1) * per)]
            for c in range(0, per, 1000):
                posts = [{"type": "A", "name": name, "content": "127.0.0.1", "proxied": True}
                         for _, name in names[c:c + 1000]]
                created = call(conn, token, "POST", f"/zones/{zid}/dns_records/batch", {"posts": posts})
                assert len(created["posts"]) == len(posts), "batch created fewer records"
                batches += 1
            for i, name in names: f.write(f"{i} {name} {zid}\n")
    print(f"{n_zones} zones, {n} proxied A records in {batches} batch calls: {time.monotonic() - t0:.1f} s")

def gen(names_file, outdir):
    """A bench CA and, per name, its own P-256 key and a leaf naming it: outdir/ca.pem, I.pem, I.key."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    now = datetime.datetime.now(datetime.timezone.utc)
    before, after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Parapet TLS scale bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(before).not_valid_after(after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    with open(os.path.join(outdir, "ca.pem"), "wb") as f: f.write(ca.public_bytes(serialization.Encoding.PEM))
    leaf_usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    for line in open(names_file):
        i, name, _ = line.split()
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(before).not_valid_after(after)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(leaf_usage, critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        with open(os.path.join(outdir, i + ".pem"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(os.path.join(outdir, i + ".key"), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

def upload(api, token, names_file, certdir, out):
    """Uploads each name's leaf + key, in order; writes 'index cert_id zone_id' lines."""
    rows = [l.split() for l in open(names_file)]
    bodies = []
    for i, name, zid in rows:
        bodies.append((i, name, zid, json.dumps({"certificate": open(os.path.join(certdir, i + ".pem")).read(),
                                                 "private_key": open(os.path.join(certdir, i + ".key")).read()})))
    conn = api_conn(api); lat = []
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    t0 = time.monotonic()
    with open(out, "w") as f:
        for i, name, zid, body in bodies:
            s = time.monotonic()
            conn.request("POST", f"/client/v4/zones/{zid}/custom_certificates", body=body, headers=headers)
            resp = conn.getresponse(); data = resp.read()
            lat.append(time.monotonic() - s)
            out_json = json.loads(data) if data[:1] == b"{" else {}
            if resp.status != 200 or not out_json.get("success"):
                print(f"upload {len(lat)} ({name}) failed after {time.monotonic() - t0:.1f} s: HTTP {resp.status}: "
                      f"{json.dumps(out_json.get('errors', data[:200].decode(errors='replace')))}", file=sys.stderr)
                sys.exit(1)
            f.write(f"{i} {out_json['result']['id']} {zid}\n")
    total = time.monotonic() - t0
    tenth = max(1, len(lat) // 10)
    ms = lambda xs, q: 1000 * sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]
    print(f"{len(lat)} uploaded in {total:.1f} s ({len(lat) / total:.0f}/s, one at a time); API latency ms: "
          f"p50 {ms(lat, .5):.1f}, p99 {ms(lat, .99):.1f}, max {max(lat) * 1000:.0f}; "
          f"first tenth p50 {ms(lat[:tenth], .5):.1f}, last tenth p50 {ms(lat[-tenth:], .5):.1f}")

async def client(ip, port, cafile, names_file, mode, conns, concurrency, request, part, parts, offset):
    names = [l.split()[1] for l in open(names_file)]
    names = names[part::parts] if mode == "spread" else names[:1]
    ctx = ssl.create_default_context(cafile=cafile)
    ok = fail = 0; errors = {}; it = iter(range(conns))
    async def worker():
        nonlocal ok, fail
        for k in it:
            name = names[(k + offset) % len(names)]
            w = None
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(ip, port, ssl=ctx, server_hostname=name), 10)
                if request:
                    w.write(f"GET /t.css HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                    data = await asyncio.wait_for(r.read(), 10)
                    if not data.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError("answer " + data[:40].decode(errors="replace"))
                ok += 1
            except Exception as e:
                fail += 1; key = f"{type(e).__name__}: {e}"[:120]; errors[key] = errors.get(key, 0) + 1
            finally:
                if w is not None:
                    w.transport.abort()   # no close_notify round trip: the next connection starts now
    t0, c0 = time.time(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps({"ok": ok, "fail": fail, "t0": t0, "t1": time.time(), "cpu": time.process_time() - c0,
                      "errors": errors}))

cmd = sys.argv[1]
if cmd == "setup": setup(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
elif cmd == "gen": gen(sys.argv[2], sys.argv[3])
elif cmd == "upload": upload(*sys.argv[2:7])
elif cmd == "client":
    ip, port, cafile, names_file, mode, conns, conc, request, part, parts, offset = sys.argv[2:13]
    asyncio.run(client(ip, int(port), cafile, names_file, mode, int(conns), int(conc), request == "1",
                       int(part), int(parts), int(offset)))
elif cmd == "merge":   # client outputs -> "ok fail seconds client-cpu-seconds errors"
    rs = [json.loads(l) for f in sys.argv[2:] for l in open(f) if l.startswith("{")]
    errs = {}
    for r in rs:
        for k, v in r["errors"].items(): errs[k] = errs.get(k, 0) + v
    secs = max(r["t1"] for r in rs) - min(r["t0"] for r in rs) if rs else 0
    print(sum(r["ok"] for r in rs), sum(r["fail"] for r in rs), f"{secs:.3f}", f"{sum(r['cpu'] for r in rs):.3f}",
          "; ".join(f"{v}x {k}" for k, v in errs.items()) or "-")
PY

# ---- origin ----
mkdir -p "$W/www" "$W/logs" "$W/certs"
printf 'body{color:#123}/* parapet tls-scale bench origin, 64 bytes of css ........ */\n' | head -c 64 >"$W/www/t.css"
cat >"$W/origin.conf" <<EOF
pid $W/origin.pid; error_log $W/logs/origin.err warn; worker_processes 1;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  server { listen $ORIGIN:$PORT; root $W/www; add_header Cache-Control "max-age=3600"; }
}
EOF
nginx -t -q -c "$W/origin.conf"
nginx -c "$W/origin.conf" -g 'daemon off;' >"$W/logs/origin.out" 2>&1 & PIDS+=($!)

# ---- Parapet ----
TOKEN=tls-scale-$RANDOM$RANDOM
echo 'edge_max_connections_per_ip = 0' >"$W/parapet.toml"   # every client is 127.0.0.1
STARTS=0
start_parapet() { # sets PARAPET (pid), PLOG (its stderr: warnings and snapshot compiles) and API
  STARTS=$((STARTS + 1)); PLOG=$W/logs/parapet.$STARTS.err
  PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=warn,parapet_snapshot=debug "$BIN" serve --config "$W/parapet.toml" \
    --data-dir "$W/data" --api-listen 127.0.0.1:0 --https-listen $PARAPET_IP:$PORT --activation auto \
    --acme-directory "" >"$W/logs/parapet.$STARTS.out" 2>"$PLOG" &
  PARAPET=$!; PIDS+=($PARAPET)
  for _ in $(seq 300); do grep -q 'api listening' "$W/logs/parapet.$STARTS.out" 2>/dev/null && break; sleep 0.1; done
  API=$(sed -n 's/^parapet: api listening on //p' "$W/logs/parapet.$STARTS.out")
  [ -n "$API" ] || { echo "parapet did not start" >&2; cat "$PLOG" >&2; exit 1; }
}
start_parapet
api() { # METHOD PATH [BODY]
  curl -sS -f -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$API/client/v4$2" ${3:+--data-binary "$3"}
}

# ---- helpers ----
kib() { # FIELD PID...: sum of a /proc/PID/status (VmRSS) or smaps_rollup (Pss) field, KiB
  local f=$1 total=0 p file; shift
  for p in "$@"; do
    file=/proc/$p/status; [ "$f" = Pss ] && file=/proc/$p/smaps_rollup
    total=$((total + $(awk -v f="$f:" '$1 == f {print $2}' "$file" 2>/dev/null || echo 0)))
  done
  echo $total
}
proc_tree() { echo "$1" $(pgrep -P "$1" || true); }
MEM=$W/mem.tsv; : >"$MEM"
mem() { # SERVER PID LABEL: print and keep its memory
  local pids rss pss; pids=$(proc_tree "$2")
  # shellcheck disable=SC2086
  rss=$(kib VmRSS $pids) pss=$(kib Pss $pids)
  printf '%s\t%s\t%s\t%s\n' "$1" "$3" "$rss" "$pss" >>"$MEM"
  printf '  %-8s RSS %8.1f MiB  Pss %8.1f MiB  %s\n' "$1" "$(echo "$rss / 1024" | bc -l)" "$(echo "$pss / 1024" | bc -l)" "$3"
}
cpu_ticks() { # user+sys clock ticks of a process and its children
  local total=0 p
  for p in $(proc_tree "$1"); do
    total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo $total
}
ms() { printf '%.1f' "$(echo "$1 * 1000" | bc -l)"; }
now_us() { echo "${EPOCHREALTIME/./}"; }
appconnect() { # IP NAME -> seconds to the end of the handshake, or "fail"
  local out
  if out=$(curl -sS -o /dev/null -w '%{time_appconnect}' --max-time 5 --cacert "$W/certs/ca.pem" \
             --resolve "$2:$PORT:$1" "https://$2:$PORT/t.css" 2>/dev/null); then echo "$out"; else echo fail; fi
}
published() { grep -c 'snapshot published' "$PLOG" || true; }
wait_published() { # COUNT: until more snapshots than COUNT were published (10 s at most), then a little more
  for _ in $(seq 200); do [ "$(published)" -gt "$1" ] && break; sleep 0.05; done
  sleep 0.3
}
poll_served() { # IP NAME FROM_US: handshakes naming NAME until one succeeds (120 s at most) ->
  # "ms-from-FROM_US attempts first-attempt-ms appconnect-of-the-good-one-ms" (ms "-": never)
  local out rc first="" n
  for n in $(seq 2400); do
    rc=0
    out=$(curl -sS -o /dev/null -w '%{time_appconnect} %{time_total}' --max-time 5 --cacert "$W/certs/ca.pem" \
            --resolve "$2:$PORT:$1" "https://$2:$PORT/t.css" 2>/dev/null) || rc=$?
    [ -n "$first" ] || first=$(awk '{printf "%.1f", 1000 * $2}' <<<"$out")
    if [ $rc = 0 ]; then
      echo "$(( ($(now_us) - $3) / 1000 )) $n ${first:--} $(awk '{printf "%.1f", 1000 * $1}' <<<"$out")"; return
    fi
    sleep 0.05
  done
  echo "- $n ${first:--} -"
}
clients() { # IP MODE CONNS REQUEST(0/1) OUT [OFFSET] -> "ok fail seconds client-cpu-seconds errors"
  local i cpids=()
  for i in $(seq 0 $((CLIENT_PROCS - 1))); do
    timeout 300 python3 "$W/tool.py" client "$1" "$PORT" "$W/certs/ca.pem" "$W/names.txt" "$2" \
      $(( $3 / CLIENT_PROCS + (i < $3 % CLIENT_PROCS) )) $CLIENT_CONCURRENCY "$4" "$i" $CLIENT_PROCS "${6:-0}" >"$5.$i" 2>&1 &
    cpids+=($!)
  done
  for i in "${cpids[@]}"; do wait "$i" || true; done
  python3 "$W/tool.py" merge $(for i in $(seq 0 $((CLIENT_PROCS - 1))); do echo "$5.$i"; done)
}

echo "parapet: $NAMES names in $ZONES zones ($((NAMES / ZONES)) names and certificates per zone)"
mem parapet $PARAPET "at start"

# ---- zones and records ----
n0=$(published)
python3 "$W/tool.py" setup "$API" "$TOKEN" "$NAMES" "$ZONES" "$W/names.txt" | sed 's/^/  /'
wait_published "$n0"; sleep 1
mem parapet $PARAPET "zones and records, no certificate"

# ---- certificates ----
t0=$(now_us)
if python3 -c 'import cryptography' 2>/dev/null; then
  how="python3 cryptography $(python3 -c 'import cryptography; print(cryptography.__version__)')"
  python3 "$W/tool.py" gen "$W/names.txt" "$W/certs"
else
  how="openssl, one req per name, $(nproc) at a time"
  (
    cd "$W/certs"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj "/CN=Parapet TLS scale bench CA" -days 2 -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    awk '{print $1, $2}' "$W/names.txt" | timeout 900 xargs -P "$(nproc)" -n 2 sh -c \
      'openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$0.key" -out "$0.pem" \
         -CA ca.pem -CAkey ca.key -days 2 -subj "/CN=$1" -addext "subjectAltName=DNS:$1" \
         -addext basicConstraints=critical,CA:FALSE -addext keyUsage=critical,digitalSignature \
         -addext extendedKeyUsage=serverAuth 2>/dev/null'
  )
fi
echo "certificates: $NAMES keys and leaves made in $(echo "($(now_us) - $t0) / 1000000" | bc -l | xargs printf '%.1f') s ($how)"
[ -s "$W/certs/$((NAMES - 1)).pem" ] || { echo "certificate generation failed" >&2; exit 1; }
LAST=$(awk 'END {print $2}' "$W/names.txt") FIRST=$(awk 'NR == 1 {print $2}' "$W/names.txt")

# ---- upload, and the time until the last name is served ----
n0=$(published)
python3 "$W/tool.py" upload "$API" "$TOKEN" "$W/names.txt" "$W/certs" "$W/certids.txt" | sed 's/^/  upload: /'
read -r served tries first good < <(poll_served $PARAPET_IP "$LAST" "$(now_us)")
[ "$served" != - ] || { echo "ERROR: $LAST not served 120 s after its upload" >&2; tail -n 5 "$PLOG" >&2; exit 1; }
printf '  the last name %s served %s ms after its upload returned, at handshake attempt %s (curl --resolve, every 50 ms;\n' "$LAST" "$served" "$tries"
printf '    the first attempt took %s ms in all, the good one time_appconnect %s ms: a handshake after a change rebuilds the SNI table)\n' "$first" "$good"
sleep 3   # let the snapshot compiles and the saver settle
sed 's/\x1b\[[0-9;]*m//g' "$PLOG" | awk -v from="$n0" '/snapshot published/ && ++n > from {
    for (i = 1; i <= NF; i++) if ($i ~ /^micros=/) { v = substr($i, 8) + 0; c++; s += v; if (v > m) m = v; last = v } }
  END { if (c) printf "  snapshot compiles since the first upload: %d, mean %.0f ms, slowest %.0f ms, last %.0f ms\n", c, s / c / 1000, m / 1000, last / 1000 }'
mem parapet $PARAPET "all certificates loaded, 1 handshake (SNI table built)"

# ---- 100 random names ----
: >"$W/random.txt"
for name in $(awk '{print $2}' "$W/names.txt" | shuf -n 100); do appconnect $PARAPET_IP "$name" >>"$W/random.txt"; done
rfail=$(grep -c fail "$W/random.txt" || true)
read -r rmed rmax < <(grep -v fail "$W/random.txt" | sort -g | awk '{v[NR] = $1} END {printf "%.1f %.1f\n", 1000 * v[int((NR + 1) / 2)], 1000 * v[NR]}')
echo "  100 random names with curl: time_appconnect median $rmed ms, max $rmax ms, $rfail failed"
mem parapet $PARAPET "after a handshake to each of 100 random names"

# ---- every name once, handshake only ----
read -r ok fail secs _ errs < <(clients $PARAPET_IP spread "$NAMES" 0 "$W/logs/all")
printf '  one handshake per name (python, handshake only): %d ok, %d failed in %.1f s (%.0f/s)%s\n' \
  "$ok" "$fail" "$secs" "$(echo "$ok / $secs" | bc -l)" "$([ "$errs" = - ] || echo "; errors: $errs")"
[ "$ok" -gt 0 ] || { echo "ERROR: no handshake succeeded" >&2; exit 1; }
mem parapet $PARAPET "after a handshake to each of the $NAMES names"

# ---- the first handshake after a change rebuilds the SNI table ----
echo "time_appconnect (ms, median of 3; curl to $FIRST):"
steady=() dns1=() dns2=() cert1=() cert2=()
read -r _ CERT0 ZONE0 < <(head -n 1 "$W/certids.txt")
for r in 1 2 3; do
  appconnect $PARAPET_IP "$FIRST" >/dev/null
  steady+=("$(appconnect $PARAPET_IP "$FIRST")")
  n0=$(published)
  api POST "/zones/$ZONE0/dns_records" "{\"type\":\"TXT\",\"name\":\"change$r.$(awk 'NR == 1 {sub(/^[^.]*\./, "", $2); print $2}' "$W/names.txt")\",\"content\":\"bench $r\"}" >/dev/null
  wait_published "$n0"
  dns1+=("$(appconnect $PARAPET_IP "$FIRST")"); dns2+=("$(appconnect $PARAPET_IP "$FIRST")")
  n0=$(published)
  api PATCH "/zones/$ZONE0/custom_certificates/$CERT0" "{\"priority\":$r}" >/dev/null
  wait_published "$n0"
  cert1+=("$(appconnect $PARAPET_IP "$FIRST")"); cert2+=("$(appconnect $PARAPET_IP "$FIRST")")
done
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {printf "%.1f", 1000 * v[int((NR + 1) / 2)]}'; }
all() { local x out=(); for x in "$@"; do out+=("$(ms "$x")"); done; echo "${out[*]}"; }
printf '  nothing changed                                   %6s   (%s)\n' "$(med "${steady[@]}")" "$(all "${steady[@]}")"
printf '  after a DNS record is added:  first handshake     %6s   (%s)\n' "$(med "${dns1[@]}")" "$(all "${dns1[@]}")"
printf '                                second handshake    %6s   (%s)\n' "$(med "${dns2[@]}")" "$(all "${dns2[@]}")"
printf '  after a certificate PATCH:    first handshake     %6s   (%s)\n' "$(med "${cert1[@]}")" "$(all "${cert1[@]}")"
printf '                                second handshake    %6s   (%s)\n' "$(med "${cert2[@]}")" "$(all "${cert2[@]}")"

# ---- restart: the SNI table built from nothing, and the memory without the upload's garbage ----
kill -TERM $PARAPET
for _ in $(seq 300); do kill -0 $PARAPET 2>/dev/null || break; sleep 0.1; done
kill -KILL $PARAPET 2>/dev/null || true; wait $PARAPET 2>/dev/null || true
t0=$(now_us)
start_parapet
api_up=$(( ($(now_us) - t0) / 1000 ))
read -r served tries first good < <(poll_served $PARAPET_IP "$LAST" "$t0")
[ "$served" != - ] || { echo "ERROR: $LAST not served 120 s after a restart" >&2; tail -n 5 "$PLOG" >&2; exit 1; }
echo "restart (same data directory):"
printf '  API up after %s ms; %s served %s ms after the start, at handshake attempt %s (the first took %s ms in all;\n' \
  "$api_up" "$LAST" "$served" "$tries" "$first"
printf '    the good one, whose table is built from nothing, parsing every key: time_appconnect %s ms)\n' "$good"
sleep 3
mem parapet $PARAPET "after a restart and 1 handshake"
read -r ok fail secs _ errs < <(clients $PARAPET_IP spread "$NAMES" 0 "$W/logs/all2")
printf '  one handshake per name (python, handshake only): %d ok, %d failed in %.1f s (%.0f/s)%s\n' \
  "$ok" "$fail" "$secs" "$(echo "$ok / $secs" | bc -l)" "$([ "$errs" = - ] || echo "; errors: $errs")"
mem parapet $PARAPET "after a restart and a handshake to each of the $NAMES names"

# ---- one request per name: fills the edge cache (so every measured request below is a hit) ----
read -r ok fail secs _ errs < <(clients $PARAPET_IP spread "$NAMES" 1 "$W/logs/warm")
printf '  one request per name (python, cache misses): %d ok, %d failed in %.1f s%s\n' "$ok" "$fail" "$secs" \
  "$([ "$errs" = - ] || echo "; errors: $errs")"
mem parapet $PARAPET "after one request per name (edge cache holds $NAMES objects)"

# ---- full-handshake rate: one name against every name ----
RES=$W/results.tsv; : >"$RES"; HZ=$(getconf CLK_TCK)
run_one() { # ROUND MODE
  local r=$1 m=$2 c0 ok fail secs ccpu errs cpu out=$W/logs/rate.$2.$1 b t bok bbad
  c0=$(cpu_ticks $PARAPET)
  case $m in
    one|spread) # spread: each round starts where the previous one stopped
      read -r ok fail secs ccpu errs < <(clients $PARAPET_IP "$m" "$CONNS" 1 "$out" $(( (r - 1) * CONNS / CLIENT_PROCS )));;
    h2load) # batches of -c 256 -n 256: every h2load client makes one connection (bench/tls.sh's "full")
      ok=0 fail=0 secs=0 ccpu="" errs=-
      for b in $(seq $(( (CONNS + H2LOAD_BATCH - 1) / H2LOAD_BATCH ))); do
        timeout 120 h2load --h1 -t2 -c $H2LOAD_BATCH -n $H2LOAD_BATCH --connect-to="$PARAPET_IP:$PORT" \
          "https://$FIRST:$PORT/t.css" >"$out.$b" 2>&1 || true
        t=$(awk '/^finished in/ {v = $3; sub(/,$/, "", v); m = 1
            if (v ~ /ms$/) m = 1e-3; else if (v ~ /us$/) m = 1e-6; sub(/[a-z]+$/, "", v); printf "%.6f", v * m}' "$out.$b")
        read -r bok bbad < <(awk '/^requests:/ {ok = $8; e = $10 + $12 + $14} /^status codes:/ {ok -= $5 + $7 + $9; e += $5 + $7 + $9}
            END {print ok + 0, e + 0}' "$out.$b")
        [ -n "$t" ] && [ "$bok" -gt 0 ] || { echo "h2load failed:" >&2; tail -n 5 "$out.$b" >&2; fail=$((fail + H2LOAD_BATCH)); break; }
        ok=$((ok + bok)) fail=$((fail + bbad)) secs=$(echo "$secs + $t" | bc -l)
      done
      [ "$ok" -gt 0 ] || secs=1;;
  esac
  cpu=$(echo "($(cpu_ticks $PARAPET) - $c0) / $HZ" | bc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$m" "$ok" "$fail" "$secs" "$cpu" >>"$RES"
  printf '  r%s %-7s %7.0f conn/s  (%5d ok, %d failed, in %5.2f s)  parapet CPU %4.0f%%, %6.1f us per connection%s%s\n' \
    "$r" "$m" "$(echo "$ok / $secs" | bc -l)" "$ok" "$fail" "$secs" "$(echo "100 * $cpu / $secs" | bc -l)" \
    "$(echo "1000000 * $cpu / ($ok + ($ok == 0))" | bc -l)" \
    "$([ -z "$ccpu" ] || printf '; clients CPU %.0f%%' "$(echo "100 * $ccpu / $secs" | bc -l)")" "$([ "$errs" = - ] || echo "; errors: $errs")"
}
echo "full handshakes (one GET each, cache hit): $ROUNDS rounds x $CONNS connections per mode; one = SNI $FIRST only, spread = round robin over $NAMES names"
for r in $(seq "$ROUNDS"); do
  order=(one spread); [ $((r % 2)) = 1 ] || order=(spread one)
  for m in "${order[@]}" h2load; do run_one "$r" "$m"; done
done
mem parapet $PARAPET "at the end"

# ---- nginx with one server block per name, for reference ----
nginx_reference() { # a failure here is reported, not fatal: Parapet's results are printed below
  local up="" t0 ok fail secs errs
  {
    echo "pid $W/nginx.pid; error_log $W/logs/nginx.err warn; worker_processes auto; worker_rlimit_nofile $want;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; server_names_hash_max_size $((NAMES * 2)); server_names_hash_bucket_size 64;"
    echo "  ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; root $W/www;"
    awk -v ip=$NGINX_IP -v port="$PORT" -v d="$W/certs" '{printf "  server { listen %s:%s ssl; server_name %s; ssl_certificate %s/%s.pem; ssl_certificate_key %s/%s.key; }\n", ip, port, $2, d, $1, d, $1}' "$W/names.txt"
    echo "}"
  } >"$W/nginx.conf"
  t0=$(now_us)
  nginx -c "$W/nginx.conf" -g 'daemon off;' >"$W/logs/nginx.out" 2>&1 & NGINX=$!; PIDS+=($NGINX)
  for _ in $(seq 2400); do
    kill -0 $NGINX 2>/dev/null || break
    [ "$(appconnect $NGINX_IP "$LAST")" != fail ] && { up=$(( $(now_us) - t0 )); break; }
    sleep 0.05
  done
  [ -n "$up" ] || { echo "WARNING: nginx did not serve $LAST within 120 s; no nginx figures" >&2; tail -n 5 "$W/logs/nginx.err" "$W/logs/nginx.out" >&2; return 0; }
  echo "nginx: $NAMES server blocks, $(($(proc_tree $NGINX | wc -w) - 1)) workers; serves $LAST $((up / 1000)) ms after it was started"
  sleep 1
  mem nginx $NGINX "after start"
  read -r ok fail secs _ errs < <(clients $NGINX_IP spread "$NAMES" 0 "$W/logs/nginx.all")
  printf '  one handshake per name (python, handshake only): %d ok, %d failed in %.1f s (%.0f/s)%s\n' \
    "$ok" "$fail" "$secs" "$(echo "$ok / $secs" | bc -l)" "$([ "$errs" = - ] || echo "; errors: $errs")"
  mem nginx $NGINX "after a handshake to each of the $NAMES names"
}
[ "$NGINX_TOO" = 0 ] || nginx_reference

echo
echo "TLS 1.3, ECDSA P-256, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $NAMES names in $ZONES zones"
python3 - "$RES" "$MEM" <<'EOF'
import sys, statistics as st, collections
runs = collections.defaultdict(dict)   # round -> mode -> (conn/s, us per connection)
for line in open(sys.argv[1]):
    r, m, ok, fail, secs, cpu = line.split("\t")
    ok, secs, cpu = int(ok), float(secs), float(cpu)
    runs[r][m] = (ok / secs if secs else 0.0, 1e6 * cpu / ok if ok else float("nan"))
print(f"{'full handshakes (new connection, 1 GET)':44} {'conn/s':>9} {'us CPU/conn':>12}")
labels = {"one": "python, SNI one name", "spread": "python, SNI spread over every name",
          "h2load": "h2load -c256, SNI one name (reference)"}
for m in ("one", "spread", "h2load"):
    v = [runs[r][m] for r in runs if m in runs[r]]
    if v: print(f"  {labels[m]:42} {st.median(x[0] for x in v):9.0f} {st.median(x[1] for x in v):12.1f}")
pairs = [(runs[r]["spread"], runs[r]["one"]) for r in runs if "spread" in runs[r] and "one" in runs[r]]
for i, what in ((0, "rate"), (1, "parapet CPU per connection")):
    ratios = [s[i] / o[i] for s, o in pairs if o[i]]
    print(f"  spread/one {what:31} {st.median(ratios):9.2f}   per round: " + " ".join(f"{x:.2f}" for x in ratios))
print("medians over rounds (each round runs the modes back to back, the first swapping).")
print(f"\n{'memory':72} {'RSS MiB':>9} {'Pss MiB':>9}")
for line in open(sys.argv[2]):
    s, label, rss, pss = line.rstrip("\n").split("\t")
    print(f"  {s + ': ' + label:70} {int(rss) / 1024:9.1f} {int(pss) / 1024:9.1f}")
EOF
