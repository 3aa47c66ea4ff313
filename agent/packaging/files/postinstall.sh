#!/bin/sh
# volsd-agent postinstall (deb postinst "configure [OLD]", rpm %post 1|2):
# make systemd see the units, start and enable nothing. The units need
# /etc/volsd/agent.json filled in first; on an upgrade the enabled units
# keep running and every run execs the new /usr/bin/volsd-agent.
# systemctl is optional (containers, image builds without a running systemd).
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || echo "volsd-agent: systemctl daemon-reload failed; run it before enabling the units" >&2
fi
case "$1:${2:-}" in
  configure: | 1:)
    echo "volsd-agent: installed. Fill in /etc/volsd/agent.json (pool, table, bucket; docs/agent.md), then:" >&2
    echo "  systemctl enable --now volsd-agent.service volsd-apply.timer" >&2
    ;;
esac
exit 0
