#!/usr/bin/env bash
# Side-by-side STUN Binding throughput: our Relay server vs coturn's turnserver, on this machine, in
# the same run, with the same load (bench/Relay.LoadGen). Absolute numbers on a small shared box are
# noise; the ours/coturn ratio is the figure. Loopback only.
#
# usage: scripts/bench-stun.sh [--rounds N] [--duration S] [--warmup S] [--sockets N] [--window N]
#                              [--transport udp|tcp] [--configs shared,pinned] [--fingerprint]
#                              [--coturn-threads default|N] [--coturn-pinned-threads default|N]
#                              [--nice N] [--no-build] [--coturn-only]
#                              [--loadgen-io batched|simple] [--loadgen-threads N] [--loadgen-args "..."]
#
# Configurations:
#   shared  server and load generator float over all cores (they compete for CPU).
#   pinned  server on CPU 0, load generator on CPU 1 (taskset): no generator-vs-server contention,
#           the server gets exactly one core.
# coturn runs its default thread model in both (relay threads = CPU count, one SO_REUSEPORT UDP
# listener per thread; it sizes this from the machine, not the affinity mask, while .NET sizes from
# the affinity mask). --coturn-pinned-threads 1 gives it as many threads as the one core it may use;
# on 2026-11-22 that was no better than the default (see docs/benchmarks.md).
# The UDP load generator defaults to its batched Linux mode (epoll + recvmmsg/sendmmsg + UDP GSO, one
# thread); --loadgen-io simple selects the portable one-datagram-per-syscall mode used before.
# Every run line shows the generator's own CPU (gen_cpu) next to the server's, so a generator-bound
# run is visible.
set -euo pipefail

ROUNDS=3
DURATION=8
WARMUP=2
SOCKETS=64
WINDOW=8
TRANSPORT=udp
CONFIGS=shared,pinned
COTURN_THREADS=default
COTURN_PINNED_THREADS=default
FINGERPRINT=
BUILD=1
COTURN_ONLY=0
LOADGEN_IO=
LOADGEN_THREADS=
LOADGEN_ARGS=
# Servers and generator run at this niceness (root only) so unrelated work on a shared box (builds,
# tests) steals less CPU from a measurement; both servers get the same treatment.
NICE=-10

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --sockets) SOCKETS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --transport) TRANSPORT=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --coturn-threads) COTURN_THREADS=$2; shift 2 ;;
    --coturn-pinned-threads) COTURN_PINNED_THREADS=$2; shift 2 ;;
    --fingerprint) FINGERPRINT=--fingerprint; shift ;;
    --nice) NICE=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --coturn-only) COTURN_ONLY=1; shift ;;
    --loadgen-io) LOADGEN_IO=$2; shift 2 ;;
    --loadgen-threads) LOADGEN_THREADS=$2; shift 2 ;;
    --loadgen-args) LOADGEN_ARGS=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BENCH_NAME=bench-stun
# shellcheck source=scripts/bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh"

# "cpu busy_ticks total_ticks" for the whole machine or one CPU (arg: cpu, cpu0, cpu1).
cpu_sample() {
  awk -v c="$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

busy_pct() { # before-sample after-sample
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
    d = y[2] - x[2]; printf "%.0f", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

median() {
  tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 }
    END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_dec() { # same, for values like 0.93 (two decimals)
  tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 }
    END { if (NR == 0) print 0; else if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}


# --- build -----------------------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
  log "building load generator..."
  dotnet build -c Release bench/Relay.LoadGen/Relay.LoadGen.csproj -nologo -v q >"$WORK/build-loadgen.log" 2>&1 \
    || { cat "$WORK/build-loadgen.log" >&2; exit 1; }
fi
[[ -f $LOADGEN ]] || { log "missing $LOADGEN (build it or drop --no-build)"; exit 1; }

OURS_AVAILABLE=0
if [[ $COTURN_ONLY == 0 ]]; then
  if [[ $BUILD == 1 ]]; then
    log "building our server..."
    if dotnet build -c Release src/Relay/Relay.csproj -nologo -v q >"$WORK/build-ours.log" 2>&1 && [[ -f $OURS_DLL ]]; then
      OURS_AVAILABLE=1
    else
      log "our server does not build; measuring coturn only (ratio pending). Build log tail:"
      tail -n 15 "$WORK/build-ours.log" >&2 || true
    fi
  elif [[ -f $OURS_DLL ]]; then
    OURS_AVAILABLE=1
  fi
fi

command -v turnserver >/dev/null || { log "turnserver (coturn) not installed"; exit 1; }

pick_server_ports
CORES=$(nproc)
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -n 1)


# --- servers ---------------------------------------------------------------------------------------
COTURN_PID=
OURS_PID=

wait_stun() { # port name pid
  if ! timeout 40 dotnet "$LOADGEN" probe --target "127.0.0.1:$1" --transport "$TRANSPORT" --wait 30 >/dev/null 2>&1; then
    log "$2 did not answer a Binding request on 127.0.0.1:$1"
    return 1
  fi
  kill -0 "$3" 2>/dev/null
}

start_coturn() { # cpu-list-or-empty threads
  local pin=("${PRIO[@]}") threads=()
  [[ -n $1 ]] && pin+=(taskset -c "$1")
  [[ $2 != default ]] && threads=(-m "$2")
  # Defaults otherwise: no rate limiting exists for STUN Binding in coturn, and --log-binding is off.
  # --db/--pidfile keep it out of /var; -n ignores /etc/turnserver.conf.
  "${pin[@]}" turnserver -n --stun-only --no-tls --no-dtls --no-cli \
    -L 127.0.0.1 --listening-port "$COTURN_PORT" "${threads[@]}" \
    --log-file "$WORK/coturn.log" --simple-log --no-stdout-log \
    --pidfile "$WORK/coturn.pid" --db "$WORK/turndb" >>"$WORK/coturn.out" 2>&1 &
  COTURN_PID=$!
  STARTED+=("$COTURN_PID")
  wait_stun "$COTURN_PORT" coturn "$COTURN_PID"
}

start_ours() { # cpu-list-or-empty
  local pin=("${PRIO[@]}")
  [[ -n $1 ]] && pin+=(taskset -c "$1")
  mkdir -p "$WORK/ours-data"
  "${pin[@]}" dotnet "$OURS_DLL" --Relay:Stun:Port="$OURS_PORT" --Relay:Stun:ListenAddresses:0=127.0.0.1 \
    --Relay:Stun:RateLimit:Enabled=false --Relay:Http:Port="$HTTP_PORT" \
    --Relay:DataDirectory="$WORK/ours-data" >>"$WORK/ours.log" 2>&1 &
  OURS_PID=$!
  STARTED+=("$OURS_PID")
  wait_stun "$OURS_PORT" ours "$OURS_PID"
}

# --- one measured run ------------------------------------------------------------------------------
LOADGEN_OPTS=()
[[ $TRANSPORT == udp && -n $LOADGEN_IO ]] && LOADGEN_OPTS+=(--io "$LOADGEN_IO")
[[ $TRANSPORT == udp && -n $LOADGEN_THREADS ]] && LOADGEN_OPTS+=(--threads "$LOADGEN_THREADS")
# shellcheck disable=SC2206 # deliberate word splitting of extra generator options
[[ -n $LOADGEN_ARGS ]] && LOADGEN_OPTS+=($LOADGEN_ARGS)

LAST_TPS=0
LAST_PER_CORE=0
LAST_GEN_CPU=0
run_load() { # name port server-pid loadgen-cpu-or-empty
  local name=$1 port=$2 spid=$3 cpu=$4 pin=("${PRIO[@]}")
  [[ -n $cpu ]] && pin+=(taskset -c "$cpu")
  local out="$WORK/run-$name.txt"
  timeout $((DURATION + WARMUP + 30)) "${pin[@]}" dotnet "$LOADGEN" stun --target "127.0.0.1:$port" \
    --transport "$TRANSPORT" --duration "$DURATION" --warmup "$WARMUP" --sockets "$SOCKETS" \
    --window "$WINDOW" $FINGERPRINT "${LOADGEN_OPTS[@]}" --quiet --label "$name" >"$out" 2>&1 &
  local lpid=$!
  STARTED+=("$lpid")
  # Sample CPU over the middle of the measured phase (generator start-up takes ~0.3 s).
  sleep "$(awk -v w="$WARMUP" 'BEGIN { print w + 1 }')"
  # timeout forks the generator (nice/taskset exec into dotnet, so it keeps that pid).
  local gpid
  gpid=$(pgrep -P "$lpid" | head -n 1 || true)
  local a_all a0 a1 as ag b_all b0 b1 bs bg span
  a_all=$(cpu_sample cpu); a0=$(cpu_sample cpu0); a1=$(cpu_sample cpu1); as=$(proc_ticks "$spid")
  ag=$(proc_ticks "${gpid:-0}")
  span=$(awk -v d="$DURATION" 'BEGIN { s = d - 2; print (s > 0.5 ? s : 0.5) }')
  sleep "$span"
  b_all=$(cpu_sample cpu); b0=$(cpu_sample cpu0); b1=$(cpu_sample cpu1); bs=$(proc_ticks "$spid")
  bg=$(proc_ticks "${gpid:-0}")
  local rc=0
  wait "$lpid" || rc=$?
  local result
  result=$(grep '^RESULT' "$out" || true)
  if [[ $rc != 0 || -z $result ]]; then
    log "  $name: load generator failed (rc=$rc):"
    cat "$out" >&2
    LAST_TPS=0
    LAST_PER_CORE=0
    LAST_GEN_CPU=0
  else
    LAST_TPS=$(sed -E 's/.* tps=([0-9]+).*/\1/' <<<"$result")
    local server_cores hz
    hz=$(getconf CLK_TCK)
    server_cores=$(awk -v a="$as" -v b="$bs" -v s="$span" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz / s }')
    # Process CPU includes the softirq work done in the process's context (tick accounting), which on
    # loopback is mostly delivering its datagrams into the other side's socket.
    LAST_GEN_CPU=$(awk -v a="$ag" -v b="$bg" -v s="$span" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz / s }')
    # Transactions per second per core the server actually got: less sensitive than raw tps to
    # whatever else (other tenants, the generator) takes CPU from the server during a run.
    LAST_PER_CORE=$(awk -v t="$LAST_TPS" -v c="$server_cores" 'BEGIN { printf "%.0f", (c > 0 ? t / c : 0) }')
    printf '  %-7s tps=%-8s loss=%s%% p50=%sus p99=%sus  server_cpu=%s cores (%s tps/core)  gen_cpu=%s cores  busy: all=%s%% cpu0=%s%% cpu1=%s%%\n' \
      "$name" "$LAST_TPS" "$(sed -E 's/.* loss_pct=([0-9.]+).*/\1/' <<<"$result")" \
      "$(sed -E 's/.* p50_us=([0-9]+).*/\1/' <<<"$result")" "$(sed -E 's/.* p99_us=([0-9]+).*/\1/' <<<"$result")" \
      "$server_cores" "$LAST_PER_CORE" "$LAST_GEN_CPU" "$(busy_pct "$a_all" "$b_all")" "$(busy_pct "$a0" "$b0")" "$(busy_pct "$a1" "$b1")"
    echo "    $result" >>"$WORK/results.txt"
  fi
  if ! kill -0 "$spid" 2>/dev/null; then
    log "  $name: server process died during the run"
    if [[ $name == ours ]]; then tail -n 30 "$WORK/ours.log" >&2; else tail -n 30 "$WORK/coturn.log" >&2; fi
  fi
}

# A server found dead (crash, or killed by something outside this script) is restarted and the run
# retried once, so one incident does not poison the medians; it is reported either way.
measure() { # coturn|ours server-cpu threads loadgen-cpu
  local who=$1 attempt
  for attempt in 1 2; do
    if [[ $who == coturn ]]; then
      if ! kill -0 "$COTURN_PID" 2>/dev/null; then
        log "  coturn is not running; restarting it"
        start_coturn "$2" "$3" || return 1
      fi
      run_load coturn "$COTURN_PORT" "$COTURN_PID" "$4"
      kill -0 "$COTURN_PID" 2>/dev/null && [[ $LAST_TPS != 0 ]] && return 0
    else
      if ! kill -0 "$OURS_PID" 2>/dev/null; then
        log "  our server is not running; restarting it"
        start_ours "$2" || return 1
      fi
      run_load ours "$OURS_PORT" "$OURS_PID" "$4"
      kill -0 "$OURS_PID" 2>/dev/null && [[ $LAST_TPS != 0 ]] && return 0
    fi
    log "  $who: retrying this run"
  done
  return 1
}

# --- configurations --------------------------------------------------------------------------------
declare -A MEDIAN_COTURN MEDIAN_OURS CORE_COTURN CORE_OURS
echo "bench-stun: $(date -u +%Y-%m-%dT%H:%M:%SZ) cores=$CORES transport=$TRANSPORT sockets=$SOCKETS window=$WINDOW loadgen='${LOADGEN_OPTS[*]:-default}'" \
  "rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s ${FINGERPRINT:+fingerprint }coturn='$COTURN_VERSION'" \
  "coturn_port=$COTURN_PORT ours_port=$OURS_PORT ours_available=$OURS_AVAILABLE nice=${PRIO[*]:+$NICE}"

IFS=',' read -r -a CONFIG_LIST <<<"$CONFIGS"
for config in "${CONFIG_LIST[@]}"; do
  case "$config" in
    shared) server_cpu=; gen_cpu=; threads=$COTURN_THREADS ;;
    pinned)
      [[ $CORES -ge 2 ]] || { log "pinned needs 2 cores; skipping"; continue; }
      server_cpu=0; gen_cpu=1; threads=$COTURN_PINNED_THREADS ;;
    *) log "unknown config $config"; exit 2 ;;
  esac
  echo "== config $config: server cpus=${server_cpu:-all} loadgen cpus=${gen_cpu:-all} coturn relay threads=$threads"
  rm -f "$WORK/coturn.log"
  start_coturn "$server_cpu" "$threads" || exit 1
  echo "   coturn: $(grep -m1 -o 'Total General servers: [0-9]*' "$WORK/coturn.log" || echo '?') (UDP relay threads)"
  ours_up=0
  if [[ $OURS_AVAILABLE == 1 ]]; then
    if start_ours "$server_cpu"; then ours_up=1; else log "our server did not come up; see log:"; tail -n 30 "$WORK/ours.log" >&2; fi
  fi
  coturn_tps=() ours_tps=() coturn_core=() ours_core=() coturn_gen=() ours_gen=()
  for round in $(seq "$ROUNDS"); do
    echo " round $round"
    # Alternate who goes first so slow drift (thermal, other tenants) does not favour one side.
    if (( round % 2 == 1 )); then order="coturn ours"; else order="ours coturn"; fi
    for who in $order; do
      if [[ $who == coturn ]]; then
        if measure coturn "$server_cpu" "$threads" "$gen_cpu"; then coturn_tps+=("$LAST_TPS"); coturn_core+=("$LAST_PER_CORE"); coturn_gen+=("$LAST_GEN_CPU"); fi
      elif [[ $ours_up == 1 ]]; then
        if measure ours "$server_cpu" "$threads" "$gen_cpu"; then ours_tps+=("$LAST_TPS"); ours_core+=("$LAST_PER_CORE"); ours_gen+=("$LAST_GEN_CPU"); fi
      fi
    done
  done
  stop_pid "$COTURN_PID"
  [[ -n $OURS_PID ]] && stop_pid "$OURS_PID"
  OURS_PID=
  MEDIAN_COTURN[$config]=$(median "${coturn_tps[@]}")
  CORE_COTURN[$config]=$(median "${coturn_core[@]}")
  MEDIAN_OURS[$config]=
  CORE_OURS[$config]=
  if [[ $ours_up == 1 && ${#ours_tps[@]} -gt 0 ]]; then
    MEDIAN_OURS[$config]=$(median "${ours_tps[@]}")
    CORE_OURS[$config]=$(median "${ours_core[@]}")
  fi
  echo "   $config: coturn tps=[${coturn_tps[*]}] median=${MEDIAN_COTURN[$config]} (tps/core median ${CORE_COTURN[$config]});" \
    "ours tps=[${ours_tps[*]:-}] median=${MEDIAN_OURS[$config]:-n/a} (tps/core median ${CORE_OURS[$config]:-n/a})"
  echo "   $config: generator cpu (cores) median: vs coturn $(median_dec "${coturn_gen[@]}"), vs ours $(median_dec "${ours_gen[@]:-}")"
done

echo "== raw RESULT lines"
cat "$WORK/results.txt" 2>/dev/null || true

label="stun_$TRANSPORT"
# The shared configuration is printed last so the final line is the headline figure.
for config in $(tr ',' '\n' <<<"$CONFIGS" | sort); do
  [[ -n ${MEDIAN_COTURN[$config]:-} ]] || continue
  name=$label
  [[ $config != shared ]] && name="${label}_$config"
  c=${MEDIAN_COTURN[$config]}
  o=${MEDIAN_OURS[$config]:-}
  if [[ -n $o && $c -gt 0 ]]; then
    echo "   per-core $config: ours/coturn=$(awk -v o="${CORE_OURS[$config]}" -v c="${CORE_COTURN[$config]}" \
      'BEGIN { printf "%.2f", (c > 0 ? o / c : 0) }') (ours=${CORE_OURS[$config]} coturn=${CORE_COTURN[$config]} tps per server core)"
    echo "RATIO $name ours/coturn=$(awk -v o="$o" -v c="$c" 'BEGIN { printf "%.2f", o / c }') (ours=$o coturn=$c)"
  else
    echo "RATIO $name ours/coturn=pending (ours=unavailable coturn=$c)"
  fi
done
