#!/usr/bin/env bash
# The management web UI in a real browser (headless chromium over WebDriver, see
# scripts/ui_browser_test.py) against a real daemon, real containers and the real docker CLI.
# Prints "ui-test passed: NAME" / "ui-test failed: NAME: WHY" per check (scripts/test.sh counts
# them); screenshots and the daemon's log go to artifacts/ui/ (gitignored).
# Needs /dev/kvm, chromium and chromium-driver (scripts/setup.sh), and the docker CLI.
set -uo pipefail
cd "$(dirname "$0")/.."
vmfork=$(realpath "${VMFORK_BIN:-.build/debug/vmfork}")
artifacts=${VMFORK_UI_ARTIFACTS:-artifacts/ui}
for need in chromium chromedriver docker python3; do
    command -v "$need" >/dev/null 2>&1 || { echo "ui-browser: skipped: $need is not installed"; exit 0; }
done
rm -rf "$artifacts"
mkdir -p "$artifacts"
timeout 300 python3 scripts/ui_browser_test.py "$vmfork" "$artifacts"
