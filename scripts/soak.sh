#!/usr/bin/env bash
# Soak run (issue 14 §6; not in CI): MINUTES of mixed load on one server, then a drain and a verdict.
# DEVICES registered devices (generated secrets) with persistent sessions connect, answer commands, publish
# QoS 1 telemetry to a back-end subscriber, and drop and come back at random; a back end pushes commands
# over the HTTP API and follows each to its final state; TURN allocations relay UDP echoes and are
# refreshed and released over time; devices introduce each other over the rendezvous topics. The server's
# RSS, open descriptors and threads are sampled into a CSV. Exit 0 only when no acknowledged QoS 1
# telemetry message and no accepted command was lost, and RSS and descriptors after the warm-up stayed
# within 5% (docs/benchmarks.md, "Soak").
#
# usage: scripts/soak.sh [--minutes 30] [--devices 5000] [--turn-allocations N] [--command-rate N]
#                        [--rendezvous-rate N] [--warmup-minutes N] [--sample-seconds N] [--drain-seconds N]
#                        [--sources N] [--csv PATH] [--self-check N] [--no-build] [--nice N] [--ours-args "..."]
# Runs shorter than 15 minutes cut a third of the run as warm-up and sample every 10 s, unless told.
# The CSV (default /tmp/soak-<time>.csv) and, when it logged warnings, the server log are kept.
# --self-check N: the generator itself drops every Nth telemetry message and command; the run must FAIL.
set -euo pipefail

MINUTES=30
DEVICES=5000
TURN_ALLOCATIONS=
COMMAND_RATE=10
RENDEZVOUS_RATE=2
WARMUP_MINUTES=
SAMPLE_SECONDS=
DRAIN_SECONDS=180
SOURCES=40
CSV=
SELF_CHECK=0
BUILD=1
OURS_ARGS=
NICE=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --devices) DEVICES=$2; shift 2 ;;
    --turn-allocations) TURN_ALLOCATIONS=$2; shift 2 ;;
    --command-rate) COMMAND_RATE=$2; shift 2 ;;
    --rendezvous-rate) RENDEZVOUS_RATE=$2; shift 2 ;;
    --warmup-minutes) WARMUP_MINUTES=$2; shift 2 ;;
    --sample-seconds) SAMPLE_SECONDS=$2; shift 2 ;;
    --drain-seconds) DRAIN_SECONDS=$2; shift 2 ;;
    --sources) SOURCES=$2; shift 2 ;;
    --csv) CSV=$2; shift 2 ;;
    --self-check) SELF_CHECK=$2; shift 2 ;;
    --nice) NICE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ours-args) OURS_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=soak
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

# One TURN allocation per 25 devices unless told (200 for 5,000).
[[ -n $TURN_ALLOCATIONS ]] || TURN_ALLOCATIONS=$(( DEVICES / 25 > 0 ? DEVICES / 25 : 1 ))
SHORT=$(awk -v m="$MINUTES" 'BEGIN { print (m < 15) ? 1 : 0 }')
[[ -n $WARMUP_MINUTES ]] || WARMUP_MINUTES=$(awk -v m="$MINUTES" -v s="$SHORT" 'BEGIN { print s ? m / 3 : 5 }')
[[ -n $SAMPLE_SECONDS ]] || SAMPLE_SECONDS=$([[ $SHORT == 1 ]] && echo 10 || echo 30)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[[ -n $CSV ]] || CSV=/tmp/soak-$STAMP.csv

if [[ $BUILD == 1 ]]; then
  log "building load generator and our server..."
  dotnet build -c Release bench/Relay.LoadGen/Relay.LoadGen.csproj -nologo -v q >"$WORK/build-loadgen.log" 2>&1 \
    || { cat "$WORK/build-loadgen.log" >&2; exit 1; }
  dotnet build -c Release src/Relay/Relay.csproj -nologo -v q >"$WORK/build-ours.log" 2>&1 \
    || { cat "$WORK/build-ours.log" >&2; exit 1; }
fi
[[ -f $LOADGEN && -f $OURS_DLL ]] || { log "missing $LOADGEN or $OURS_DLL (build them or drop --no-build)"; exit 1; }

# Descriptors: the server holds one socket per device and per TURN allocation (its relay socket), the
# generator the same plus the HTTP pool; 5,000 devices and 200 allocations fit one process of each well
# under the machine's 20,000 per process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NEED_FDS=$((DEVICES + TURN_ALLOCATIONS + 1000))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $NEED_FDS ]]; then
  log "open files limit $(ulimit -n) is below the ~$NEED_FDS needed for $DEVICES devices and $TURN_ALLOCATIONS allocations"; exit 1
fi

DATA_DIR=$WORK/data
mkdir -p "$DATA_DIR"
TOKEN=soak-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
BACKEND_PASSWORD=soak-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
TURN_PASSWORD=soak-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
MQTT_PORT=$(pick_port 21883)
HTTP_PORT=$(pick_port 18080 "$MQTT_PORT")
STUN_PORT=$(pick_port 23478 "$MQTT_PORT" "$HTTP_PORT")

# Limits that would refuse the generator for what it is rather than for what it does are lifted: all
# devices come from 127.0.0.2..(1+sources) (connections per IP), the back end is one API token (rate
# limit), the TURN clients are one user on one address (allocations per user and per address, STUN rate limit), and
# every device may meet every other (rendezvous policy Any). Everything else is the server's default.
# shellcheck disable=SC2086 # deliberate word splitting of extra options
"${PRIO[@]}" dotnet "$OURS_DLL" --Relay:DataDirectory="$DATA_DIR" \
  --Relay:Mqtt:Port="$MQTT_PORT" --Relay:Mqtt:ListenAddresses:0=127.0.0.1 --Relay:Mqtt:MaxConnectionsPerIp=1000000 \
  --Relay:Mqtt:WebSocket=false --Relay:Http:Port="$HTTP_PORT" --Relay:Http:ListenAddresses:0=127.0.0.1 \
  --Relay:Stun:Port="$STUN_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 --Relay:Stun:RateLimit:Enabled=false \
  --Relay:Api:BootstrapToken="$TOKEN" --Relay:Api:RateLimit:Enabled=false \
  --Relay:Mqtt:ServiceAccounts:0:Name=soak-backend --Relay:Mqtt:ServiceAccounts:0:Password="$BACKEND_PASSWORD" \
  --Relay:Mqtt:ServiceAccounts:0:Grants:0='devices/#' \
  --Relay:Turn:Users:0="soak:$TURN_PASSWORD" --Relay:Turn:Realm=soak --Relay:Turn:AllowLoopbackPeers=true \
  --Relay:Turn:MaxAllocationsPerUser=20000 --Relay:Turn:MaxAllocationsPerIp=20000 --Relay:Rendezvous:Policy=Any $OURS_ARGS >>"$WORK/ours.log" 2>&1 &
SERVER_PID=$!
STARTED+=("$SERVER_PID")
if ! wait_port "$MQTT_PORT" "$SERVER_PID" || ! wait_port "$HTTP_PORT" "$SERVER_PID"; then
  log "our server did not start:"; tail -n 20 "$WORK/ours.log" >&2; exit 1
fi

echo "soak: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?') cores=$(nproc)" \
  "cpu='$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)' load='$(cut -d' ' -f1-3 /proc/loadavg)'" \
  "minutes=$MINUTES devices=$DEVICES turn_allocations=$TURN_ALLOCATIONS command_rate=$COMMAND_RATE/s" \
  "rendezvous_rate=$RENDEZVOUS_RATE/s warmup=${WARMUP_MINUTES}min samples_every=${SAMPLE_SECONDS}s nofile=$(ulimit -n) csv=$CSV"
OUT=$WORK/soak.txt
LIMIT=$(awk -v m="$MINUTES" -v d="$DRAIN_SECONDS" 'BEGIN { printf "%d", m * 60 + d + 900 }')
set +e
timeout "$LIMIT" "${PRIO[@]}" dotnet "$LOADGEN" soak --server "127.0.0.1:$MQTT_PORT" --api "http://127.0.0.1:$HTTP_PORT" \
  --token "$TOKEN" --devices-file "$DATA_DIR/soak-devices.txt" --devices "$DEVICES" --minutes "$MINUTES" \
  --backend-user soak-backend --backend-password "$BACKEND_PASSWORD" \
  --turn "127.0.0.1:$STUN_PORT" --turn-user soak --turn-password "$TURN_PASSWORD" --turn-allocations "$TURN_ALLOCATIONS" \
  --command-rate "$COMMAND_RATE" --rendezvous-rate "$RENDEZVOUS_RATE" --warmup-minutes "$WARMUP_MINUTES" \
  --sample-seconds "$SAMPLE_SECONDS" --drain-seconds "$DRAIN_SECONDS" --sources "$SOURCES" \
  --server-pid "$SERVER_PID" --csv "$CSV" --self-check "$SELF_CHECK" 2>&1 | tee "$OUT" | sed -u 's/^/  /'
RC=${PIPESTATUS[0]}
set -e
kill -0 "$SERVER_PID" 2>/dev/null || { log "our server died during the run"; RC=1; }
echo "server: VmHWM $(grep -m1 VmHWM "/proc/$SERVER_PID/status" 2>/dev/null | awk '{print $2}' || echo '?') kB at the end"
stop_pid "$SERVER_PID"
WARNINGS=$(grep -cE '^(warn|fail|crit)' "$WORK/ours.log" || true)
echo "server log: $WARNINGS warn/fail lines; the most frequent:"
grep -E '^(warn|fail|crit)' -A1 "$WORK/ours.log" | grep -vE '^(warn|fail|crit|--)' | sed -E 's/[0-9a-f]{32}/<id>/g; s/[0-9]+/N/g' \
  | sort | uniq -c | sort -rn | head -n 8 | sed 's/^/  /' || true
if [[ $WARNINGS != 0 ]]; then
  cp "$WORK/ours.log" "${CSV%.csv}-server.log"
  echo "server log kept: ${CSV%.csv}-server.log"
fi
echo "samples: $CSV"
grep -E '^(RESULT mode=soak |FLAT|FAIL|NOTE)' "$OUT" || true
[[ $RC == 0 ]] && echo "SOAK pass" || echo "SOAK FAIL (exit $RC)"
exit "$RC"
