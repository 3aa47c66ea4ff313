#!/bin/sh
# install.sh — install volsd-agent and its systemd units on an instance.
#
# Usable from EC2 user data (runs as root, POSIX sh, idempotent). It never
# calls the aws CLI: the binary is either already on the machine (--binary)
# or fetched over HTTPS with curl (--url, checked with --sha256).
#
#   install.sh --binary /tmp/volsd-agent [--config /tmp/agent.json] [options]
#   install.sh --url https://example.com/volsd-agent-linux-arm64 --sha256 HEX [options]
#
# Options:
#   --binary PATH    the volsd-agent program for this machine's architecture
#   --url URL        download the program with curl instead (https only)
#   --sha256 HEX     expected sha256 of the program (required with --url)
#   --config PATH    install PATH as /etc/volsd/agent.json (else keep the
#                    existing one, written by user data beforehand)
#   --deps           install missing tools (rsync, util-linux, e2fsprogs,
#                    xfsprogs) with dnf, yum or apt-get
#   --no-start       install and enable, but do not start the units
#   --root DIR       install under DIR instead of / (tests, image builds);
#                    implies --no-start and skips systemctl
#
# Afterwards: volsd-agent.service runs `volsd-agent up` at every boot and
# volsd-apply.timer runs `volsd-agent apply --periodic` every minute.
set -eu

binary= url= sha= config= deps=0 start=1 root=
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --url) url=${2:?--url needs a URL}; shift 2 ;;
    --sha256) sha=${2:?--sha256 needs a digest}; shift 2 ;;
    --config) config=${2:?--config needs a path}; shift 2 ;;
    --deps) deps=1; shift ;;
    --no-start) start=0; shift ;;
    --root) root=${2:?--root needs a directory}; start=0; shift 2 ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument: $1" >&2; usage ;;
  esac
done
say() { echo "install.sh: $*" >&2; }
die() { say "$*"; exit 1; }

if [ -n "$binary" ] && [ -n "$url" ]; then die "give --binary or --url, not both"; fi
if [ -z "$binary" ] && [ -z "$url" ]; then die "give --binary PATH or --url URL"; fi
if [ -n "$url" ]; then
  case "$url" in https://*) ;; *) die "--url must be https://";; esac
  [ -n "$sha" ] || die "--url needs --sha256"
fi
if [ -n "$sha" ] && ! printf '%s' "$sha" | grep -Eq '^[0-9a-f]{64}$'; then
  die "--sha256 must be 64 lowercase hex characters"
fi
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then die "run as root"; fi

if [ "$deps" = 1 ]; then
  pkgs="rsync util-linux e2fsprogs xfsprogs"
  if command -v dnf >/dev/null 2>&1; then dnf install -y $pkgs
  elif command -v yum >/dev/null 2>&1; then yum install -y $pkgs
  elif command -v apt-get >/dev/null 2>&1; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $pkgs
  else die "--deps: no dnf, yum or apt-get"
  fi
fi
for tool in rsync blkid mkfs.ext4 resize2fs; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin" command -v "$tool" >/dev/null 2>&1 ||
    say "warning: $tool not found; volsd-agent needs it (rerun with --deps)"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "$url" ]; then
  command -v curl >/dev/null 2>&1 || die "curl not found"
  curl --fail --silent --show-error --location --proto '=https' --retry 5 --retry-connrefused \
    --output "$tmp/volsd-agent" "$url" || die "download of $url failed"
  binary="$tmp/volsd-agent"
fi
[ -f "$binary" ] || die "$binary does not exist"
if [ -n "$sha" ]; then
  got=$(sha256sum "$binary" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || die "sha256 of $binary is $got, expected $sha"
fi

install -d -m 0755 "$root/usr/bin" "$root/etc/volsd" "$root/etc/systemd/system"
install -m 0755 "$binary" "$root/usr/bin/volsd-agent.new"
mv -f "$root/usr/bin/volsd-agent.new" "$root/usr/bin/volsd-agent"
# Where earlier install.sh versions put the program: the SSM
# documents and units run /usr/bin/volsd-agent now.
rm -f "$root/usr/local/bin/volsd-agent"
if [ -n "$config" ]; then
  install -m 0644 "$config" "$root/etc/volsd/agent.json"
elif [ ! -f "$root/etc/volsd/agent.json" ]; then
  say "warning: no /etc/volsd/agent.json yet; write it (docs/agent.md) before the units start"
fi

# The units, exactly as in agent/systemd/ (a test keeps them identical).
cat > "$root/etc/systemd/system/volsd-agent.service" <<'VOLSD_UNIT'
[Unit]
Description=volsd agent: mount the pool volume, catch up with the journal, complete the launch hook
Documentation=https://github.com/volsd/volsd/blob/main/docs/agent.md
Wants=network-online.target
After=network-online.target
ConditionPathExists=/etc/volsd/agent.json

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/volsd-agent up
# Exit 2 is bad input (configuration, a device that must not be
# formatted): retrying will not help. 1 and 3 are retried.
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=2
# Catching up a long journal takes as long as it takes; the agent
# heartbeats the lifecycle hook meanwhile.
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
VOLSD_UNIT
cat > "$root/etc/systemd/system/volsd-apply.service" <<'VOLSD_UNIT'
[Unit]
Description=volsd agent: apply journal entries missed by SSM commands
Documentation=https://github.com/volsd/volsd/blob/main/docs/agent.md
After=volsd-agent.service
ConditionPathExists=/etc/volsd/agent.json

[Service]
Type=oneshot
# --periodic returns at once unless applyInterval (agent.json) has passed
# since the last apply that reached the head.
ExecStart=/usr/bin/volsd-agent apply --periodic
# A last resort behind the agent's own deadline for each entry (10 min
# plus its size at 2 MiB/s, docs/agent.md): a stuck apply must not hold
# the apply lock, and the timer's next runs, forever.
TimeoutStartSec=4h
VOLSD_UNIT
cat > "$root/etc/systemd/system/volsd-apply.timer" <<'VOLSD_UNIT'
[Unit]
Description=volsd agent: converge even when an SSM command was missed

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min
RandomizedDelaySec=15s

[Install]
WantedBy=timers.target
VOLSD_UNIT
chmod 0644 "$root"/etc/systemd/system/volsd-agent.service "$root"/etc/systemd/system/volsd-apply.service "$root"/etc/systemd/system/volsd-apply.timer
say "installed $root/usr/bin/volsd-agent and its units"

if [ -z "$root" ]; then
  systemctl daemon-reload
  systemctl enable volsd-agent.service volsd-apply.timer
  if [ "$start" = 1 ]; then
    # --no-block: user data must not wait for the catch-up.
    systemctl start --no-block volsd-agent.service volsd-apply.timer
    say "started volsd-agent.service and volsd-apply.timer"
  fi
fi
