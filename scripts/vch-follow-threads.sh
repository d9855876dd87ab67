#!/usr/bin/env bash
# How many threads a VCH holds with N `docker logs -f` followers of one running container: a
# fresh agent and VCH (as vch-bench.sh sets them up), the count before and with the followers.
# Usage: bash scripts/vch-follow-threads.sh [N] (default 50); VMFORK_BIN as in vch-bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${VMFORK_BIN:-.build/release/vmfork}"); n=${1:-50}
work=$(mktemp -d /tmp/thr.XXXXXX)
mkdir -p $work/rootfs/bin $work/dc; cp /bin/busybox $work/rootfs/bin/; for a in sh echo sleep; do ln -s busybox $work/rootfs/bin/$a; done
$bin serve --state $work/state --stop-grace 1 >$work/agent.log 2>&1 & ap=$!
for _ in $(seq 100); do [ -S $work/state/vmfork.sock ] && break; sleep 0.1; done
agent() { curl -sf --unix-socket $work/state/vmfork.sock -X "$1" "http://a$2" ${3:+-d "$3"} >/dev/null; }
agent POST /v1/images "{\"name\":\"busybox\",\"rootfs\":\"$work/rootfs\",\"executable\":\"/bin/busybox\",\"environment\":[\"PATH=/bin\"]}"
agent POST /v1/placement/hosts '{"name":"h1","cpuCores":2,"nodeMemoryKiB":[4194304]}'
agent POST /v1/placement/images '{"name":"busybox","parentMemoryKiB":65536,"growthPerChildKiB":1024,"cpuMHzPerChild":10}'
agent POST /v1/placement/warm-parents '{"host":"h1","image":"busybox","node":0}'
agent POST /v1/placement/pools '{"name":"dev","memoryReservationKiB":524288}'
$bin vch serve --name dev --pool dev --listen unix://$work/dev.sock --state $work/state >$work/vch.log 2>&1 & vp=$!
for _ in $(seq 100); do [ -S $work/dev.sock ] && break; sleep 0.1; done
trap 'kill $vp $ap 2>/dev/null || true; rm -rf $work' EXIT
export HOME=$work DOCKER_CONFIG=$work/dc
docker -H unix://$work/dev.sock run -d --name spin busybox sh -c 'while true; do sleep 1; done' >/dev/null
sleep 1
before=$(grep Threads /proc/$vp/status | awk '{print $2}')
pids=()
for i in $(seq $n); do docker -H unix://$work/dev.sock logs -f spin >/dev/null 2>&1 & pids+=($!); done
sleep 3
after=$(grep Threads /proc/$vp/status | awk '{print $2}')
echo "VCH threads: $before before, $after with $n followers"
kill ${pids[@]} 2>/dev/null; docker -H unix://$work/dev.sock rm -f spin >/dev/null 2>&1 || true
kill $vp $ap; wait $vp $ap 2>/dev/null || true; rm -rf $work
