#!/usr/bin/env bash
# What each agent call of a `docker run --rm` costs the VCH, alone: a fresh host agent with a
# busybox image, a placement host and a pool (as vch-bench.sh sets them up), then ROUNDS rounds
# over one kept connection, each after 20 ms idle (as a docker client's requests find it):
# create in the pool, create without one, start, and the wait that carries the output and
# removes. Prints p50 and p90 (ms) of each.
# Usage: bash scripts/agent-calls.sh [ROUNDS] (default 100); VMFORK_BIN as in vch-bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}
binary=$(realpath "${VMFORK_BIN:-.build/release/vmfork}")
work=$(mktemp -d /tmp/agent-calls.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh echo; do ln -s busybox "$work/rootfs/bin/$applet"; done
"$binary" serve --state "$work/state" --stop-grace 1 >"$work/agent.log" 2>&1 & pid=$!
for _ in $(seq 100); do [ -S "$work/state/vmfork.sock" ] && break; sleep 0.1; done
agent() { curl -sf --unix-socket "$work/state/vmfork.sock" -X "$1" "http://agent$2" ${3:+-d "$3"} >/dev/null; }
agent POST /v1/images "{\"name\":\"busybox\",\"rootfs\":\"$work/rootfs\",\"executable\":\"/bin/busybox\",\"environment\":[\"PATH=/bin\"]}"
agent POST /v1/placement/hosts '{"name":"h1","cpuCores":2,"nodeMemoryKiB":[4194304]}'
agent POST /v1/placement/images '{"name":"busybox","parentMemoryKiB":65536,"growthPerChildKiB":1024,"cpuMHzPerChild":10}'
agent POST /v1/placement/warm-parents '{"host":"h1","image":"busybox","node":0}'
agent POST /v1/placement/pools '{"name":"dev","memoryReservationKiB":524288}'
python3 - "$work/state/vmfork.sock" "$rounds" <<'PY'
import json, socket, statistics, sys, time
path, rounds = sys.argv[1], int(sys.argv[2])
connection = socket.socket(socket.AF_UNIX)
connection.connect(path)
def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    connection.sendall(f"{method} {url} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    buffer = b""
    while b"\r\n\r\n" not in buffer: buffer += connection.recv(65536)
    head, rest = buffer.split(b"\r\n\r\n", 1)
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length: rest += connection.recv(65536)
    return int(head.split(b" ")[1]), rest
times = {"create in a pool": [], "create, no pool": [], "start": [], "wait?output&remove": []}
def timed(name, method, url, body=None, expect=200):
    time.sleep(0.02)
    began = time.perf_counter()
    status, answer = call(method, url, body)
    times[name].append((time.perf_counter() - began) * 1e3)
    if status != expect: sys.exit(f"{method} {url}: {status} {answer[:200]!r}")
    return answer
for _ in range(rounds):
    for pooled in (True, False):
        spec = {"image": "busybox", "arguments": ["echo", "hi"], **({"pool": "dev"} if pooled else {})}
        made = json.loads(timed("create in a pool" if pooled else "create, no pool", "POST", "/v1/containers", spec, 201))
        timed("start", "POST", f"/v1/containers/{made['id']}/start")
        ended = json.loads(timed("wait?output&remove", "POST", f"/v1/containers/{made['id']}/wait?output=65536&remove=true"))
        if not ended.get("removed"): sys.exit(f"not removed: {ended}")
print(f"{rounds} rounds, each call after 20 ms idle; ms")
for name, values in times.items():
    values.sort()
    print(f"  {name:22s} p50 {statistics.median(values):6.3f}  p90 {values[int(len(values) * 0.9)]:6.3f}")
PY
