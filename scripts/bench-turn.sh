#!/usr/bin/env bash
# Side-by-side TURN relay (RFC 8656, UDP) benchmark: our Relay server vs coturn's turnserver, on this
# machine, in the same run, with the same load (bench/Relay.LoadGen turn). Absolute numbers on a small
# shared box are noise; the ours/coturn ratios are the figures. Loopback only.
#
# usage: scripts/bench-turn.sh [--rounds N] [--configs shared,pinned] [--duration S] [--warmup S]
#                              [--allocations N] [--active N] [--window N] [--inflight N] [--peers N]
#                              [--payload BYTES] [--rate N] [--latency-duration S] [--nice N]
#                              [--no-build] [--loadgen-args "..."] [--ours-args "..."] [--coturn-args "..."]
#
# Every measured run starts the server fresh (so its memory baseline is clean), waits for it to answer
# a STUN Binding, runs one generator pass against it and stops it. Per pass the generator:
#   1. sets up --active allocations (401 dance, Allocate, CreatePermission, ChannelBind to an echo peer
#      inside the generator) and runs --warmup seconds of relayed round trips over them;
#   2. reads the server's VmRSS, creates --allocations more allocations (each with a permission and a
#      channel), reads VmRSS again: (after - before) / N = bytes per allocation;
#   3. releases those (Refresh 0) and creates them again: the warm pass gives allocations per second;
#   4. closed loop: --window ChannelData round trips outstanding per active allocation for --duration
#      seconds, the --allocations others idle; round trips per second, loss, server CPU;
#   5. open loop at --rate messages/s through the relay, then the same directly to the echo peers
#      (the kernel's loopback baseline): added latency p50/p99.
# Rounds alternate who goes first; each figure is the median of its rounds; ratios are median/median.
#
# Configurations:
#   shared  server and load generator float over all cores (they compete for CPU).
#   pinned  server on CPU 0, load generator on CPU 1 (taskset): the server gets exactly one core.
set -euo pipefail

ROUNDS=3
CONFIGS=shared,pinned
DURATION=8
WARMUP=2
ALLOCATIONS=10000
ACTIVE=256
WINDOW=2
INFLIGHT=64
PEERS=4
PAYLOAD=128
RATE=20000
LATENCY_DURATION=5
BUILD=1
LOADGEN_ARGS=
OURS_ARGS=
COTURN_ARGS=
# Servers and generator run at this niceness (root only) so unrelated work on a shared box (builds,
# tests) steals less CPU from a measurement; both servers get the same treatment.
NICE=-10

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --allocations) ALLOCATIONS=$2; shift 2 ;;
    --active) ACTIVE=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --inflight) INFLIGHT=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --payload) PAYLOAD=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --latency-duration) LATENCY_DURATION=$2; shift 2 ;;
    --nice) NICE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --loadgen-args) LOADGEN_ARGS=$2; shift 2 ;;
    --ours-args) OURS_ARGS=$2; shift 2 ;;
    --coturn-args) COTURN_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=bench-turn
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

median() {
  tr ' ' '\n' <<<"$*" | { grep -v '^$' || true; } | sort -g | awk '{ v[NR] = $1 }
    END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else { m = (v[NR / 2] + v[NR / 2 + 1]) / 2; if (m == int(m)) print m; else printf "%.2f\n", m } }'
}

ratio() { # numerator denominator
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}

field() { # name result-line
  sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$2"
}

per_core() { # rate cores
  awk -v r="$1" -v c="$2" 'BEGIN { if (r == "" || c + 0 == 0) print ""; else printf "%.0f", r / c }'
}


# --- build -----------------------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
  log "building load generator and our server..."
  dotnet build -c Release bench/Relay.LoadGen/Relay.LoadGen.csproj -nologo -v q >"$WORK/build-loadgen.log" 2>&1 \
    || { cat "$WORK/build-loadgen.log" >&2; exit 1; }
  dotnet build -c Release src/Relay/Relay.csproj -nologo -v q >"$WORK/build-ours.log" 2>&1 \
    || { tail -n 20 "$WORK/build-ours.log" >&2; exit 1; }
fi
[[ -f $LOADGEN && -f $OURS_DLL ]] || { log "missing $LOADGEN or $OURS_DLL (build them or drop --no-build)"; exit 1; }
command -v turnserver >/dev/null || { log "turnserver (coturn) not installed"; exit 1; }

# Every allocation holds a socket in the server (coturn: one, ours: one) and one in the generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NEED_FDS=$((ALLOCATIONS + ACTIVE + 1000))
if [[ $(ulimit -n) != unlimited && $(ulimit -n) -lt $NEED_FDS ]]; then
  log "open files limit $(ulimit -n) is below the ~$NEED_FDS needed for $ALLOCATIONS allocations; raise it or lower --allocations"
  exit 1
fi

pick_server_ports
CORES=$(nproc)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -n 1)


# --- servers ---------------------------------------------------------------------------------------
SERVER_PID=

wait_stun() { # port name pid
  if ! timeout 40 dotnet "$LOADGEN" probe --target "127.0.0.1:$1" --wait 30 >/dev/null 2>&1; then
    log "$2 did not answer a Binding request on 127.0.0.1:$1"
    return 1
  fi
  kill -0 "$3" 2>/dev/null
}

start_server() { # coturn|ours cpu-list-or-empty
  local pin=("${PRIO[@]}")
  [[ -n $2 ]] && pin+=(taskset -c "$2")
  rm -rf "$WORK/data" "$WORK/turndb" "$WORK/coturn.pid"
  mkdir -p "$WORK/data"
  if [[ $1 == coturn ]]; then
    # --total-quota/--user-quota 0 and --max-bps 0: no allocation or bandwidth limits (the defaults,
    # stated). -n ignores /etc/turnserver.conf; --db/--pidfile keep it out of /var.
    # shellcheck disable=SC2086 # deliberate word splitting of extra options
    "${pin[@]}" turnserver -n --no-tls --no-dtls --no-cli -L 127.0.0.1 --listening-port "$COTURN_PORT" \
      --realm bench --user bench:benchpw --lt-cred-mech --allow-loopback-peers --no-multicast-peers \
      --total-quota 0 --user-quota 0 --max-bps 0 \
      --log-file "$WORK/coturn.log" --simple-log --no-stdout-log --pidfile "$WORK/coturn.pid" --db "$WORK/turndb" \
      $COTURN_ARGS >>"$WORK/coturn.out" 2>&1 &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    wait_stun "$COTURN_PORT" coturn "$SERVER_PID"
  else
    # shellcheck disable=SC2086
    "${pin[@]}" dotnet "$OURS_DLL" --Relay:Stun:Port="$OURS_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 \
      --Relay:Stun:RateLimit:Enabled=false --Relay:Http:Port="$HTTP_PORT" --Relay:DataDirectory="$WORK/data" \
      --Relay:Turn:Users:0=bench:benchpw --Relay:Turn:Realm=bench --Relay:Turn:AllowLoopbackPeers=true \
      --Relay:Turn:MaxAllocations=20000 --Relay:Turn:MaxAllocationsPerUser=20000 --Relay:Turn:MaxAllocationsPerIp=20000 \
      --Relay:Turn:MaxBytesPerSecondPerAllocation=0 $OURS_ARGS >>"$WORK/ours.log" 2>&1 &
    SERVER_PID=$!
    STARTED+=("$SERVER_PID")
    wait_stun "$OURS_PORT" ours "$SERVER_PID"
  fi
}

# --- one measured run ------------------------------------------------------------------------------
LAST=
run_one() { # coturn|ours server-cpu loadgen-cpu
  local who=$1 port pin=("${PRIO[@]}")
  [[ -n $3 ]] && pin+=(taskset -c "$3")
  if [[ $who == coturn ]]; then port=$COTURN_PORT; else port=$OURS_PORT; fi
  LAST=
  if ! start_server "$who" "$2"; then
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID"
    return 1
  fi
  local out="$WORK/run-$who.txt"
  # shellcheck disable=SC2086
  if ! timeout 300 "${pin[@]}" dotnet "$LOADGEN" turn --target "127.0.0.1:$port" --server-pid "$SERVER_PID" \
      --allocations "$ALLOCATIONS" --active "$ACTIVE" --window "$WINDOW" --inflight "$INFLIGHT" --peers "$PEERS" \
      --payload "$PAYLOAD" --warmup "$WARMUP" --duration "$DURATION" --rate "$RATE" \
      --latency-duration "$LATENCY_DURATION" --no-release --label "$who" $LOADGEN_ARGS >"$out" 2>&1; then
    log "  $who: load generator failed:"
    tail -n 20 "$out" >&2
  fi
  LAST=$(grep '^RESULT' "$out" || true)
  if [[ $who == ours ]]; then
    # Anything the server dropped, by reason (relay_turn_drops_total), for the record.
    local drops
    drops=$(curl -s --max-time 3 "http://127.0.0.1:$HTTP_PORT/metrics" | grep '^relay_turn_drops_total' | grep -v ' 0$' | tr '\n' ' ' || true)
    [[ -n $drops ]] && echo "    ours drops: $drops"
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "  $who: server process died during the run"
    if [[ $who == ours ]]; then tail -n 30 "$WORK/ours.log" >&2; else tail -n 30 "$WORK/coturn.log" >&2; fi
    LAST=
  fi
  stop_pid "$SERVER_PID"
  SERVER_PID=
  sed 's/^/    | /' "$out" | grep -vE '^    \| (RESULT|turn load)' >>"$WORK/details.txt"
  [[ -n $LAST ]]
}

print_run() { # who result-line
  local r=$2
  printf '  %-6s rtt/s=%-7s loss=%s%% (lost %s, stale %s) rtt/core=%-7s server_cpu=%s gen_cpu=%s busy=%s | alloc/s=%-6s (cold %s, %s per server core) server_cpu=%s gen_cpu=%s fail=%s | B/alloc=%-6s | lat p50/p99=%s/%sus direct %s/%sus added %s/%sus (server_cpu %s at %s/s)\n' \
    "$1" "$(field rtt_per_s "$r")" "$(field rtt_loss_pct "$r")" "$(field rtt_lost "$r")" "$(field rtt_stale "$r")" \
    "$(field rtt_per_core "$r")" "$(field server_cpu "$r")" "$(field gen_cpu "$r")" "$(field busy "$r")" \
    "$(field alloc_per_s "$r")" "$(field alloc_cold_per_s "$r")" "$(field alloc_per_core "$r")" "$(field alloc_server_cpu "$r")" "$(field alloc_gen_cpu "$r")" \
    "$(field alloc_failed "$r")" "$(field bytes_per_alloc "$r")" \
    "$(field lat_p50_us "$r")" "$(field lat_p99_us "$r")" "$(field direct_p50_us "$r")" "$(field direct_p99_us "$r")" \
    "$(field added_p50_us "$r")" "$(field added_p99_us "$r")" "$(field lat_server_cpu "$r")" "$RATE"
}

# --- configurations --------------------------------------------------------------------------------
KEYS="rtt_per_s rtt_per_core rtt_lost lat_lost alloc_per_s alloc_per_core alloc_cold_per_s alloc_server_cpu bytes_per_alloc lat_p50_us lat_p99_us direct_p50_us direct_p99_us added_p50_us added_p99_us lat_server_cpu gen_cpu server_cpu"
declare -A VALUES MED
echo "bench-turn: $(date -u +%Y-%m-%dT%H:%M:%SZ) cores=$CORES rounds=$ROUNDS configs=$CONFIGS allocations=$ALLOCATIONS active=$ACTIVE window=$WINDOW" \
  "inflight=$INFLIGHT peers=$PEERS payload=${PAYLOAD}B duration=${DURATION}s warmup=${WARMUP}s rate=$RATE/s latency_duration=${LATENCY_DURATION}s" \
  "coturn='$COTURN_VERSION' coturn_port=$COTURN_PORT ours_port=$OURS_PORT nofile=$(ulimit -n) nice=${PRIO[*]:+$NICE} loadgen_args='$LOADGEN_ARGS'"

IFS=',' read -r -a CONFIG_LIST <<<"$CONFIGS"
for config in "${CONFIG_LIST[@]}"; do
  case "$config" in
    shared) server_cpu=; gen_cpu= ;;
    pinned)
      [[ $CORES -ge 2 ]] || { log "pinned needs 2 cores; skipping"; continue; }
      server_cpu=0; gen_cpu=1 ;;
    *) log "unknown config $config"; exit 2 ;;
  esac
  echo "== config $config: server cpus=${server_cpu:-all} loadgen cpus=${gen_cpu:-all}"
  for round in $(seq "$ROUNDS"); do
    echo " round $round"
    # Alternate who goes first so slow drift (thermal, other tenants) does not favour one side.
    if (( round % 2 == 1 )); then order="coturn ours"; else order="ours coturn"; fi
    for who in $order; do
      ok=0
      for attempt in 1 2; do
        if run_one "$who" "$server_cpu" "$gen_cpu"; then ok=1; break; fi
        log "  $who: run failed (attempt $attempt)"
      done
      [[ $ok == 1 ]] || continue
      # Allocations per second per core the server actually got (the rate over its CPU in that pass).
      LAST="$LAST alloc_per_core=$(per_core "$(field alloc_per_s "$LAST")" "$(field alloc_server_cpu "$LAST")")"
      print_run "$who" "$LAST"
      echo "    $LAST" >>"$WORK/results.txt"
      for key in $KEYS; do VALUES[$config,$who,$key]+=" $(field "$key" "$LAST")"; done
    done
  done
  for who in coturn ours; do
    for key in $KEYS; do MED[$config,$who,$key]=$(median ${VALUES[$config,$who,$key]:-}); done
  done
  echo "   $config: coturn rtt/s=[${VALUES[$config,coturn,rtt_per_s]:-} ] ours rtt/s=[${VALUES[$config,ours,rtt_per_s]:-} ]"
  echo "   $config: coturn alloc/s=[${VALUES[$config,coturn,alloc_per_s]:-} ] ours alloc/s=[${VALUES[$config,ours,alloc_per_s]:-} ]"
  echo "   $config: coturn B/alloc=[${VALUES[$config,coturn,bytes_per_alloc]:-} ] ours B/alloc=[${VALUES[$config,ours,bytes_per_alloc]:-} ]"
done

echo "== raw RESULT lines"
cat "$WORK/results.txt" 2>/dev/null || true
echo "== generator output (all runs)"
cat "$WORK/details.txt" 2>/dev/null || true

echo "== summary (medians; loss = round trips lost across all runs of a configuration)"
# The shared configuration is printed last so the final lines are the headline figures.
for config in $(tr ',' '\n' <<<"$CONFIGS" | sort); do
  [[ -n ${MED[$config,coturn,rtt_per_s]:-} ]] || continue
  suffix=
  [[ $config != shared ]] && suffix="_$config"
  c() { echo "${MED[$config,coturn,$1]}"; }
  o() { echo "${MED[$config,ours,$1]}"; }
  lost_c=$(tr ' ' '\n' <<<"${VALUES[$config,coturn,rtt_lost]:-}" | awk '{ s += $1 } END { print s + 0 }')
  lost_o=$(tr ' ' '\n' <<<"${VALUES[$config,ours,rtt_lost]:-}" | awk '{ s += $1 } END { print s + 0 }')
  echo "-- $config"
  echo "   relayed round trips per server core: ours/coturn=$(ratio "$(o rtt_per_core)" "$(c rtt_per_core)") (ours=$(o rtt_per_core) coturn=$(c rtt_per_core)); server cpu ours=$(o server_cpu) coturn=$(c server_cpu); generator cpu vs ours=$(o gen_cpu) vs coturn=$(c gen_cpu)"
  echo "   loss: ours $lost_o round trips lost, coturn $lost_c (closed loop); open loop lost ours=[${VALUES[$config,ours,lat_lost]:-} ] coturn=[${VALUES[$config,coturn,lat_lost]:-} ]"
  echo "   latency at $RATE msg/s, send -> kernel receive, p50/p99 us: ours $(o lat_p50_us)/$(o lat_p99_us), coturn $(c lat_p50_us)/$(c lat_p99_us);" \
    "direct (no relay) ours-run $(o direct_p50_us)/$(o direct_p99_us), coturn-run $(c direct_p50_us)/$(c direct_p99_us);" \
    "added by the relay ours $(o added_p50_us)/$(o added_p99_us), coturn $(c added_p50_us)/$(c added_p99_us)"
  echo "   server cpu at $RATE msg/s: ours=$(o lat_server_cpu) coturn=$(c lat_server_cpu) cores (coturn/ours=$(ratio "$(c lat_server_cpu)" "$(o lat_server_cpu)"))"
  echo "   allocations per server core (warm pass): ours/coturn=$(ratio "$(o alloc_per_core)" "$(c alloc_per_core)") (ours=$(o alloc_per_core) coturn=$(c alloc_per_core)); server cpu ours=$(o alloc_server_cpu) coturn=$(c alloc_server_cpu); cold pass ours=$(o alloc_cold_per_s) coturn=$(c alloc_cold_per_s) per s"
  echo "RATIO turn_alloc_per_s$suffix ours/coturn=$(ratio "$(o alloc_per_s)" "$(c alloc_per_s)") (ours=$(o alloc_per_s) coturn=$(c alloc_per_s) allocations/s, warm pass, $INFLIGHT in flight)"
  echo "RATIO turn_bytes_per_alloc$suffix coturn/ours=$(ratio "$(c bytes_per_alloc)" "$(o bytes_per_alloc)") (ours=$(o bytes_per_alloc) coturn=$(c bytes_per_alloc) bytes of VmRSS per idle allocation at $ALLOCATIONS; >1 means ours is smaller)"
  echo "RATIO turn_added_latency_p50$suffix coturn/ours=$(ratio "$(c added_p50_us)" "$(o added_p50_us)") (ours=$(o added_p50_us)us coturn=$(c added_p50_us)us over the direct path)"
  echo "RATIO turn_relay_rtt_per_s$suffix ours/coturn=$(ratio "$(o rtt_per_s)" "$(c rtt_per_s)") (ours=$(o rtt_per_s) coturn=$(c rtt_per_s) relayed round trips/s, loss ours=$lost_o coturn=$lost_c)"
done
