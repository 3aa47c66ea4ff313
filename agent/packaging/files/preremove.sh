#!/bin/sh
# volsd-agent preremove (deb prerm "remove|upgrade NEW|…", rpm %preun 0|1):
# on removal, stop and disable the units, so no timer runs a missing
# program and no enablement symlink is left behind. An upgrade keeps them.
# The volume stays mounted (readers keep serving it); `volsd-agent release`
# beforehand unmounts it. systemctl is optional (containers, image builds).
set -e
case "$1" in
  remove | 0) ;;
  *) exit 0 ;;
esac
if command -v systemctl >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then
    systemctl stop volsd-apply.timer volsd-apply.service volsd-agent.service ||
      echo "volsd-agent: could not stop the units" >&2
  fi
  # disable works without a running systemd (it removes the symlinks).
  systemctl disable volsd-agent.service volsd-apply.timer ||
    echo "volsd-agent: could not disable the units" >&2
fi
exit 0
