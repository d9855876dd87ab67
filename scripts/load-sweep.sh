#!/usr/bin/env bash
# The highest launch rate each runner sustains with p99 fork → exit under a bound (README,
# "Load runs"): `vmfork load` open-loop at rising rates of Profiles/busybox-echo.yaml, for
# vmfork through a fresh host agent, for runc and for native posix_spawn. A rate counts as
# sustained when every launch finished, the last within half a second of the schedule's end
# (no backlog), and p99 from due to exit is under the bound. Prints one line per step and the verdicts; keeps
# each step's JSON, SVG and launch trace (CSV, a line per launch) under $out.
#   scripts/load-sweep.sh                      # all three, default rates
#   SIDES="runc" RUNC_RATES="5 10 20" scripts/load-sweep.sh
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=${VMFORK_BIN:-.build/release/vmfork}
out=${OUT:-/tmp/vmfork-load-sweep}
bound_us=${BOUND_US:-5000}
seconds=${SECONDS_PER_STEP:-5}
sides=${SIDES:-vmfork native runc}
rates_vmfork=${VMFORK_RATES:-50 100 150 200 300 400 500 600 800}
rates_native=${NATIVE_RATES:-50 100 200 300 400 600 800 1000 1500}
rates_runc=${RUNC_RATES:-2 4 6 8 10 15 20 30}
profile=${PROFILE:-Profiles/busybox-echo.yaml}
# 0: each container removed as soon as it has ended (docker run --rm); 1: kept its profile lifetime.
time_scale=${TIME_SCALE:-0}
# 1: time each launch's first output too (a log follow per launch); 0: not, so that a vmfork
# launch with no lifetime is one call (POST /v1/containers/run).
first_output=${FIRST_OUTPUT:-1}
# shellcheck source=scripts/load-agent.sh
source scripts/load-agent.sh

for side in $sides; do
  var="rates_$side"
  best=""
  if [ "$side" = vmfork ]; then
    # Not measured: the image's warm parent is made at its first launch and its pool filled, so
    # that the first step measures the rate, not the parent's making under a burst of launches.
    "$vmfork" load "$profile" --state "$state" --rate 200 --duration 2 --ramp-up 0.5 --time-scale 0 --quiet --ready-vms 32 \
      --no-first-output > /dev/null 2>&1 || true
  fi
  for rate in ${!var}; do
    json="$out/$side-$rate.json"
    if [ "$side" = vmfork ]; then extra=(--ready-vms 32); else extra=(--peer "$side" --peers-only); fi
    [ "$first_output" = 1 ] || extra+=(--no-first-output)
    "$vmfork" load "$profile" --state "$state" --rate "$rate" --duration "$seconds" --ramp-up 0.5 --time-scale "$time_scale" --quiet \
      "${extra[@]}" --json "$json" --svg "$out/$side-$rate.svg" --trace "$out/$side-$rate.csv" > /dev/null 2> "$out/$side-$rate.log" \
      || { echo "$side at $rate/s: vmfork load failed: $(tail -1 "$out/$side-$rate.log")"; break; }
    verdict=$(python3 scripts/load-verdict.py "$json" "$bound_us")
    echo "$verdict"
    case "$verdict" in ok*) best=$rate ;; *) break ;; esac
  done
  echo "== $side: highest sustained rate with p99 fork → exit under ${bound_us} µs: ${best:-none of the rates tried}"
done
