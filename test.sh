#!/usr/bin/env bash
# Runs every test in Relay.sln after installing the real peers they talk to (Debian packages).
# Prints a closing line "N passed, N failed" and exits non-zero if anything failed.
#   ./test.sh          everything: unit, integration (loopback, real peers) and the NAT lab (as root)
#   ./test.sh --fast   the unit tier only (Relay.Unit.slnf): no packages, no sample publish, no sockets
set -uo pipefail
cd "$(dirname "$0")"

fast=0
case ${1:-} in
  --fast) fast=1 ;;
  "") ;;
  *) echo "usage: $0 [--fast]" >&2; exit 2 ;;
esac

# The interop tests drive real third-party peers: coturn's turnutils and turnserver, Debian's classic
# stun client, and chromium (headless, through Playwright, which cannot download a browser of its own)
# for WebRTC through our TURN relay; Mosquitto's broker and clients and python3-paho-mqtt for MQTT
# interop (the broker is also the reference the MQTT interop tests are checked against). The NAT lab
# (docs/natlab.md) builds network namespaces with iproute2, nftables and conntrack. AFL++ runs the
# coverage-guided fuzzing step at the end (docs/fuzzing.md). The connector tests start their own PostgreSQL
# cluster and redis-server (Debian's postgresql and redis-server) on free ports.
if ((fast == 0)); then
packages=(coturn stun-client chromium mosquitto mosquitto-clients python3-paho-mqtt iproute2 nftables conntrack afl++ postgresql redis-server)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})" >&2
    echo "0 passed, 1 failed"
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "test.sh: apt-get install ${missing[*]} failed"
    echo "0 passed, 1 failed"
    exit 1
  fi
fi
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# The unit tier's projects are listed in Relay.Unit.slnf; every other test project needs the full run.
if ((fast == 1)); then target=Relay.Unit.slnf; else target=Relay.sln; fi

dotnet build "$target" -c Release -warnaserror 2>&1 | tail -n 3
if [[ ${PIPESTATUS[0]} -ne 0 ]]; then
  echo "test.sh: build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# The sample device must publish trimmed and self-contained, and as Native AOT, with no trimming or AOT
# warning (issue 6); the sample tests then run both binaries, since trimming can break what analysis missed.
case $(uname -m) in aarch64) rid=linux-arm64 ;; *) rid=linux-x64 ;; esac
extra_passed=0 extra_failed=0
if ((fast == 0)); then
publish_sample() { # name output extra-msbuild-args...
  local name=$1 out=$2 log="$results/publish-$1.log"
  shift 2
  if dotnet publish samples/BlinkDevice/BlinkDevice.csproj -c Release -r "$rid" -o "$out" "$@" >"$log" 2>&1 \
     && ! grep -qE "warning [A-Z]+[0-9]+" "$log"; then
    echo "$name publish of samples/BlinkDevice: no warnings; $(du -sb "$out/BlinkDevice" | cut -f1) bytes executable, $(du -sb --exclude='*.dbg' --exclude='*.pdb' --exclude='*.xml' "$out" | cut -f1) bytes in $out"
    extra_passed=$((extra_passed + 1))
  else
    echo "test.sh: $name publish of samples/BlinkDevice failed or warned:"
    grep -E "warning|error" "$log" | sort -u | head -n 40
    extra_failed=$((extra_failed + 1))
  fi
}
trimmed_out="samples/BlinkDevice/bin/Release/net10.0/$rid/publish"
native_out="samples/BlinkDevice/bin/Release/net10.0/$rid/publish-aot" # not .../native: that is where ILC itself writes
publish_sample trimmed "$trimmed_out"
publish_sample native-aot "$native_out" -p:PublishAot=true
export RELAY_TRIMMED_SAMPLE="$PWD/$trimmed_out/BlinkDevice" RELAY_NATIVE_SAMPLE="$PWD/$native_out/BlinkDevice"
fi

# The codec fuzzers run a million cases each in the full run; the fast tier is a quick check before a
# commit, so it runs a tenth of them unless RELAY_FUZZ_CASES says otherwise.
if ((fast == 1)); then export RELAY_FUZZ_CASES=${RELAY_FUZZ_CASES:-100000}; fi

# Console output is for people; the counts come from one TRX file per test assembly, whose
# <Counters> element does not change with logger verbosity or SDK version.
console="$results/console.log"
dotnet test "$target" -c Release --no-build --results-directory "$results" --logger trx \
  --logger "console;verbosity=normal" >"$console" 2>&1
status=$?
grep -E "^\s*Skipped |Total tests|^\s+(Passed|Failed|Skipped):|Test Run" "$console"
# A failure is shown with its message and stack, which is what a red CI log has to explain.
grep -E -A 25 "^\s*Failed " "$console" | head -n 400

trx_files=("$results"/*.trx)
passed=0 failed=0 total=0
for trx in "${trx_files[@]}"; do
  [[ -f $trx ]] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  attr() { sed -nE "s/.* $1=\"([0-9]+)\".*/\1/p" <<<"$counters"; }
  t=$(attr total) p=$(attr passed) f=$(attr failed) e=$(attr error) to=$(attr timeout) ab=$(attr aborted)
  total=$((total + ${t:-0}))
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0} + ${e:-0} + ${to:-0} + ${ab:-0}))
done
assemblies=$(find "$results" -maxdepth 1 -name '*.trx' | wc -l)
if ((fast == 1)); then
  expected=$(grep -c '\.csproj"' Relay.Unit.slnf)
else
  expected=$(find tests -mindepth 2 -maxdepth 2 -name '*.csproj' | wc -l)
fi

if ((assemblies < expected)); then
  # A test host that crashed writes no TRX: never let a missing assembly read as green.
  echo "test.sh: only $assemblies of $expected test assemblies reported results (dotnet test exited $status)"
  failed=$((failed + expected - assemblies))
elif [[ $status -ne 0 && $failed -eq 0 ]]; then
  echo "test.sh: dotnet test exited $status although no test failed"
  failed=1
elif ((total == 0)); then
  echo "test.sh: no test ran"
  failed=1
fi
# Coverage-guided fuzzing of the server's engines (docs/fuzzing.md): RELAY_FUZZ_SECONDS per target (default
# 60; 0 skips it), after the tests so it never delays their verdict. One "test" per target, passed when
# afl-fuzz found no crash and no hang in its budget; the inputs it found stay in artifacts/fuzz for triage.
fuzz_seconds=${RELAY_FUZZ_SECONDS:-60}
# The fast tier is the unit tests alone; the coverage-guided fuzzing belongs to the full run.
if ((fast == 1)); then fuzz_seconds=0; fi
if [[ $fuzz_seconds =~ ^[0-9]+$ ]] && ((fuzz_seconds > 0)); then
  fuzz_log="$results/fuzz.log"
  scripts/fuzz.sh --seconds "$fuzz_seconds" --out artifacts/fuzz >"$fuzz_log" 2>&1
  grep -E "^fuzz (mqtt|stun):|finding:" "$fuzz_log"
  for target in mqtt stun; do
    if grep -qE "^fuzz $target: [0-9]+ executions .*, 0 crashes, 0 hangs," "$fuzz_log"; then
      extra_passed=$((extra_passed + 1))
    else
      echo "test.sh: fuzzing $target found a crash or hang, or did not run:"
      grep -vE "^fuzz (mqtt|stun):" "$fuzz_log" | tail -n 20
      extra_failed=$((extra_failed + 1))
    fi
  done
fi

passed=$((passed + extra_passed))
failed=$((failed + extra_failed))
echo "${passed} passed, ${failed} failed"
[[ $status -eq 0 && $failed -eq 0 ]]
