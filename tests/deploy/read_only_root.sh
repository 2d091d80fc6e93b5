#!/bin/sh
# Runs "$@" the way the chart runs a worker: every file system read-only (readOnlyRootFilesystem)
# except the directories in $WRITABLE (colon-separated: its /tmp and /workspace emptyDirs), and
# with no capabilities, so it cannot remount anything back. Run it under
# `unshare --mount --propagation private`: the remounts stay inside that mount namespace.
set -eu
: "${WRITABLE:?WRITABLE lists the directories that stay writable}"

old_ifs=$IFS
IFS=:
for dir in $WRITABLE; do
  mount --bind "$dir" "$dir"
done
IFS=$old_ifs

writable() {
  old_ifs=$IFS
  IFS=:
  for dir in $WRITABLE; do
    if [ "$1" = "$dir" ]; then IFS=$old_ifs; return 0; fi
  done
  IFS=$old_ifs
  return 1
}

# Every mount but the kernel's own (/proc, /sys, /dev) becomes read-only; one that cannot is an
# error, so the test never runs in a sandbox that is not one.
awk '{print $2}' /proc/self/mounts | while read -r point; do
  case "$point" in
    /proc | /proc/* | /sys | /sys/* | /dev | /dev/*) continue ;;
  esac
  if writable "$point"; then continue; fi
  mount -o remount,ro,bind "$point"
done

exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"
