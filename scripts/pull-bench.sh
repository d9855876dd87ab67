#!/usr/bin/env bash
# Pull + unpack of the busybox and python3 images from a local registry, side by side in one
# run: `vmfork image pull` (through a daemon; each pull cold: the image removed and its blobs
# and layer disks collected before the next; the pull writes the unpacked folder and the
# layer disks) against `skopeo copy` to an OCI layout plus `umoci unpack`.
# Interleaved runs, medians. Holds /work/bench.lock (the machine is shared).
# Usage: scripts/pull-bench.sh [RUNS] [IMAGE...] (default 15 runs, images busybox python3);
# VMFORK_BIN picks the binary (default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-15}
shift || true
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(busybox python3)
vmfork=$(realpath "${VMFORK_BIN:-.build/release/vmfork}")
work=$(mktemp -d /tmp/vmfork-pull-bench-XXXXXX)
python_flag=()
for image in "${images[@]}"; do
    case "$image" in
        busybox) ;;
        python3) python_flag=(--python) ;;
        *) echo "pull-bench.sh: no image $image in the local registry (busybox or python3)" >&2; exit 2 ;;
    esac
done
read -r port registry < <(bash scripts/local-registry.sh "$work/registry" "${python_flag[@]}")
"$vmfork" serve --state "$work/state" --log-level debug >> "$work/daemon.log" 2>&1 &
daemon=$!
cleanup() { kill "$daemon" "$registry" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do "$vmfork" image ls --state "$work/state" >/dev/null 2>&1 && break; sleep 0.1; done

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
exec 9>/work/bench.lock
flock 9
printf '%s, %s, load average %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(basename "$vmfork")" "$(cut -d' ' -f1-3 /proc/loadavg)"
for image in "${images[@]}"; do
    ref="127.0.0.1:$port/$image:latest"
    : > "$work/vmfork.us"; : > "$work/skopeo.us"
    for _ in $(seq "$runs"); do
        sync
        start=$(now)
        "$vmfork" image pull "$ref" --state "$work/state" >/dev/null
        echo $(( ($(now) - start) / 1000 )) >> "$work/vmfork.us"
        "$vmfork" image rm "$image" --state "$work/state" >/dev/null
        "$vmfork" image gc --state "$work/state" >/dev/null

        rm -rf "$work/oci" "$work/bundle"
        # Untimed: what the previous steps left dirty is written out first, so that neither
        # side's timed step waits on the other's writeback (vmfork's pull flushes its blobs
        # and layer disks; skopeo and umoci flush nothing).
        sync
        start=$(now)
        skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$ref" "oci:$work/oci:$image" >/dev/null
        umoci unpack --image "$work/oci:$image" "$work/bundle" >/dev/null
        echo $(( ($(now) - start) / 1000 )) >> "$work/skopeo.us"
    done
    v=$(median < "$work/vmfork.us"); s=$(median < "$work/skopeo.us")
    printf '%s pull+unpack, %d interleaved runs, median (min-max):\n' "$image" "$runs"
    printf '  vmfork image pull            %8.1f ms (%.1f-%.1f)\n' "$(echo "$v / 1000" | bc -l)" \
        "$(sort -n "$work/vmfork.us" | head -1 | awk '{print $1 / 1000}')" "$(sort -n "$work/vmfork.us" | tail -1 | awk '{print $1 / 1000}')"
    printf '  skopeo copy + umoci unpack   %8.1f ms (%.1f-%.1f)\n' "$(echo "$s / 1000" | bc -l)" \
        "$(sort -n "$work/skopeo.us" | head -1 | awk '{print $1 / 1000}')" "$(sort -n "$work/skopeo.us" | tail -1 | awk '{print $1 / 1000}')"
    printf '  ratio (vmfork / skopeo+umoci) %.2f\n' "$(echo "$v / $s" | bc -l)"
    # Where the daemon's pulls spent their time (its debug log), medians.
    phase() { grep "$1" "$work/daemon.log" | grep -o "$2=[0-9.]*" | cut -d= -f2 | median; }
    grep -q "image pull phases" "$work/daemon.log" && printf '  vmfork phases: manifest %.1f ms, layer blobs %.1f ms, folder and disks %.1f ms (folder %.1f, disks %.1f)\n' \
        "$(phase "reference=$ref " manifest_ms)" "$(phase "reference=$ref " layers_ms)" "$(phase "reference=$ref " unpack_and_disks_ms)" \
        "$(phase "image layers unpacked" ms)" "$(phase "image layer disks written" ms)"
    : > "$work/daemon.log"
done
printf 'load average at the end %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
flock -u 9
