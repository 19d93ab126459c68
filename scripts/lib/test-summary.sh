#!/usr/bin/env bash
# Reads the logs of the `swift test` runs of scripts/test.sh and says, in one line, how many tests
# passed, failed and skipped. Exits 1 when a test failed, when a run has no summary (the test
# process crashed or hung up before it finished), when a run ran no test at all, or — with CI=true —
# when any test or suite skipped: in CI every kernel and Docker test must run, so a skip is a
# failure, never a quiet pass (Tests/BulkheadCLITests/TestSummaryTests.swift proves each case).
#
# Usage: scripts/lib/test-summary.sh LOG...
set -uo pipefail

total=0 failed=0 skipped=0 status=0
for log in "$@"; do
    name=$(basename "$log" .log)
    # Swift Testing's closing line: "✔ Test run with 263 tests in 50 suites passed after …" (or ✘ … failed).
    n=$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log" | tail -1)
    if [ -z "$n" ]; then
        echo "error: the '$name' run has no summary line: the test process died before it finished (see $log)" >&2
        status=1
        n=0
    elif [ "$n" -eq 0 ]; then
        echo "error: the '$name' run ran no test (a filter that matches nothing?)" >&2
        status=1
    fi
    f=$(grep -E '^✘ Test .* failed after' "$log" | grep -cv '^✘ Test run with' || true)
    # "➜ Test x() skipped: …" per test; a skipped suite also prints "➜ Suite S skipped", and its
    # tests each print their own line, so only Test lines are counted.
    s=$(grep -cE '^➜ Test .* skipped' "$log" || true)
    if [ "$s" -gt 0 ]; then
        grep -E '^➜ (Test|Suite) .* skipped' "$log" | sed "s/^/  [$name] /" >&2
    fi
    total=$((total + n))
    failed=$((failed + f))
    skipped=$((skipped + s))
done

echo "tests: $((total - failed - skipped)) passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || status=1
if [ "$skipped" -gt 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "error: $skipped tests skipped; in CI every kernel and Docker test must run (see the lines above for why each skipped)" >&2
        status=1
    else
        echo "warning: $skipped tests skipped (they need root or a reachable dockerd); CI fails on any skip" >&2
    fi
fi
exit "$status"
