#!/bin/sh
# What a container's terminal (`tty`) costs: the same busybox containers run through the
# agent with and without one, alternately, ROUNDS times each; prints each run's wall time
# (ms, as the client sees it: create, start, the program, its output in the log, remove)
# and the medians. Usage: scripts/tty-bench.sh [ROUNDS] (a release build: swift build -c
# release --product vmfork). Take it under flock /work/bench.lock.
set -eu
rounds=${1:-9}
here=$(cd "$(dirname "$0")/.." && pwd)
vmfork=${VMFORK:-$here/.build/release/vmfork}
work=$(mktemp -d /tmp/tty-bench.XXXXXX)
mkdir -p "$work/rootfs/bin"
cp /bin/busybox "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"
"$vmfork" serve --state "$work/state" > "$work/agent.log" 2>&1 &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do "$vmfork" container ps --state "$work/state" > /dev/null 2>&1 && break; sleep 0.1; done
"$vmfork" image add busybox --rootfs "$work/rootfs" --executable /bin/busybox --env PATH=/bin --state "$work/state" > /dev/null
lines='i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done'
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for case in echo lines; do
    script=$([ "$case" = echo ] && echo 'echo hi' || echo "$lines")
    : > "$work/plain" ; : > "$work/tty"
    "$vmfork" container run --state "$work/state" busybox -- sh -c "$script" > /dev/null  # the warm parent, made once
    for _ in $(seq "$rounds"); do
        for mode in plain tty; do
            flag=$([ "$mode" = tty ] && echo --tty || true)
            start=$(date +%s%N)
            "$vmfork" container run --state "$work/state" $flag busybox -- sh -c "$script" > /dev/null
            ms "$start" >> "$work/$mode"
        done
    done
    echo "$case: without a terminal $(tr '\n' ' ' < "$work/plain")-> median $(median < "$work/plain") ms"
    echo "$case: with a terminal    $(tr '\n' ' ' < "$work/tty")-> median $(median < "$work/tty") ms"
done
