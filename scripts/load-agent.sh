# Sourced by scripts/load-sweep.sh and scripts/load-pass-rate.sh: a busybox rootfs under
# $out, a fresh host agent ($vmfork serve, its state in $out/agent, stopped when the script
# exits) with the busybox image added, and the machine's line (cores, load, VM exit cost).
# Sets $state. SERVE_ARGS: more options for the daemon (e.g. --no-poll-syscalls).
mkdir -p "$out"
rootfs="$out/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc"
cp /bin/busybox "$rootfs/bin/busybox"
state="$out/agent"
rm -rf "$state"
# shellcheck disable=SC2086
"$vmfork" serve --state "$state" --stop-grace 2 ${SERVE_ARGS:-} 2> "$out/agent.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$state/vmfork.sock" ] && break; sleep 0.1; done
"$vmfork" image add busybox --rootfs "$(realpath "$rootfs")" --executable /bin/busybox --env PATH=/bin --state "$state" > /dev/null
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$vmfork" doctor 2>/dev/null | grep '^costs' || true
