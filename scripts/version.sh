#!/bin/sh
# version.sh — the version of this checkout, for -ldflags and the packages:
#   X.Y.Z            on the tag vX.Y.Z
#   X.Y.Z+N.gSHA     N commits after the tag vX.Y.Z (sorts after X.Y.Z in dpkg and rpm)
#   0.0.0+N.gSHA     before the first tag (N commits in all)
#   0.0.0            outside a git checkout
set -eu
cd "$(dirname "$0")/.."
if d=$(git describe --tags --long --match 'v[0-9]*.[0-9]*.[0-9]*' 2>/dev/null); then
  sha=${d##*-}; rest=${d%-*}; n=${rest##*-}; v=${rest%-*}; v=${v#v}
  if [ "$n" = 0 ]; then echo "$v"; else echo "$v+$n.$sha"; fi
elif n=$(git rev-list --count HEAD 2>/dev/null); then
  echo "0.0.0+$n.g$(git rev-parse --short=12 HEAD)"
else
  echo 0.0.0
fi
