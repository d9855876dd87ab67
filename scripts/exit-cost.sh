#!/usr/bin/env bash
# Prints what a VM exit costs on this machine, so that figures taken here can be compared
# with another machine's: the time of one getpid() by exit and polled, from a guest making
# 20,000 of them against one making none (medians of 5 runs each, interleaved).
# Usage: scripts/exit-cost.sh [path/to/vmfork]   (default .build/release/vmfork)
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=${1:-.build/release/vmfork}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root"
cat > "$work/calls.c" <<'C'
static long sys0(long n) { long r; __asm__ volatile ("syscall" : "=a"(r) : "a"(n) : "rcx", "r11", "memory"); return r; }
__attribute__((noreturn)) void _start(void) {
    long count = COUNT;
    for (long i = 0; i < count; i++) sys0(39);
    for (;;) __asm__ volatile ("syscall" :: "a"(60), "D"(0));
}
C
for count in 0 20000; do
  gcc -O1 -nostdlib -static -no-pie -fno-pie -DCOUNT=$count -o "$work/root/calls$count" "$work/calls.c"
done
now() { date +%s%N; }
time_run() { local start end; start=$(now); "$vmfork" run --rootfs "$work/root" "$@" >/dev/null; end=$(now); echo $(( (end - start) / 1000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in --no-poll-syscalls --poll-syscalls; do
  base=(); many=()
  for _ in 1 2 3 4 5; do
    base+=("$(time_run $mode -- /calls0)")
    many+=("$(time_run $mode -- /calls20000)")
  done
  b=$(printf '%s\n' "${base[@]}" | median); m=$(printf '%s\n' "${many[@]}" | median)
  awk -v b="$b" -v m="$m" -v mode="$mode" 'BEGIN { printf "%-20s %.2f us per getpid (20,000 calls: %d us, none: %d us)\n", (mode == "--no-poll-syscalls" ? "exit (out):" : "polled:"), (m - b) / 20000, m, b }'
done
