#!/usr/bin/env bash
# Builds and runs every test, then prints one closing line: "N passed, N failed, N skipped".
# Tests that need /dev/kvm or root say why when they skip.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Tests that run guests or disks in parallel on 2 cores are slow but correct; the runner
# takes them all at once.
swift test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# Swift Testing reports each test (not each argument case) once on its own line.
passed=$(grep -cE '^. Test [^ ]+\(.*\) passed after' "$log")
failed=$(grep -cE '^. Test [^ ]+\(.*\) failed after' "$log")
skipped=$(grep -cE '^. Test [^ ]+\(.*\) skipped' "$log")
echo
grep -E '^. Test [^ ]+\(.*\) skipped' "$log" | sed 's/^/skipped: /' || true
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
