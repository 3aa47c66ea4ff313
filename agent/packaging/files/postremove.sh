#!/bin/sh
# volsd-agent postremove (deb postrm "remove|purge|upgrade …", rpm %postun
# 0|1): make systemd forget the removed units. dpkg --purge removes
# /etc/volsd/agent.json; rpm -e keeps a changed one as agent.json.rpmsave.
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
fi
exit 0
