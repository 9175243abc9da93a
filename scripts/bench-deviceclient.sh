#!/usr/bin/env bash
# DeviceClient footprint (issue 6 §7): the sample device's idle RSS while connected, and the CPU it spends
# per 1,000 commands pushed through the HTTP API, side by side with a paho-mqtt device (Python,
# tests/Relay.Server.Tests/Push/Commands/scripts/command_device.py) that follows the same device contract,
# and with mosquitto_sub (C) holding the same subscription as the floor for idle memory. All three talk to
# the same server in the same session; the figures worth quoting are the ratios.
#
# usage: scripts/bench-deviceclient.sh [--commands N] [--rounds R] [--sample aot|trimmed] [--idle S] [--parallel K] [--no-build]
#   --commands N   commands pushed to each device per round (default 1000)
#   --rounds R     measured rounds (default 3; the first includes JIT warm-up for --sample trimmed)
#   --sample K     which publish of the sample runs: aot (Native AOT, default) or trimmed (self-contained, JIT)
#   --idle S       seconds connected and idle before RSS is read (default 10)
#   --parallel K   concurrent HTTP pushes (default 8)
# The sample runs as published for a device (Native AOT by default); it is published unless --no-build.
set -euo pipefail

COMMANDS=1000
ROUNDS=3
SAMPLE_KIND=aot
IDLE=10
PARALLEL=8
BUILD=1
NICE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --commands) COMMANDS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --sample) SAMPLE_KIND=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --parallel) PARALLEL=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=bench-deviceclient
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

case $(uname -m) in aarch64) RID=linux-arm64 ;; *) RID=linux-x64 ;; esac
case $SAMPLE_KIND in
  aot) SAMPLE_DIR=samples/BlinkDevice/bin/Release/net10.0/$RID/publish-aot; PUBLISH_ARGS=(-p:PublishAot=true) ;;
  trimmed) SAMPLE_DIR=samples/BlinkDevice/bin/Release/net10.0/$RID/publish; PUBLISH_ARGS=() ;;
  *) echo "--sample aot|trimmed" >&2; exit 2 ;;
esac
if [[ $BUILD == 1 ]]; then
  log "building our server and publishing the sample ($SAMPLE_KIND)..."
  dotnet build -c Release src/Relay/Relay.csproj -nologo -v q >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
  dotnet publish samples/BlinkDevice/BlinkDevice.csproj -c Release -r "$RID" -o "$SAMPLE_DIR" "${PUBLISH_ARGS[@]}" -nologo -v q >"$WORK/publish.log" 2>&1 \
    || { cat "$WORK/publish.log" >&2; exit 1; }
fi
[[ -x $SAMPLE_DIR/BlinkDevice && -f $OURS_DLL ]] || { log "missing $SAMPLE_DIR/BlinkDevice or $OURS_DLL (drop --no-build)"; exit 1; }
command -v mosquitto_sub >/dev/null && /usr/bin/python3 -c 'import paho.mqtt' 2>/dev/null \
  || { log "needs mosquitto-clients and python3-paho-mqtt"; exit 1; }

MQTT_PORT=$(pick_port 21883)
HTTP_PORT=$(pick_port 18080 "$MQTT_PORT")
STUN_PORT=$(pick_port 23478 "$MQTT_PORT" "$HTTP_PORT")
TOKEN=bench-dc-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

dotnet "$OURS_DLL" --Relay:DataDirectory="$WORK/data" \
  --Relay:Mqtt:Port="$MQTT_PORT" --Relay:Mqtt:ListenAddresses:0=127.0.0.1 --Relay:Mqtt:WebSocket=false \
  --Relay:Http:Port="$HTTP_PORT" --Relay:Http:ListenAddresses:0=127.0.0.1 \
  --Relay:Stun:Port="$STUN_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 \
  --Relay:Api:BootstrapToken="$TOKEN" --Relay:Api:RateLimit:Enabled=false >>"$WORK/server.log" 2>&1 &
SERVER_PID=$!
STARTED+=("$SERVER_PID")
wait_port "$MQTT_PORT" "$SERVER_PID" && wait_port "$HTTP_PORT" "$SERVER_PID" \
  || { log "server did not start:"; tail -n 20 "$WORK/server.log" >&2; exit 1; }

API=http://127.0.0.1:$HTTP_PORT
api() { curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
secret_of() { api -X POST "$API/v1/devices" -d "{\"id\":\"$1\"}" | sed -nE 's/.*"secret":"([^"]+)".*/\1/p'; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

SAMPLE_SECRET=$(secret_of bench-sample)
PAHO_SECRET=$(secret_of bench-paho)
SUB_SECRET=$(secret_of bench-sub)

"$SAMPLE_DIR/BlinkDevice" --server "mqtt://127.0.0.1:$MQTT_PORT" --device bench-sample --secret "$SAMPLE_SECRET" >"$WORK/sample.log" 2>&1 &
SAMPLE_PID=$!
STARTED+=("$SAMPLE_PID")
/usr/bin/python3 tests/Relay.Server.Tests/Push/Commands/scripts/command_device.py --port "$MQTT_PORT" --id bench-paho \
  --secret "$PAHO_SECRET" --count $((COMMANDS * ROUNDS + 1)) --timeout 3600 >"$WORK/paho.log" 2>&1 &
PAHO_PID=$!
STARTED+=("$PAHO_PID")
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i bench-sub -u bench-sub -P "$SUB_SECRET" -q 1 -t devices/bench-sub/commands >"$WORK/sub.log" 2>&1 &
SUB_PID=$!
STARTED+=("$SUB_PID")

for _ in $(seq 300); do
  online=$({ api "$API/v1/devices?online=true" || true; } | { grep -o '"id":"bench-[a-z]*"' || true; } | wc -l)
  [[ $online -ge 3 ]] && break
  sleep 0.1
done
[[ $online -ge 3 ]] || { log "devices did not come online"; tail "$WORK"/*.log >&2; exit 1; }

echo "bench-deviceclient: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?') cores=$(nproc)" \
  "load='$(cut -d' ' -f1-3 /proc/loadavg)' commands=$COMMANDS rounds=$ROUNDS idle=${IDLE}s parallel=$PARALLEL sample=$SAMPLE_KIND"
sleep "$IDLE" # the measured quantity is memory after an idle period, not a synchronization
SAMPLE_RSS=$(rss_kb "$SAMPLE_PID"); PAHO_RSS=$(rss_kb "$PAHO_PID"); SUB_RSS=$(rss_kb "$SUB_PID")
awk -v s="$SAMPLE_RSS" -v p="$PAHO_RSS" -v m="$SUB_RSS" 'BEGIN { printf "idle RSS (KiB): sample %d, paho %d, mosquitto_sub %d; sample/paho %.2f, sample/mosquitto_sub %.2f\n", s, p, m, s / p, s / m }'

# Pushes COMMANDS blink commands to one device, then waits for every one to be final; prints ticks used.
push_and_measure() { # device pid
  local device=$1 pid=$2 before after ids
  ids=$WORK/$device.ids
  before=$(cpu_ticks "$pid")
  seq "$COMMANDS" | xargs -P "$PARALLEL" -I{} curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -X POST "$API/v1/devices/$device/commands" \
    -d '{"name":"blink","payload":{"times":1,"intervalMs":10}}' | grep -o '"id":"[0-9a-f]*"' | cut -d'"' -f4 >"$ids"
  [[ $(wc -l <"$ids") -eq $COMMANDS ]] || { log "only $(wc -l <"$ids") of $COMMANDS pushes to $device were accepted"; exit 1; }
  local id state bad=0
  while read -r id; do
    state=$(api "$API/v1/commands/$id?wait=60" | sed -nE 's/.*"state":"([a-z]+)".*/\1/p' | head -n 1)
    [[ $state == succeeded ]] || bad=$((bad + 1))
  done <"$ids"
  after=$(cpu_ticks "$pid")
  [[ $bad -eq 0 ]] || { log "$bad commands to $device did not succeed"; exit 1; }
  echo $((after - before))
}
per1000() { awk -v t="$1" -v hz="$ticks_per_second" -v n="$COMMANDS" 'BEGIN { printf "%.0f", t * 1000 / hz * 1000 / n }'; }
# Round 1 includes the JIT compiling the command path (the trimmed build is JIT-compiled; the Native AOT
# build is not); later rounds are the steady state.
for round in $(seq "$ROUNDS"); do
  SAMPLE_TICKS=$(push_and_measure bench-sample "$SAMPLE_PID")
  PAHO_TICKS=$(push_and_measure bench-paho "$PAHO_PID")
  printf 'round %d: CPU per 1,000 commands (ms): sample %s, paho %s; sample/paho %s\n' "$round" \
    "$(per1000 "$SAMPLE_TICKS")" "$(per1000 "$PAHO_TICKS")" "$(awk -v a="$SAMPLE_TICKS" -v b="$PAHO_TICKS" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }')"
done
printf 'RSS after the commands (KiB): sample %s, paho %s\n' "$(rss_kb "$SAMPLE_PID")" "$(rss_kb "$PAHO_PID")"
