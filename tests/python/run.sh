#!/usr/bin/env bash
# Client-compatibility tests: real Cloudflare clients against a local Parapet, changing
# nothing but their base URL.
#
#   tests/python/run.sh [extra pytest args...]
#
# - venvs, from the pinned tests/python/requirements-*.txt, reused while those are unchanged:
#     target/pyenv-sdk             the official SDK, cloudflare 4.x
#     target/pyenv-certbot         certbot-dns-cloudflare (current) and the cloudflare 5.x it
#                                  pulls in
#     target/pyenv-certbot-legacy  certbot-dns-cloudflare 5.5.0 on python-cloudflare 2.19.x
#     target/pyenv-octodns         octodns with octodns-cloudflare
# - starts $PARAPET_BIN (default target/debug/parapet) on 127.0.0.1 with a temporary data dir
#   and a random token, waits for its ready line, runs the SDK tests under both SDK versions,
#   the certbot plugin tests under both plugin generations and the octodns sync tests, and
#   always stops the server.
# Environment: PARAPET_BIN, PYTHON (interpreter for the venvs, default python3).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PARAPET_BIN=${PARAPET_BIN:-$ROOT/target/debug/parapet}
PYTHON=${PYTHON:-python3}
READY_TIMEOUT=30

log() { printf 'run.sh: %s\n' "$*" >&2; }

# --- virtualenvs -------------------------------------------------------------------------

ensure_venv() { # name requirements-file
    local dir="$ROOT/target/pyenv-$1" req="$2" stamp want
    stamp="$dir/.parapet-requirements.sha256"
    want=$(sha256sum "$req" | cut -d' ' -f1)
    if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    log "setting up $dir from $(basename "$req")"
    if [[ ! -x "$dir/bin/python" ]]; then
        if ! "$PYTHON" -m venv "$dir"; then
            log "cannot create a venv with $PYTHON (on Debian: apt-get install python3-venv)"
            return 1
        fi
    fi
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
}

ensure_venv sdk "$HERE/requirements-sdk.txt"
ensure_venv certbot "$HERE/requirements-certbot.txt"
ensure_venv certbot-legacy "$HERE/requirements-certbot-legacy.txt"
ensure_venv octodns "$HERE/requirements-octodns.txt"

# --- server ------------------------------------------------------------------------------

if [[ ! -x "$PARAPET_BIN" ]]; then
    log "no server binary at $PARAPET_BIN (build it with cargo build, or set PARAPET_BIN)"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/parapet-pytest.XXXXXX")
SERVER_PID=
cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server did not stop on SIGTERM; killing it"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -f "$WORK/server.err" ]]; then
        log "server stderr (last 40 lines):"
        tail -n 40 "$WORK/server.err" >&2 || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$WORK/data"
PARAPET_API_TOKEN="$TOKEN" "$PARAPET_BIN" serve \
    --data-dir "$WORK/data" \
    --api-listen 127.0.0.1:0 \
    --activation auto \
    --nameserver ns1.parapet.test \
    --nameserver ns2.parapet.test \
    >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

ORIGIN=
deadline=$((SECONDS + READY_TIMEOUT))
while ((SECONDS < deadline)); do
    ORIGIN=$(sed -n 's#^parapet: api listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$#\1#p' \
        "$WORK/server.out" | head -n 1)
    [[ -n "$ORIGIN" ]] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server exited before it was ready"
        exit 1
    fi
    sleep 0.1
done
if [[ -z "$ORIGIN" ]]; then
    log "server printed no ready line within ${READY_TIMEOUT}s"
    exit 1
fi
log "server ready at $ORIGIN (pid $SERVER_PID)"

export PARAPET_API_BASE="$ORIGIN/client/v4"
export PARAPET_API_TOKEN="$TOKEN"
# Nothing of the developer's own Cloudflare setup may leak into the clients.
unset CLOUDFLARE_API_TOKEN CLOUDFLARE_API_KEY CLOUDFLARE_EMAIL CLOUDFLARE_BASE_URL \
    CLOUDFLARE_API_USER_SERVICE_KEY CLOUDFLARE_CUSTOM_HEADERS CLOUDFLARE_API_URL \
    CLOUDFLARE_API_CERTKEY CLOUDFLARE_API_EXTRAS CLOUDFLARE_HTTP_HEADERS CF_API_TOKEN \
    CF_API_KEY CF_API_EMAIL CF_API_URL CF_API_CERTKEY CF_API_EXTRAS
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1

# --- tests -------------------------------------------------------------------------------

failed=0
run_pytest() { # venv label files...
    local venv="$1" label="$2"
    shift 2
    log "== $label"
    (cd "$HERE" && PYTHONDONTWRITEBYTECODE=1 "$ROOT/target/pyenv-$venv/bin/python" -m pytest \
        -p no:cacheprovider -q -rfEs "$@") || failed=1
}

SDK4=$("$ROOT/target/pyenv-sdk/bin/python" -c 'import cloudflare; print(cloudflare.__version__)')
SDK5=$("$ROOT/target/pyenv-certbot/bin/python" -c 'import cloudflare; print(cloudflare.__version__)')
run_pytest sdk "official SDK cloudflare $SDK4" test_cloudflare_sdk.py "$@"
run_pytest certbot "official SDK cloudflare $SDK5" test_cloudflare_sdk.py "$@"
run_pytest certbot "certbot-dns-cloudflare (current) on cloudflare $SDK5" test_certbot_plugin.py "$@"
LEGACY=$("$ROOT/target/pyenv-certbot-legacy/bin/python" -c 'import CloudFlare; print(CloudFlare.__version__)')
run_pytest certbot-legacy "certbot-dns-cloudflare 5.5 on python-cloudflare $LEGACY" \
    test_certbot_plugin.py "$@"
run_pytest octodns "octodns with octodns-cloudflare" test_octodns.py "$@"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "the server died during the tests"
    failed=1
fi
exit $failed
