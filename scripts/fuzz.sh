#!/usr/bin/env bash
# Coverage-guided fuzzing of the server's engines with AFL++ and SharpFuzz (docs/fuzzing.md).
#
# usage: scripts/fuzz.sh [--target mqtt|stun|all] [--inputs N] [--seconds S] [--timeout MS] [--jobs J]
#                        [--nice N] [--out DIR] [--minimize] [--no-build]
#
#   --target   which harness (fuzz/Relay.Fuzz): mqtt, stun, or all (the default), one after the other.
#   --inputs   stop a target after N executions in all (afl-fuzz -E N/J per instance); default 10,000,000
#              unless --seconds is given.
#   --jobs     AFL instances per target run side by side (one main, J-1 secondaries sharing their finds);
#              their executions are summed. Default 1; more only helps with a core each.
#   --seconds  stop a target after S seconds (afl-fuzz -V); with --inputs, whichever comes first.
#   --timeout  afl-fuzz -t, per input, in ms (default 30000: far above any real input, so that a loaded
#              machine does not report hangs; the harness itself fails an input whose connection does not
#              end within 20 s, and AFL's timeout catches a synchronous loop).
#   --nice     run afl-fuzz and the target at this niceness (default 19: the cores are shared).
#   --out      work directory (default artifacts/fuzz): the instrumented build, and per target AFL's
#              output (DIR/TARGET/default/{queue,crashes,hangs}); each run starts the target's afresh.
#   --minimize afl-cmin the target's queue (seeds plus what added coverage) into DIR/TARGET/min, to be
#              copied to fuzz/corpus/TARGET by hand.
#
# Prints one line per target, "fuzz TARGET: N executions (R/s), C crashes, H hangs, P paths" (summed over
# the instances; the rate is the sum of the instances' rates), and exits
# non-zero when any target crashed or hung (a crash is any exception out of the engine or an error the
# server logged; the inputs are in DIR/TARGET/default/crashes, to replay with
# "dotnet DIR/bin/Relay.Fuzz.dll TARGET FILE"). Needs afl++ (Debian: apt-get install -y afl++).
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(mqtt stun) inputs="" seconds="" timeout=30000 niceness=19 out=artifacts/fuzz minimize=0 build=1 jobs=1
while (($# > 0)); do
  case $1 in
    --target) case $2 in all) targets=(mqtt stun) ;; mqtt | stun) targets=("$2") ;; *) echo "fuzz.sh: unknown target $2" >&2; exit 2 ;; esac; shift 2 ;;
    --inputs) inputs=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --nice) niceness=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --minimize) minimize=1; shift ;;
    --no-build) build=0; shift ;;
    *) sed -n '2,/^set /p' "$0" | sed '$d' >&2; exit 2 ;;
  esac
done
if [[ -z $inputs && -z $seconds ]]; then
  inputs=10000000
fi

if ! command -v afl-fuzz >/dev/null; then
  echo "fuzz.sh: afl-fuzz not found; install AFL++ (Debian: apt-get install -y afl++)" >&2
  exit 2
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=$out/bin
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
if ((build)); then
  # A fresh publish each time: SharpFuzz instruments in place and refuses an instrumented assembly.
  rm -rf "$bin"
  dotnet publish fuzz/Relay.Fuzz/Relay.Fuzz.csproj -c Release -o "$bin" -p:UseAppHost=false >"$out/publish.log" 2>&1 \
    || { tail -n 30 "$out/publish.log"; echo "fuzz.sh: publish failed" >&2; exit 1; }
  sharpfuzz_version=$(sed -nE 's/.*"SharpFuzz" Version="([^"]+)".*/\1/p' Directory.Packages.props)
  if [[ ! -x $out/tools/sharpfuzz ]]; then
    dotnet tool install SharpFuzz.CommandLine --version "$sharpfuzz_version" --tool-path "$out/tools" >"$out/tool.log" 2>&1 \
      || { cat "$out/tool.log"; echo "fuzz.sh: installing SharpFuzz.CommandLine $sharpfuzz_version failed" >&2; exit 1; }
  fi
  # Our assemblies carry the coverage; the framework and the harness itself do not (noise, and speed).
  for assembly in Relay.dll Relay.Protocol.dll Relay.Rendezvous.dll; do
    "$out/tools/sharpfuzz" "$bin/$assembly" >>"$out/instrument.log" 2>&1 \
      || { cat "$out/instrument.log"; echo "fuzz.sh: instrumenting $assembly failed" >&2; exit 1; }
  done
fi

# AFL++ on a shared VM: no CPU frequency governor to check, core dumps may be piped elsewhere, the target is
# a dotnet process (not an instrumented binary AFL can inspect), no curses screen, no pinning to a core.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_NO_AFFINITY=1
stop=()
[[ -n $inputs ]] && stop+=(-E "$(((inputs + jobs - 1) / jobs))")
[[ -n $seconds ]] && stop+=(-V "$seconds")

stat() { sed -nE "s/^$1 *: *([0-9.]+).*/\1/p" "$2" | head -n 1; }
failed=0
summaries=()
for target in "${targets[@]}"; do
  rm -rf "${out:?}/$target"
  log=$out/$target.log
  echo "fuzz.sh: $target: $jobs x afl-fuzz ${stop[*]} -t $timeout (log: $log)"
  # Instance 0 is AFL's main (-M, deterministic stages), the others secondaries (-S); alone, it is "default".
  names=(default) pids=()
  ((jobs > 1)) && names=($(seq -f "f%g" 0 $((jobs - 1))))
  for i in "${!names[@]}"; do
    role=()
    ((jobs > 1)) && role=($([[ $i == 0 ]] && echo -M || echo -S) "${names[$i]}")
    nice -n "$niceness" afl-fuzz -i "fuzz/corpus/$target" -o "$out/$target" "${role[@]}" -t "$timeout" -m none "${stop[@]}" \
      -- dotnet "$bin/Relay.Fuzz.dll" "$target" >"$log${role[1]:+.${role[1]}}" 2>&1 &
    pids+=($!)
  done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done

  execs=0 crashes=0 hangs=0 paths=0 rate=0 elapsed=0 ran=0
  for name in "${names[@]}"; do
    stats=$out/$target/$name/fuzzer_stats
    [[ -f $stats ]] || continue
    ran=$((ran + 1))
    e=$(stat execs_done "$stats") seconds_run=$(($(stat last_update "$stats") - $(stat start_time "$stats")))
    execs=$((execs + e)) crashes=$((crashes + $(stat saved_crashes "$stats"))) hangs=$((hangs + $(stat saved_hangs "$stats")))
    rate=$((rate + e / (seconds_run > 0 ? seconds_run : 1)))
    ((seconds_run > elapsed)) && elapsed=$seconds_run
    p=$(stat corpus_count "$stats"); ((p > paths)) && paths=$p
  done
  if ((ran == 0)); then
    tail -n 30 "$log"*
    summaries+=("fuzz $target: afl-fuzz did not run (exit $status)")
    failed=$((failed + 1))
    continue
  fi

  summaries+=("fuzz $target: $execs executions ($rate/s over ${elapsed} s, $ran instance(s)), $crashes crashes, $hangs hangs, $paths paths")
  if ((crashes + hangs > 0)); then
    failed=$((failed + 1))
    for file in "$out/$target"/*/{crashes,hangs}/id*; do
      [[ -f $file ]] && echo "fuzz.sh: $target finding: $file"
    done
  fi

  if ((minimize)); then
    rm -rf "$out/$target/min"
    nice -n "$niceness" afl-cmin -i "$out/$target/${names[0]}/queue" -o "$out/$target/min" -t "$timeout" -m none \
      -- "$(command -v dotnet)" "$bin/Relay.Fuzz.dll" "$target" >"$out/$target-cmin.log" 2>&1 \
      && echo "fuzz.sh: $target: $(find "$out/$target/min" -type f | wc -l) inputs after afl-cmin in $out/$target/min" \
      || echo "fuzz.sh: $target: afl-cmin failed (see $out/$target-cmin.log)"
  fi
done

printf '%s\n' "${summaries[@]}"
((failed == 0))
