#!/usr/bin/env bash
# Where one `docker run --rm busybox echo hi` spends its time inside the VCH: starts an agent
# and a VCH with --log-level debug (the VCH's Timeline stamps), runs the command ROUNDS times,
# and prints, per step, the median time since the create request arrived (ms): each docker
# request's arrival and answer, and each agent call the VCH made for it.
# Usage: bash scripts/vch-trace.sh [ROUNDS] (default 20); VMFORK_BIN as in vch-bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
binary=$(realpath "${VMFORK_BIN:-.build/debug/vmfork}")
work=$(mktemp -d /tmp/vch-trace.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" "$work/docker-config"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh echo cat; do ln -s busybox "$work/rootfs/bin/$applet"; done
state="$work/state"
"$binary" serve --state "$state" --stop-grace 1 >"$work/agent.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$state/vmfork.sock" ] && break; sleep 0.1; done
agent() { curl -sf --unix-socket "$state/vmfork.sock" -X "$1" "http://agent$2" ${3:+-d "$3"} >/dev/null; }
agent POST /v1/images "{\"name\":\"busybox\",\"rootfs\":\"$work/rootfs\",\"executable\":\"/bin/busybox\",\"environment\":[\"PATH=/bin\"]}"
agent POST /v1/placement/hosts '{"name":"h1","cpuCores":2,"nodeMemoryKiB":[4194304]}'
agent POST /v1/placement/images '{"name":"busybox","parentMemoryKiB":65536,"growthPerChildKiB":1024,"cpuMHzPerChild":10}'
agent POST /v1/placement/warm-parents '{"host":"h1","image":"busybox","node":0}'
agent POST /v1/placement/pools '{"name":"dev","memoryReservationKiB":524288}'
"$binary" vch serve --name dev --pool dev --listen "unix://$work/dev.sock" --state "$state" --log-level debug >"$work/vch.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -S "$work/dev.sock" ] && break; sleep 0.1; done
export HOME="$work" DOCKER_CONFIG="$work/docker-config"
for _ in 1 2 3; do docker -H "unix://$work/dev.sock" run --rm busybox echo hi >/dev/null; done
: >"$work/vch.log"
for _ in $(seq "$rounds"); do docker -H "unix://$work/dev.sock" run --rm busybox echo hi >/dev/null; sleep 0.3; done
cp "$work/vch.log" /tmp/vch-trace-last.log
python3 - "$work/vch.log" <<'PY'
import re, statistics, sys
runs, current = [], None
for line in open(sys.argv[1]):
    if "debug" not in line or "] " not in line: continue
    head, message = line.rsplit("] ", 1)
    message = message.strip()
    meta_text = head.split(": ", 1)[1].rsplit(" [", 1)[0]
    keys = list(re.finditer(r"(?:^| )(\w+)=", meta_text))
    fields = {m.group(1): meta_text[m.end():(keys[i + 1].start() if i + 1 < len(keys) else len(meta_text))] for i, m in enumerate(keys)}
    if "t" not in fields: continue
    t = float(fields["t"])
    detail = fields.get("request") or fields.get("call") or ""
    detail = re.sub(r"[0-9a-f]{32}", "ID", re.sub(r"/v1\.[0-9]+/", "/", detail))
    key = f"{message}: {detail}" if detail else message
    if message == "request arrived" and detail.startswith("POST /containers/create"):
        current = {"_t0": t, "_order": []}
        runs.append(current)
    if current is None: continue
    while key in current: key += " (again)"
    current[key] = t - current["_t0"]
    current["_order"].append(key)
    if "t0" in fields:
        current[key + " [sent]"] = float(fields["t0"]) - current["_t0"]
order = max(runs, key=lambda r: len(r["_order"]))["_order"]
print(f"{len(runs)} runs; median ms since POST /containers/create arrived ([sent]: when the agent call began)")
rows = []
for key in order:
    for k in ([key + " [sent]"] if key + " [sent]" in runs[0] else []) + [key]:
        values = [r[k] for r in runs if k in r]
        rows.append((statistics.median(values), k, len(values)))
for value, k, n in sorted(rows):
    print(f"{value:8.3f}  {k}  (n={n})")
PY
