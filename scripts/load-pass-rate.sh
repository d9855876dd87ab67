#!/usr/bin/env bash
# How often each side sustains a given rate (README, "Load runs"): the same 5-second open-loop
# steps as scripts/load-sweep.sh and the same verdict (scripts/load-verdict.py), but each
# (side, rate) of $STEPS run $ROUNDS times, interleaved round by round so that every side
# meets the machine's same minutes. A sweep stops at its first failed step, so one stall of
# the whole machine decides it; this counts passes instead, to compare the sides at the same
# reliability (e.g. vmfork at twice native's rate: does it pass as often?).
#   STEPS="vmfork:6000 native:3000" ROUNDS=8 scripts/load-pass-rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=${VMFORK_BIN:-.build/release/vmfork}
out=${OUT:-/tmp/vmfork-load-pass-rate}
bound_us=${BOUND_US:-5000}
seconds=${SECONDS_PER_STEP:-5}
steps=${STEPS:-vmfork:6000 native:3000}
rounds=${ROUNDS:-8}
profile=${PROFILE:-Profiles/busybox-echo.yaml}
for step in $steps; do
  case "$step" in vmfork:[0-9]*|native:[0-9]*|runc:[0-9]*) ;; *) echo "STEPS: '$step' is not SIDE:RATE (SIDE vmfork, native or runc)" >&2; exit 2 ;; esac
done
# shellcheck source=scripts/load-agent.sh
source scripts/load-agent.sh
# This run's verdicts only (a run before into the same $OUT left its own).
rm -f "$out/verdicts.txt" "$out"/[0-9]*-*-*.json "$out"/[0-9]*-*-*.csv "$out"/[0-9]*-*-*.log
# Not measured: the warm parent made and its pool filled (as load-sweep.sh does).
"$vmfork" load "$profile" --state "$state" --rate 200 --duration 2 --ramp-up 0.5 --time-scale 0 --quiet --ready-vms 32 \
  --no-first-output > /dev/null 2>&1 || true

for round in $(seq "$rounds"); do
  for step in $steps; do
    side=${step%%:*}; rate=${step#*:}
    base="$out/$round-$side-$rate"
    if [ "$side" = vmfork ]; then extra=(--ready-vms 32); else extra=(--peer "$side" --peers-only); fi
    "$vmfork" load "$profile" --state "$state" --rate "$rate" --duration "$seconds" --ramp-up 0.5 --time-scale 0 --quiet \
      --no-first-output "${extra[@]}" --json "$base.json" --trace "$base.csv" > /dev/null 2> "$base.log" \
      || { echo "round $round: $side at $rate/s: vmfork load failed: $(tail -1 "$base.log")"; exit 1; }
    echo "round $round: $(python3 scripts/load-verdict.py "$base.json" "$bound_us")" | tee -a "$out/verdicts.txt"
  done
done
"$vmfork" doctor 2>/dev/null | grep '^costs' || true
for step in $steps; do
  side=${step%%:*}; rate=${step#*:}
  passed=$(grep -c "^round [0-9]*: ok   *$side  *$rate/s" "$out/verdicts.txt" || true)
  p99s=$(grep "^round [0-9]*: .... *$side  *$rate/s" "$out/verdicts.txt" | sed 's/.*p99 *\([0-9]*\) µs.*/\1/' | sort -n | tr '\n' ' ')
  echo "== $side at $rate/s: sustained (p99 due → exit under ${bound_us} µs) in $passed of $rounds steps; p99s (µs): $p99s"
done
