#!/usr/bin/env bash
# Side-by-side MQTT broker benchmark: our Relay server vs Eclipse Mosquitto, on this machine, in the same
# run, with the same load (bench/Relay.LoadGen mqtt-idle and mqtt-pubsub). Absolute numbers on a small
# shared box are noise; the ours/mosquitto ratios are the figures. Loopback only.
#
# usage: scripts/bench-mqtt.sh [--rounds N] [--connections N] [--processes N] [--sources N]
#                              [--publishers N] [--window N] [--payload BYTES] [--warmup S] [--duration S]
#                              [--rate N] [--latency-duration S] [--only ours|mosquitto] [--nice N]
#                              [--no-build] [--ours-args "..."] [--mosquitto-conf "extra lines"]
#
# Every measured pass starts the server fresh (a clean memory baseline), waits until its MQTT port
# accepts, runs one generator pass and stops it. Per pass:
#   1. mqtt-idle: VmRSS of the server, then --connections idle MQTT 3.1.1 connections (CONNECT with
#      keep-alive 600, CONNACK, silence) from --processes generator processes bound to 127.0.0.2.. (one
#      process may hold at most ~20,000 sockets), VmRSS again: bytes per idle connection;
#   2. mqtt-pubsub at QoS 0, then QoS 1 (each on a fresh server): --publishers publishers to as many
#      subscribers on distinct topics, --payload bytes; closed loop with --window messages in flight per
#      pair for --duration s (delivered messages/s, server CPU), then open loop at --rate messages/s in
#      total for --latency-duration s (publish-to-delivery latency p50/p99).
# Rounds alternate who goes first; each figure is the median of its rounds; ratios are median/median.
# Both brokers: anonymous clients allowed (no authentication cost on either side), 32 in-flight QoS 1
# messages per client, no per-IP connection limit.
set -euo pipefail

ROUNDS=3
CONNECTIONS=10000
PROCESSES=2
SOURCES=8
PUBLISHERS=4
WINDOW=64
PAYLOAD=64
WARMUP=1
DURATION=3
RATE=10000
LATENCY_DURATION=3
ONLY=
BUILD=1
OURS_ARGS=
MOSQUITTO_CONF=
NICE=-10

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --processes) PROCESSES=$2; shift 2 ;;
    --sources) SOURCES=$2; shift 2 ;;
    --publishers) PUBLISHERS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --payload) PAYLOAD=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --latency-duration) LATENCY_DURATION=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --nice) NICE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --ours-args) OURS_ARGS=$2; shift 2 ;;
    --mosquitto-conf) MOSQUITTO_CONF=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=bench-mqtt
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

median() {
  tr ' ' '\n' <<<"$*" | { grep -v '^$' || true; } | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else { m = (v[NR / 2] + v[NR / 2 + 1]) / 2; if (m == int(m)) print m; else printf "%.2f\n", m } }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || a == "" || b == "" || b + 0 == 0) print "pending"; else printf "%.2f", a / b }'; }
field() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$2"; }

# --- build -----------------------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
  log "building load generator and our server..."
  dotnet build -c Release bench/Relay.LoadGen/Relay.LoadGen.csproj -nologo -v q >"$WORK/build-loadgen.log" 2>&1 \
    || { cat "$WORK/build-loadgen.log" >&2; exit 1; }
  dotnet build -c Release src/Relay/Relay.csproj -nologo -v q >"$WORK/build-ours.log" 2>&1 \
    || { log "our server does not build; measuring mosquitto alone"; ONLY=mosquitto; }
fi
[[ -f $LOADGEN ]] || { log "missing $LOADGEN (build it or drop --no-build)"; exit 1; }
[[ -x /usr/sbin/mosquitto ]] || { log "mosquitto not installed (apt-get install mosquitto)"; exit 1; }

# Each idle connection is one descriptor in the server and one in a generator process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NEED_FDS=$((CONNECTIONS + 1000))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $NEED_FDS ]]; then
  log "open files limit $(ulimit -n) is below the ~$NEED_FDS the server needs for $CONNECTIONS connections"; exit 1
fi
if (( CONNECTIONS / PROCESSES > 19000 )); then
  log "--connections $CONNECTIONS over $PROCESSES processes exceeds ~19,000 sockets per generator process; raise --processes"; exit 1
fi

MQTT_PORT=$(pick_port 21883)
HTTP_PORT=$(pick_port 18080 "$MQTT_PORT")
STUN_PORT=$(pick_port 23478 "$MQTT_PORT" "$HTTP_PORT")
MOSQUITTO_VERSION=$(/usr/sbin/mosquitto -h 2>/dev/null | head -n 1 || true)

# --- servers ---------------------------------------------------------------------------------------
SERVER_PID=
wait_port() { # port pid
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_server() { # ours|mosquitto
  rm -rf "$WORK/data"
  mkdir -p "$WORK/data"
  if [[ $1 == mosquitto ]]; then
    # Mosquitto's max_inflight_messages matches our MaxInflight (32); max_queued_messages is 1000 on both.
    printf 'allow_anonymous true\npersistence false\nmax_inflight_messages 32\nuser root\nlog_dest none\nlistener %s 127.0.0.1\n%s\n' \
      "$MQTT_PORT" "$MOSQUITTO_CONF" >"$WORK/mosquitto.conf"
    "${PRIO[@]}" /usr/sbin/mosquitto -c "$WORK/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
  else
    # shellcheck disable=SC2086 # deliberate word splitting of extra options
    "${PRIO[@]}" dotnet "$OURS_DLL" --Relay:DataDirectory="$WORK/data" --Relay:Mqtt:Port="$MQTT_PORT" \
      --Relay:Mqtt:ListenAddresses:0=127.0.0.1 --Relay:Mqtt:AllowAnonymous=true --Relay:Mqtt:MaxConnectionsPerIp=1000000 \
      --Relay:Mqtt:WebSocket=false --Relay:Http:Port="$HTTP_PORT" --Relay:Http:ListenAddresses:0=127.0.0.1 \
      --Relay:Stun:Port="$STUN_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 $OURS_ARGS >>"$WORK/ours.log" 2>&1 &
  fi
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  if ! wait_port "$MQTT_PORT" "$SERVER_PID"; then
    log "  $1 did not accept MQTT connections on 127.0.0.1:$MQTT_PORT"
    [[ $1 == ours ]] && tail -n 5 "$WORK/ours.log" >&2
    stop_pid "$SERVER_PID"; SERVER_PID=
    return 1
  fi
}

OURS_DOWN=0
run_pass() { # who mode [qos]
  local who=$1 mode=$2 qos=${3:-0} out="$WORK/run.txt"
  [[ $who == ours && $OURS_DOWN == 1 ]] && return 1
  if ! start_server "$who"; then
    # Our server without an MQTT listener (e.g. before the engine is merged) will not get one later in
    # this run: measure mosquitto alone and report the ratios as pending.
    [[ $who == ours ]] && OURS_DOWN=1
    return 1
  fi
  if [[ $mode == idle ]]; then
    timeout 600 "${PRIO[@]}" dotnet "$LOADGEN" mqtt-idle --target "127.0.0.1:$MQTT_PORT" --server-pid "$SERVER_PID" \
      --connections "$CONNECTIONS" --processes "$PROCESSES" --sources "$SOURCES" --label "$who" >"$out" 2>&1 || true
  else
    timeout 300 "${PRIO[@]}" dotnet "$LOADGEN" mqtt-pubsub --target "127.0.0.1:$MQTT_PORT" --server-pid "$SERVER_PID" \
      --qos "$qos" --publishers "$PUBLISHERS" --window "$WINDOW" --payload "$PAYLOAD" --warmup "$WARMUP" \
      --duration "$DURATION" --rate "$RATE" --latency-duration "$LATENCY_DURATION" --label "$who" >"$out" 2>&1 || true
  fi
  LAST=$(grep '^RESULT' "$out" || true)
  [[ -z $LAST ]] && { log "  $who $mode: no result:"; tail -n 10 "$out" >&2; }
  kill -0 "$SERVER_PID" 2>/dev/null || { log "  $who: server died during the run"; LAST=; }
  stop_pid "$SERVER_PID"; SERVER_PID=
  [[ -n $LAST ]]
}

# --- rounds ----------------------------------------------------------------------------------------
declare -A VALUES
KEYS="bytes_per_conn q0_msgs q1_msgs q0_p50 q0_p99 q1_p50 q1_p99 q0_cpu q1_cpu"
echo "bench-mqtt: $(date -u +%Y-%m-%dT%H:%M:%SZ) cores=$(nproc) rounds=$ROUNDS connections=$CONNECTIONS processes=$PROCESSES sources=$SOURCES" \
  "publishers=$PUBLISHERS window=$WINDOW payload=${PAYLOAD}B warmup=${WARMUP}s duration=${DURATION}s rate=$RATE/s latency_duration=${LATENCY_DURATION}s" \
  "mosquitto='$MOSQUITTO_VERSION' port=$MQTT_PORT nofile=$(ulimit -n) nice=${PRIO[*]:+$NICE} only=${ONLY:-both}"
for round in $(seq "$ROUNDS"); do
  echo " round $round"
  if (( round % 2 == 1 )); then order="mosquitto ours"; else order="ours mosquitto"; fi
  for who in $order; do
    [[ -n $ONLY && $ONLY != "$who" ]] && continue
    if run_pass "$who" idle; then
      echo "    $LAST"; VALUES[$who,bytes_per_conn]+=" $(field bytes_per_conn "$LAST")"
    fi
    for qos in 0 1; do
      if run_pass "$who" pubsub "$qos"; then
        echo "    $LAST"
        VALUES[$who,q${qos}_msgs]+=" $(field msgs_per_s "$LAST")"
        VALUES[$who,q${qos}_p50]+=" $(field lat_p50_us "$LAST")"
        VALUES[$who,q${qos}_p99]+=" $(field lat_p99_us "$LAST")"
        VALUES[$who,q${qos}_cpu]+=" $(field server_cpu "$LAST")"
      fi
    done
  done
done

echo "== summary (medians over $ROUNDS rounds)"
m() { median ${VALUES[$1,$2]:-}; }
for who in mosquitto ours; do
  echo "   $who: B/idle conn=$(m "$who" bytes_per_conn) qos0 msgs/s=$(m "$who" q0_msgs) (server cpu $(m "$who" q0_cpu)) p50/p99=$(m "$who" q0_p50)/$(m "$who" q0_p99)us" \
    "qos1 msgs/s=$(m "$who" q1_msgs) (server cpu $(m "$who" q1_cpu)) p50/p99=$(m "$who" q1_p50)/$(m "$who" q1_p99)us"
done
echo "RATIO mqtt_bytes_per_idle_conn mosquitto/ours=$(ratio "$(m mosquitto bytes_per_conn)" "$(m ours bytes_per_conn)") (ours=$(m ours bytes_per_conn) mosquitto=$(m mosquitto bytes_per_conn) bytes of VmRSS per idle connection at $CONNECTIONS; >1 means ours is smaller)"
echo "RATIO mqtt_qos0_msgs_per_s ours/mosquitto=$(ratio "$(m ours q0_msgs)" "$(m mosquitto q0_msgs)") (ours=$(m ours q0_msgs) mosquitto=$(m mosquitto q0_msgs) delivered/s)"
echo "RATIO mqtt_qos1_msgs_per_s ours/mosquitto=$(ratio "$(m ours q1_msgs)" "$(m mosquitto q1_msgs)") (ours=$(m ours q1_msgs) mosquitto=$(m mosquitto q1_msgs) delivered/s)"
echo "RATIO mqtt_qos0_latency_p50 mosquitto/ours=$(ratio "$(m mosquitto q0_p50)" "$(m ours q0_p50)") (ours=$(m ours q0_p50)us mosquitto=$(m mosquitto q0_p50)us at $RATE msg/s; >1 means ours is faster)"
echo "RATIO mqtt_qos1_latency_p99 mosquitto/ours=$(ratio "$(m mosquitto q1_p99)" "$(m ours q1_p99)") (ours=$(m ours q1_p99)us mosquitto=$(m mosquitto q1_p99)us at $RATE msg/s)"
