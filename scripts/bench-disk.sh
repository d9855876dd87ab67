#!/usr/bin/env bash
# Disk I/O side by side, in one run, on the same files: our VMDK path (`vmfork disk bench`),
# `qemu-img bench -f vmdk -i io_uring` on the same VMDK, and fio's io_uring engine on the
# equivalent raw file (the physical limit here). A last column runs fio on the VMDK file's
# grain area itself: the same host blocks our path reads, for a like-for-like limit. O_DIRECT for all three (qemu: -t none,
# fio: --direct=1). Each cell is the median of BENCH_REPS runs; tools take turns.
#
# ours and qemu-img use qemu-img bench's pattern: request i at (i * step) mod size, with a
# 4 KiB * 7919 step for "random"; fio draws random offsets (it has no modular stride).
#
#   bash scripts/bench-disk.sh                  # 512 MiB disk, 3 runs per cell
#   BENCH_SIZE_MB=256 BENCH_REPS=5 bash scripts/bench-disk.sh
set -euo pipefail
cd "$(dirname "$0")/.."

vmfork=${VMFORK:-.build/release/vmfork}
size_mb=${BENCH_SIZE_MB:-512}
reps=${BENCH_REPS:-3}
[ -x "$vmfork" ] || { echo "bench-disk: $vmfork is missing; run 'make build' first"; exit 1; }
command -v qemu-img >/dev/null && command -v fio >/dev/null || { echo "bench-disk: needs qemu-img and fio (scripts/setup.sh)"; exit 1; }

# A real file system, not tmpfs, so that O_DIRECT works; removed on exit.
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vmfork-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
raw=$work/disk.raw
vmdk=$work/disk.vmdk

echo "== preparing a ${size_mb} MiB raw file and its VMDK (every grain allocated)"
head -c $((size_mb << 20)) /dev/urandom > "$raw"
"$vmfork" disk convert --from raw "$raw" "$vmdk" >/dev/null
qemu-img check -q "$vmdk"
# The virtual disk's host caches whatever was read last; read both files once, directly, so
# that neither starts out warmer than the other.
for f in "$raw" "$vmdk"; do dd if="$f" of=/dev/null bs=1M iflag=direct status=none; done

random_step=$((4096 * 7919))
# Where the VMDK's grains start (header field overHead, in sectors): its data lies from there
# on, in disk order, so fio there touches the very host blocks our path does.
grains_offset=$(( $(od -An -t u8 -j 64 -N 8 "$vmdk") * 512 ))

# ours <count> <depth> <size> <step> [-w]  -> IOPS
ours() {
  "$vmfork" disk bench "$vmdk" -c "$1" -d "$2" -s "$3" -S "$4" ${5:-} | awk '{print $1}'
}
# qemu <count> <depth> <size> <step> [-w]  -> IOPS
qemu() {
  local seconds
  seconds=$(qemu-img bench -f vmdk -i io_uring -t none -c "$1" -d "$2" -s "$3" -S "$4" ${5:-} "$vmdk" 2>&1 |
    sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
  awk -v c="$1" -v s="$seconds" 'BEGIN { printf "%.0f\n", c / s }'
}
# fio_iops <file> <offset> <count> <depth> <size> <rw>  -> IOPS
fio_iops() {
  local file=$1 offset=$2 count=$3 depth=$4 bs=$5 rw=$6
  fio --name=raw --filename="$file" --offset="$offset" --ioengine=io_uring --direct=1 --rw="$rw" --bs="$bs" --iodepth="$depth" \
    --io_size=$((count * bs)) --size=$((size_mb << 20)) --norandommap --randrepeat=1 --output-format=json |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["read"]["iops"] + j["write"]["iops"]))'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# workload <label> <count> <depth> <size> <step> <fio-rw> [-w]
results=()
workload() {
  local label=$1 count=$2 depth=$3 bs=$4 step=$5 rw=$6 write=${7:-}
  local a=() b=() c=() d=()
  for _ in $(seq "$reps"); do
    a+=("$(ours "$count" "$depth" "$bs" "$step" "$write")")
    b+=("$(qemu "$count" "$depth" "$bs" "$step" "$write")")
    c+=("$(fio_iops "$raw" 0 "$count" "$depth" "$bs" "$rw")")
    d+=("$(fio_iops "$vmdk" "$grains_offset" "$count" "$depth" "$bs" "$rw")")
  done
  local ma mb mc md
  ma=$(printf '%s\n' "${a[@]}" | median)
  mb=$(printf '%s\n' "${b[@]}" | median)
  mc=$(printf '%s\n' "${c[@]}" | median)
  md=$(printf '%s\n' "${d[@]}" | median)
  results+=("$label|$bs|$ma|$mb|$mc|$md")
  echo "   $label: ours ${a[*]} | qemu-img ${b[*]} | fio raw ${c[*]} | fio on the VMDK's data ${d[*]}"
}

echo "== running (IOPS per run; medians below)"
workload "4k random read  QD1 " 20000 1 4096 "$random_step" randread
workload "4k random read  QD32" 100000 32 4096 "$random_step" randread
workload "4k random write QD1 " 20000 1 4096 "$random_step" randwrite -w
workload "4k random write QD32" 100000 32 4096 "$random_step" randwrite -w
workload "1M sequential read QD8" 2000 8 1048576 1048576 read
workload "1M sequential write QD8" 2000 8 1048576 1048576 write -w

echo
printf '%-24s %14s %16s %14s %10s %10s %16s\n' "workload (medians of $reps)" "vmfork VMDK" "qemu-img VMDK" "fio raw" "vs qemu" "vs fio" "fio VMDK data"
for row in "${results[@]}"; do
  IFS='|' read -r label bs ma mb mc md <<<"$row"
  if [ "$bs" -ge 1048576 ]; then
    unit="MB/s"
    fa=$(awk -v v="$ma" -v b="$bs" 'BEGIN{printf "%.0f", v*b/1e6}'); fb=$(awk -v v="$mb" -v b="$bs" 'BEGIN{printf "%.0f", v*b/1e6}')
    fc=$(awk -v v="$mc" -v b="$bs" 'BEGIN{printf "%.0f", v*b/1e6}'); fd=$(awk -v v="$md" -v b="$bs" 'BEGIN{printf "%.0f", v*b/1e6}')
  else
    unit="IOPS"; fa=$ma; fb=$mb; fc=$mc; fd=$md
  fi
  printf '%-24s %9s %-4s %11s %-4s %9s %-4s %9.2fx %9.0f%% %11s %-4s\n' "$label" "$fa" "$unit" "$fb" "$unit" "$fc" "$unit" \
    "$(awk -v a="$ma" -v b="$mb" 'BEGIN{print a/b}')" "$(awk -v a="$ma" -v c="$mc" 'BEGIN{print 100*a/c}')" "$fd" "$unit"
done
