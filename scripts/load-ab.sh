#!/usr/bin/env bash
# Two or more vmfork builds (or wrappers) side by side under the same load: for each round and
# each binary, a fresh daemon, 2 s of warm-up, then `vmfork load Profiles/busybox-echo.yaml`
# open loop at RATE for 5 s with one `POST /v1/containers/run` per launch. Prints per run the
# achieved rate, exit p50/p99, the daemon's CPU per launch (its /proc/PID/stat over the run) and
# the load runner's own CPU per launch (/usr/bin/time).
#   scripts/load-ab.sh RATE ROUNDS NEW_BINARY OLD_BINARY...
#   SERVE_ARGS=--no-poll-syscalls scripts/load-ab.sh 2000 3 .build/release/vmfork
# An older binary needs its VMFork_API.resources folder beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
rate=$1; rounds=$2; shift 2
out=${OUT:-/tmp/vmfork-load-ab}
mkdir -p "$out/rootfs/bin" "$out/rootfs/etc"
cp /bin/busybox "$out/rootfs/bin/busybox"
profile=$PWD/Profiles/busybox-echo.yaml
for _ in $(seq "$rounds"); do
  for vmfork in "$@"; do
    rm -rf "$out/agent"
    # shellcheck disable=SC2086
    "$vmfork" serve --state "$out/agent" --stop-grace 2 ${SERVE_ARGS:-} 2> "$out/agent.log" &
    daemon=$!
    for _ in $(seq 100); do [ -S "$out/agent/vmfork.sock" ] && break; sleep 0.1; done
    "$vmfork" image add busybox --rootfs "$out/rootfs" --executable /bin/busybox --env PATH=/bin --state "$out/agent" > /dev/null
    common=(--state "$out/agent" --rate "$rate" --ramp-up 0.5 --time-scale 0 --quiet --ready-vms 32 --no-first-output)
    "$vmfork" load "$profile" "${common[@]}" --duration 2 > /dev/null 2>&1
    /usr/bin/time -f "%U %S" -o "$out/time.txt" "$vmfork" load "$profile" "${common[@]}" --duration 5 --json "$out/run.json" > /dev/null 2>&1
    python3 - "$vmfork" "$out" <<'PY'
import json, sys
name, out = sys.argv[1], sys.argv[2]
side = json.load(open(f"{out}/run.json"))["sides"][0]
user, system = map(float, open(f"{out}/time.txt").read().split()[-2:])
print(f"{name[-36:]:36} achieved {side.get('achievedPerSecond', 0):7.1f}/s failed {side['failed']}"
      f"  exit p50 {side['exit']['p50']:6.0f} p99 {side['exit']['p99']:7.0f} µs"
      f"  daemon {side['engine']['cpuMicrosPerLaunch']:5.0f} µs/launch  runner {1e6 * (user + system) / side['launched']:5.0f} µs/launch")
PY
    kill -TERM "$daemon"; wait "$daemon" 2> /dev/null
  done
done
