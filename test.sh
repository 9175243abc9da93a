#!/usr/bin/env bash
# Runs every test in Relay.sln after installing the real peers they talk to (Debian packages).
# Prints a closing line "N passed, N failed" and exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")"

# The interop tests drive real third-party clients: coturn's turnutils, Debian's classic stun client.
packages=(coturn stun-client)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT

dotnet build Relay.sln -c Release -warnaserror 2>&1 | tail -n 3
if [[ ${PIPESTATUS[0]} -ne 0 ]]; then
  echo "test.sh: build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

dotnet test Relay.sln -c Release --no-build --logger "console;verbosity=normal" 2>&1 | tee "$log" | grep -E "^\s*(Failed|Passed!|Failed!|Skipped) " || true
status=${PIPESTATUS[0]}

# Sum the per-assembly summaries ("Passed!  - Failed: 0, Passed: 40, Skipped: 0, Total: 40 ...").
read -r passed failed < <(grep -E "^(Passed|Failed)! +- " "$log" | sed -E 's/.*Failed: +([0-9]+), Passed: +([0-9]+).*/\2 \1/' \
  | awk '{p += $1; f += $2} END {print p + 0, f + 0}')
assemblies=$(grep -cE "^(Passed|Failed)! +- " "$log" || true)
if [[ $status -ne 0 && $failed -eq 0 ]]; then
  # A test host crashed or an assembly reported nothing: never let that read as green.
  echo "test.sh: dotnet test exited $status with $assemblies assembly summaries"
  grep -E "error|Error|crash|aborted" "$log" | tail -n 20
  failed=1
fi
echo "${passed} passed, ${failed} failed"
[[ $status -eq 0 && $failed -eq 0 ]]
