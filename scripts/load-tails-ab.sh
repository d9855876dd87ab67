#!/usr/bin/env bash
# The tails of two vmfork builds' daemons at one offered rate (README, "Load runs"): both
# daemons up at once (separate state folders), warmed, then ROUNDS alternating steps of
# SECONDS_PER_STEP (5) at RATE/s of Profiles/busybox-echo.yaml (open loop, --time-scale 0, no
# first output), all driven by B's load runner, so that only the daemons differ. Prints one
# line per step: p50, p99 and max from due to exit, the launches over 5 and over 20 ms (from
# the launch trace), the engine's CPU and the load runner's per launch. (`load-ab.sh`: a fresh
# daemon per step, and CPU per launch.) An older binary needs its *.resources folders beside it.
# BURST_RATE: after the warm-up, one second at that rate on each side first (a burst beyond
# what the host sustains, which leaves its pools larger than their targets).
# RUNNER_A, RUNNER_B: the load runner of each side instead (default B's binary), to compare two
# runners' (clients') builds against the same daemon build (then give the same binary twice).
#   scripts/load-tails-ab.sh OLD_BINARY NEW_BINARY [RATE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 rate=${3:-2000} rounds=${4:-6} seconds=${SECONDS_PER_STEP:-5}
out=${OUT:-/tmp/vmfork-load-tails-ab}
rm -rf "$out"; mkdir -p "$out/rootfs/bin"
cp /bin/busybox "$out/rootfs/bin/busybox"
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM $p 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
for side in a b; do
  bin=${!side}
  "$bin" serve --state "$out/$side" --stop-grace 2 2> "$out/$side.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$out/$side/vmfork.sock" ] && break; sleep 0.1; done
  "$bin" image add busybox --rootfs "$out/rootfs" --executable /bin/busybox --env PATH=/bin --state "$out/$side" > /dev/null
  "$b" load Profiles/busybox-echo.yaml --state "$out/$side" --rate 200 --duration 2 --ramp-up 0.5 --time-scale 0 --quiet \
    --ready-vms 32 --no-first-output > /dev/null 2>&1 || true
  if [ -n "${BURST_RATE:-}" ]; then
    "$b" load Profiles/busybox-echo.yaml --state "$out/$side" --rate "$BURST_RATE" --duration 1 --time-scale 0 --quiet \
      --ready-vms 32 --no-first-output > /dev/null 2>&1 || true
  fi
done
"$b" doctor 2>/dev/null | grep '^costs' || true
for round in $(seq "$rounds"); do
  for side in a b; do
    json="$out/$side-$round.json"
    runner=RUNNER_${side^^}
    "${!runner:-$b}" load Profiles/busybox-echo.yaml --state "$out/$side" --rate "$rate" --duration "$seconds" --ramp-up 0.5 --time-scale 0 \
      --quiet --ready-vms 32 --no-first-output --json "$json" --trace "$out/$side-$round.csv" > /dev/null 2>&1 || true
    python3 - "$json" "$out/$side-$round.csv" "$side" "$round" <<'PY'
import csv, json, sys
report = json.load(open(sys.argv[1])); s = report["sides"][0]
late = [float(r["exit_s"]) - float(r["due_s"]) for r in csv.DictReader(open(sys.argv[2])) if r["exit_s"]]
over5 = sum(1 for x in late if x > 0.005); over20 = sum(1 for x in late if x > 0.020)
print("%s round %s: p50 %5.0f µs  p99 %6.0f µs  max %7.0f µs  >5ms %5d  >20ms %5d  engine CPU %4.0f µs/launch  runner %3.0f µs/launch" % (
    sys.argv[3], sys.argv[4], s["exit"]["p50"], s["exit"]["p99"], max(late) * 1e6, over5, over20,
    (s.get("engine") or {}).get("cpuMicrosPerLaunch", 0), s["runnerCPUSeconds"] / max(1, s["launched"]) * 1e6))
PY
  done
done
