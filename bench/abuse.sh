#!/usr/bin/env bash
# Hostile visitors and broken origins for a while, then: is Parapet still answering promptly,
# and did its memory and open connections come back down?
#
#   bench/abuse.sh [SECONDS] [ROUNDS]        (default 60 s, 2 rounds)
#
# During the run, in parallel: slowloris clients (a header byte every few seconds), huge
# headers, malformed and ambiguous requests, requests cut off mid-body, and requests for names
# whose origins reset, stall or answer garbage. Reports RSS and the open-connections gauge
# before, after each round, and 15 s after the last, and the time of a normal request at the
# end. Memory that grows in the first round and not in the next is the allocator's high-water
# mark; memory that grows every round would be a leak.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60}
ROUNDS=${2:-2}
cargo build --release --quiet
W=$(mktemp -d /tmp/parapet-abuse.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
PORT=18500
TOKEN=abuse-$RANDOM$RANDOM
echo 'edge_read_timeout = "3s"' >"$W/parapet.toml"
PARAPET_API_TOKEN=$TOKEN PARAPET_LOG=error target/release/parapet serve --config "$W/parapet.toml" \
  --data-dir "$W/data" --api-listen 127.0.0.1:0 --http-listen 127.0.0.1:$PORT --activation auto \
  >"$W/out" 2>"$W/err" &
PARAPET=$!; PIDS+=($PARAPET)
for _ in $(seq 100); do grep -q 'api listening' "$W/out" 2>/dev/null && break; sleep 0.1; done
BASE=$(sed -n 's/^parapet: api listening on //p' "$W/out")
API=$BASE/client/v4
ZONE=$(curl -sf "$API/zones" -H "Authorization: Bearer $TOKEN" -d '{"name":"abuse.test"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["id"])')
for rec in good:127.0.0.2 reset:127.0.0.3 stall:127.0.0.4 garbage:127.0.0.5; do
  curl -sf "$API/zones/$ZONE/dns_records" -H "Authorization: Bearer $TOKEN" \
    -d "{\"type\":\"A\",\"name\":\"${rec%%:*}\",\"content\":\"${rec#*:}\",\"proxied\":true}" >/dev/null
done
# The origins: one good, one that resets, one that never answers, one that answers garbage.
python3 - "$PORT" >"$W/origins.log" 2>&1 <<'PY' &
import socket, sys, threading, time, struct
port = int(sys.argv[1])
def serve(ip, handler):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port)); s.listen(1024)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()
def good(c):
    try:
        while c.recv(65536):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError: pass
def reset(c):
    c.recv(65536); c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
def stall(c):
    c.recv(65536); time.sleep(30); c.close()
def garbage(c):
    c.recv(65536); c.sendall(b"\x00\xffnot http at all\r\n\r\n" * 100); c.close()
for ip, h in [("127.0.0.2", good), ("127.0.0.3", reset), ("127.0.0.4", stall), ("127.0.0.5", garbage)]:
    threading.Thread(target=serve, args=(ip, h), daemon=True).start()
time.sleep(100000)
PY
PIDS+=($!)
sleep 1
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PARAPET/status"; }
open_conns() { curl -s "$BASE/metrics" | awk '/^parapet_edge_connections_open/ {print $2}'; }
# Warm up with normal traffic so the baseline includes the usual allocations.
for _ in $(seq 200); do curl -s -o /dev/null -H 'Host: good.abuse.test' "http://127.0.0.1:$PORT/"; done
echo "before: RSS $(rss) KiB, open connections $(open_conns)"
for round in $(seq "$ROUNDS"); do
python3 - "$PORT" "$DURATION" <<'PY'
import socket, sys, threading, time, random
port, duration = int(sys.argv[1]), float(sys.argv[2])
end = time.time() + duration
counts = {}
def count(k):
    counts[k] = counts.get(k, 0) + 1
def send(data, read=True, host="good"):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(data)
        if read:
            s.recv(4096)
        s.close()
    except OSError:
        pass
def slowloris():
    conns = []
    while time.time() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: good.abuse.test\r\n")
            conns.append(s)
        except OSError:
            pass
        for s in list(conns):
            try:
                s.sendall(b"X-a: b\r\n")
            except OSError:
                conns.remove(s)
        count("slowloris")
        time.sleep(0.5)
def hostile():
    reqs = [
        b"GET / HTTP/1.1\r\nHost: good.abuse.test\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: good.abuse.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: good.abuse.test\r\n folded: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(random.getrandbits(8) for _ in range(200)),
        b"POST / HTTP/1.1\r\nHost: good.abuse.test\r\nContent-Length: 100000\r\n\r\npartial",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: good.abuse.test\r\n\r\n",
        bytes(random.getrandbits(8) for _ in range(512)),
    ]
    while time.time() < end:
        send(random.choice(reqs), read=random.random() < 0.5)
        count("hostile")
def broken_origins():
    while time.time() < end:
        host = random.choice(["reset", "stall", "garbage"])
        send(f"GET / HTTP/1.1\r\nHost: {host}.abuse.test\r\n\r\n".encode())
        count(host)
threads = [threading.Thread(target=f) for f in [slowloris] + [hostile] * 4 + [broken_origins] * 8]
for t in threads: t.start()
for t in threads: t.join()
print("sent:", counts)
PY
echo "after round $round: RSS $(rss) KiB, open connections $(open_conns)"
done
sleep 15
t=$(curl -s -o /dev/null -w '%{time_total}' -H 'Host: good.abuse.test' "http://127.0.0.1:$PORT/")
echo "15 s later: RSS $(rss) KiB, open connections $(open_conns); a normal request took ${t}s"
