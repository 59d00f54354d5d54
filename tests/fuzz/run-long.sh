#!/usr/bin/env bash
# The long fuzzing run of docs/benchmarks.md ("Fuzzing"): every libFuzzer
# target of tests/fuzz for 10^7 executions, from its checked-in seeds, with
# ASan+UBSan, and a table of what each reached.
#
#   tests/fuzz/run-long.sh [--runs N] [--max-seconds S] [--parallel P]
#                          [--build DIR] [--out DIR] [target...]
#
#   --runs N         executions per target (default 10000000)
#   --max-seconds S  stop a target after S seconds even if short of N
#                    (default: none); the table says what was reached
#   --parallel P     targets run at once (default: the number of cores).
#                    One process per target rather than -jobs or -fork:
#                    -jobs runs N executions in every job, and one process
#                    keeps each target's count exact (libFuzzer's own
#                    stat::number_of_executed_units) while two targets
#                    share two cores
#   --build DIR      the sanitizer tree (default build-asan; scripts/test.sh
#                    --sanitize or docs/fuzzing.md builds it)
#   --out DIR        logs, grown corpora, crash inputs and summary.md
#                    (default DIR/fuzz-long)
#   target...        e.g. otlp_protobuf config (default: all)
#
# Run it niced on a shared machine: nice -n 10 tests/fuzz/run-long.sh.
# A crash, leak, timeout or out-of-memory input lands in OUT/artifacts/ and
# the script exits 1; each becomes a unit test and a seed (docs/fuzzing.md).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
runs=10000000
max_seconds=0
parallel=$(nproc)
build="$root/build-asan"
out=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --max-seconds) max_seconds=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
out=${out:-$build/fuzz-long}
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/tests/fuzz/*_fuzzer.cpp; do
    t=$(basename "$f" _fuzzer.cpp)
    targets+=("$t")
  done
fi
mkdir -p "$out/artifacts" "$out/corpus"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-14/bin/llvm-symbolizer}

run_target() {
  local t=$1 bin="$build/tests/fuzz/${1}_fuzzer" started rc=0
  [ -x "$bin" ] || { echo "run-long.sh: no $bin (build the sanitizer tree first)" >&2; return 2; }
  mkdir -p "$out/corpus/$t"
  started=$(date +%s)
  "$bin" -runs="$runs" -max_total_time="$max_seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" \
    "$out/corpus/$t" "$root/tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1 || rc=$?
  echo "$(( $(date +%s) - started ))" >"$out/$t.seconds"
  echo "$rc" >"$out/$t.rc"
}

limit=""
[ "$max_seconds" != 0 ] && limit=" (at most $max_seconds s each)"
echo "fuzzing ${#targets[@]} targets, $runs runs each$limit, $parallel at a time; output in $out" >&2
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait || true

status=0
{
  echo "| target | executions | exec/s | wall time | crashes | corpus | exit |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for t in "${targets[@]}"; do
    log="$out/$t.log"
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" 2>/dev/null | awk '{print $NF}' | tail -1)
    rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" 2>/dev/null | awk '{print $NF}' | tail -1)
    crashes=$(find "$out/artifacts" -name "$t-*" 2>/dev/null | wc -l)
    corpus=$(find "$out/corpus/$t" -type f 2>/dev/null | wc -l)
    rc=$(cat "$out/$t.rc" 2>/dev/null || echo "?")
    seconds=$(cat "$out/$t.seconds" 2>/dev/null || echo "?")
    echo "| $t | ${execs:-?} | ${rate:-?} | ${seconds} s | $crashes | $corpus | $rc |"
    if [ "$crashes" != 0 ] || [ "$rc" != 0 ]; then status=1; fi
  done
} | tee "$out/summary.md"
exit "$status"
