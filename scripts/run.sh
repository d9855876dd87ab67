#!/usr/bin/env bash
# The main job: a doctor report of this machine, then the engine end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=${VMFORK_BIN:-.build/release/vmfork}
state=${VMFORK_STATE:-state}
mkdir -p "$state"

echo "== vmfork doctor"
"$vmfork" doctor

# The container image for the demos: Debian's static busybox in a root folder.
rootfs="$state/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc"
cp /bin/busybox "$rootfs/bin/busybox"
echo "vmfork-demo" > "$rootfs/etc/hostname"

echo
echo "== a process VM: busybox in its own KVM VM, the engine as its kernel"
"$vmfork" run --rootfs "$rootfs" -- /bin/busybox echo hi
"$vmfork" run --rootfs "$rootfs" --hostname demo -- /bin/busybox uname -n
"$vmfork" run --rootfs "$rootfs" -- /bin/busybox sh -c 'for i in 1 2 3; do echo "line $i"; done; x=6; echo "6 x 7 = $((x * 7))"'
"$vmfork" run --rootfs "$rootfs" -- /bin/busybox sha256sum /bin/busybox
"$vmfork" run --rootfs "$rootfs" -- /bin/busybox cat /no/such/file || echo "(exit status $? passed on, as busybox gave it)"

echo
echo "== instant clone: a warm busybox parent stopped at its main (its C library started once, in the parent),"
echo "   5 children with their own arguments, then 200 kept alive for the sharing report"
"$vmfork" fork --rootfs "$rootfs" --children 5 -- /bin/busybox echo "child {i} says hi"
"$vmfork" fork --rootfs "$rootfs" --children 200 --pool 16 --quiet -- /bin/busybox echo hi
echo
echo "== instant clone as a container engine runs it: 1000 children, each removed when done (its VM reused)"
"$vmfork" fork --rootfs "$rootfs" --children 1000 --pool 16 --quiet --remove-each -- /bin/busybox echo hi
echo
echo "== the same from a parent stopped at its entry point: each child runs the C library's start-up itself (compare the exits)"
"$vmfork" fork --rootfs "$rootfs" --children 1000 --pool 16 --quiet --remove-each --fork-point entry -- /bin/busybox echo hi

# A dynamically linked program: this host's python3 with its libraries and standard library.
python=$(readlink -f /usr/bin/python3)
if [ -x "$python" ]; then
    echo
    echo "== python3 ($python) in a process VM: ld.so and the libraries it maps, the standard library from the rootfs"
    pyroot="$state/python-rootfs"
    if [ ! -x "$pyroot$python" ]; then
        mkdir -p "$pyroot"
        for file in "$python" $(ldd "$python" | awk '/=>/ {print $3} /^\t\// {print $1}'); do
            mkdir -p "$pyroot$(dirname "$file")"; cp -L "$file" "$pyroot$file"
        done
        mkdir -p "$pyroot/usr/lib"; cp -RL "/usr/lib/$(basename "$python")" "$pyroot/usr/lib/"
    fi
    "$vmfork" run --rootfs "$pyroot" --memory 256 -- "$python" -c 'import sys, json, hashlib; print(json.dumps({"python": sys.version.split()[0], "sha256": hashlib.sha256(b"vmfork").hexdigest()[:16]}))'
    echo
    echo "== python3 forked after its interpreter started: 100 children of a parent stopped at its first read of stdin"
    "$vmfork" fork --rootfs "$pyroot" --children 100 --pool 8 --memory 256 --quiet --remove-each --fork-point stdin -- \
        "$python" -c 'import sys; line = sys.stdin.readline(); print(sum(range(10**5)))'
    echo
    echo "== the same as a zygote: json and hashlib imported in the parent, each child ends with os._exit after its script"
    "$vmfork" fork --rootfs "$pyroot" --children 100 --pool 8 --memory 256 --quiet --remove-each --fork-point stdin -- \
        "$python" -c 'import sys, os, json, hashlib; line = sys.stdin.readline(); exec(line or "print(json.dumps({\"h\": hashlib.sha256(b\"x\").hexdigest()[:8]}))"); sys.stdout.flush(); os._exit(0)'
    started=$(date +%s%N)
    for _ in $(seq 20); do "$python" -c 'import json, hashlib; print(json.dumps({"h": hashlib.sha256(b"x").hexdigest()[:8]}))' > /dev/null; done
    echo "native python3 -c with the same script: $(( ($(date +%s%N) - started) / 20000 )) µs mean of 20"
fi

echo
echo "== the host agent: vmfork serve on $state/agent, driven by the tool and by curl over its socket"
agent="$state/agent"
rm -rf "$agent"
"$vmfork" serve --state "$agent" --stop-grace 2 2> "$state/agent.log" &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true' EXIT
sock="$agent/vmfork.sock"
for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://localhost/v1/_ping >/dev/null 2>&1 && break; sleep 0.1; done
ls -l "$sock"
curl -s --unix-socket "$sock" http://localhost/v1/version; echo
"$vmfork" image add busybox --rootfs "$rootfs" --executable /bin/busybox --env PATH=/bin --state "$agent"
"$vmfork" parent create busybox --ready-vms 8 --state "$agent"
"$vmfork" container run busybox --state "$agent" -- echo "hello from a container forked by the daemon"
"$vmfork" container run busybox --state "$agent" -- sh -c 'echo "exit status 3 passed on"; exit 3' || echo "(vmfork container run exited with $?)"
curl -s --unix-socket "$sock" -X POST http://localhost/v1/containers/run \
    -d '{"image":"busybox","arguments":["sh","-c","echo forked through curl; echo to stderr >&2"],"labels":{"via":"curl"}}'; echo
id=$("$vmfork" container create busybox --name trapper --state "$agent" -- sh -c 'trap "echo got SIGTERM; exit 7" TERM; echo running; while true; do :; done')
"$vmfork" container start trapper --state "$agent" > /dev/null
sleep 0.3
"$vmfork" container ps --state "$agent"
"$vmfork" container stop trapper --time 5 --state "$agent"
"$vmfork" container logs trapper --state "$agent"
"$vmfork" container rm "$id" --state "$agent"
for i in $(seq 20); do "$vmfork" container run busybox --state "$agent" -- echo "$i" > /dev/null; done
"$vmfork" parent ls --state "$agent"
curl -s --unix-socket "$sock" -X POST http://localhost/v1/containers -d '{"image":"busybox","colour":"red"}'; echo
curl -s --unix-socket "$sock" http://localhost/metrics | grep -E '^vmfork_(forks_total|fork_duration_seconds_count|pool_ready_vms|containers_live|memory_parent_bytes)'
"$vmfork" events --state "$agent" | tail -8
echo "== a load run through the daemon: Profiles/busybox-load.yaml at 50 launches/s for 3 s, beside runc and native posix_spawn (charts: $state/load.svg)"
"$vmfork" load Profiles/busybox-load.yaml --state "$agent" --rate 50 --duration 3 --time-scale 0.1 --peer native --peer runc --quiet \
    --json "$state/load.json" --svg "$state/load.svg"
"$vmfork" capacity --profile Profiles/busybox-load.yaml --measured "$state/load.json" | head -3
kill -TERM "$daemon" && wait "$daemon" && echo "daemon stopped on SIGTERM with status 0"
trap - EXIT

echo
echo "== placement: this machine and a simulated fleet (Profiles/small.yaml) in $state"
# A fresh placement state each run, so the demo is the same every time.
placement_state="$state/placement-demo"
rm -rf "$placement_state"
"$vmfork" fleet load Profiles/small.yaml --state "$placement_state"
"$vmfork" host add-local --name this-machine --warm busybox@0 --warm-pool dev --state "$placement_state"
"$vmfork" place --pool prod --image nginx --explain --hosts 4 --state "$placement_state"
"$vmfork" place --pool prod --image nginx --commit --state "$placement_state"
"$vmfork" place --pool dev --image busybox --state "$placement_state"
"$vmfork" place --pool qa --image nginx --state "$placement_state" || echo "(refused, as it should be: there is no pool qa)"
"$vmfork" capacity --state "$placement_state" --profile Profiles/small.yaml

echo
echo "== capacity plan of Profiles/small.yaml after 20,000 forks of its launch mix (chart: $state/capacity-small.svg)"
"$vmfork" capacity --profile Profiles/small.yaml --launch 20000 --svg "$state/capacity-small.svg"

echo
echo "== disk: an image layer, a container disk on it, interop with qemu-img, commit"
disks="$state/disk-demo"
rm -rf "$disks" && mkdir -p "$disks"
head -c $((4 << 20)) /dev/urandom > "$disks/layer.raw"
"$vmfork" disk convert --from raw "$disks/layer.raw" "$disks/image.vmdk"
"$vmfork" disk child "$disks/container.vmdk" --parent "$disks/image.vmdk"
printf 'written by the container\n' > "$disks/note.txt"
"$vmfork" disk write "$disks/container.vmdk" "$disks/note.txt" --offset 65536
"$vmfork" disk info "$disks/container.vmdk"
"$vmfork" disk check "$disks/container.vmdk"
qemu-img check "$disks/container.vmdk"
qemu-img convert -O raw "$disks/container.vmdk" "$disks/container-by-qemu.raw"
"$vmfork" disk convert "$disks/container.vmdk" "$disks/container-by-vmfork.raw" --to raw
cmp "$disks/container-by-qemu.raw" "$disks/container-by-vmfork.raw" && echo "qemu-img and vmfork read the container disk identically"
"$vmfork" disk commit "$disks/container.vmdk"
qemu-img compare "$disks/image.vmdk" "$disks/container-by-vmfork.raw"
