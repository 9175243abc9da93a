#!/usr/bin/env bash
# Restart storm (issue 14 §5): DEVICES registered devices (generated secrets) are connected when the server
# is killed with SIGKILL and started again on the same data directory; every device reconnects on its own
# (first attempt spread over SPREAD seconds, then about one a second). Reports the time from the server
# accepting again to every device back, the CONNACK refusals on the way (0x03/0x89 = server busy), and
# /healthz polled every 100 ms meanwhile. Goal: all 10,000 back within 10 s, /healthz answering throughout.
# There is no peer product to run beside it; the figure is absolute (and so noisy on a shared box).
#
# usage: scripts/bench-restart-storm.sh [--devices N] [--sources N] [--spread S] [--data-dir DIR] [--no-build]
#                                       [--nice N] [--ours-args "..."]
# With --data-dir DIR the registered devices (DIR/bench-push-devices.txt) are reused by later runs.
set -euo pipefail

DEVICES=10000
SOURCES=40
SPREAD=2
DATA_DIR=
BUILD=1
OURS_ARGS=
NICE=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices) DEVICES=$2; shift 2 ;;
    --sources) SOURCES=$2; shift 2 ;;
    --spread) SPREAD=$2; shift 2 ;;
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --nice) NICE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ours-args) OURS_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=bench-restart-storm
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

if [[ $BUILD == 1 ]]; then
  log "building load generator and our server..."
  dotnet build -c Release bench/Relay.LoadGen/Relay.LoadGen.csproj -nologo -v q >"$WORK/build-loadgen.log" 2>&1 \
    || { cat "$WORK/build-loadgen.log" >&2; exit 1; }
  dotnet build -c Release src/Relay/Relay.csproj -nologo -v q >"$WORK/build-ours.log" 2>&1 \
    || { cat "$WORK/build-ours.log" >&2; exit 1; }
fi
[[ -f $LOADGEN && -f $OURS_DLL ]] || { log "missing $LOADGEN or $OURS_DLL (build them or drop --no-build)"; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NEED_FDS=$((DEVICES + 1000))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $NEED_FDS ]]; then
  log "open files limit $(ulimit -n) is below the ~$NEED_FDS needed for $DEVICES devices"; exit 1
fi

if [[ -z $DATA_DIR ]]; then DATA_DIR=$WORK/data; fi
mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
TOKEN=bench-storm-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
MQTT_PORT=$(pick_port 21883)
HTTP_PORT=$(pick_port 18080 "$MQTT_PORT")
STUN_PORT=$(pick_port 23478 "$MQTT_PORT" "$HTTP_PORT")

start_server() {
  # shellcheck disable=SC2086 # deliberate word splitting of extra options
  "${PRIO[@]}" dotnet "$OURS_DLL" --Relay:DataDirectory="$DATA_DIR" \
    --Relay:Mqtt:Port="$MQTT_PORT" --Relay:Mqtt:ListenAddresses:0=127.0.0.1 --Relay:Mqtt:MaxConnectionsPerIp=1000000 \
    --Relay:Mqtt:WebSocket=false --Relay:Http:Port="$HTTP_PORT" --Relay:Http:ListenAddresses:0=127.0.0.1 \
    --Relay:Stun:Port="$STUN_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 \
    --Relay:Api:BootstrapToken="$TOKEN" --Relay:Api:RateLimit:Enabled=false $OURS_ARGS >>"$WORK/ours.log" 2>&1 &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
}

start_server
if ! wait_port "$MQTT_PORT" "$SERVER_PID" || ! wait_port "$HTTP_PORT" "$SERVER_PID"; then
  log "our server did not start:"; tail -n 20 "$WORK/ours.log" >&2; exit 1
fi

echo "bench-restart-storm: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?') cores=$(nproc)" \
  "cpu='$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)' load='$(cut -d' ' -f1-3 /proc/loadavg)'" \
  "devices=$DEVICES sources=$SOURCES spread=${SPREAD}s data=$DATA_DIR"
OUT=$WORK/storm.txt
FIFO=$WORK/storm.fifo
mkfifo "$FIFO"
timeout 3600 "${PRIO[@]}" dotnet "$LOADGEN" push --mqtt "127.0.0.1:$MQTT_PORT" --http "http://127.0.0.1:$HTTP_PORT" \
  --token "$TOKEN" --devices-file "$DATA_DIR/bench-push-devices.txt" --devices "$DEVICES" --sources "$SOURCES" \
  --restart-storm "$SPREAD" --server-pid "$SERVER_PID" >"$FIFO" 2>&1 &
GEN_PID=$!
STARTED+=("$GEN_PID")

RC=1
while IFS= read -r line; do
  printf '  %s\n' "$line"
  printf '%s\n' "$line" >>"$OUT"
  if [[ $line == "STORM READY" ]]; then
    log "all devices connected; SIGKILL to the server (pid $SERVER_PID) and a restart on the same data"
    kill -9 "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    start_server
  fi
done <"$FIFO"
wait "$GEN_PID" && RC=0 || RC=$?
kill -0 "$SERVER_PID" 2>/dev/null || log "our server died during the storm"
echo "server log: $(grep -cE '^(warn|fail|crit)' "$WORK/ours.log" || true) warn/fail lines"
RESULT=$(grep '^RESULT mode=restart-storm' "$OUT" || true)
field() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$2"; }
if [[ -n $RESULT ]]; then
  echo "GOAL restart_storm all $DEVICES devices back within 10 s: $(awk -v s="$(field reconnect_s "$RESULT")" -v n="$(field reconnected "$RESULT")" -v d="$DEVICES" 'BEGIN { print (n == d && s + 0 <= 10) ? "met" : "NOT met" }') (reconnect_s=$(field reconnect_s "$RESULT"), healthz failures $(field healthz_failures "$RESULT") of $(field healthz_probes "$RESULT"), p99 $(field healthz_p99_us "$RESULT") us)"
fi
exit "$RC"
