#!/usr/bin/env bash
# A burst from idle into a full pool, for two or more vmfork builds side by side: for each
# round and each binary, a fresh daemon whose busybox parent keeps 32 ready VMs, three
# containers run one at a time (so the fork point has seen children come back), one second
# of rest, then `vmfork load Profiles/busybox-echo.yaml` open loop at RATE for 2 s with no
# ramp-up. Prints per run the VM exits per container over the burst (/metrics), exit p50, p99
# and max of its first and second second, and the daemon's CPU per launch. The first second
# is where a burst reaches the pool's never-used VMs (README, "Write warm-up").
#   scripts/pool-burst-ab.sh RATE ROUNDS NEW_BINARY OLD_BINARY...
set -uo pipefail
cd "$(dirname "$0")/.."
rate=$1; rounds=$2; shift 2
out=${OUT:-/tmp/vmfork-pool-burst}
mkdir -p "$out/rootfs/bin"
cp /bin/busybox "$out/rootfs/bin/busybox"
profile=$PWD/Profiles/busybox-echo.yaml
metrics() {
  curl -s --unix-socket "$out/agent/vmfork.sock" http://vmfork/metrics \
    | awk '/^vmfork_vm_exits_total /{e=$2} /^vmfork_container_exits_total /{c=$2} END{print e, c}'
}
for _ in $(seq "$rounds"); do
  for vmfork in "$@"; do
    rm -rf "$out/agent"
    "$vmfork" serve --state "$out/agent" --stop-grace 2 2> "$out/agent.log" &
    daemon=$!
    for _ in $(seq 100); do [ -S "$out/agent/vmfork.sock" ] && break; sleep 0.1; done
    "$vmfork" image add busybox --rootfs "$out/rootfs" --executable /bin/busybox --env PATH=/bin --state "$out/agent" > /dev/null
    curl -s --unix-socket "$out/agent/vmfork.sock" -X POST http://vmfork/v1/parents -d '{"image":"busybox","readyVMs":32}' > /dev/null
    sleep 2
    for _ in 1 2 3; do "$vmfork" container run busybox --state "$out/agent" -- echo hi > /dev/null; done
    sleep 1
    before=$(metrics)
    "$vmfork" load "$profile" --state "$out/agent" --rate "$rate" --duration 2 --ramp-up 0 --time-scale 0 --quiet \
      --ready-vms 32 --no-first-output --json "$out/run.json" > /dev/null 2>&1
    after=$(metrics)
    kill -TERM "$daemon"; wait "$daemon"
    python3 - "$vmfork" "$out/run.json" "$before" "$after" <<'PY'
import json, sys
name, path, before, after = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
side = json.load(open(path))["sides"][0]
exits = (float(after[0]) - float(before[0])) / max(1.0, float(after[1]) - float(before[1]))
windows = " | ".join("second %d: p50 %d p99 %d max %d µs" % (w["startSeconds"], w["exit"]["p50"], w["exit"]["p99"], w["exit"]["max"])
                     for w in side["windows"][:2])
cpu = (side.get("engine") or {}).get("cpuMicrosPerLaunch") or 0
print("%-28s exits/container %.2f  %s  engine CPU %.0f µs/launch" % (name, exits, windows, cpu))
PY
  done
done
