#!/usr/bin/env bash
# Rendezvous timings in the NAT lab (issue 7 §5): per NAT pair, the time to the first message (relayed:
# the channel is usable before any punch) and the time to the direct upgrade, p50 and p95 over rounds.
# It runs the matrix test itself (tests/Relay.Server.Tests/NatLab/RendezvousMatrixTests.cs), so each
# figure comes from a run whose path was proven from the packets; runs that failed record nothing.
# Both times start at PeerDemo's CONNECTED line on the connecting side (MQTT connected, ConnectPeerAsync
# called next) and end when the test process reads the other side's "RECV first" or the connecting side's
# first "PATH direct" line.
#
# usage: sudo scripts/bench-rendezvous.sh [--rounds R] [--filter EXPR] [--no-build] [--out FILE]
#   --rounds R     matrix runs (default 5; one run is about 4 minutes: 16 labs, the relayed pairs wait out
#                  the 10 s check timeout)
#   --filter EXPR  extra dotnet test filter, e.g. 'DisplayName~Symmetric'
#   --out FILE     the raw CSV (a,b,birthday,path,first_ms,direct_ms); default a temporary file
# Needs root (network namespaces), iproute2, nftables, conntrack.
set -euo pipefail

ROUNDS=5
FILTER=""
BUILD=1
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --filter) FILTER=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ $(id -u) -ne 0 ]]; then
  echo "bench-rendezvous: needs root (the NAT lab builds network namespaces)" >&2
  exit 2
fi

if [[ $BUILD -eq 1 ]]; then
  dotnet build Relay.sln -c Release -warnaserror -v quiet -nologo
fi

OUT=${OUT:-$(mktemp /tmp/bench-rendezvous.XXXXXX.csv)}
: > "$OUT"
FILTER_EXPR="FullyQualifiedName~Relay.Server.Tests.Nat.RendezvousMatrixTests"
[[ -n $FILTER ]] && FILTER_EXPR="$FILTER_EXPR&$FILTER"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  # A failed test records no timing; the summary says how many runs each pair has.
  RELAY_RENDEZVOUS_TIMINGS="$OUT" dotnet test tests/Relay.Server.Tests -c Release --no-build \
    --filter "$FILTER_EXPR" --logger "trx;LogFileName=$OUT.round$round.trx" -nologo > "$OUT.round$round.log" 2>&1 || echo "round $round: some tests failed (see $OUT.round$round.log)" >&2
done

echo "raw: $OUT"
echo
echo "| NAT pair | probing | path | runs | first message p50 | p95 | direct p50 | p95 |"
echo "|---|---|---|---|---|---|---|---|"
# Nearest-rank percentiles per (pair, probing, path). Plain POSIX awk (mawk has no asort): insertion sort.
sort -t, -k1,3 "$OUT" | awk -F, '
  function pct(list, p,   v, n, i, j, t, k) {
    n = split(list, v, " ")
    if (n == 0) return "-"
    for (i = 2; i <= n; i++) { t = v[i] + 0; for (j = i - 1; j >= 1 && v[j] + 0 > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    k = int((p * n + 99) / 100); if (k < 1) k = 1; if (k > n) k = n
    return sprintf("%.0f ms", v[k])
  }
  {
    key = $1 " × " $2 "|" $3 "|" $4
    if (!(key in runs)) order[++keys] = key
    runs[key]++
    first[key] = first[key] " " $5
    if ($6 != "") direct[key] = direct[key] " " $6
  }
  END {
    for (i = 1; i <= keys; i++) {
      key = order[i]; split(key, part, "|")
      printf "| %s | %s | %s | %d | %s | %s | %s | %s |\n", part[1], part[2], part[3], runs[key],
        pct(first[key], 50), pct(first[key], 95), pct(direct[key], 50), pct(direct[key], 95)
    }
  }'
