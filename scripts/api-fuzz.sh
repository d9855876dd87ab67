#!/usr/bin/env bash
# Fuzzes the host agent's API with schemathesis (PyPI) against the OpenAPI document the daemon
# serves, for a bounded time: zero 5xx, zero responses that break the document, and every
# request the document forbids refused. A real daemon on a temporary state folder, on TCP
# 127.0.0.1 with its bearer token, with a busybox image registered so that containers can be
# made. `GET /v1/events` is left out here because its follow mode streams until the client
# leaves, and `POST /v1/containers/{id}/wait` because it blocks until the container ends,
# which a fuzzed container (its arguments made up) need not do within the request timeout;
# the Swift tests cover both. Everything else is in.
# Usage: scripts/api-fuzz.sh [SECONDS]   (default 60)
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
vmfork=$(realpath "${VMFORK_BIN:-.build/debug/vmfork}")

if ! command -v st >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5' || { echo "api-fuzz: cannot install schemathesis"; exit 1; }
fi

state=$(mktemp -d /tmp/vmfork-fuzz-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$vmfork" serve --state "$state/state" --listen "127.0.0.1:$port" --stop-grace 1 > "$state/daemon.log" 2>&1 &
daemon=$!
cleanup() {
    kill -TERM "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$state"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf --unix-socket "$state/state/vmfork.sock" http://localhost/v1/_ping >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(awk '{print $2; exit}' "$state/state/api-token")

# An image the fuzzer may name (it also tries to remove it; the run copes either way).
mkdir -p "$state/rootfs/bin"
cp /bin/busybox "$state/rootfs/bin/busybox"
curl -sf --unix-socket "$state/state/vmfork.sock" -X POST http://localhost/v1/images \
    -d "{\"name\":\"busybox\",\"rootfs\":\"$state/rootfs\",\"executable\":\"/bin/busybox\",\"arguments\":[\"true\"]}" >/dev/null

# From the temporary folder, so that schemathesis's cache stays out of the repository.
# One worker: with two, hypothesis's threads call ast.parse at once, and CPython 3.11's AST
# constructor keeps its recursion counter per interpreter, not per thread, so the run died at
# random with "SystemError: AST constructor recursion depth mismatch" (CI, 2026-12-04; the
# class of CPython issue 106905), a fault of the fuzzer's interpreter and not of the API.
(cd "$state" && st run "http://127.0.0.1:$port/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
    --exclude-operation-id events --exclude-operation-id waitContainer \
    --max-time "$seconds" --request-timeout 10 --workers 1 ${VMFORK_FUZZ_SEED:+--seed "$VMFORK_FUZZ_SEED"} \
    --suppress-health-check all --no-color)
status=$?
if ! kill -0 "$daemon" 2>/dev/null || grep -q "panic\|Fatal error" "$state/daemon.log"; then
    # The runtime's own message first (a trap's reason), then the end of the log.
    echo "api-fuzz: the daemon crashed:"; grep -m5 -B2 -A8 "Fatal error\|panic\|Crash" "$state/daemon.log"; tail -20 "$state/daemon.log"; status=1
fi
echo "api-fuzz: schemathesis exit status $status"
exit $status
