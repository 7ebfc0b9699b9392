#!/usr/bin/env bash
# Unmounts stale Granary FUSE mounts, kills leftover granary processes and
# removes the multi-host test's network namespaces and bridge, so that a
# crashed or timed-out run leaves nothing behind.
set -u
while read -r _ mnt type _; do
  case "$type" in
    fuse.granary*) fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true ;;
  esac
done < /proc/mounts
pkill -KILL -f '/\.build[^ ]*/(release|debug)/granary( |$)' 2>/dev/null || true
if command -v ip >/dev/null; then
  for ns in $(ip netns list 2>/dev/null | awk '/^granary[0-9]+-h[0-9]+/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(gbr[0-9]+|gv[0-9]+h[0-9]+)(@|$)' | cut -d@ -f1); do
    ip link del "$link" 2>/dev/null || true
  done
fi
exit 0
