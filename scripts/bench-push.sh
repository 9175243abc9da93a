#!/usr/bin/env bash
# Push API benchmark (issue 5 §6): API-call-to-device latency at a fixed command rate across many connected
# devices, and the sustained commands/s whose results are recorded; with the same devices reached by plain
# MQTT QoS 1 PUBLISHes from a back-end client through our broker as the same-session reference.
# Loopback only; absolute times on a small shared box are noisy, the api/mqtt ratios less so.
#
# usage: scripts/bench-push.sh [--devices N] [--sources N] [--rate N] [--latency-duration S] [--concurrency K]
#                              [--warmup S] [--duration S] [--http-connections N] [--data-dir DIR]
#                              [--no-reference] [--nice N] [--no-build] [--ours-args "..."]
#
# One server, one generator process (bench/Relay.LoadGen push) holding every device and the HTTP client:
#   1. provisioning: --devices devices registered with POST /v1/devices (one PBKDF2 hash each). With
#      --data-dir DIR the data directory and the generator's devices file (DIR/bench-push-devices.txt,
#      "id secret" lines) are kept, so a later run with the same DIR skips this step;
#   2. the devices connect (MQTT 3.1.1, client id = user = device id, password = secret; one PBKDF2
#      verification each on a fresh server) from 127.0.0.2..127.0.0.(1+sources) and subscribe
#      devices/{id}/commands at QoS 1;
#   3. latency, open loop: --rate commands/s for --latency-duration s, round-robin over the devices
#      (after --warmup s unrecorded); first as plain MQTT from the back end, then through the push API;
#   4. throughput, closed loop: --concurrency commands in flight for --duration s (after --warmup s);
#      a command counts when the server PUBACKs the device's result; a sample is checked with GET.
set -euo pipefail

DEVICES=10000
SOURCES=40
RATE=1000
LATENCY_DURATION=10
CONCURRENCY=64
WARMUP=2
DURATION=10
HTTP_CONNECTIONS=16
DATA_DIR=
REFERENCE=1
BUILD=1
OURS_ARGS=
NICE=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --devices) DEVICES=$2; shift 2 ;;
    --sources) SOURCES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --latency-duration) LATENCY_DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --http-connections) HTTP_CONNECTIONS=$2; shift 2 ;;
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --no-reference) REFERENCE=0; shift ;;
    --nice) NICE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ours-args) OURS_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=bench-push
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

# The generator holds every device socket, the server one per device: both need ~DEVICES descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NEED_FDS=$((DEVICES + 1000))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $NEED_FDS ]]; then
  log "open files limit $(ulimit -n) is below the ~$NEED_FDS needed for $DEVICES devices"; exit 1
fi

if [[ -z $DATA_DIR ]]; then DATA_DIR=$WORK/data; fi
mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
DEVICES_FILE=$DATA_DIR/bench-push-devices.txt
TOKEN=bench-push-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
BACKEND_PASSWORD=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

MQTT_PORT=$(pick_port 21883)
HTTP_PORT=$(pick_port 18080 "$MQTT_PORT")
STUN_PORT=$(pick_port 23478 "$MQTT_PORT" "$HTTP_PORT")

# The API rate limit (100/s per token by default) is off: the point is the server's capacity, not the
# limit. The back-end service account may use devices/# (publish commands, read the reference replies).
# shellcheck disable=SC2086 # deliberate word splitting of extra options
"${PRIO[@]}" dotnet "$OURS_DLL" --Relay:DataDirectory="$DATA_DIR" \
  --Relay:Mqtt:Port="$MQTT_PORT" --Relay:Mqtt:ListenAddresses:0=127.0.0.1 --Relay:Mqtt:MaxConnectionsPerIp=1000000 \
  --Relay:Mqtt:WebSocket=false --Relay:Http:Port="$HTTP_PORT" --Relay:Http:ListenAddresses:0=127.0.0.1 \
  --Relay:Stun:Port="$STUN_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 \
  --Relay:Api:BootstrapToken="$TOKEN" --Relay:Api:RateLimit:Enabled=false \
  --Relay:Mqtt:ServiceAccounts:0:Name=bench-backend --Relay:Mqtt:ServiceAccounts:0:Password="$BACKEND_PASSWORD" \
  --Relay:Mqtt:ServiceAccounts:0:Grants:0='devices/#' $OURS_ARGS >>"$WORK/ours.log" 2>&1 &
SERVER_PID=$!
STARTED+=("$SERVER_PID")
if ! wait_port "$MQTT_PORT" "$SERVER_PID" || ! wait_port "$HTTP_PORT" "$SERVER_PID"; then
  log "our server did not start:"; tail -n 20 "$WORK/ours.log" >&2; exit 1
fi

REFERENCE_ARGS=()
[[ $REFERENCE == 1 ]] && REFERENCE_ARGS=(--backend-user bench-backend --backend-password "$BACKEND_PASSWORD")
echo "bench-push: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?') cores=$(nproc)" \
  "cpu='$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)' load='$(cut -d' ' -f1-3 /proc/loadavg)'" \
  "devices=$DEVICES sources=$SOURCES rate=$RATE/s latency_duration=${LATENCY_DURATION}s concurrency=$CONCURRENCY" \
  "warmup=${WARMUP}s duration=${DURATION}s http_connections=$HTTP_CONNECTIONS nofile=$(ulimit -n) data=$DATA_DIR"
OUT=$WORK/push.txt
set +e
timeout 3600 "${PRIO[@]}" dotnet "$LOADGEN" push --mqtt "127.0.0.1:$MQTT_PORT" --http "http://127.0.0.1:$HTTP_PORT" \
  --token "$TOKEN" --devices-file "$DEVICES_FILE" --devices "$DEVICES" --sources "$SOURCES" --rate "$RATE" \
  --latency-duration "$LATENCY_DURATION" --concurrency "$CONCURRENCY" --warmup "$WARMUP" --duration "$DURATION" \
  --http-connections "$HTTP_CONNECTIONS" --server-pid "$SERVER_PID" "${REFERENCE_ARGS[@]}" 2>&1 | tee "$OUT" | sed -u 's/^/  /'
RC=${PIPESTATUS[0]}
set -e
kill -0 "$SERVER_PID" 2>/dev/null || log "our server died during the run"
WARNINGS=$(grep -cE '^(warn|fail|crit)' "$WORK/ours.log" || true)
echo "server log: $WARNINGS warn/fail lines; last ones:"
grep -E '^(warn|fail|crit)' -A1 "$WORK/ours.log" | tail -n 6 | sed 's/^/  /' || true

field() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
API_LAT=$(grep '^RESULT mode=push-latency.* path=api' "$OUT" || true)
RAW_LAT=$(grep '^RESULT mode=push-latency.* path=mqtt' "$OUT" || true)
API_TP=$(grep '^RESULT mode=push-throughput.* path=api' "$OUT" || true)
RAW_TP=$(grep '^RESULT mode=push-throughput.* path=mqtt' "$OUT" || true)
if [[ -n $API_LAT && -n $RAW_LAT ]]; then
  echo "RATIO push_latency_p50 api/mqtt=$(ratio "$(field lat_p50_us "$API_LAT")" "$(field lat_p50_us "$RAW_LAT")") (api=$(field lat_p50_us "$API_LAT")us mqtt=$(field lat_p50_us "$RAW_LAT")us at $RATE/s over $DEVICES devices)"
  echo "RATIO push_latency_p99 api/mqtt=$(ratio "$(field lat_p99_us "$API_LAT")" "$(field lat_p99_us "$RAW_LAT")") (api=$(field lat_p99_us "$API_LAT")us mqtt=$(field lat_p99_us "$RAW_LAT")us)"
fi
if [[ -n $API_TP && -n $RAW_TP ]]; then
  echo "RATIO push_throughput api/mqtt=$(ratio "$(field per_s "$API_TP")" "$(field per_s "$RAW_TP")") (api=$(field per_s "$API_TP")/s mqtt=$(field per_s "$RAW_TP")/s at $CONCURRENCY in flight)"
fi
exit "$RC"
