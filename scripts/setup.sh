#!/usr/bin/env bash
# Installs what the engine and its tests need, from Debian's packages. Idempotent: a second
# run installs nothing and takes a fraction of a second.
set -euo pipefail

packages=(
  liburing-dev     # io_uring, the disk I/O path
  libnuma-dev      # NUMA topology for the probe and placement
  qemu-utils       # qemu-img / qemu-io: the VMDK interop peer in tests and benchmarks
  busybox-static   # the static userland that process VMs run
  fio              # the raw-file I/O baseline in the disk benchmark
  zlib1g-dev       # deflate for streamOptimized VMDK grains
  libzstd1         # zstd layers (opened at run time: no headers needed)
  libdeflate0      # gunzip of small layers at pull (opened at run time; zlib when absent)
  zstd             # compresses the zstd layers of the pull tests
  util-linux       # setpriv, for the unprivileged capability tests
  runc             # the OCI runtime peer of load runs (vmfork load --peer runc)
  docker-registry  # a real OCI registry on loopback for the image pull tests and demo
  skopeo           # pushes the test images into it; the pull benchmark's peer
  umoci            # builds the test images (OCI layouts); the unpack benchmark's peer
  apache2-utils    # htpasswd: the registry's basic-auth users in the auth test
  e2fsprogs        # e2fsck and debugfs: the judges of the ext4 layer disks in the tests
  chromium         # the web UI's browser tests (headless)
  chromium-driver  # WebDriver for them (scripts/ui-browser.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "setup: swift is not on PATH (expected Swift 6.1 or later)"; exit 1; }
