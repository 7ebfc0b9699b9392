#!/usr/bin/env bash
# Installs the Debian packages Granary builds against and tests with.
# Runs `apt-get update` once, only when something is missing.
set -euo pipefail
packages=(
  libfuse3-dev fuse3 libsodium-dev libsqlite3-dev libisal-dev pkg-config  # build
  restic borgbackup rsync fio attr strace util-linux procps psmisc        # tests of the mount
  iproute2 nftables                                                       # the multi-host tests: namespaces, slow links (tc), packet loss
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# FUSE needs the device node; containers sometimes lack it.
[ -e /dev/fuse ] || echo "warning: /dev/fuse is missing: mounting (and the mount tests) will fail" >&2
