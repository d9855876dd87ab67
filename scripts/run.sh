#!/usr/bin/env bash
# The main job: a doctor report of this machine, then the engine end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=.build/release/vmfork
state=${VMFORK_STATE:-state}
mkdir -p "$state"

echo "== vmfork doctor"
"$vmfork" doctor

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
