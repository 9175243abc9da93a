# Shared by scripts/bench-*.sh (sourced after option parsing; the caller sets BENCH_NAME and NICE):
# paths, a work directory, cleanup of everything a run starts, free-port picking, niceness.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOADGEN=bench/Relay.LoadGen/bin/Release/net10.0/Relay.LoadGen.dll
OURS_DLL=src/Relay/bin/Release/net10.0/Relay.dll
WORK=$(mktemp -d "/tmp/${BENCH_NAME}.XXXXXX")
STARTED=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${STARTED[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

port_in_use() {
  [[ -n $(ss -Hlnu "sport = :$1" 2>/dev/null) || -n $(ss -Hlnt "sport = :$1" 2>/dev/null) ]]
}

pick_port() {
  local p=$1
  shift
  while port_in_use "$p" || [[ " $* " == *" $p "* ]]; do p=$((p + 1)); done
  echo "$p"
}

stop_pid() {
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# Ports: ours on 3478 (and 3479 free for the RFC 5780 alternate), coturn well away, HTTP for metrics.
pick_server_ports() {
  OURS_PORT=3478
  while port_in_use "$OURS_PORT" || port_in_use $((OURS_PORT + 1)); do OURS_PORT=$((OURS_PORT + 2)); done
  HTTP_PORT=$(pick_port 18080)
  COTURN_PORT=$(pick_port 13478 "$OURS_PORT" $((OURS_PORT + 1)) "$HTTP_PORT")
}

PRIO=()
if [[ $NICE != 0 ]]; then
  if [[ $NICE -lt 0 && $(id -u) != 0 ]]; then log "--nice $NICE needs root; running at normal priority"; else PRIO=(nice -n "$NICE"); fi
fi

# Waits up to 60 s for 127.0.0.1:PORT to accept a TCP connection; fails early when PID has exited.
wait_port() { # port pid
  for _ in $(seq 600); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
