#!/usr/bin/env bash
# The main job: a doctor report of this machine, then the engine end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=.build/release/vmfork
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
echo "== instant clone: a warm busybox parent, 5 children with their own arguments, then 200 kept alive for the sharing report"
"$vmfork" fork --rootfs "$rootfs" --children 5 -- /bin/busybox echo "child {i} says hi"
"$vmfork" fork --rootfs "$rootfs" --children 200 --pool 16 --quiet -- /bin/busybox echo hi
echo
echo "== instant clone as a container engine runs it: 1000 children, each removed when done (its VM reused)"
"$vmfork" fork --rootfs "$rootfs" --children 1000 --pool 16 --quiet --remove-each -- /bin/busybox echo hi

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
