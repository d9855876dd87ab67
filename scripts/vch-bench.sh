#!/usr/bin/env bash
# `docker run --rm busybox echo hi` through a VCH, side by side in one interleaved run with
# the same container through the host agent (`vmfork container run`), `docker run` against an
# endpoint that does nothing (scripts/null-docker-endpoint.py), native spawn of
# busybox, and runc (Debian's) running the same busybox rootfs from an OCI bundle; the
# docker client's own start (`docker version` against the VCH) is the floor.
# A second VCH with VMFORK_VCH_CACHES=0 shows what its lookup caches save.
# Usage: bash scripts/vch-bench.sh [ROUNDS] (default 30). Uses .build/release/vmfork when
# built and newer than the sources (make build), else .build/debug/vmfork; VMFORK_BIN overrides. Needs /dev/kvm, root (runc), busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30}
binary=${VMFORK_BIN:-.build/release/vmfork}
if [ -z "${VMFORK_BIN:-}" ] && { [ ! -x "$binary" ] || [ -n "$(find Sources -newer "$binary" -name '*.swift' | head -1)" ]; }; then binary=.build/debug/vmfork; fi
[ -x "$binary" ] || { echo "build first: swift build (or make build)"; exit 1; }
binary=$(realpath "$binary")
work=$(mktemp -d /tmp/vch-bench.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

# The busybox rootfs (the tests' layout) and an OCI bundle of it for runc.
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/dev" "$work/bundle/rootfs/proc" "$work/docker-config"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh echo cat; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
(cd "$work/bundle" && runc spec && python3 - <<'PY'
import json
spec = json.load(open("config.json"))
spec["process"]["args"] = ["/bin/busybox", "echo", "hi"]
spec["process"]["terminal"] = False
spec["root"]["readonly"] = True
json.dump(spec, open("config.json", "w"))
PY
)

state="$work/state"
"$binary" serve --state "$state" --stop-grace 1 >"$work/agent.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$state/vmfork.sock" ] && break; sleep 0.1; done
agent() { curl -sf --unix-socket "$state/vmfork.sock" -X "$1" "http://agent$2" ${3:+-d "$3"} >/dev/null; }
agent POST /v1/images "{\"name\":\"busybox\",\"rootfs\":\"$work/bundle/rootfs\",\"executable\":\"/bin/busybox\",\"environment\":[\"PATH=/bin\"]}"
agent POST /v1/placement/hosts '{"name":"h1","cpuCores":2,"nodeMemoryKiB":[4194304]}'
agent POST /v1/placement/images '{"name":"busybox","parentMemoryKiB":65536,"growthPerChildKiB":1024,"cpuMHzPerChild":10}'
agent POST /v1/placement/warm-parents '{"host":"h1","image":"busybox","node":0}'
agent POST /v1/placement/pools '{"name":"dev","memoryReservationKiB":524288}'
"$binary" vch serve --name dev --pool dev --listen "unix://$work/dev.sock" --state "$state" >"$work/vch.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$work/dev.sock" ] && break; sleep 0.1; done
# The same VCH with its caches off (VMFORK_VCH_CACHES=0: every image and container lookup asks
# the agent), on its own pool: what the caches save, in the same rounds.
agent POST /v1/placement/pools '{"name":"plain","memoryReservationKiB":524288}'
VMFORK_VCH_CACHES=0 "$binary" vch serve --name plain --pool plain --listen "unix://$work/plain.sock" --state "$state" >"$work/vch-plain.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$work/plain.sock" ] && break; sleep 0.1; done
# The agent's own VCH (POST /v1/vchs, as the web UI's wizard makes one): served inside the
# daemon's process, on its own pool.
agent POST /v1/placement/pools '{"name":"inagent","memoryReservationKiB":524288}'
agent POST /v1/vchs '{"name":"inagent","pool":"inagent","listen":"unix"}'
for _ in $(seq 100); do [ -S "$state/vch/inagent.sock" ] && break; sleep 0.1; done
# The docker client's own floor for `run`: an endpoint that answers its five requests at once.
python3 scripts/null-docker-endpoint.py "$work/null.sock" & pids+=($!)
for _ in $(seq 100); do [ -S "$work/null.sock" ] && break; sleep 0.1; done

export HOME="$work" DOCKER_CONFIG="$work/docker-config"
python3 - "$rounds" "$binary" "$work" <<'PY'
import statistics, subprocess, sys, time
rounds, binary, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
docker = ["docker", "-H", f"unix://{work}/dev.sock"]
cases = [
    ("docker version (the client's floor)", lambda i: docker + ["version"], None),
    ("docker run --rm busybox echo hi (VCH)", lambda i: docker + ["run", "--rm", "busybox", "echo", "hi"], b"hi\n"),
    ("docker run --rm ... (the agent's VCH, in its process)", lambda i: ["docker", "-H", f"unix://{work}/state/vch/inagent.sock", "run", "--rm", "busybox", "echo", "hi"], b"hi\n"),
    ("docker run --rm ... (VCH, caches off)", lambda i: ["docker", "-H", f"unix://{work}/plain.sock", "run", "--rm", "busybox", "echo", "hi"], b"hi\n"),
    ("docker run --rm ... (null endpoint: the client alone)", lambda i: ["docker", "-H", f"unix://{work}/null.sock", "run", "--rm", "busybox", "echo", "hi"], b"hi\n"),
    ("vmfork container run busybox echo hi (host agent)", lambda i: [binary, "container", "run", "--state", f"{work}/state", "busybox", "--", "echo", "hi"], b"hi\n"),
    ("native spawn: busybox echo hi", lambda i: ["/bin/busybox", "echo", "hi"], b"hi\n"),
    ("runc run: busybox echo hi (OCI bundle)", lambda i: ["runc", "run", "--bundle", f"{work}/bundle", f"bench{i}"], b"hi\n"),
]
samples = {name: [] for name, _, _ in cases}
for i in range(rounds + 3):
    for name, command, expected in cases:
        start = time.perf_counter()
        result = subprocess.run(command(i), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        elapsed = (time.perf_counter() - start) * 1000
        if result.returncode != 0 or (expected and result.stdout != expected):
            sys.exit(f"{name}: status {result.returncode}, {result.stdout!r} {result.stderr[-300:]!r}")
        if i >= 3: samples[name].append(elapsed)
print(f"{rounds} interleaved rounds, wall time of each command (ms), {binary}")
print(f"{'':55} {'p50':>7} {'p90':>7} {'min':>7}")
for name, values in samples.items():
    values.sort()
    print(f"{name:55} {statistics.median(values):7.1f} {values[int(len(values) * 0.9) - 1]:7.1f} {values[0]:7.1f}")
floor = statistics.median(samples["docker version (the client's floor)"])
run = statistics.median(samples["docker run --rm busybox echo hi (VCH)"])
null_run = statistics.median(samples["docker run --rm ... (null endpoint: the client alone)"])
print(f"docker run through the VCH is {run - floor:.1f} ms p50 above the floor (target: within 5 ms)")
print(f"the client's own run costs {null_run - floor:.1f} ms above that floor (an endpoint that answers at once);")
print(f"the VCH, the agent and the container add {run - null_run:.1f} ms p50 to it")
plain = statistics.median(samples["docker run --rm ... (VCH, caches off)"])
print(f"the VCH's lookup caches save {plain - run:.1f} ms p50 (the same VCH with VMFORK_VCH_CACHES=0)")
inagent = statistics.median(samples["docker run --rm ... (the agent's VCH, in its process)"])
print(f"docker run through the agent's own VCH is {inagent - floor:.1f} ms p50 above the floor ({inagent - null_run:.1f} above the null endpoint)")
PY
