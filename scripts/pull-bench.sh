#!/usr/bin/env bash
# Pull + unpack of the busybox image from a local registry, side by side in one run:
# `vmfork image pull` (through a daemon; each pull cold: the image removed and its blobs
# collected before the next) against `skopeo copy` to an OCI layout plus `umoci unpack`.
# Interleaved runs, medians. Holds /work/bench.lock (the machine is shared).
# Usage: scripts/pull-bench.sh [RUNS] (default 15); VMFORK_BIN picks the binary (default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-15}
vmfork=$(realpath "${VMFORK_BIN:-.build/release/vmfork}")
work=$(mktemp -d /tmp/vmfork-pull-bench-XXXXXX)
read -r port registry < <(bash scripts/local-registry.sh "$work/registry")
"$vmfork" serve --state "$work/state" > "$work/daemon.log" 2>&1 &
daemon=$!
cleanup() { kill "$daemon" "$registry" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do "$vmfork" image ls --state "$work/state" >/dev/null 2>&1 && break; sleep 0.1; done
ref="127.0.0.1:$port/busybox:latest"

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
exec 9>/work/bench.lock
flock 9
: > "$work/vmfork.us"; : > "$work/skopeo.us"
for i in $(seq "$runs"); do
    start=$(now)
    "$vmfork" image pull "$ref" --state "$work/state" >/dev/null
    echo $(( ($(now) - start) / 1000 )) >> "$work/vmfork.us"
    "$vmfork" image rm busybox --state "$work/state" >/dev/null
    "$vmfork" image gc --state "$work/state" >/dev/null

    rm -rf "$work/oci" "$work/bundle"
    start=$(now)
    skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$ref" "oci:$work/oci:busybox" >/dev/null
    umoci unpack --image "$work/oci:busybox" "$work/bundle" >/dev/null
    echo $(( ($(now) - start) / 1000 )) >> "$work/skopeo.us"
done
flock -u 9
v=$(median < "$work/vmfork.us"); s=$(median < "$work/skopeo.us")
printf 'busybox pull+unpack, %d interleaved runs, median:\n' "$runs"
printf '  vmfork image pull        %8.1f ms\n' "$(echo "$v / 1000" | bc -l)"
printf '  skopeo copy + umoci unpack %6.1f ms\n' "$(echo "$s / 1000" | bc -l)"
printf '  ratio (vmfork / skopeo+umoci) %.2f\n' "$(echo "$v / $s" | bc -l)"
