#!/usr/bin/env bash
# Times a container's start from a disk chain (vmfork run --disk) beside the same start
# from a host folder (vmfork run --rootfs), alternating, in one run: a busybox echo and a
# python3 start (python3 -S -c 'print(6*7)'). Each run is a new vmfork process, so the disk
# path is cold every time (its caches and file copies start empty).
# Usage: scripts/bench-disk-rootfs.sh [RUNS]   (default 20; debug build unless VMFORK_BIN)
set -euo pipefail
runs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
vmfork=${VMFORK_BIN:-$root/.build/debug/vmfork}
work=$(mktemp -d /tmp/vmfork-bench-disk.XXXXXX)
trap 'rm -rf "$work"' EXIT

python=$(readlink -f /usr/bin/python3)
mkdir -p "$work/busybox/bin" "$work/python"
cp /bin/busybox "$work/busybox/bin/busybox"
for file in "$python" $(ldd "$python" | grep -o '/[^ ]*'); do
  mkdir -p "$work/python$(dirname "$file")"; cp -L "$file" "$work/python$file"
done
mkdir -p "$work/python/usr/lib"
cp -a "/usr/lib/$(basename "$python")" "$work/python/usr/lib/"

for name in busybox python; do
  "$vmfork" disk import --from "$work/$name" --size 2G "$work/$name.vmdk" >/dev/null
  "$vmfork" disk child --parent "$work/$name.vmdk" "$work/$name-container.vmdk" >/dev/null
done

# Median wall time in ms of RUNS runs of "$@".
time_runs() {
  local samples=()
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null
    end=$(date +%s%N)
    samples+=($(( (end - start) / 1000 )))
  done
  printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

uptime
echo "runs: $runs each, median wall ms per start (new vmfork process each)"
for name in busybox python; do
  if [ "$name" = busybox ]; then program=(/bin/busybox echo hi); else program=("$python" -S -c 'print(6*7)'); fi
  folder=$(time_runs "$vmfork" run --rootfs "$work/$name" --memory 256 -- "${program[@]}")
  disk=$(time_runs "$vmfork" run --disk "$work/$name-container.vmdk" --memory 256 -- "${program[@]}")
  echo "$name: folder $folder ms, disk $disk ms"
done
