#!/usr/bin/env bash
# Builds the libFuzzer targets (Sources/bulkhead-fuzz, with -sanitize=fuzzer,address) and runs each
# for SECONDS (default 60), starting from the seeds in Tests/Fuzz/corpus/<target>. Fails when any
# target crashes, hangs (10 s per input) or trips AddressSanitizer; prints executions per target.
#
#   scripts/fuzz.sh [SECONDS]              all targets
#   FUZZ_TARGETS="policy http" scripts/fuzz.sh 300
#
# Inputs that found new coverage are kept in .build-fuzz/corpus/<target> (next run starts there);
# crashes are written to .build-fuzz/crashes/<target>/ and replay with
#   BULKHEAD_FUZZ_TARGET=<target> .build-fuzz/debug/bulkhead-fuzz <crash-file>
# (or, without sanitizers, `swift run bulkhead-fuzz <target> <crash-file>`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

seconds=${1:-60}
read -r -a targets <<< "${FUZZ_TARGETS:-policy inventory netlink delinearize docker http}"
scratch=.build-fuzz

echo "==> swift build (fuzzers: -sanitize=fuzzer,address) in $scratch"
started=$(date +%s)
log=$(mktemp /tmp/bulkhead-fuzz-build.XXXXXX)
if ! swift build --scratch-path "$scratch" -c debug --product bulkhead-fuzz \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING > "$log" 2>&1; then
    grep -Ev '^\[[0-9]+/[0-9]+\] |Cannot export local symbol' "$log" | tail -40
    echo "error: the fuzzers did not build (full log: $log)" >&2
    exit 1
fi
echo "    built in $(( $(date +%s) - started )) s"
bin="$scratch/debug/bulkhead-fuzz"

# The Swift runtime's backtracer would take over the signal libFuzzer needs to save the input.
export SWIFT_BACKTRACE=enable=no
export LSAN_OPTIONS="suppressions=$PWD/Tests/Fuzz/lsan.supp:print_suppressions=0"
status=0
summary=()
for t in "${targets[@]}"; do
    seeds=Tests/Fuzz/corpus/$t
    work=$scratch/corpus/$t
    crashes=$scratch/crashes/$t
    mkdir -p "$work" "$crashes"
    [ -d "$seeds" ] || { echo "error: no seed corpus $seeds" >&2; exit 1; }
    out=$scratch/fuzz-$t.log
    echo "==> fuzz $t for ${seconds} s"
    rc=0
    dict=()
    [ -f "Tests/Fuzz/dict/$t.dict" ] && dict=(-dict="Tests/Fuzz/dict/$t.dict")
    BULKHEAD_FUZZ_TARGET=$t "$bin" "$work" "$seeds" "${dict[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/" > "$out" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$out" | tail -1 | cut -d' ' -f2)
    corpus=$(find "$work" -type f | wc -l)
    if [ "$rc" -ne 0 ]; then
        status=1
        grep -E 'ERROR|Fatal error|SUMMARY|Test unit written|deadly signal|timeout' "$out" | head -20 || true
        echo "error: $t crashed (exit $rc; log $out; inputs in $crashes/)" >&2
        summary+=("$t: CRASH after ${execs:-?} executions (${rate:-?}/s), see $crashes/")
    else
        summary+=("$t: ${execs:-?} executions, ${rate:-?}/s, coverage ${cov:-?}, corpus $corpus")
    fi
done
echo "==> fuzzing: ${seconds} s per target"
printf '    %s\n' "${summary[@]}"
echo "    total $(( $(date +%s) - started )) s (build and runs)"
exit "$status"
