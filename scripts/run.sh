#!/usr/bin/env bash
# The main job: a doctor report of this machine, then the engine end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
vmfork=.build/release/vmfork
state=${VMFORK_STATE:-state}
mkdir -p "$state"

echo "== vmfork doctor"
"$vmfork" doctor
