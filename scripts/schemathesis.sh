#!/usr/bin/env bash
# Tests the HTTP API against openapi.yaml with schemathesis: every operation, positive and
# negative inputs, and the checks below must pass. Exits non-zero on any failure.
#
# - installs schemathesis (pinned) from PyPI into target/pyenv-http if it is missing;
# - starts a private rimd (its own run dir, data dir and a free loopback port, persistence
#   on, rate limits off so that fuzzing is not throttled) and waits for /health/ready;
# - runs the examples, coverage and fuzzing phases with a bounded number of examples per
#   operation (SCHEMATHESIS_MAX_EXAMPLES, default 50) so the run stays within ~3 minutes;
# - stops the daemon (SIGTERM) and removes its directories.
#
# The daemon binary: $ST_RIMD_BIN if set (not RIMD_*: rimd reads those as settings), else
# target/release/rimd if no source is newer, else a debug build (cargo build --bin rimd;
# honours CARGO_TARGET_DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ST_VERSION="4.32.5"
VENV="$ROOT/target/pyenv-http"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
# positive_data_acceptance is left out on purpose: the schema cannot say everything the
# server refuses (byte limits of UTF-8 strings, rule text that must compile, the shard
# count of this configuration).
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance"

log() { echo "schemathesis.sh: $*" >&2; }

install_schemathesis() {
    if [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" = "$ST_VERSION" ]; then
        return
    fi
    log "installing schemathesis $ST_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
}

# A release binary is used only if no source is newer than it (a stale one would test
# yesterday's server).
release_is_fresh() {
    local rel="${CARGO_TARGET_DIR:-$ROOT/target}/release/rimd"
    [ -x "$rel" ] || return 1
    [ -z "$(find "$ROOT" -path "$ROOT/target" -prune -o \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -newer "$rel" -print -quit)" ]
}

find_rimd() {
    if [ -n "${ST_RIMD_BIN:-}" ]; then
        echo "$ST_RIMD_BIN"
    elif release_is_fresh; then
        echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/rimd"
    else
        (cd "$ROOT" && cargo build --quiet --bin rimd >&2)
        echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/rimd"
    fi
}

install_schemathesis
RIMD="$(find_rimd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rimd-schemathesis.XXXXXX")"
PID=""
cleanup() {
    local rc=$?
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$WORK/rimd.log" ]; then
        log "daemon log (last 40 lines):"
        tail -n 40 "$WORK/rimd.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

log "starting $RIMD"
"$RIMD" --run-dir "$WORK/run" \
    --set persist.enabled=true \
    --set "persist.data_dir=$WORK/data" \
    --set api.enabled=true \
    --set api.listen=127.0.0.1:0 \
    --set api.rate_query_per_min=0 \
    --set api.rate_command_per_min=0 \
    --set topology.idle=backoff \
    --set topology.pin=false \
    --set reflex.nodes_max=4096 \
    --set decisions.slots=1024 \
    >"$WORK/rimd.log" 2>&1 &
PID=$!

ADDR=""
for _ in $(seq 1 600); do
    if [ -s "$WORK/run/http.addr" ]; then
        ADDR="$(tr -d '[:space:]' <"$WORK/run/http.addr")"
        if python3 - "$ADDR" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://%s/api/v1/health/ready" % sys.argv[1], timeout=2)
except Exception:
    sys.exit(1)
EOF
        then
            break
        fi
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        log "rimd exited during start-up"
        exit 1
    fi
    sleep 0.1
done
[ -n "$ADDR" ] || { log "rimd did not write its HTTP address"; exit 1; }
log "rimd ready on $ADDR; running schemathesis ($MAX_EXAMPLES examples per operation)"

"$VENV/bin/st" --no-color run "$ROOT/openapi.yaml" \
    --url "http://$ADDR/api/v1" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --seed 20261126 \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    --suppress-health-check too_slow,filter_too_much,data_too_large
log "passed"
