#!/usr/bin/env bash
# Times a container's start from a disk chain (vmfork run --disk) beside the same start
# from a host folder (vmfork run --rootfs), in one run: a busybox echo, a python3 start
# (python3 -S -c 'print(6*7)'), and busybox sha256sum of a 256 MiB file of the image, with
# native sha256sum of the same file beside them. Each run is a new vmfork process, so the
# disk path is cold every time (its caches and file copies start empty).
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
head -c $((256 << 20)) /dev/urandom > "$work/busybox/big"
for file in "$python" $(ldd "$python" | grep -o '/[^ ]*'); do
  mkdir -p "$work/python$(dirname "$file")"; cp -L "$file" "$work/python$file"
done
mkdir -p "$work/python/usr/lib"
cp -a "/usr/lib/$(basename "$python")" "$work/python/usr/lib/"

for name in busybox python; do
  "$vmfork" disk import --from "$work/$name" --size 4G "$work/$name.vmdk" >/dev/null
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
folder=$(time_runs "$vmfork" run --rootfs "$work/busybox" --memory 256 -- /bin/busybox sha256sum /big)
disk=$(time_runs "$vmfork" run --disk "$work/busybox-container.vmdk" --memory 256 -- /bin/busybox sha256sum /big)
native=$(time_runs sha256sum "$work/busybox/big")
echo "sha256sum of 256 MiB: folder $folder ms, disk $disk ms, native $native ms"
